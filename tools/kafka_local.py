"""Fetch and run a local KRaft Kafka broker (or a 3-node cluster), without Docker.

Jars come from Maven Central (``mvn``) into a cache outside the repository,
``$RELAYER_KAFKA_CACHE/kafka-<version>/libs`` (default root: ``~/.cache/relayer``).

    python -m tools.kafka_local fetch              # download the jars only
    python -m tools.kafka_local run [--port 9092]  # foreground broker until Ctrl-C
    python -m tools.kafka_local serve CONFIG       # format if needed, exec java (tools/kafka-server-start)

``KafkaBroker`` is a restartable single node; ``KafkaCluster`` is several combined
broker+controller nodes (a real quorum) whose nodes can be killed and restarted one by one.

Standard library only, except ``wait_ready`` (confluent-kafka) and optionally ``port_for``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

KAFKA_VERSION = "4.2.1"
MAVEN_DEPENDENCIES = [  # slf4j-api first: it overrides the slf4j 1.7 that kafka depends on
    ("org.slf4j", "slf4j-api", "2.0.17"),
    ("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
    ("org.apache.logging.log4j", "log4j-slf4j2-impl", "2.24.3"),
    ("org.apache.logging.log4j", "log4j-core", "2.24.3"),
]
# Small heap, serial GC, C1-only JIT, class-data sharing: fastest start on a 2-core machine.
JVM_FLAGS = [
    "-Xms64m",
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
]

# Shared by KafkaBroker and pytest-kafka's make_kafka_server, hence pytest-kafka's keys:
# kafka_port, kafka_log_dir and zk_port, which (no ZooKeeper in Kafka 4) is the controller port.
CONFIG_TEMPLATE = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{zk_port}
listeners=PLAINTEXT://127.0.0.1:{kafka_port},CONTROLLER://127.0.0.1:{zk_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{kafka_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={kafka_log_dir}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
num.partitions=1
auto.create.topics.enable=true
num.network.threads=2
num.io.threads=2
"""
# WARN and above (plus the "Kafka Server started" line) to a file, nothing on the console.
LOG4J2_TEMPLATE = """\
status = warn
shutdownHook = disable
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""

try:  # Linux: the broker gets SIGKILL when the process that started it dies (PR_SET_PDEATHSIG)
    import ctypes

    _prctl: Any = ctypes.CDLL(None).prctl
except (OSError, AttributeError):
    _prctl = None


def _die_with_parent() -> None:
    if _prctl is not None:
        _prctl(1, signal.SIGKILL)


def jar_dir() -> Path:
    """Where the jars of ``KAFKA_VERSION`` are (or will be) cached."""
    root = os.environ.get("RELAYER_KAFKA_CACHE") or Path.home() / ".cache" / "relayer"
    return Path(root).expanduser() / f"kafka-{KAFKA_VERSION}" / "libs"


def java_bin() -> str:
    """``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not os.access(java, os.X_OK):
        raise RuntimeError("java (17+) not found: install a JDK or set JAVA_HOME")
    return java


