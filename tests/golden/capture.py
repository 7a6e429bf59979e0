"""Capture golden inputs for the span normalizer from real OpenAI instrumentation libraries.

    .venv/bin/python tests/golden/capture.py              # every captured case
    .venv/bin/python tests/golden/capture.py --only traceloop_chat --only openinference_chat
    .venv/bin/python tests/golden/capture.py --list

For each case a child process (``capture_child.py``) instruments ``openai`` with one library and
runs one scenario against a local fake OpenAI server (``fake_openai_scripted.py``); nothing
leaves 127.0.0.1. What the child's OTLP encoder produced is written as OTLP/JSON:
``<case>/input.json`` (traces), ``<case>/logs.json`` (log records, when the library emitted any)
and ``<case>/SOURCE.md`` (library versions, environment, the calls made).

What would differ from one capture to the next, or from one machine to another, is fixed:
- ids come from a generator seeded with the case name, ``service.instance.id`` from the case
  name too (in the child);
- timestamps are moved so the earliest one is ``TIME_BASE_UNIX_NANO``, keeping every offset
  (rounded to the microsecond);
- the fake server's port, chosen by the OS, becomes ``CANONICAL_PORT`` in attribute values, and
  this machine's paths in stack traces become the placeholders of ``CANONICAL_PATHS``.

Hand-written cases (see README.md) have no entry here and are never touched.
"""

from __future__ import annotations

import argparse
import ast
import base64
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).resolve().parent
REPO_ROOT = GOLDEN_DIR.parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script: make `tests` and `llmtap` importable
    sys.path.insert(0, str(REPO_ROOT))

from google.protobuf import json_format  # noqa: E402
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (  # noqa: E402
    ExportLogsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)

from llmtap.schemas.otlp import OtlpDecodeError, decode_traces_json  # noqa: E402
from tests.golden.fake_openai_scripted import (  # noqa: E402
    CONTEXT_TOO_LONG,
    RATE_LIMITED,
    Failure,
    ScriptedFakeOpenAI,
)

CHILD_PROGRAM = GOLDEN_DIR / "capture_child.py"
CHILD_TIMEOUT_SECONDS = 120
REPORT_PREFIX = "GOLDEN-CAPTURE-REPORT "
EXTEND_PACKAGES_VARIABLE = "GOLDEN_EXTEND_PACKAGE_PATHS"
TIME_BASE_UNIX_NANO = 1767225600000000000  # 2026-01-01T00:00:00Z
CANONICAL_PORT = 8000
LEGACY_ROOT = Path("/tmp/golden-legacy")
# Paths of this machine that stack traces carry, and the placeholders they read as in the
# goldens (longest first, so that a path inside another is replaced as part of it).
CANONICAL_PATHS = sorted(
    [
        (str(LEGACY_ROOT), "<golden-legacy>"),
        (str(REPO_ROOT), "<repo>"),
        (sys.base_prefix, "<python>"),
    ],
    key=lambda pair: -len(pair[0]),
)
STACK_TRACE_KEYS = {"exception.stacktrace"}
ID_FIELDS = {"traceId", "spanId", "parentSpanId"}
TIME_FIELDS = {"startTimeUnixNano", "endTimeUnixNano", "timeUnixNano", "observedTimeUnixNano"}
# Settings the developer's shell may hold that would change what a library emits or where the
# client connects; the child gets none of them, only the case's own.
DROPPED_VARIABLE_PREFIXES = ("OTEL_", "TRACELOOP_", "OPENINFERENCE_", "OPENAI_", "PYTHON")
PROXY_VARIABLES = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}

