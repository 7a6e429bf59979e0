"""A real single-node Apache Kafka broker (KRaft) on 127.0.0.1, for development, tests and the demo.

The broker's jars come from Maven Central through ``mvn`` (``org.apache.kafka:kafka_2.13`` and its
runtime dependencies) and are cached under ``<data_dir>/kafka/dist/<version>``; the broker's
state lives under ``<data_dir>/kafka/broker`` and survives stop/start, like a real broker's disk.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from llmtap.errors import DependencyMissingError, LocalKafkaError
from llmtap.settings import LocalKafkaSettings

Progress = Callable[[str], None]

# Kafka 4.x logs through SLF4J 1.7; this binding routes it to the log4j2 core Kafka already uses.
LOG4J_SLF4J_BINDING = "org.apache.logging.log4j:log4j-slf4j-impl:2.25.4"
BROKER_NODE_ID = 1
_COMPLETE_MARKER = ".complete"
_MAVEN_DOWNLOADED = re.compile(r"Downloaded from \S+: (\S+) \(([^)]*)\)")


@dataclass(frozen=True)
class BrokerState:
    """What a running broker left on disk so that other processes can find and stop it."""

    pid: int
    port: int
    controller_port: int
    version: str
    cluster_id: str
    started_at: float

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    state: BrokerState | None
    detail: str


class LocalKafkaBroker:
    """Fetches, formats, starts, inspects and stops the local development broker."""

    def __init__(
        self, settings: LocalKafkaSettings, root: Path, progress: Progress | None = None
    ) -> None:
        self._settings = settings
        self._root = root.resolve()
        self._progress = progress or (lambda message: None)

    # -- paths -----------------------------------------------------------------------------

    @property
    def dist_dir(self) -> Path:
        cache = self._settings.jar_cache_dir
        base = cache.resolve() if cache is not None else self._root / "dist"
        return base / self._settings.version

    @property
    def libs_dir(self) -> Path:
        return self.dist_dir / "libs"

    @property
    def broker_dir(self) -> Path:
        return self._root / "broker"

    @property
    def state_file(self) -> Path:
        return self.broker_dir / "state.json"

    @property
    def log_file(self) -> Path:
        return self.broker_dir / "logs" / "server.log"

    @property
    def _data_dir(self) -> Path:
        return self.broker_dir / "data"

    @property
    def _config_file(self) -> Path:
        return self.broker_dir / "server.properties"

    # -- fetch -----------------------------------------------------------------------------

    def is_fetched(self) -> bool:
        return (self.libs_dir / _COMPLETE_MARKER).is_file()

    def fetch(self) -> Path:
        """Resolve the broker's jars from Maven Central once; later calls reuse the cache."""
        if self.is_fetched():
            return self.libs_dir
        maven = self._require_executable(self._settings.maven_command, "Apache Maven (mvn)")
        self.dist_dir.mkdir(parents=True, exist_ok=True)
        pom = self.dist_dir / "pom.xml"
        pom.write_text(_pom_xml(self._settings.version), encoding="utf-8")
        staging = self.dist_dir / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        self._progress(
            f"fetching Apache Kafka {self._settings.version} jars from Maven Central "
            f"(first run only) into {self.libs_dir}"
        )
        command = [
            maven,
            "--batch-mode",
            "--file",
            str(pom),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        output_tail = self._run_maven(command)
        jars = sorted(staging.glob("*.jar")) if staging.is_dir() else []
        kafka_jar = f"kafka_2.13-{self._settings.version}.jar"
        if not any(jar.name == kafka_jar for jar in jars):
            raise LocalKafkaError(f"Maven did not produce {kafka_jar}; last output:\n{output_tail}")
        size_megabytes = sum(jar.stat().st_size for jar in jars) / 1e6
        (staging / _COMPLETE_MARKER).write_text(str(len(jars)), encoding="utf-8")
        shutil.rmtree(self.libs_dir, ignore_errors=True)
        staging.rename(self.libs_dir)
        self._progress(f"fetched {len(jars)} jars ({size_megabytes:.0f} MB)")
        return self.libs_dir

    def _run_maven(self, command: list[str]) -> str:
        tail: list[str] = []
        downloaded = 0
        downloaded_bytes = 0.0
        try:
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                cwd=self.dist_dir,
            )
        except OSError as error:
            raise DependencyMissingError(f"Cannot run {command[0]}: {error}") from None
        assert process.stdout is not None
        for line in process.stdout:
            tail = [*tail[-30:], line.rstrip()]
            match = _MAVEN_DOWNLOADED.search(line)
            if match:
                downloaded += 1
                downloaded_bytes += _maven_size_bytes(match.group(2))
                name = match.group(1).rsplit("/", 1)[-1]
                if downloaded % 25 == 0 or name.startswith("kafka_2.13-"):
                    self._progress(
                        f"  {downloaded} files downloaded ({downloaded_bytes / 1e6:.1f} MB), "
                        f"latest {name}"
                    )
        if process.wait() != 0:
            joined = "\n".join(tail)
            raise LocalKafkaError(
                f"Maven could not resolve Apache Kafka {self._settings.version} "
                f"(exit {process.returncode}). Is Maven Central reachable? Last output:\n{joined}"
            )
        if downloaded == 0:
            self._progress("  all artifacts were already in the local Maven repository")
        else:
            self._progress(f"  {downloaded} files downloaded ({downloaded_bytes / 1e6:.1f} MB)")
        return "\n".join(tail)

    # -- lifecycle -------------------------------------------------------------------------

    def status(self) -> BrokerStatus:
        state = self._read_state()
        if state is None:
            return BrokerStatus(running=False, state=None, detail="not running")
        if not self._is_our_process(state.pid):
            return BrokerStatus(
                running=False,
                state=state,
                detail=f"not running (stale state: process {state.pid} is gone)",
            )
        return BrokerStatus(
            running=True,
            state=state,
            detail=f"running, pid {state.pid}, bootstrap {state.bootstrap_servers}",
        )

    def start(self) -> BrokerState:
        """Start the broker and wait until it answers metadata requests."""
        current = self.status()
        if current.running and current.state is not None:
            raise LocalKafkaError(
                f"The local Kafka broker is already running (pid {current.state.pid}, "
                f"bootstrap {current.state.bootstrap_servers}). "
                "Use `llmtap dev kafka stop` first to restart it."
            )
        java = self._require_java()
        libs = self.fetch()
        for directory in (self._data_dir, self.log_file.parent):
            directory.mkdir(parents=True, exist_ok=True)
        port, controller_port = self._choose_ports(current.state)
        cluster_id = self._cluster_id()
        self._config_file.write_text(
            _server_properties(self._data_dir, port, controller_port), encoding="utf-8"
        )
        log4j_config = self.broker_dir / "log4j2.properties"
        log4j_config.write_text(_log4j2_properties(self.log_file), encoding="utf-8")
        classpath = f"{libs}/*"
        if not (self._data_dir / "meta.properties").is_file():
            self._progress(f"formatting KRaft storage in {self._data_dir}")
            self._run_java_tool(
                java,
                classpath,
                log4j_config,
                [
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={cluster_id}",
                    "--config",
                    str(self._config_file),
                    "--ignore-formatted",
                ],
            )
        self._progress(f"starting Apache Kafka {self._settings.version} on 127.0.0.1:{port}")
        heap = f"{self._settings.heap_megabytes}m"
        console_log = self.log_file.parent / "console.log"
        with console_log.open("ab") as console:
            process = subprocess.Popen(
                [
                    java,
                    f"-Xms{heap}",
                    f"-Xmx{heap}",
                    "-XX:+UseG1GC",
                    "-XX:MaxGCPauseMillis=20",
                    "-XX:+ExitOnOutOfMemoryError",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j2.configurationFile={log4j_config}",
                    f"-Dllmtap.broker.dir={self.broker_dir}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(self._config_file),
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives the CLI and ignores its Ctrl-C
                cwd=self.broker_dir,
            )
        state = BrokerState(
            pid=process.pid,
            port=port,
            controller_port=controller_port,
            version=self._settings.version,
            cluster_id=cluster_id,
            started_at=time.time(),
        )
        self._write_state(state)
        try:
            self._wait_until_ready(state, process)
        except BaseException:
            self._terminate(process.pid, grace_seconds=5)
            self.state_file.unlink(missing_ok=True)
            raise
        return state

    def stop(self, grace_seconds: float = 30.0) -> bool:
        """Stop the broker with a controlled shutdown; returns False if it was not running."""
        current = self.status()
        if current.state is None:
            return False
        if not current.running:
            self.state_file.unlink(missing_ok=True)
            return False
        self._progress(f"stopping the local Kafka broker (pid {current.state.pid})")
        self._terminate(current.state.pid, grace_seconds)
        self.state_file.unlink(missing_ok=True)
        return True

    def reset(self) -> None:
        """Delete the broker's data (topics, offsets), keeping the cached jars."""
        if self.status().running:
            raise LocalKafkaError("Stop the local Kafka broker before resetting its data.")
        shutil.rmtree(self.broker_dir, ignore_errors=True)

    # -- helpers ---------------------------------------------------------------------------

    def _wait_until_ready(self, state: BrokerState, process: subprocess.Popen[bytes]) -> None:
        from llmtap.kafka import broker_ids

        deadline = time.monotonic() + self._settings.start_timeout_seconds
        last_error = "no answer yet"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise LocalKafkaError(
                    f"The Kafka broker exited during start-up (exit {process.returncode}). "
                    f"Last lines of {self.log_file}:\n{self._log_tail()}"
                )
            try:
                if BROKER_NODE_ID in broker_ids(state.bootstrap_servers, timeout_seconds=2.0):
                    return
            except Exception as error:  # any client error means: not ready yet
                last_error = str(error)
            time.sleep(0.25)
        raise LocalKafkaError(
            f"The Kafka broker did not answer within {self._settings.start_timeout_seconds:.0f} s "
            f"({last_error}). Last lines of {self.log_file}:\n{self._log_tail()}"
        )

    def _run_java_tool(
        self, java: str, classpath: str, log4j_config: Path, arguments: list[str]
    ) -> None:
        result = subprocess.run(
            [java, f"-Dlog4j2.configurationFile={log4j_config}", "-cp", classpath, *arguments],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if result.returncode != 0:
            raise LocalKafkaError(
                f"{arguments[0]} {arguments[1]} failed (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr).strip()[-2000:]}"
            )

    def _terminate(self, pid: int, grace_seconds: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_seconds
        while time.monotonic() < deadline:
            if not _process_alive(pid):
                return
            time.sleep(0.1)
        self._progress(f"broker did not stop within {grace_seconds:.0f} s; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while _process_alive(pid):
            time.sleep(0.05)

    def _is_our_process(self, pid: int) -> bool:
        """True only for a live broker started from this folder (pids get reused)."""
        if not _process_alive(pid):
            return False
        try:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return True  # no /proc: trust the pid
        return f"-Dllmtap.broker.dir={self.broker_dir}".encode() in command_line

    def _choose_ports(self, previous: BrokerState | None) -> tuple[int, int]:
        """Configured ports win; otherwise reuse the last ones if free, so clients keep working."""
        wanted = [self._settings.port, self._settings.controller_port]
        remembered = self._read_remembered_ports()
        if previous is not None:
            remembered = (previous.port, previous.controller_port)
        chosen: list[int] = []
        for index, configured in enumerate(wanted):
            if configured:
                if not _port_is_free(configured):
                    raise LocalKafkaError(
                        f"Port 127.0.0.1:{configured} is in use; choose another with "
                        f"LLMTAP_LOCAL_KAFKA__{'PORT' if index == 0 else 'CONTROLLER_PORT'} "
                        "or 0 for a free one."
                    )
                chosen.append(configured)
            elif (
                remembered and _port_is_free(remembered[index]) and remembered[index] not in chosen
            ):
                chosen.append(remembered[index])
            else:
                chosen.append(_free_port(exclude=chosen))
        (self.broker_dir / "ports.json").write_text(json.dumps(chosen), encoding="utf-8")
        return chosen[0], chosen[1]

    def _read_remembered_ports(self) -> tuple[int, int] | None:
        try:
            ports = json.loads((self.broker_dir / "ports.json").read_text(encoding="utf-8"))
            return int(ports[0]), int(ports[1])
        except (OSError, ValueError, IndexError, TypeError):
            return None

    def _cluster_id(self) -> str:
        meta = self._data_dir / "meta.properties"
        if meta.is_file():
            for line in meta.read_text(encoding="utf-8").splitlines():
                if line.startswith("cluster.id="):
                    return line.split("=", 1)[1].strip()
        return _random_cluster_id()

    def _read_state(self) -> BrokerState | None:
        try:
            return BrokerState(**json.loads(self.state_file.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as error:
            raise LocalKafkaError(
                f"Cannot read {self.state_file} ({error}); delete it if no broker is running."
            ) from None

    def _write_state(self, state: BrokerState) -> None:
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
        temporary.replace(self.state_file)

    def _log_tail(self, lines: int = 25) -> str:
        chunks = []
        for path in (self.log_file, self.log_file.parent / "console.log"):
            with contextlib.suppress(OSError):
                chunks.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
        return "\n".join(chunks[-lines:]) or "(no log output)"

    def _require_java(self) -> str:
        java = self._require_executable(self._settings.java_command, "Java 17 or newer")
        result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
        match = re.search(r'version "(\d+)', result.stderr + result.stdout)
        if not match or int(match.group(1)) < 17:
            found = (result.stderr or result.stdout).strip().splitlines()[:1]
            raise DependencyMissingError(
                f"Apache Kafka 4 needs Java 17 or newer; {java} reports {found or 'nothing'}. "
                "Install a JDK 17+ or set LLMTAP_LOCAL_KAFKA__JAVA_COMMAND."
            )
        return java

    @staticmethod
    def _require_executable(command: str, what: str) -> str:
        path = shutil.which(command)
        if path is None:
            raise DependencyMissingError(
                f"{what} is needed for the local Kafka broker, but `{command}` is not on PATH. "
                "Install it, or point llmtap at an existing broker with "
                "LLMTAP_KAFKA__BOOTSTRAP_SERVERS."
            )
        return path


def _random_cluster_id() -> str:
    """Kafka's Uuid text form: URL-safe base64 of 16 random bytes, unpadded. Like Kafka's own
    generator it never starts with '-', which command-line parsers would take for an option."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive for our purposes.
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields and fields[0] == "Z":
            return False
    return True


def _maven_size_bytes(text: str) -> float:
    """Maven reports sizes like '1.6 MB at 2.0 MB/s'; the first figure is the file's size."""
    number, _, unit = text.split(" at ")[0].partition(" ")
    scale = {"B": 1.0, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}.get(unit.strip(), 0.0)
    try:
        return float(number) * scale
    except ValueError:
        return 0.0


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # The JVM binds with SO_REUSEADDR, so a port in TIME_WAIT after a stop is usable.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(exclude: list[int]) -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in exclude:
            return port
    raise LocalKafkaError("Could not find a free port on 127.0.0.1.")


def _pom_xml(version: str) -> str:
    group, artifact, log4j_version = LOG4J_SLF4J_BINDING.split(":")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by llmtap: resolves the Apache Kafka broker and its runtime dependencies. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.llmtap.local</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>{group}</groupId>
      <artifactId>{artifact}</artifactId>
      <version>{log4j_version}</version>
    </dependency>
  </dependencies>
</project>
"""


def _server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    # Single node, so every internal topic has replication factor 1. Topics are created
    # explicitly by llmtap (as in production), never implicitly by a producer's typo.
    lines = {
        "process.roles": "broker,controller",
        "node.id": str(BROKER_NODE_ID),
        "controller.quorum.voters": f"{BROKER_NODE_ID}@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "3",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "log.retention.hours": "168",
        "log.segment.bytes": str(256 * 1024 * 1024),
        # Room for llmtap's 16 MiB topics (large prompts); topics set their own limit.
        "message.max.bytes": str(17 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def _log4j2_properties(log_file: Path) -> str:
    return f"""# Generated by llmtap for the local development broker.
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log_file}
appender.file.filePattern = {log_file}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = WARN
"""


@contextlib.contextmanager
def running_broker(broker: LocalKafkaBroker) -> Iterator[BrokerState]:
    """Start the broker for the duration of a block, stopping it only if this block started it."""
    status = broker.status()
    if status.running and status.state is not None:
        yield status.state
        return
    state = broker.start()
    try:
        yield state
    finally:
        broker.stop()