def ensure_jars() -> Path:
    """Return the jar directory, fetching it with Maven first if it is not cached.

    Maven writes into a temp dir next to the cache, renamed into place when complete,
    so an interrupted fetch never leaves a half-filled cache.
    """
    libs = jar_dir()
    if (libs / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError(
            "mvn not found: install Maven (apt-get install maven) to fetch the Kafka jars"
        )
    java_bin()
    libs.parent.mkdir(parents=True, exist_ok=True)
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in MAVEN_DEPENDENCIES
    )
    with tempfile.TemporaryDirectory(dir=libs.parent, prefix=".fetch-") as tmp:
        (Path(tmp) / "pom.xml").write_text(
            '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
            "<groupId>relayer</groupId><artifactId>kafka-jars</artifactId><version>1</version>"
            f"<packaging>pom</packaging><dependencies>{deps}</dependencies></project>"
        )
        cmd = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            f"{tmp}/pom.xml",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}/libs",
            "-DincludeScope=runtime",
        ]
        res = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
        )
        if res.returncode != 0:
            tail = "\n".join(res.stdout.splitlines()[-30:])
            raise RuntimeError(f"fetching the Kafka jars failed: {' '.join(cmd)}\n{tail}")
        try:
            os.rename(f"{tmp}/libs", libs)
        except OSError:  # another process completed the same fetch first
            if not libs.is_dir():
                raise
    return libs


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (outside the ephemeral range if port_for is installed)."""
    try:
        import port_for

        return int(port_for.select_random())
    except ImportError:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def cluster_id(log_dir: Path) -> str | None:
    """The cluster id that ``log_dir`` was formatted with (None if not formatted yet)."""
    meta = Path(log_dir) / "meta.properties"
    found = (
        re.search(r"^cluster\.id=(\S+)", meta.read_text(), re.MULTILINE) if meta.exists() else None
    )
    return found[1] if found else None


def prepare(
    config_path: Path,
    format_args: tuple[str, ...] = (),
    cluster: str | None = None,
    heap: str | None = None,
) -> list[str]:
    """Write the log4j2 config, format the storage if new; return the broker's argv.

    ``format_args`` go to ``StorageTool format`` (e.g. ``--add-scram ...``). ``cluster`` is
    the cluster id to format with (default: a new random one; the nodes of one cluster must
    share it). ``heap`` replaces the default maximum heap (``-Xmx``), e.g. ``"256m"``.

    Logs go next to the config file: ``broker.log`` (log4j) and ``broker.out`` (JVM output).
    """
    config_path = Path(config_path).resolve()
    log4j = config_path.parent / "log4j2.properties"
    log4j.write_text(LOG4J2_TEMPLATE.format(log_file=config_path.parent / "broker.log"))
    flags = [f"-Xmx{heap}" if heap and f.startswith("-Xmx") else f for f in JVM_FLAGS]
    java = [
        java_bin(),
        *flags,
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        f"{ensure_jars()}/*",
    ]
    log_dir = re.search(r"^log\.dirs=([^,\n]+)", config_path.read_text(), re.MULTILINE)
    if log_dir is None or cluster_id(Path(log_dir[1].strip())) is None:
        new_id = cluster or new_cluster_id()
        res = subprocess.run(
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={new_id}",  # "=": an id may start with "-"
                f"--config={config_path}",
                *format_args,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0:
            raise RuntimeError(f"formatting the Kafka storage failed:\n{res.stdout}{res.stderr}")
    return [*java, "kafka.Kafka", str(config_path)]


def new_cluster_id() -> str:
    """A random KRaft cluster id (22 characters of URL-safe base64, like ``kafka-storage
    random-uuid``)."""
    while True:  # as Kafka's Uuid.randomUuid(): none that starts with "-" (CLIs read an option)
        new = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not new.startswith("-"):
            return new


def log_tail(*paths: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of each existing file, without Java stack frames."""

    def tail(path: Path) -> str:
        kept = [
            ln for ln in path.read_text(errors="replace").splitlines() if not ln.startswith("\tat ")
        ]
        return "\n".join(kept[-lines:])

    text = "\n".join(f"--- {p} ---\n{tail(p)}" for p in map(Path, paths) if p.is_file())
    return text or ("(no broker log yet)" if paths else "")