OPENAI_V2 = "opentelemetry.instrumentation.openai_v2"
OPENINFERENCE = "openinference.instrumentation.openai"
TRACELOOP = "opentelemetry.instrumentation.openai"
LIBRARY_NAMES = {
    OPENAI_V2: "OpenTelemetry contrib opentelemetry-instrumentation-openai-v2",
    OPENINFERENCE: "Arize OpenInference openinference-instrumentation-openai",
    TRACELOOP: "Traceloop OpenLLMetry opentelemetry-instrumentation-openai",
}
OPENAI_V2_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
LATEST_GENAI = {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental"}
TRACELOOP_NO_METRICS = {"TRACELOOP_METRICS_ENABLED": "false"}

# What the fake server answers instead of the script, per scenario (first requests first).
SCENARIO_FAILURES: dict[str, list[Failure]] = {"errors": [RATE_LIMITED, CONTEXT_TOO_LONG]}


@dataclass(frozen=True)
class LegacyInstall:
    """An old library release, installed outside the project venv and put first on the child's
    PYTHONPATH (``uv pip install --target``, no dependency resolution: the venv provides the
    rest)."""

    folder: str
    requirements: tuple[str, ...]
    # Regular packages of the venv that the release adds a subpackage to (see capture_child.py).
    extended_packages: tuple[str, ...] = ()

    @property
    def target(self) -> Path:
        return LEGACY_ROOT / self.folder

    def command(self) -> list[str]:
        return [
            str(REPO_ROOT / ".venv" / "bin" / "uv"),
            "pip",
            "install",
            "--python",
            sys.executable,
            "--target",
            str(self.target),
            "--no-deps",
            *self.requirements,
        ]


@dataclass(frozen=True)
class Case:
    name: str
    instrumentor_module: str
    scenario: str
    environment: dict[str, str]
    about: str
    legacy: LegacyInstall | None = None
    expect_log_records: bool = False

    @property
    def service_name(self) -> str:
        return "folio-support-" + self.name.replace("_", "-")


@dataclass
class Capture:
    traces: dict[str, Any]
    logs: dict[str, Any] | None
    report: dict[str, Any]
    spans: int = 0
    log_records: int = 0
    problems: list[str] = field(default_factory=list)


TRACELOOP_LEGACY = LegacyInstall(
    folder="opentelemetry-instrumentation-openai-0.38.7",
    requirements=(
        "opentelemetry-instrumentation-openai==0.38.7",
        "opentelemetry-semantic-conventions-ai==0.4.2",
    ),
)
# The llm.* era of OpenLLMetry (semconv-ai < 0.2, until about April 2024).
TRACELOOP_LLM_PREFIX = LegacyInstall(
    folder="opentelemetry-instrumentation-openai-0.16.9",
    requirements=(
        "opentelemetry-instrumentation-openai==0.16.9",
        "opentelemetry-semantic-conventions-ai==0.1.1",
    ),
    extended_packages=("opentelemetry.semconv",),
)

# An early openai-v2 release: pre-1.37 GenAI names, one log record per message (content in the
# body), nothing on the span. It emits through the Events API, so the OTel API, SDK and encoder of
# its time are installed beside it and shadow the venv's.
OPENAI_V2_EARLY = LegacyInstall(
    folder="opentelemetry-instrumentation-openai-v2-2.1b0",
    requirements=(
        "opentelemetry-instrumentation-openai-v2==2.1b0",
        # The Events API it emits through left opentelemetry-api in 1.39: the SDK of its time.
        "opentelemetry-api==1.30.0",
        "opentelemetry-sdk==1.30.0",
        "opentelemetry-semantic-conventions==0.51b0",
        "opentelemetry-instrumentation==0.51b0",
        "opentelemetry-exporter-otlp-proto-common==1.30.0",
        # dependencies of that API that the venv's no longer has
        "deprecated==1.2.18",
        "importlib-metadata==8.5.0",
        "zipp==3.21.0",
        "wrapt==1.17.2",  # wrapt 2 renamed wrap_function_wrapper's arguments
    ),
)

CASES = [
    Case(
        "openai_v2_chat",
        OPENAI_V2,
        "chat",
        {OPENAI_V2_CONTENT: "true"},
        "Default (pre-1.37) GenAI conventions: `gen_ai.system`, no content on the span; the "
        "messages and the choice are log records (`gen_ai.<role>.message`, `gen_ai.choice`) "
        "tied to the span by trace and span id, in logs.json.",
        expect_log_records=True,
    ),
    Case(
        "openai_v2_chat_latest",
        OPENAI_V2,
        "chat",
        {**LATEST_GENAI, OPENAI_V2_CONTENT: "span_only"},
        "Latest experimental GenAI conventions: `gen_ai.provider.name`, content as "
        "`gen_ai.input.messages` / `gen_ai.output.messages` JSON on the span, no log records.",
    ),
    Case(
        "openai_v2_tool_calls_latest",
        OPENAI_V2,
        "tool_calls",
        {**LATEST_GENAI, OPENAI_V2_CONTENT: "span_only"},
        "Latest experimental GenAI conventions with tool calls: `tool_call` parts in the output "
        "messages, `tool_call_response` parts in the follow-up's input messages.",
    ),
    Case(
        "openai_v2_streaming_latest",
        OPENAI_V2,
        "streaming",
        {**LATEST_GENAI, OPENAI_V2_CONTENT: "span_and_event"},
        "Latest experimental GenAI conventions, streamed responses. `span_and_event` also emits "
        "the `gen_ai.client.inference.operation.details` event as a log record (logs.json).",
        expect_log_records=True,
    ),
    Case(
        "openai_v2_chat_events_latest",
        OPENAI_V2,
        "chat",
        {**LATEST_GENAI, OPENAI_V2_CONTENT: "event_only"},
        "Latest experimental GenAI conventions, `event_only`: no content on the span; one "
        "`gen_ai.client.inference.operation.details` log record per call (structured "
        "`gen_ai.input.messages` / `gen_ai.output.messages` / `gen_ai.system_instructions`) in "
        "logs.json. Joined, it must give the content of `openai_v2_chat_latest` (span_only).",
        expect_log_records=True,
    ),
    Case(
        "openai_v2_tool_calls_events_latest",
        OPENAI_V2,
        "tool_calls",
        {**LATEST_GENAI, OPENAI_V2_CONTENT: "event_only"},
        "Latest experimental GenAI conventions, `event_only`, with tool calls: the "
        "operation-details log records carry the `tool_call` and `tool_call_response` parts. "
        "Joined, it must give the content of `openai_v2_tool_calls_latest` (span_only).",
        expect_log_records=True,
    ),
    Case(
        "openai_v2_tool_calls_events",
        OPENAI_V2,
        "tool_calls",
        {OPENAI_V2_CONTENT: "true"},
        "Default (pre-1.37) GenAI conventions with tool calls: one log record per message "
        "(`gen_ai.<role>.message`, `gen_ai.tool.message` with the call id, `gen_ai.choice` with "
        "`tool_calls`), nothing on the span.",
        expect_log_records=True,
    ),
    Case(
        "openai_v2_tool_calls_events_2_1",
        OPENAI_V2,
        "tool_calls",
        {OPENAI_V2_CONTENT: "true"},
        "An early openai-v2 release (2.1b0): per-message log records with content in the "
        "body, `event.name` as an attribute, nothing on the span.",
        legacy=OPENAI_V2_EARLY,
        expect_log_records=True,
    ),
    Case(
        "openai_v2_no_content",
        OPENAI_V2,
        "chat",
        {OPENAI_V2_CONTENT: "false"},
        "Default GenAI conventions with content capture off: the log records still exist but "
        "carry no message text.",
        expect_log_records=True,
    ),
    Case(
        "openinference_chat",
        OPENINFERENCE,
        "chat",
        {},
        "OpenInference: `openinference.span.kind`=LLM, indexed `llm.input_messages.N.*` / "
        "`llm.output_messages.N.*`, `llm.token_count.*`, whole request and response bodies in "
        "`input.value` / `output.value`.",
    ),
    Case(
        "openinference_tool_calls",
        OPENINFERENCE,
        "tool_calls",
        {},
        "OpenInference with tools: `llm.tools.N.tool.json_schema`, "
        "`llm.output_messages.0.message.tool_calls.N.tool_call.*`, tool messages in the input.",
    ),
    Case(
        "openinference_streaming",
        OPENINFERENCE,
        "streaming",
        {},
        "OpenInference, streamed responses (a `First Token Stream Event` span event).",
    ),
    Case(
        "openinference_embeddings",
        OPENINFERENCE,
        "embeddings",
        {},
        "OpenInference embeddings: `openinference.span.kind`=EMBEDDING, "
        "`embedding.embeddings.N.embedding.text` / `.vector`.",
    ),
    Case(
        "traceloop_chat",
        TRACELOOP,
        "chat",
        {"TRACELOOP_TRACE_CONTENT": "true", **TRACELOOP_NO_METRICS},
        "OpenLLMetry (current): GenAI names plus `gen_ai.input.messages` / "
        "`gen_ai.output.messages` JSON, `gen_ai.usage.*` incl. cache and reasoning tokens.",
    ),
    Case(
        "traceloop_tool_calls",
        TRACELOOP,
        "tool_calls",
        {"TRACELOOP_TRACE_CONTENT": "true", **TRACELOOP_NO_METRICS},
        "OpenLLMetry (current) with tools: tool definitions and tool calls as recorded by the "
        "library.",
    ),
    Case(
        "traceloop_streaming",
        TRACELOOP,
        "streaming",
        {"TRACELOOP_TRACE_CONTENT": "true", **TRACELOOP_NO_METRICS},
        "OpenLLMetry (current), streamed responses: one `gen_ai.content.completion.chunk` span "
        "event per chunk received.",
    ),
    Case(
        "traceloop_no_content",
        TRACELOOP,
        "chat",
        {"TRACELOOP_TRACE_CONTENT": "false", **TRACELOOP_NO_METRICS},
        "OpenLLMetry (current) with content tracing off: no messages on the spans.",
    ),
    Case(
        "traceloop_legacy_chat",
        TRACELOOP,
        "chat",
        {"TRACELOOP_TRACE_CONTENT": "true", **TRACELOOP_NO_METRICS},
        "An old OpenLLMetry release: indexed `gen_ai.prompt.N.role/content`, "
        "`gen_ai.completion.N.*`, `llm.request.type`, `llm.usage.total_tokens`, "
        "`gen_ai.usage.prompt_tokens` / `completion_tokens`, `gen_ai.system`.",
        legacy=TRACELOOP_LEGACY,
    ),
    Case(
        "error_span",
        TRACELOOP,
        "errors",
        {"TRACELOOP_TRACE_CONTENT": "true", **TRACELOOP_NO_METRICS},
        "Failed calls (429 rate limit, 400 context length exceeded): status ERROR with the "
        "exception text, `error.type` (the exception class) and an `exception` span event; no "
        "response or usage attributes.",
    ),
    Case(
        "openai_v2_errors_latest",
        OPENAI_V2,
        "errors",
        {**LATEST_GENAI, OPENAI_V2_CONTENT: "span_only"},
        "Failed calls in the latest experimental GenAI conventions: status ERROR and "
        "`error.type`, but no `exception` event.",
    ),
    Case(
        "openinference_errors",
        OPENINFERENCE,
        "errors",
        {},
        "Failed calls in OpenInference: status ERROR and an `exception` event, no `error.type`.",
    ),
    Case(
        "llm_usage_legacy",
        TRACELOOP,
        "chat",
        {"TRACELOOP_TRACE_CONTENT": "true", **TRACELOOP_NO_METRICS},
        "The oldest OpenLLMetry names: `llm.vendor`, `llm.request.type`, `llm.request.model`, "
        "`llm.response.model`, `llm.usage.prompt_tokens` / `completion_tokens` / "
        "`total_tokens`, indexed `llm.prompts.N.*` / `llm.completions.N.*`, `llm.temperature`.",
        legacy=TRACELOOP_LLM_PREFIX,
    ),
]


def child_environment(case: Case) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(DROPPED_VARIABLE_PREFIXES)
        and name.upper() not in PROXY_VARIABLES
    }
    environment |= {"NO_PROXY": "127.0.0.1,localhost", "PYTHONHASHSEED": "0", **case.environment}
    if case.legacy:
        environment["PYTHONPATH"] = str(case.legacy.target)
        environment[EXTEND_PACKAGES_VARIABLE] = ";".join(
            f"{package}={case.legacy.target.joinpath(*package.split('.'))}"
            for package in case.legacy.extended_packages
        )
    return environment


