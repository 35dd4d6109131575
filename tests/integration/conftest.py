"""Fixtures for tests against a real Kafka broker (see tests/README.md).

Session broker: ``$RELAYER_TEST_BOOTSTRAP`` if set, else a local KRaft broker started through
pytest-kafka's ``make_kafka_server`` with our launcher (tools/kafka-server-start).
If no broker can be reached, the fixtures raise: tests fail, they are never skipped.

Private brokers: ``broker_factory`` (single nodes to stop, restart or start late) and
``kafka_cluster`` (a started 3-node cluster for the ``failover`` tests, which CI runs as a
separate step: ``-m failover``; the main run uses ``-m "not failover"``).

Databases (the last section): ``postgres_url`` is ``$RELAYER_TEST_DATABASE_URL`` if set, else a
local PostgreSQL server started for the session (tools/postgres_local.py); ``database_url``
runs a test on a new SQLite file and on a new PostgreSQL database. No Kafka needed for them.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest
from confluent_kafka import Consumer, KafkaException, Message
from confluent_kafka.admin import AdminClient, NewTopic
from pytest_kafka import make_kafka_server, terminate

from relayer import _producer

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tools import kafka_local, postgres_local  # noqa: E402  (needs sys.path above)
from tools.kafka_local import KafkaBroker, KafkaCluster  # noqa: E402

if TYPE_CHECKING:
    from sqlalchemy import Engine

HERE = Path(__file__).resolve().parent
LAUNCHER = REPO_ROOT / "tools" / "kafka-server-start"
START_TIMEOUT = 90  # seconds: a cold JVM on a busy 2-core CI machine


class Record(NamedTuple):
    """One consumed message (``value`` is None only for tombstones)."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str] | None = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.integration)


def close_open_relayers() -> None:
    """Close the relayers a test left open, while its broker still runs, so that none of
    them reconnects to a stopped broker (or waits for it) at interpreter exit."""
    for producer in list(_producer._live):
        producer.close(5)


@pytest.fixture(autouse=True)
def _close_relayers() -> Iterator[None]:
    yield
    close_open_relayers()


# --- session broker ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kraft_controller() -> tuple[None, int]:
    """pytest-kafka's "zookeeper fixture", reused for KRaft: ``(None, controller_port)``.

    ``make_kafka_server`` cannot do without one (tests/README.md says why). It renders
    ``{zk_port}`` from it; our template uses it as the controller port. Also fetches the
    jars here, before pytest-kafka's readiness timer starts.
    """
    kafka_local.ensure_jars()
    os.environ.setdefault("RELAYER_PYTHON", sys.executable)  # read by the launcher
    return None, kafka_local.free_port()


kafka_server = make_kafka_server(
    str(LAUNCHER),
    "kraft_controller",
    kafka_config_template=kafka_local.CONFIG_TEMPLATE,
    teardown_fn=functools.partial(terminate, wait_timeout=20),
    scope="session",
    timeout=START_TIMEOUT,
)


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """``host:port`` of the session's Kafka cluster (external or local)."""
    external = os.environ.get("RELAYER_TEST_BOOTSTRAP")
    if external:
        kafka_local.wait_ready(external, timeout=30)  # raises (test fails) if unreachable
        return external
    try:
        _, port = request.getfixturevalue("kafka_server")
    except Exception as exc:
        tmp = request.getfixturevalue("session_tmpdir_path")
        logs = [
            p
            for d in sorted(tmp.glob("kafka-server-*"))
            for p in (d / "broker.log", d / "broker.out")
        ]
        raise RuntimeError(
            f"local Kafka did not start ({exc!r})\n{kafka_local.log_tail(*logs)}"
        ) from exc
    bootstrap = f"127.0.0.1:{port}"
    kafka_local.wait_ready(bootstrap, timeout=30)
    return bootstrap


