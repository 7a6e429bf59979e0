"""EventJoiner: GenAI event log records joined to their spans, in either order, within a wait."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from llmtap.processors.normalize.genai_events import (
    EventJoiner,
    SourcePosition,
    decode_genai_records,
    join_file,
)
from llmtap.processors.normalize.normalizer import Normalizer
from llmtap.schemas.llm_span import LlmSpan, Message
from llmtap.schemas.otlp import decode_logs_json, decode_traces_json

GOLDEN = Path(__file__).resolve().parents[2] / "golden"
TRACE = "ab" * 16
SPAN = "cd" * 8


def llm_span(span_id: str = SPAN, *, content: bool = False) -> LlmSpan:
    span = LlmSpan(trace_id=TRACE, span_id=span_id, span_type="llm", request_model="gpt-4o")
    if content:
        span.input_messages = [Message(role="user", content="on the span")]
    return span


def logs_request(*events: tuple[str, str, dict[str, str]]) -> ExportLogsServiceRequest:
    """(span id, event name, body) per record; the name as an attribute, as older SDKs put it."""
    request = ExportLogsServiceRequest()
    scope = request.resource_logs.add().scope_logs.add()
    for index, (span_id, name, body) in enumerate(events):
        record = scope.log_records.add(
            trace_id=bytes.fromhex(TRACE), span_id=bytes.fromhex(span_id), time_unix_nano=index
        )
        record.attributes.add(key="event.name", value=AnyValue(string_value=name))
        for key, text in body.items():
            record.body.kvlist_value.values.add(key=key, value=AnyValue(string_value=text))
    return request


def conversation(span_id: str = SPAN) -> ExportLogsServiceRequest:
    return logs_request(
        (span_id, "gen_ai.system.message", {"content": "Be brief."}),
        (span_id, "gen_ai.user.message", {"content": "Where is my order?"}),
        (span_id, "gen_ai.choice", {"finish_reason": "stop", "index": "0"}),
    )


def with_choice_message(request: ExportLogsServiceRequest) -> ExportLogsServiceRequest:
    choice = request.resource_logs[0].scope_logs[0].log_records[-1]
    message = choice.body.kvlist_value.values.add(key="message").value.kvlist_value
    message.values.add(key="content", value=AnyValue(string_value="It left on Tuesday."))
    return request


def test_records_before_the_span_fill_it_without_waiting() -> None:
    joiner = EventJoiner(wait_seconds=5)
    records = decode_genai_records(with_choice_message(conversation())).records
    assert joiner.add_records(records, now=0) == ([], [])
    span = joiner.add_span(llm_span(), now=1)
    assert span is not None
    assert span.prompt_text == "Where is my order?"
    assert span.completion_text == "It left on Tuesday."
    assert span.system_instructions == "Be brief."
    assert span.finish_reasons == ["stop"]
    assert [m.role for m in span.input_messages] == ["system", "user"]


def test_a_span_before_its_records_is_held_until_they_are_complete() -> None:
    joiner = EventJoiner(wait_seconds=5)
    assert joiner.add_span(llm_span(), now=0) is None
    records = decode_genai_records(with_choice_message(conversation())).records
    ready, unmatched = joiner.add_records(records[:2], now=1)
    assert (ready, unmatched) == ([], [])  # no choice yet: the answer may still come
    ready, unmatched = joiner.add_records(records[2:], now=2)
    assert unmatched == []
    assert [span.completion_text for span in ready] == ["It left on Tuesday."]
    assert joiner.held_spans == 0


def test_spans_with_content_or_not_llm_calls_never_wait() -> None:
    joiner = EventJoiner(wait_seconds=5)
    assert joiner.add_span(llm_span(content=True), now=0) is not None
    other = LlmSpan(trace_id=TRACE, span_id="ef" * 8, span_type="other")
    assert joiner.add_span(other, now=0) is other
    # span_and_event mode: the records repeat what the span had; counted, not dead-lettered
    assert joiner.add_records(decode_genai_records(conversation()).records, now=1) == ([], [])
    assert joiner.redundant_records == 3


def test_a_held_span_goes_out_without_records_when_the_wait_ends() -> None:
    joiner = EventJoiner(wait_seconds=5)
    assert joiner.add_span(llm_span(), now=0) is None
    assert joiner.expire(now=4.9) == ([], [])
    spans, unmatched = joiner.expire(now=5)
    assert [span.span_id for span in spans] == [SPAN]
    assert spans[0].input_messages == []
    assert unmatched == []


def test_records_whose_span_never_comes_are_unmatched_with_the_reason() -> None:
    joiner = EventJoiner(wait_seconds=5)
    joiner.add_records(decode_genai_records(conversation("11" * 8)).records, now=0)
    assert joiner.expire(now=4) == ([], [])
    spans, unmatched = joiner.expire(now=5.5)
    assert spans == []
    assert len(unmatched) == 3
    assert {item.reason for item in unmatched} == {
        "unmatched genai event record (span not seen within 5s)"
    }


def test_a_record_after_its_span_was_emitted_is_reported_late() -> None:
    joiner = EventJoiner(wait_seconds=5)
    joiner.add_span(llm_span(), now=0)
    joiner.expire(now=10)
    _, unmatched = joiner.add_records(decode_genai_records(conversation()).records, now=11)
    assert {item.reason for item in unmatched} == {
        "genai event record arrived after its span was emitted"
    }


def test_records_of_another_tenant_never_reach_a_span_with_the_same_ids() -> None:
    joiner = EventJoiner(wait_seconds=5)
    victim = llm_span()
    victim.tenant = "tenant-a"
    assert joiner.add_span(victim, now=0) is None  # held for its records
    forged = with_choice_message(conversation())  # tenant A's trace and span ids
    records = decode_genai_records(forged, tenant="tenant-b").records
    assert {record.tenant for record in records} == {"tenant-b"}
    assert joiner.add_records(records, now=1) == ([], [])  # complete, yet not joined
    spans, unmatched = joiner.expire(now=10)
    assert [span.span_id for span in spans] == [SPAN]
    assert spans[0].input_messages == []
    assert spans[0].completion_text is None
    assert "llmtap.genai_event_records" not in spans[0].attributes
    assert len(unmatched) == 3  # stored as unmatched, like records whose span never came
    assert {item.reason for item in unmatched} == {
        "unmatched genai event record (span not seen within 5s)"
    }


def test_a_records_tenant_follows_the_span_rule() -> None:
    request = conversation()
    request.resource_logs[0].resource.attributes.add(
        key="llmtap.tenant", value=AnyValue(string_value="from-resource")
    )
    assert {r.tenant for r in decode_genai_records(conversation()).records} == {"default"}
    assert {r.tenant for r in decode_genai_records(request).records} == {"from-resource"}
    # the collector's header (from the API key) wins over what the sender wrote
    header = decode_genai_records(request, tenant="from-key").records
    assert {record.tenant for record in header} == {"from-key"}


def test_other_log_records_are_ignored_and_counted() -> None:
    request = conversation()
    request.resource_logs[0].scope_logs[0].log_records.add(
        trace_id=bytes.fromhex(TRACE), span_id=bytes.fromhex(SPAN)
    ).body.string_value = "GET /orders 200"
    decoded = decode_genai_records(request)
    assert (len(decoded.records), decoded.ignored) == (3, 1)


def test_memory_is_bounded_oldest_first() -> None:
    joiner = EventJoiner(wait_seconds=60, max_pending=2)
    for index in range(4):
        joiner.add_span(llm_span(f"{index + 1:016x}"), now=index)
    spans, _ = joiner.expire(now=4)
    assert [span.span_id for span in spans] == [f"{1:016x}", f"{2:016x}"]
    assert joiner.held_spans == 2


def test_held_positions_and_dropping_a_partition() -> None:
    joiner = EventJoiner(wait_seconds=60)
    joiner.add_span(llm_span(), now=0, position=SourcePosition("spans", 3, 40))
    records = decode_genai_records(conversation("22" * 8), SourcePosition("logs", 3, 7)).records
    joiner.add_records(records, now=0)
    positions = joiner.held_positions()
    assert (SourcePosition("spans", 3, 40), SPAN) in positions
    assert (SourcePosition("logs", 3, 7), "22" * 8) in positions
    assert joiner.drop({("spans", 3), ("logs", 3)}) == 2
    assert joiner.held_positions() == []


def test_join_file_on_a_captured_operation_details_case() -> None:
    case = GOLDEN / "openai_v2_chat_events_latest"
    spans = Normalizer().normalize_request(decode_traces_json((case / "input.json").read_bytes()))
    assert all(not span.input_messages for span in spans)
    joined, unmatched = join_file(spans, (case / "logs.json").read_bytes())
    assert unmatched == []
    assert all(span.prompt_text and span.completion_text for span in joined)
    decoded = decode_genai_records(decode_logs_json((case / "logs.json").read_bytes()))
    assert {record.name for record in decoded.records} == {
        "gen_ai.client.inference.operation.details"
    }


def test_llmtap_normalize_joins_a_logs_file() -> None:
    from click.testing import CliRunner

    from llmtap.cli import cli

    case = GOLDEN / "openai_v2_tool_calls_events_2_1"
    arguments = ["normalize", str(case / "input.json"), "--no-price"]
    without = CliRunner().invoke(cli, arguments)
    joined = CliRunner().invoke(cli, [*arguments, "--logs", str(case / "logs.json")])
    assert without.exit_code == 0, without.output
    assert joined.exit_code == 0, joined.output
    assert '"completion_text"' not in without.stdout
    lines = joined.stdout.splitlines()
    assert len(lines) == 3
    assert '"tool_calls"' in joined.stdout
    assert '"prompt_text"' in joined.stdout