def install_legacy(legacy: LegacyInstall) -> None:
    marker = legacy.target / ".golden-installed"
    if marker.exists() and marker.read_text() == " ".join(legacy.requirements):
        return
    print(f"installing {' '.join(legacy.requirements)} into {legacy.target}", flush=True)
    subprocess.run(legacy.command(), check=True, timeout=600)
    marker.write_text(" ".join(legacy.requirements))


def run_child(case: Case, base_url: str, output_dir: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        str(CHILD_PROGRAM),
        case.instrumentor_module,
        case.scenario,
        base_url,
        case.service_name,
        case.name,  # the id generator's seed
        str(output_dir),
    ]
    finished = subprocess.run(
        command,
        env=child_environment(case),
        cwd=output_dir,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_SECONDS,
        check=False,
    )
    reports = [line for line in finished.stdout.splitlines() if line.startswith(REPORT_PREFIX)]
    if finished.returncode != 0 or not reports:
        raise RuntimeError(
            f"{case.name}: the instrumented child exited with {finished.returncode}\n"
            f"stdout:\n{finished.stdout}\nstderr:\n{finished.stderr}"
        )
    report: dict[str, Any] = json.loads(reports[-1].removeprefix(REPORT_PREFIX))
    report["stderr"] = finished.stderr
    return report