@pytest.fixture(scope="session")
def admin(kafka_bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": kafka_bootstrap})


# --- topics --------------------------------------------------------------------------------


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    timeout: float = 30.0,
    config: dict[str, str] | None = None,
    replication_factor: int = 1,
) -> str:
    """Create ``name`` and wait until metadata shows every partition with a leader
    (and, with ``replication_factor`` > 1, with all its replicas in sync)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(
        name,
        num_partitions=partitions,
        replication_factor=replication_factor,
        config=config or {},
    )
    admin.create_topics([new], operation_timeout=timeout)[name].result(timeout)
    deadline = time.monotonic() + timeout
    while True:
        topic = admin.list_topics(name, timeout=5).topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) == partitions
            and all(
                p.leader >= 0 and len(p.isrs) >= replication_factor
                for p in topic.partitions.values()
            )
        ):
            return name
        assert time.monotonic() < deadline, f"topic {name} has no leaders after {timeout} s"
        time.sleep(0.1)


@pytest.fixture(scope="session")
def topic_factory(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """``new_topic(partitions=1, prefix="t") -> str``: a fresh uuid-named topic, ready to use,
    on the session cluster. All are deleted at the end of the session (best effort)."""
    created: list[str] = []

    def new_topic(partitions: int = 1, prefix: str = "t") -> str:
        name = create_topic(kafka_bootstrap, f"{prefix}-{uuid.uuid4().hex[:12]}", partitions)
        created.append(name)
        return name

    yield new_topic
    if created:
        try:
            admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
            for future in admin.delete_topics(created, operation_timeout=10).values():
                future.result(10)
        except Exception:
            pass


@pytest.fixture
def new_topic(topic_factory: Callable[..., str]) -> Callable[..., str]:
    """Alias of ``topic_factory`` for use in a single test."""
    return topic_factory


@pytest.fixture(name="create_topic", scope="session")
def create_topic_fixture() -> Callable[..., str]:
    """The ``create_topic(bootstrap, name, partitions=1, timeout=30, config=None,
    replication_factor=1)`` helper, for brokers other than the session one (e.g. from
    ``broker_factory`` or ``kafka_cluster``)."""
    return create_topic


# --- consuming -----------------------------------------------------------------------------


def _consumer(bootstrap: str, topics: Sequence[str], on_assign: Callable[..., None]) -> Consumer:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe(list(topics), on_assign=on_assign)
    return c


def _record(msg: Message) -> Record:
    topic, partition = msg.topic(), msg.partition()
    assert topic is not None and partition is not None
    headers = {name: (value or b"").decode() for name, value in msg.headers() or ()}
    return Record(topic, partition, msg.key(), msg.value(), headers)


def consume(
    bootstrap: str, topics: Sequence[str] | str, n: int, timeout: float = 30.0
) -> list[Record]:
    """Read ``topics`` from the beginning (fresh group) until ``n`` records; fail on timeout."""
    topics = [topics] if isinstance(topics, str) else list(topics)
    records: list[Record] = []
    errors: list[str] = []
    consumer = _consumer(bootstrap, topics, lambda *_: None)
    deadline = time.monotonic() + timeout
    try:
        while len(records) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.fatal():
                    raise KafkaException(err)
                errors.append(str(err))
                continue
            records.append(_record(msg))
    finally:
        consumer.close()
    assert len(records) >= n, (
        f"consumed {len(records)} of {n} expected records from {topics} "
        f"in {timeout} s; errors: {errors[-5:]}"
    )
    return records


def consume_all(
    bootstrap: str, topics: Sequence[str] | str, idle: float = 2.0, timeout: float = 30.0
) -> list[Record]:
    """Read ``topics`` from the beginning until nothing new arrives for ``idle`` seconds
    (counted from partition assignment); fail if no assignment happens within ``timeout``."""
    topics = [topics] if isinstance(topics, str) else list(topics)
    records: list[Record] = []
    last: list[float] = []  # time of assignment / of the last record
    consumer = _consumer(bootstrap, topics, lambda *_: last.append(time.monotonic()))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                records.append(_record(msg))
                last.append(time.monotonic())
            elif last and time.monotonic() - last[-1] >= idle:
                return records
    finally:
        consumer.close()
    assert last, f"no partitions of {topics} assigned within {timeout} s"
    return records


@pytest.fixture(name="consume", scope="session")
def consume_fixture() -> Callable[..., list[Record]]:
    """The ``consume(bootstrap, topics, n, timeout=30)`` helper."""
    return consume


@pytest.fixture(name="consume_all", scope="session")
def consume_all_fixture() -> Callable[..., list[Record]]:
    """The ``consume_all(bootstrap, topics, idle=2.0, timeout=30)`` helper."""
    return consume_all


# --- private brokers -----------------------------------------------------------------------


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[Callable[..., KafkaBroker]]:
    """``make(**kwargs) -> KafkaBroker``: unstarted brokers with ports already chosen.

    For tests that stop/restart a broker or start it late. Needs local Java (+ Maven or a
    warm jar cache) even when ``RELAYER_TEST_BOOTSTRAP`` is set. Stopped at teardown.
    """
    brokers: list[KafkaBroker] = []

    def make(**kwargs: object) -> KafkaBroker:
        kwargs.setdefault("data_dir", tmp_path / f"broker-{len(brokers)}")
        broker = KafkaBroker(**kwargs)  # type: ignore[arg-type]
        brokers.append(broker)
        return broker

    yield make
    close_open_relayers()
    for broker in brokers:
        broker.stop()


@pytest.fixture
def kafka_cluster(tmp_path: Path) -> Iterator[KafkaCluster]:
    """A started 3-node KRaft cluster (every node broker + controller, ``-Xmx256m`` each),
    for tests that kill and restart nodes. Local Java needed, as for ``broker_factory``.
    Raises (the test fails) if it does not start; stopped and removed at teardown."""
    cluster = KafkaCluster(3, data_dir=tmp_path / "cluster")
    try:
        cluster.start()
    except BaseException:
        cluster.close(grace=5)
        raise
    yield cluster
    close_open_relayers()
    cluster.close(grace=10)


# --- databases: PostgreSQL and SQLite (the outbox tests) -----------------------------------
#
# Apart from the Kafka fixtures above: none of these needs a broker. SQLAlchemy and psycopg
# are imported only when a database fixture runs.

PG_START_TIMEOUT = 60  # seconds; it starts in about 1 s


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres_local.PostgresServer | None]:
    """The session's local PostgreSQL server (``tools.postgres_local.PostgresServer``), or
    None when ``$RELAYER_TEST_DATABASE_URL`` names one to use instead. Raises (the tests
    fail) if it cannot start; stopped, and its temp dir removed, at the end of the session."""
    if postgres_local.external_database_url() is not None:  # ValueError if not PostgreSQL
        yield None
        return
    server = postgres_local.PostgresServer()
    server.start(timeout=PG_START_TIMEOUT)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: postgres_local.PostgresServer | None) -> str:
    """SQLAlchemy URL of the session's PostgreSQL database: ``$RELAYER_TEST_DATABASE_URL``
    (which must be a PostgreSQL URL, and answer within 30 s), else the local server's
    ``postgresql+psycopg://postgres@127.0.0.1:PORT/relayer_test``. Shared by the whole
    session: tests that write use ``database_url`` instead."""
    external = postgres_local.external_database_url()
    if external is not None:
        postgres_local.wait_ready(external, timeout=30)  # raises (test fails) if unreachable
        return external
    assert postgres_server is not None
    return postgres_server.url


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Runs the test twice. ``sqlite``: ``sqlite:///<tmp_path>/outbox.db`` (not created yet).
    ``postgresql``: a new empty database ``t_<32 hex>`` on the ``postgres_url`` server,
    dropped at teardown (``WITH (FORCE)``). Engines from ``engine_factory`` are disposed of
    before that; dispose of any other engine in the test itself.

    One backend only: ``@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)``.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'outbox.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    url = postgres_local.create_database(base)
    try:
        yield url
    finally:
        postgres_local.drop_database(url, base)


@pytest.fixture
def engine_factory(database_url: str) -> Iterator[Callable[..., Engine]]:
    """``make(url=None, **kwargs) -> Engine``: ``sqlalchemy.create_engine(url or
    database_url, **kwargs)``. Every engine made is disposed of at teardown, before the
    database is dropped."""
    from sqlalchemy import create_engine

    engines: list[Engine] = []

    def make(url: str | None = None, **kwargs: object) -> Engine:
        engine = create_engine(url or database_url, **kwargs)  # type: ignore[arg-type]
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.dispose()
