"""The transactional outbox (``relayer.outbox``) against a real Kafka broker, on SQLite and on
PostgreSQL (each test that takes ``database_url`` runs on both).

- commit: delivered once, its row deleted; rollback (and a rolled-back savepoint): nothing;
- a writer SIGKILLed right after committing, Kafka unreachable: a relay started later
  (``relayer outbox relay --once``) delivers every committed event, each exactly once;
- two relays at once: no row sent twice, and each relay sent some;
- the broker down longer than ``message.timeout.ms``: the rows stay (the failures counted),
  and are delivered once it is back;
- what was fixed in ``relayer/outbox.py``: SQLite writers never wait for a relay waiting on
  Kafka; ``stop()`` does not stop the deletion of delivered rows; outboxes started at once
  on an empty PostgreSQL database all start.

"Exactly once" is checked on the topic itself: every committed ``event_id`` is read back
once, and the partition's end offset equals the number of committed events (nothing extra).
The figures are printed (``-s``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from sqlalchemy import Engine, create_engine, func, inspect, select
from sqlalchemy.orm import Session

from relayer import Relayer
from relayer.outbox import Outbox, outbox_table

REPO_ROOT = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).resolve().parent / "outbox_writer.py"
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
UNREACHABLE = "127.0.0.1:1"  # nothing listens there
KILL_EVENTS = 500
TWO_RELAYS_EVENTS = 3_000
TWO_RELAYS_BATCH = 25
OUTAGE_EVENTS = 20
MESSAGE_TIMEOUT_MS = 3_000
COUNTS = re.compile(r"(\d+) delivered, (\d+) not delivered, (\d+) pending")


# --- helpers -------------------------------------------------------------------------------


def pending(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(outbox_table())).scalar_one()
        )


def event_ids(records: Sequence[Any]) -> list[str]:
    """The ``event_id`` of each record, checked against its header."""
    ids = []
    for record in records:
        event = orjson.loads(record.value)
        assert record.headers["event_id"] == event["event_id"], (record.headers, event)
        ids.append(event["event_id"])
    return ids


def end_offset(bootstrap: str, topic: str) -> int:
    """The high watermark of partition 0: how many messages the topic holds."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "outbox-offsets"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1])
    finally:
        consumer.close()


def read_exactly(
    bootstrap: str, topic: str, expected: Sequence[str], consume: Callable[..., list[Any]]
) -> Counter[str]:
    """Read ``topic`` and check it holds each of ``expected`` once and nothing else; return
    the count of each event id read (for the figures)."""
    records = consume(bootstrap, topic, len(expected), timeout=60)
    got = Counter(event_ids(records))
    twice = {i: n for i, n in got.items() if n > 1}
    assert not twice, f"{len(twice)} event ids delivered more than once, e.g. {list(twice)[:3]}"
    missing = set(expected) - set(got)
    extra = set(got) - set(expected)
    assert not missing and not extra, (len(missing), len(extra))
    held = end_offset(bootstrap, topic)
    assert held == len(expected), f"the topic holds {held} messages, {len(expected)} committed"
    return got