def otlp_json(message: Any) -> dict[str, Any]:
    """OTLP/JSON: the proto3 JSON mapping (camelCase, integer enums, int64 as strings), except
    that trace and span ids are lowercase hex instead of base64."""
    document: dict[str, Any] = json_format.MessageToDict(message, use_integers_for_enums=True)
    for item in walk(document):
        for name in ID_FIELDS & item.keys():
            item[name] = _base64_to_hex(item[name])
    return document


def _base64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in a document, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def stabilize(documents: list[dict[str, Any]], port: int) -> None:
    """Move all timestamps to start at TIME_BASE_UNIX_NANO; give the fake's port and this
    machine's paths (in stack traces) one value everywhere."""
    stamps = [
        int(item[key])
        for document in documents
        for item in walk(document)
        for key in TIME_FIELDS & item.keys()
        if int(item[key]) > 0
    ]
    earliest = min(stamps, default=0)
    address = f"127.0.0.1:{port}"
    for document in documents:
        for item in walk(document):
            for key in TIME_FIELDS & item.keys():
                if int(item[key]) > 0:
                    offset_microseconds = round((int(item[key]) - earliest) / 1000)
                    item[key] = str(TIME_BASE_UNIX_NANO + offset_microseconds * 1000)
            if isinstance(item.get("stringValue"), str):
                item["stringValue"] = item["stringValue"].replace(
                    address, f"127.0.0.1:{CANONICAL_PORT}"
                )
            if item.get("key") in STACK_TRACE_KEYS and "stringValue" in item["value"]:
                text = item["value"]["stringValue"]
                for machine_path, placeholder in CANONICAL_PATHS:
                    text = text.replace(machine_path, placeholder)
                item["value"]["stringValue"] = text
            if item.get("key") == "server.port" and item.get("value") == {"intValue": str(port)}:
                item["value"] = {"intValue": str(CANONICAL_PORT)}


