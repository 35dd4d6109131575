"""What every comparison shares: how much work it does (:class:`Sizes`),
timing samples and their alternation, paired ratios, the broker, and the
delivery ledger.
"""

from __future__ import annotations

import contextlib
import gc
import os
import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tools import kafka_local

REPO_ROOT = Path(__file__).resolve().parents[1]
perf_ns = time.perf_counter_ns


# -- sizes ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How much work each comparison does."""

    reps: int  # timed repetitions of every per-call contender
    warmup: int  # untimed rounds first (each a quarter of a sample)
    emit_n: int  # calls per sample: emit, raw produce
    log_n: int  # calls per sample: log
    orig_n: int  # calls per sample for relayer 1.0.0 (kafka-python is slower)
    flask_n: int  # requests per sample
    flask_reps: int  # timed repetitions of every Flask contender
    e2e_n: int  # events per end-to-end run
    e2e_reps: int
    memory_n: int  # pending messages
    memory_reps: int


FULL = Sizes(
    reps=100,
    warmup=3,
    emit_n=2_000,
    log_n=10_000,
    orig_n=300,
    flask_n=50,
    flask_reps=200,
    e2e_n=500_000,
    e2e_reps=5,
    memory_n=200_000,
    memory_reps=3,
)
#: ``--smoke``: every code path, tiny sizes, one repetition (relayer 1.0.0 is not run).
SMOKE = Sizes(
    reps=1,
    warmup=1,
    emit_n=1_000,
    log_n=1_000,
    orig_n=100,
    flask_n=40,
    flask_reps=1,
    e2e_n=20_000,
    e2e_reps=1,
    memory_n=5_000,
    memory_reps=1,
)


# -- samples -----------------------------------------------------------------


@dataclass
class Stats:
    """Samples of one figure (already in the unit it is shown in)."""

    samples: List[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)


@dataclass
class Variant:
    """One contender of a comparison.

    ``sample(n)`` does ``n`` operations and returns the nanoseconds they took,
    measured around the operations only (any setup of the sample is outside
    the timed part). ``settle()`` runs untimed after every sample: it flushes
    the producer, so that each sample starts with an empty queue.
    """

    key: str
    sample: Callable[[int], int]
    n: int
    settle: Callable[[], None] = lambda: None


def rotated(items: Sequence[Any], rep: int) -> List[Any]:
    """``items`` rotated by ``rep``: over ``len(items)`` repetitions each one
    runs once in each position (two variants simply alternate).
    """
    k = rep % len(items)
    return [*items[k:], *items[:k]]


def measure(variants: Sequence[Variant], reps: int, warmup: int) -> Dict[str, Stats]:
    """Per-operation nanoseconds of each variant: ``warmup`` untimed rounds,
    then ``reps`` rounds, the order of the variants rotating each round.
    """
    for rep in range(warmup):
        for variant in rotated(variants, rep):
            variant.sample(max(1, variant.n // 4))
            variant.settle()
    per_op: Dict[str, List[float]] = {v.key: [] for v in variants}
    for rep in range(reps):
        for variant in rotated(variants, rep):
            gc.collect()
            ns = variant.sample(variant.n)
            variant.settle()
            per_op[variant.key].append(ns / variant.n)
    return {key: Stats(values) for key, values in per_op.items()}


def scaled(stats: Stats, factor: float) -> Stats:
    return Stats([s * factor for s in stats.samples])


def paired_diff(a: Stats, b: Stats) -> Stats:
    """Paired differences, repetition by repetition."""
    return Stats([x - y for x, y in zip(a.samples, b.samples)])


def paired_ratio(a: Stats, b: Stats) -> float:
    """The median of ``a / b`` taken repetition by repetition: each
    repetition runs every contender back to back, so a slow spell of a
    shared machine weighs on both sides of each ratio.
    """
    return statistics.median(x / y for x, y in zip(a.samples, b.samples))


# -- the broker, topics and the delivery ledger -------------------------------


@dataclass
class BrokerInfo:
    bootstrap: str
    description: str  # for the results: which Kafka, started how


@contextlib.contextmanager
def broker() -> Iterator[BrokerInfo]:
    """``$RELAYER_TEST_BOOTSTRAP`` if set, else a local KRaft broker started
    (and always stopped) here.
    """
    external = os.environ.get("RELAYER_TEST_BOOTSTRAP")
    if external:
        kafka_local.wait_ready(external, timeout=30)
        yield BrokerInfo(external, f"external cluster at {external} (RELAYER_TEST_BOOTSTRAP)")
        return
    local = kafka_local.KafkaBroker()
    try:
        local.start(timeout=120)
        yield BrokerInfo(
            local.bootstrap,
            f"Apache Kafka {kafka_local.KAFKA_VERSION}, single KRaft node started by the "
            f"suite (tools.kafka_local, JVM {' '.join(kafka_local.JVM_FLAGS[:2])})",
        )
    finally:
        local.close(grace=20)


@dataclass
class Ledger:
    """How many messages each benchmark topic must end up holding."""

    bootstrap: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    sent: Counter[str] = field(default_factory=Counter)
    partitions: Dict[str, int] = field(default_factory=dict)

    def topic(self, role: str, partitions: int = 1) -> str:
        """A new topic of this run, created now (so no sample waits for auto-creation)."""
        name = f"bench-{self.run_id}-{role}"
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        new = NewTopic(name, num_partitions=partitions, replication_factor=1)
        admin.create_topics([new], operation_timeout=30)[name].result(30)
        deadline = time.monotonic() + 30
        while True:
            meta = admin.list_topics(name, timeout=5).topics.get(name)
            if meta is not None and meta.error is None and len(meta.partitions) == partitions:
                if all(p.leader >= 0 for p in meta.partitions.values()):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {name} has no leader after 30 s")
            time.sleep(0.05)
        self.partitions[name] = partitions
        self.sent[name] += 0
        return name

    def add(self, topic: str, count: int) -> None:
        self.sent[topic] += count

    def held(self, topics: Optional[Sequence[str]] = None) -> Dict[str, int]:
        """The sum of the high watermarks of each topic's partitions (every
        topic is new and never compacted, so that is what it holds).
        """
        names = list(self.partitions) if topics is None else list(topics)
        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": f"bench-{self.run_id}"}
        )
        try:
            return {
                name: sum(
                    consumer.get_watermark_offsets(TopicPartition(name, p), timeout=10)[1]
                    for p in range(self.partitions[name])
                )
                for name in names
            }
        finally:
            consumer.close()

    def wait_held(self, topic: str, timeout: float = 30.0) -> int:
        """Poll until ``topic`` holds what was sent to it (or ``timeout``); return what it holds."""
        deadline = time.monotonic() + timeout
        while True:
            held = self.held([topic])[topic]
            if held >= self.sent[topic] or time.monotonic() > deadline:
                return held
            time.sleep(0.01)

    def delete_topics(self) -> None:
        """Best effort: remove this run's topics (matters on an external cluster)."""
        with contextlib.suppress(Exception):
            admin = AdminClient({"bootstrap.servers": self.bootstrap})
            for future in admin.delete_topics(list(self.partitions), operation_timeout=10).values():
                future.result(10)


def must_flush(flush: Callable[[float], int], what: str, timeout: float = 60.0) -> None:
    """Flush; raise if messages are still waiting after ``timeout``."""
    left = flush(timeout)
    if left:
        raise RuntimeError(f"{what}: {left} message(s) still undelivered after {timeout:.0f} s")