def run_writer(url: str, topic: str, count: int, per_commit: int, tmp_path: Path) -> list[str]:
    """Run ``outbox_writer.py`` until it SIGKILLs itself; return the event ids it committed."""
    ids_path, stderr_path = tmp_path / "committed", tmp_path / "writer.stderr"
    with open(stderr_path, "wb") as stderr:
        done = subprocess.run(
            [sys.executable, str(WRITER), url, topic, str(count), str(per_commit), str(ids_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=ENV,
            timeout=120,
        )
    assert done.returncode == -9, (done.returncode, stderr_path.read_text()[-2000:])
    return ids_path.read_text().split()


def relay_command(url: str, bootstrap: str, *options: str) -> list[str]:
    argv = [sys.executable, "-m", "relayer", "outbox", "relay", "--once", "--db", url]
    return [*argv, "-b", bootstrap, "--relay-after", "0", *options]


def relay_counts(returncode: int, stdout: bytes, stderr: bytes) -> tuple[int, int, int]:
    """``(delivered, not delivered, pending)`` from a ``relay --once`` that exited 0."""
    assert returncode == 0, (returncode, stdout, stderr[-2000:])
    match = COUNTS.search(stdout.decode())
    assert match is not None, stdout
    delivered, failed, left = (int(n) for n in match.groups())
    return delivered, failed, left


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait until ``condition()``; return the seconds it took (fail after ``timeout``)."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what}: not after {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - started


# --- commit, rollback ----------------------------------------------------------------------


def test_commit_delivers_once_rollback_nothing(
    database_url: str,
    engine_factory: Callable[..., Engine],
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    consume: Callable[..., list[Any]],
) -> None:
    topic = new_topic(prefix="outbox")
    engine = engine_factory()
    relayer = Relayer("logs", kafka_hosts=kafka_bootstrap, kafka_headers=True)
    outbox = Outbox(relayer, engine)
    committed, rolled_back = [], []
    with Session(engine) as session:
        committed += [outbox.emit(session, topic, "created", {"i": i}) for i in range(3)]
        with session.begin_nested():  # a savepoint released: its event goes with the commit
            committed.append(outbox.emit(session, topic, "created", {"i": 3}))
        savepoint = session.begin_nested()
        rolled_back.append(outbox.emit(session, topic, "created", {"i": "savepoint"}))
        savepoint.rollback()
        session.commit()
    with Session(engine) as session:
        rolled_back += [outbox.emit(session, topic, "created", {"i": "rb"}) for _ in range(2)]
        session.rollback()
    assert outbox.flush(10) == 0
    assert pending(engine) == 0  # each delivered row deleted, no rolled-back row written
    read_exactly(kafka_bootstrap, topic, committed, consume)
    # Nothing is left for a relay to send again.
    late = Outbox(relayer, engine, relay_after=0)
    assert late.relay_once() == 0 and late.counts["failed"] == 0
    late.close()
    assert outbox.close() == 0
    assert outbox.stats()["producer_delivered"] == len(committed)
    relayer.close()


# --- SIGKILL right after committing --------------------------------------------------------


def test_sigkill_after_commit_then_a_relay_delivers_each_event_once(
    database_url: str,
    engine_factory: Callable[..., Engine],
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    consume: Callable[..., list[Any]],
    tmp_path: Path,
) -> None:
    topic = new_topic(prefix="outboxkill")
    committed = run_writer(database_url, topic, KILL_EVENTS, 1, tmp_path)
    engine = engine_factory()
    assert len(committed) == len(set(committed)) == KILL_EVENTS
    assert pending(engine) == KILL_EVENTS  # every committed row survived the kill
    done = subprocess.run(
        relay_command(database_url, kafka_bootstrap), capture_output=True, env=ENV, timeout=120
    )
    delivered, failed, left = relay_counts(done.returncode, done.stdout, done.stderr)
    got = read_exactly(kafka_bootstrap, topic, committed, consume)
    duplicates = sum(got.values()) - len(got)
    print(
        f"\n[{database_url.split(':')[0]}] SIGKILL after commit, Kafka unreachable: "
        f"{len(committed)} committed, relay delivered {delivered} ({failed} not delivered), "
        f"{len(got)} distinct event ids read back, {duplicates} duplicates, "
        f"{pending(engine)} rows pending"
    )
    assert (delivered, failed, left) == (KILL_EVENTS, 0, 0)
    assert pending(engine) == 0


# --- two relays at once --------------------------------------------------------------------


def test_two_relays_at_once_never_send_a_row_twice(
    database_url: str,
    engine_factory: Callable[..., Engine],
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    consume: Callable[..., list[Any]],
    tmp_path: Path,
) -> None:
    topic = new_topic(prefix="outboxtwo")
    committed = run_writer(database_url, topic, TWO_RELAYS_EVENTS, 100, tmp_path)
    engine = engine_factory()
    assert pending(engine) == len(committed) == TWO_RELAYS_EVENTS
    argv = relay_command(database_url, kafka_bootstrap, "--batch", str(TWO_RELAYS_BATCH))
    relays = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        for _ in range(2)
    ]
    outputs = [relay.communicate(timeout=120) for relay in relays]
    counts = [relay_counts(r.returncode, *out) for r, out in zip(relays, outputs)]
    got = read_exactly(kafka_bootstrap, topic, committed, consume)
    duplicates = sum(got.values()) - len(got)
    print(
        f"\n[{database_url.split(':')[0]}] two relays at once, batches of {TWO_RELAYS_BATCH}: "
        f"{len(committed)} rows; relay 1 delivered {counts[0][0]}, relay 2 {counts[1][0]}; "
        f"{len(got)} distinct event ids read back, {duplicates} duplicates"
    )
    assert [failed for _, failed, _ in counts] == [0, 0]
    assert counts[0][0] + counts[1][0] == TWO_RELAYS_EVENTS  # no row sent by both
    assert counts[0][0] > 0 and counts[1][0] > 0, "one relay sent everything: no overlap"
    assert pending(engine) == 0


# --- the broker down longer than message.timeout.ms ----------------------------------------


def wait_for_leader(bootstrap: str, topic: str, timeout: float = 30) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "outbox-leader"})

    def has_leader() -> bool:
        metadata = consumer.list_topics(topic, timeout=5).topics.get(topic)
        return (
            metadata is not None and metadata.error is None and metadata.partitions[0].leader >= 0
        )

    try:
        wait_for(has_leader, timeout, f"a leader for {topic}")
    finally:
        consumer.close()


