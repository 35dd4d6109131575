"""Leader failover on a 3-node KRaft cluster: a partition leader is SIGKILLed while a Relayer
streams keyed events; every event must still be delivered exactly once, in per-key order.

Marked ``failover`` (about a minute: it runs three JVMs); CI runs it as its own step:
``pytest tests/integration -m failover``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from relayer import Relayer
from tools.kafka_local import KafkaCluster

pytestmark = pytest.mark.failover

EVENTS = 30_000
KEYS = 100
RATE = 2_000  # events per second: the stream lasts ~15 s, long enough to span the failover
KILL_AT = EVENTS // 3  # SIGKILL the leader once this many events were emitted…
RESTART_AT = EVENTS // 2  # …and restart it from here (it takes ~5 s, while the stream goes on)


def leader_of(admin: AdminClient, topic: str, partition: int) -> int:
    """The node id leading ``topic``/``partition`` (-1 while there is none)."""
    return int(admin.list_topics(topic, timeout=5).topics[topic].partitions[partition].leader)


def high_watermarks(bootstrap: str, topic: str, partitions: int) -> int:
    """How many messages the partitions of ``topic`` hold (sum of the high watermarks)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4().hex}"})
    try:
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        )
    finally:
        consumer.close()


def test_partition_leader_killed_while_streaming(
    kafka_cluster: KafkaCluster,
    create_topic: Callable[..., str],
    consume_all: Callable[..., list[Any]],
) -> None:
    bootstrap = kafka_cluster.bootstrap
    cluster_start_s = kafka_cluster.start_seconds or 0.0
    partitions = 6
    topic = create_topic(
        bootstrap,
        f"failover-{uuid.uuid4().hex[:12]}",
        partitions=partitions,
        replication_factor=3,
        config={"min.insync.replicas": "2"},
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    relayer = Relayer(f"failover-logs-{uuid.uuid4().hex[:12]}", bootstrap)
    keys = [f"key-{k:03d}" for k in range(KEYS)]
    emitted = 0
    stream_error: list[BaseException] = []

    def stream() -> None:
        """Emit EVENTS keyed events at RATE per second (event i: key i % KEYS, seq i // KEYS)."""
        nonlocal emitted
        try:
            t0 = time.monotonic()
            for i in range(EVENTS):
                key = keys[i % KEYS]
                relayer.emit(topic, "tick", {"key": key, "seq": i // KEYS}, partition_key=key)
                emitted = i + 1
                if i % 100 == 99:
                    ahead = t0 + emitted / RATE - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
        except BaseException as exc:
            stream_error.append(exc)

    def wait_emitted(n: int) -> None:
        while emitted < n and streamer.is_alive():
            time.sleep(0.01)

    max_pending = 0

    def watch() -> None:
        """Track the peak of undelivered messages while the stream runs."""
        nonlocal max_pending
        while streamer.is_alive():
            max_pending = max(max_pending, relayer.stats()["pending"])
            time.sleep(0.05)

    t_start = time.monotonic()
    streamer = threading.Thread(target=stream, name="stream")
    streamer.start()
    watcher = threading.Thread(target=watch, name="watch")
    watcher.start()
    try:
        wait_emitted(KILL_AT)
        controller = admin.list_topics(timeout=5).controller_id
        victim = leader_of(admin, topic, 0)
        assert victim in kafka_cluster.nodes, victim
        t_kill = time.monotonic()
        kafka_cluster.kill(victim)
        new_leader = -1
        while time.monotonic() - t_kill < 30:  # a new leader, elected from the ISR
            try:
                new_leader = leader_of(admin, topic, 0)
            except Exception:
                new_leader = -1
            if new_leader not in (-1, victim):
                break
            time.sleep(0.05)
        failover_s = time.monotonic() - t_kill
        assert new_leader not in (-1, victim), f"no new leader for partition 0 after {failover_s}"
        wait_emitted(RESTART_AT)
        t_restart = time.monotonic()
        kafka_cluster.start(victim)
        restart_s = time.monotonic() - t_restart
    finally:
        streamer.join()
        watcher.join()
    stream_s = time.monotonic() - t_start
    assert not stream_error, stream_error
    assert emitted == EVENTS

    t_flush = time.monotonic()
    undelivered = relayer.flush(60)
    flush_s = time.monotonic() - t_flush
    stats = relayer.stats()
    assert undelivered == 0, stats
    assert stats == {
        "produced": EVENTS,
        "delivered": EVENTS,
        "failed": 0,
        "dropped": 0,
        "pending": 0,
    }
    assert relayer.close(10) == 0

    t_consume = time.monotonic()
    records = consume_all(bootstrap, topic, idle=3.0, timeout=120)
    consume_s = time.monotonic() - t_consume
    in_log = high_watermarks(bootstrap, topic, partitions)
    print(
        f"\nfailover: {EVENTS} events, {KEYS} keys, {partitions} partitions (rf 3, min.isr 2); "
        f"cluster start {cluster_start_s:.1f} s; at event {KILL_AT} killed node {victim} (leader "
        f"of partition 0{', and the active controller' if victim == controller else ''}): new "
        f"leader {new_leader} after {failover_s:.2f} s; restart took {restart_s:.1f} s; stream "
        f"{stream_s:.1f} s, at most {max_pending} messages pending; final flush {flush_s:.2f} s; "
        f"consumed {len(records)} ({in_log} in the log) in {consume_s:.1f} s; stats {stats}"
    )

    by_key: dict[str, list[int]] = defaultdict(list)
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for record in records:
        payload = orjson.loads(record.value)["payload"]
        assert record.key == payload["key"].encode()
        by_key[payload["key"]].append(payload["seq"])
        partitions_of[payload["key"]].add(record.partition)
    seen = Counter((key, seq) for key, seqs in by_key.items() for seq in seqs)
    duplicates = sum(n - 1 for n in seen.values() if n > 1)
    missing = EVENTS - len(seen)
    assert (duplicates, missing) == (0, 0), f"{duplicates} duplicates, {missing} missing"
    assert len(records) == in_log == EVENTS
    assert all(len(p) == 1 for p in partitions_of.values()), "a key moved partition"
    per_key = EVENTS // KEYS
    out_of_order = [k for k, seqs in by_key.items() if seqs != list(range(per_key))]
    assert not out_of_order, f"per-key order broken for {out_of_order[:5]}"