def capture(case: Case) -> Capture:
    if case.legacy:
        install_legacy(case.legacy)
    with tempfile.TemporaryDirectory(prefix=f"golden-{case.name}-") as scratch:
        output_dir = Path(scratch)
        with ScriptedFakeOpenAI(SCENARIO_FAILURES.get(case.scenario)) as server:
            report = run_child(case, server.base_url, output_dir)
            port = server.port
        traces = otlp_json(
            ExportTraceServiceRequest.FromString((output_dir / "traces.pb").read_bytes())
        )
        logs_file = output_dir / "logs.pb"
        logs = (
            otlp_json(ExportLogsServiceRequest.FromString(logs_file.read_bytes()))
            if logs_file.exists()
            else None
        )
    stabilize([traces] if logs is None else [traces, logs], port)
    result = Capture(traces, logs, report, report["spans"], report["log_records"])
    result.problems = check(case, result, port)
    return result


def check(case: Case, result: Capture, port: int) -> list[str]:
    """What would make the capture useless: nothing or the wrong library recorded, a scripted
    answer that did not reach the client, a leftover of the machine it was captured on."""
    problems = []
    if result.spans == 0:
        problems.append("no spans were recorded")
    if case.expect_log_records != bool(result.log_records):
        problems.append(
            f"expected log records: {case.expect_log_records}, got {result.log_records}"
        )
    if len(result.report.get("rejected", [])) != len(SCENARIO_FAILURES.get(case.scenario, [])):
        problems.append(f"expected every scripted failure to be raised: {result.report}")
    if any(text == "" for text in result.report.get("streamed_texts", [])):
        problems.append("a stream reassembled to an empty text")
    if case.legacy:  # the old release must have shadowed the venv's, or the case is mislabelled
        for requirement in case.legacy.requirements:
            name, version = requirement.split("==")
            versions = result.report["versions"]
            # the report lists the library and the OTel API / SDK, not every helper installed
            if name in versions and versions[name] != version:
                problems.append(f"{name} {result.report['versions'].get(name)} ran, not {version}")
    dumped = json.dumps([result.traces, result.logs])
    if f"127.0.0.1:{port}" in dumped:
        problems.append(f"the fake's port {port} is still in the output")
    stack_traces = [
        item["value"].get("stringValue", "")
        for document in (result.traces, result.logs or {})
        for item in walk(document)
        if item.get("key") in STACK_TRACE_KEYS
    ]
    problems += [
        f"{path} is still in a stack trace"
        for path, _ in CANONICAL_PATHS
        if any(path in text for text in stack_traces)
    ]
    try:
        decode_traces_json(json.dumps(result.traces).encode())
    except OtlpDecodeError as error:
        problems.append(f"llmtap cannot decode the OTLP/JSON written: {error}")
    return problems