def test_broker_down_past_message_timeout_rows_stay_then_are_relayed(
    database_url: str,
    engine_factory: Callable[..., Engine],
    broker_factory: Callable[..., Any],
    create_topic: Callable[..., str],
    consume: Callable[..., list[Any]],
) -> None:
    broker = broker_factory().start()
    topic = create_topic(broker.bootstrap, f"outage-{os.urandom(6).hex()}")
    engine = engine_factory()
    relayer = Relayer(
        "logs",
        kafka_hosts=broker.bootstrap,
        kafka_headers=True,
        producer_opts={"message.timeout.ms": MESSAGE_TIMEOUT_MS},
    )
    outbox = Outbox(relayer, engine, relay_after=0)
    with Session(engine) as session:  # while the broker is up: delivered, deleted
        committed = [outbox.emit(session, topic, "created", {"i": "before"})]
        session.commit()
    assert outbox.flush(10) == 0 and pending(engine) == 0

    broker.stop()
    down = []
    for i in range(OUTAGE_EVENTS):
        with Session(engine) as session:
            down.append(outbox.emit(session, topic, "created", {"i": i}))
            session.commit()
    took = wait_for(
        lambda: outbox.stats()["producer_failed"] == OUTAGE_EVENTS,
        MESSAGE_TIMEOUT_MS / 1000 + 10,
        "the produce after each commit to time out",
    )
    stats = outbox.stats()
    during = stats["pending"]
    assert during == OUTAGE_EVENTS, stats  # each failed produce left its row
    # A relay while the broker is still down: nothing delivered, the failures counted.
    assert outbox.relay_once() == 0
    stats = outbox.stats()
    assert (stats["relayed"], stats["failed"], stats["pending"]) == (0, OUTAGE_EVENTS, during)

    broker.start()
    wait_for_leader(broker.bootstrap, topic)
    delivered = outbox.relay_once()
    got = read_exactly(broker.bootstrap, topic, committed + down, consume)
    print(
        f"\n[{database_url.split(':')[0]}] broker down past message.timeout.ms="
        f"{MESSAGE_TIMEOUT_MS}: {OUTAGE_EVENTS} committed while down, all {OUTAGE_EVENTS} "
        f"produces failed after {took:.1f} s, a relay while down delivered 0; {during} rows "
        f"pending during the outage; after the restart the relay delivered {delivered}, "
        f"{pending(engine)} pending; {sum(got.values()) - len(got)} duplicates"
    )
    assert delivered == OUTAGE_EVENTS and pending(engine) == 0
    assert outbox.stats()["relayed"] == OUTAGE_EVENTS
    outbox.close()
    relayer.close()


# --- what was fixed in relayer/outbox.py ---------------------------------------------------