def wait_ready(
    bootstrap: str,
    timeout: float = 60.0,
    proc: subprocess.Popen[bytes] | None = None,
    logs: tuple[Path, ...] = (),
    cluster: str | None = None,
) -> None:
    """Wait until the cluster at ``bootstrap`` answers a metadata request with its brokers
    (and, if given, with the id ``cluster``, so that a foreign broker on the port is not taken
    for ours). Raises RuntimeError, with the tail of ``logs``, if ``proc`` exits or on timeout.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "log_level": 0,
            "reconnect.backoff.ms": 50,
            "reconnect.backoff.max.ms": 300,
        }
    )
    deadline = time.monotonic() + timeout
    while proc is None or proc.poll() is None:
        try:
            metadata = admin.list_topics(timeout=1)
            if metadata.brokers and cluster in (None, metadata.cluster_id):
                return
        except KafkaException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Kafka at {bootstrap} not ready after {timeout:.0f} s\n{log_tail(*logs)}"
            )
        time.sleep(0.1)
    raise RuntimeError(
        f"Kafka at {bootstrap} exited with code {proc.returncode}\n{log_tail(*logs)}"
    )


_RUNNING: set[KafkaBroker] = set()  # stopped at interpreter exit


@atexit.register
def _close_all() -> None:
    for broker in list(_RUNNING):
        broker.close(grace=5)


class KafkaBroker:
    """A restartable single-node KRaft broker (combined broker + controller) on 127.0.0.1.

    Ports are chosen at construction, so clients can be configured before ``start()``.
    Storage is formatted on the first start only: ``stop()`` then ``start()`` keeps the data.
    """

    def __init__(
        self,
        port: int | None = None,
        controller_port: int | None = None,
        data_dir: Path | None = None,
        extra_config: dict[str, Any] | None = None,
        format_args: tuple[str, ...] = (),
        *,
        cluster: str | None = None,
        heap: str | None = None,
    ):
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        while self.controller_port == self.port:
            self.controller_port = free_port()
        self._temp_dir = data_dir is None  # removed by close()
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="relayer-kafka-")).resolve()
        self.config_path = self.data_dir / "server.properties"
        self.log_dir = self.data_dir / "kraft"  # Kafka's log.dirs
        self.logs = (self.data_dir / "broker.log", self.data_dir / "broker.out")
        self.extra_config = dict(extra_config or {})  # overrides the template's keys
        self.format_args = tuple(format_args)  # extra StorageTool format arguments
        self.cluster = cluster  # cluster id to format with (None: a new random one)
        self.heap = heap  # -Xmx value (None: JVM_FLAGS' default)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None  # how long the last start() took

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 60.0) -> KafkaBroker:
        """(Re)start the broker and wait until it answers, at most ``timeout`` seconds."""
        if self.running:
            return self
        t0 = time.monotonic()
        self.launch(self.prepare())
        self.wait_started(timeout)
        self.start_seconds = time.monotonic() - t0
        return self

    def prepare(self) -> list[str]:
        """Write the config files and format the storage if new; return the JVM's argv.

        The slow part of a first start; safe to run in any thread (``KafkaCluster`` formats
        its nodes in parallel).
        """
        ensure_jars()  # a first fetch is not counted in ``timeout``
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = CONFIG_TEMPLATE.format(
            kafka_port=self.port, zk_port=self.controller_port, kafka_log_dir=self.log_dir
        )
        self.config_path.write_text(
            config + "".join(f"{k}={v}\n" for k, v in self.extra_config.items())
        )
        return prepare(self.config_path, self.format_args, self.cluster, self.heap)

    def launch(self, argv: list[str]) -> None:
        """Start the JVM (``argv`` from :meth:`prepare`) without waiting for it.

        From the main thread the broker also gets SIGKILL if this process dies. Linux sends
        that signal when the *thread* that forked the broker ends, so from any other thread
        this is left out: the ``atexit`` hook (and the fixtures' teardown) still stop it.
        """
        on_main_thread = threading.current_thread() is threading.main_thread()
        with open(self.logs[1], "ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=_die_with_parent if on_main_thread else None,
            )
        _RUNNING.add(self)

    def wait_started(self, timeout: float = 60.0) -> None:
        """Wait until the launched broker answers; SIGKILL it and raise if it does not."""
        try:
            wait_ready(self.bootstrap, timeout, self.proc, self.logs, cluster_id(self.log_dir))
        except BaseException:
            self.kill()
            raise

    def _signal(self, sig: int) -> None:
        if self.running:
            try:
                os.killpg(self.proc.pid, sig)  # type: ignore[union-attr]
            except ProcessLookupError:
                pass

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM (clean shutdown), then SIGKILL after ``grace`` seconds."""
        self._signal(signal.SIGTERM)
        try:
            if self.proc is not None:
                self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
        _RUNNING.discard(self)

    def kill(self) -> None:
        """SIGKILL the broker's process group: a crash, no clean shutdown."""
        self._signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        _RUNNING.discard(self)

    def close(self, grace: float = 20.0) -> None:
        """Stop for good, and remove the data dir if __init__ made it (temp dir)."""
        self.stop(grace)
        if self._temp_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# Overrides of CONFIG_TEMPLATE for the nodes of a KafkaCluster: replicated internal topics, and
# a dead node fenced (its partitions moved to a new leader) within ~3 s instead of 9.
CLUSTER_CONFIG: dict[str, Any] = {
    "offsets.topic.replication.factor": 3,
    "transaction.state.log.replication.factor": 3,
    "transaction.state.log.min.isr": 2,
    "share.coordinator.state.topic.replication.factor": 3,
    "share.coordinator.state.topic.min.isr": 2,
    "default.replication.factor": 3,
    "broker.heartbeat.interval.ms": 500,
    "broker.session.timeout.ms": 3000,
}


class KafkaCluster:
    """``size`` combined broker+controller KRaft nodes on 127.0.0.1 (node ids 1..size), with a
    static quorum (``controller.quorum.voters`` lists them all) and one shared cluster id.

    Nodes start in parallel. ``kill(node_id)`` crashes one (SIGKILL), ``stop(node_id)`` shuts it
    down cleanly and ``start(node_id)`` restarts it with its data. All ports are chosen at
    construction, so ``bootstrap`` (every node) can be handed to clients before ``start()``.
    """

    def __init__(
        self,
        size: int = 3,
        data_dir: Path | None = None,
        extra_config: dict[str, Any] | None = None,
        heap: str = "256m",
    ):
        ports: list[int] = []
        while len(ports) < 2 * size:  # all distinct: a client port and a controller port each
            port = free_port()
            if port not in ports:
                ports.append(port)
        self._temp_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="relayer-kafka-cluster-"))
        self.cluster = new_cluster_id()
        voters = ",".join(f"{i + 1}@127.0.0.1:{ports[size + i]}" for i in range(size))
        self.nodes: dict[int, KafkaBroker] = {}
        for i in range(size):
            node_id = i + 1
            config = {
                **CLUSTER_CONFIG,
                **(extra_config or {}),
                "node.id": node_id,
                "controller.quorum.voters": voters,
            }
            self.nodes[node_id] = KafkaBroker(
                ports[i],
                ports[size + i],
                self.data_dir / f"node-{node_id}",
                extra_config=config,
                cluster=self.cluster,
                heap=heap,
            )
        self.start_seconds: float | None = None  # how long the last start() took

    @property
    def bootstrap(self) -> str:
        """Every node's ``host:port``, comma-separated."""
        return ",".join(node.bootstrap for node in self.nodes.values())

    @property
    def logs(self) -> tuple[Path, ...]:
        return tuple(path for node in self.nodes.values() for path in node.logs)

    def running(self, node_id: int) -> bool:
        return self.nodes[node_id].running

    def start(self, node_id: int | None = None, timeout: float = 120.0) -> KafkaCluster:
        """Start (or restart) one node, or every node that is not running (in parallel);
        return once all of them serve metadata listing every running node."""
        ensure_jars()
        t0 = time.monotonic()
        ids = [node_id] if node_id is not None else list(self.nodes)
        todo = [self.nodes[i] for i in ids if not self.nodes[i].running]
        # Format in parallel threads; launch from this thread (see KafkaBroker.launch).
        argvs: dict[int, list[str]] = {}
        errors: list[BaseException] = []

        def prepare_one(index: int, node: KafkaBroker) -> None:
            try:
                argvs[index] = node.prepare()
            except BaseException as exc:  # re-raised below, in the caller's thread
                errors.append(exc)

        threads = [
            threading.Thread(target=prepare_one, args=(i, node)) for i, node in enumerate(todo)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        for i, node in enumerate(todo):
            node.launch(argvs[i])
        try:
            for node in todo:  # a node answers once the quorum (a majority) is up
                node.wait_started(timeout)
        except BaseException:
            for node in todo:
                node.kill()
            raise
        self.wait_brokers(sum(n.running for n in self.nodes.values()), timeout)
        self.start_seconds = time.monotonic() - t0
        return self

    def wait_brokers(self, count: int, timeout: float = 60.0) -> None:
        """Wait until cluster metadata lists ``count`` brokers (e.g. after a restart)."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + timeout
        found = 0
        while time.monotonic() < deadline:
            try:
                found = len(admin.list_topics(timeout=2).brokers)
                if found >= count:
                    return
            except KafkaException:
                pass
            time.sleep(0.2)
        raise RuntimeError(
            f"cluster at {self.bootstrap} lists {found} of {count} brokers after {timeout:.0f} s"
            f"\n{log_tail(*self.logs, lines=15)}"
        )

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: a crash, no controlled shutdown."""
        self.nodes[node_id].kill()

    def stop(self, node_id: int | None = None, grace: float = 20.0) -> None:
        """Shut down one node (or all, in parallel) cleanly: SIGTERM, SIGKILL after ``grace``."""
        nodes = [self.nodes[node_id]] if node_id is not None else list(self.nodes.values())
        for node in nodes:
            node._signal(signal.SIGTERM)
        for node in nodes:
            node.stop(grace)

    def close(self, grace: float = 20.0) -> None:
        """Stop every node for good; remove the data dir if __init__ made it (temp dir)."""
        self.stop(grace=grace)
        if self._temp_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.kafka_local", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download the Kafka jars into the cache")
    run = sub.add_parser("run", help="run a broker in the foreground until Ctrl-C")
    run.add_argument("--port", type=int, default=9092)
    run.add_argument("--controller-port", type=int)
    run.add_argument("--data-dir", type=Path, help="keep the data there (default: a temp dir)")
    serve = sub.add_parser("serve", help="format the storage if needed, then exec the broker")
    serve.add_argument("config", type=Path)
    args = parser.parse_args(argv)

    if args.cmd == "fetch":
        t0 = time.monotonic()
        print(f"{ensure_jars()} ({time.monotonic() - t0:.1f} s)")
    elif args.cmd == "serve":
        argv = prepare(args.config)
        with open(args.config.resolve().parent / "broker.out", "ab") as out:
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
        _die_with_parent()
        os.execv(argv[0], argv)  # same pid: the caller's SIGTERM reaches the JVM
    else:
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # like Ctrl-C
        with KafkaBroker(args.port, args.controller_port, args.data_dir) as broker:
            print(
                f"Kafka {KAFKA_VERSION} ready at {broker.bootstrap} in {broker.start_seconds:.1f} s "
                f"(data: {broker.data_dir}). Ctrl-C to stop.",
                flush=True,
            )
            return serve_until_interrupted(broker)
    return 0


def serve_until_interrupted(broker: KafkaBroker) -> int:
    """Wait on a started broker until Ctrl-C (0) or until it dies (1, with its log tail)."""
    try:
        code = broker.proc.wait()  # type: ignore[union-attr]
        print(f"Kafka exited with code {code}\n{log_tail(*broker.logs)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
        return 0


if __name__ == "__main__":
    sys.exit(main())