def scenario_source(scenario: str) -> str:
    """The scenario function's source, quoted in SOURCE.md as what was called."""
    source = CHILD_PROGRAM.read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.name == scenario:
            return ast.get_source_segment(source, node) or ""
    raise KeyError(scenario)


def source_markdown(case: Case, result: Capture) -> str:
    versions = result.report["versions"]
    environment = "\n".join(f"- `{name}={value}`" for name, value in case.environment.items())
    lines = [
        f"# {case.name}",
        "",
        "Captured from a real instrumentation library by `tests/golden/capture.py --only "
        f"{case.name}`; do not edit by hand, re-run the capture.",
        "",
        case.about,
        "",
        f"- Library: {LIBRARY_NAMES[case.instrumentor_module]} "
        f"(`{case.instrumentor_module}.OpenAIInstrumentor().instrument(tracer_provider=..., "
        "logger_provider=...)`)",
        "- Versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()),
        f"- Python {sys.version_info.major}.{sys.version_info.minor}, `service.name` "
        f"`{case.service_name}`",
    ]
    if case.legacy:
        lines += [
            "- Installed outside the project venv and first on the child's PYTHONPATH:",
            "  `" + " ".join(case.legacy.command()).replace(str(REPO_ROOT) + "/", "") + "`",
        ]
        lines += [
            f"- `{package}` is a regular package in the venv, so the child appends the target's "
            f"`{package.replace('.', '/')}` folder to its `__path__` ({EXTEND_PACKAGES_VARIABLE})"
            for package in case.legacy.extended_packages
        ]
    lines += [
        "",
        "Environment (every other `OTEL_*`, `TRACELOOP_*`, `OPENINFERENCE_*`, `OPENAI_*` and "
        "proxy variable removed):",
        "",
        environment or "- none (the library's defaults)",
        "",
        f"Result: {result.spans} spans in input.json"
        + (f", {result.log_records} log records in logs.json" if result.log_records else "")
        + ".",
        "",
        "Rewritten after capture, for stable re-captures: ids come from a generator seeded with "
        f"the case name; timestamps start at {TIME_BASE_UNIX_NANO} (2026-01-01T00:00:00Z) with "
        "their offsets kept to the microsecond; the fake server's port reads "
        f"{CANONICAL_PORT}; paths in stack traces read "
        + ", ".join(f"`{placeholder}`" for _, placeholder in CANONICAL_PATHS)
        + ". The server (`fake_openai_scripted.py`) answers from a script and fixes `created`"
        + (
            "; it fails the first requests with: "
            + ", ".join(f"{f.status} `{f.code}`" for f in SCENARIO_FAILURES[case.scenario])
            if case.scenario in SCENARIO_FAILURES
            else ""
        )
        + ".",
        "",
        f"## What was called (`capture_child.py`, scenario `{case.scenario}`)",
        "",
        "```python",
        scenario_source(case.scenario),
        "```",
        "",
    ]
    return "\n".join(lines)


def write(case: Case, result: Capture) -> None:
    folder = GOLDEN_DIR / case.name
    folder.mkdir(exist_ok=True)
    (folder / "input.json").write_text(dump(result.traces))
    logs_path = folder / "logs.json"
    if result.logs is not None:
        logs_path.write_text(dump(result.logs))
    elif logs_path.exists():
        logs_path.unlink()
    (folder / "SOURCE.md").write_text(source_markdown(case, result))


def dump(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    names = [case.name for case in CASES]
    parser.add_argument("--only", action="append", choices=names, help="a case (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the captured cases and exit")
    arguments = parser.parse_args()
    if arguments.list:
        print("\n".join(names))
        return 0
    failed = []
    for case in CASES:
        if arguments.only and case.name not in arguments.only:
            continue
        try:
            result = capture(case)
        except (RuntimeError, subprocess.SubprocessError) as error:
            print(f"FAILED {case.name}: {error}", file=sys.stderr)
            failed.append(case.name)
            continue
        if result.problems:
            print(f"FAILED {case.name}: {'; '.join(result.problems)}", file=sys.stderr)
            failed.append(case.name)
            continue
        write(case, result)
        print(f"{case.name}: {result.spans} spans, {result.log_records} log records")
    if failed:
        print(f"not written: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