def test_writers_never_wait_for_a_relay_waiting_on_kafka(
    database_url: str, engine_factory: Callable[..., Engine]
) -> None:
    """SQLite used to hold its write lock while a relay batch waited for Kafka: with the
    broker unreachable, every write of the application failed ("database is locked")."""
    busy = {"connect_args": {"timeout": 1}} if database_url.startswith("sqlite") else {}
    engine = engine_factory(**busy)
    relayer = Relayer(
        "logs",
        kafka_hosts=UNREACHABLE,
        producer_opts={"message.timeout.ms": MESSAGE_TIMEOUT_MS},
    )
    outbox = Outbox(relayer, engine, relay_after=0)
    with Session(engine) as session:
        outbox.emit(session, "orders", "created", {"i": 0})
        session.commit()
    table = outbox.table
    with engine.connect() as connection:
        created = connection.execute(select(table.c.created_at)).scalar_one()
    results: list[int] = []
    relay = threading.Thread(target=lambda: results.append(outbox.relay_once()))
    relay.start()
    time.sleep(0.5)  # the relay is waiting for Kafka now
    assert relay.is_alive()
    started = time.monotonic()
    with Session(engine) as session:
        outbox.emit(session, "orders", "created", {"i": 1})
        session.commit()
    wrote_in = time.monotonic() - started
    relay.join(30)
    assert results == [0] and outbox.counts["failed"] == 1
    assert wrote_in < 0.5, f"the write waited {wrote_in:.2f} s for the relay"
    with engine.connect() as connection:  # the row relayed got its own time back
        times = connection.execute(select(table.c.created_at).order_by(table.c.id)).scalars()
        assert list(times)[0] == created
    assert pending(engine) == 2
    outbox.close(0)
    relayer.close(0)


def test_delivered_rows_are_still_deleted_after_stop(
    database_url: str, engine_factory: Callable[..., Engine], relayer_patch: Any
) -> None:
    """``stop()`` (of the relay thread) used to end the deleter thread too: every row
    delivered after it stayed, and the next relay sent it again."""
    engine = engine_factory()
    outbox = Outbox(Relayer("logs", kafka_hosts=UNREACHABLE), engine)
    outbox.start(0.1)
    outbox.stop()
    for i in range(3):
        with Session(engine) as session:
            outbox.emit(session, "orders", "created", {"i": i})
            session.commit()
        wait_for(lambda: pending(engine) == 0, 5, f"the row of event {i} to be deleted")
        time.sleep(1.1)  # past the deleter's 1 s wait: it would have ended by now
    assert len(relayer_patch.messages("orders")) == 3
    outbox.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_outboxes_started_at_once_on_an_empty_database_all_start(
    database_url: str, engine_factory: Callable[..., Engine]
) -> None:
    """Two processes creating the table at once: one used to fail (``DuplicateTable``, or a
    ``UniqueViolation`` on ``pg_type``)."""
    engine = engine_factory()
    relayer = Relayer("logs", kafka_hosts=UNREACHABLE)

    def start(barrier: threading.Barrier, errors: list[Exception]) -> None:
        own = create_engine(database_url)
        barrier.wait()
        try:
            Outbox(relayer, own).close(0)
        except Exception as exc:
            errors.append(exc)
        finally:
            own.dispose()

    for _ in range(5):
        outbox_table().drop(engine, checkfirst=True)
        barrier, errors = threading.Barrier(4), []
        threads = [threading.Thread(target=start, args=(barrier, errors)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors, errors
        assert inspect(engine).has_table("relayer_outbox")
    relayer.close(0)


# --- exit without close() ------------------------------------------------------------------

EXIT_WRITER = """
import sys
from sqlalchemy import create_engine
from sqlalchemy.orm import Session
from relayer import Relayer
from relayer.outbox import Outbox

url, topic, bootstrap = sys.argv[1:4]
outbox = Outbox(Relayer("logs", kafka_hosts=bootstrap, kafka_headers=True), create_engine(url))
for i in range(50):
    with Session(outbox.engine) as session:
        print(outbox.emit(session, topic, "created", {"i": i}), flush=True)
        session.commit()
# no flush, no close: the exit hook flushes, and deletes the delivered rows
"""


def test_exit_without_close_delivers_and_deletes_every_row(
    database_url: str,
    engine_factory: Callable[..., Engine],
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    consume: Callable[..., list[Any]],
) -> None:
    topic = new_topic(prefix="outboxexit")
    done = subprocess.run(
        [sys.executable, "-c", EXIT_WRITER, database_url, topic, kafka_bootstrap],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    committed = done.stdout.split()
    assert len(committed) == 50
    read_exactly(kafka_bootstrap, topic, committed, consume)
    assert pending(engine_factory()) == 0  # deleted before the process ended
