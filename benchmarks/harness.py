"""What every benchmark shares: timing samples, alternation, the broker, the
delivery ledger, a bare confluent-kafka producer (the floor), machine facts.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import relayer
from tools import kafka_local

REPO_ROOT = Path(__file__).resolve().parents[1]
perf_ns = time.perf_counter_ns


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


# -- the floor: confluent-kafka by hand -----------------------------------------

#: The floor's producer settings: relayer's own defaults (enable.idempotence,
#: lz4, linger.ms 5, murmur2_random, the same buffer bounds).
RAW_CONFIG: Dict[str, Any] = dict(relayer.DEFAULT_PRODUCER_CONFIG)


class RawProducer:
    """A bare ``confluent_kafka.Producer`` with relayer's default settings and
    a thread that serves its delivery reports (``poll``), as relayer does.
    No delivery callback: the broker's watermarks do the counting.
    """

    def __init__(self, bootstrap: str, **overrides: Any) -> None:
        self.producer = Producer(
            {
                **RAW_CONFIG,
                "bootstrap.servers": bootstrap,
                "client.id": "bench-floor",
                "log_level": 3,  # errors only (relayer sends its warnings to `logging`)
                **overrides,
            }
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="raw-poller", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.1)

    def flush(self, timeout: float = 30.0) -> int:
        return int(self.producer.flush(timeout))

    def close(self) -> None:
        self.flush()
        self._stop.set()
        self._thread.join()


def must_flush(flush: Callable[[float], int], what: str, timeout: float = 60.0) -> None:
    """Flush; raise if messages are still waiting after ``timeout``."""
    left = flush(timeout)
    if left:
        raise RuntimeError(f"{what}: {left} message(s) still undelivered after {timeout:.0f} s")


# -- machine and versions ------------------------------------------------------


@dataclass
class CpuClock:
    """The machine's CPU counters (``/proc/stat``), to tell how busy it was
    while the benchmarks ran: other people's work and a hypervisor's steal
    both show in the figures.
    """

    jiffies: List[int] = field(default_factory=lambda: CpuClock.read())
    load: float = field(default_factory=lambda: os.getloadavg()[0])

    @staticmethod
    def read() -> List[int]:
        try:
            with open("/proc/stat") as f:
                return [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return []

    def since(self, start: CpuClock) -> str:
        """What the machine did between ``start`` and this reading."""
        if not (self.jiffies and start.jiffies):
            return f"load average {start.load:.1f} at the start, {self.load:.1f} at the end"
        delta = [b - a for a, b in zip(start.jiffies, self.jiffies)]
        total = sum(delta[:8]) or 1  # user nice system idle iowait irq softirq steal
        busy = total - delta[3] - delta[4]
        steal = delta[7] if len(delta) > 7 else 0
        return (
            f"load average {start.load:.1f} at the start, {self.load:.1f} at the end; "
            f"CPU busy {100 * busy / total:.0f}% of all cores during the run (this suite "
            f"included), steal {100 * steal / total:.1f}%"
        )


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _first(path: str, prefix: str) -> str:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine() -> Dict[str, str]:
    """Cores, CPU model, RAM, OS, Python and library versions, date and commit."""
    import confluent_kafka

    mem_kb = _first("/proc/meminfo", "MemTotal")
    ram = f"{int(mem_kb.split()[0]) / 1024**2:.1f} GiB" if mem_kb != "unknown" else mem_kb
    commit = _git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = [line[3:] for line in _git("status", "--porcelain", "relayer").splitlines()]
    if changed:
        commit += f", with uncommitted changes to {', '.join(changed)}"
    return {
        "cores": str(os.cpu_count()),
        "cpu": _first("/proc/cpuinfo", "model name"),
        "ram": ram,
        "os": platform.platform(),
        "python": platform.python_version(),
        "relayer": f"{relayer.__version__} (commit {commit})",
        "confluent-kafka": _version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "orjson": _version("orjson"),
        "flask": _version("flask"),
        "werkzeug": _version("werkzeug"),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _git(*args: str) -> str:
    """A read-only git command's output in the repository ("" if it fails)."""
    try:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=True
        ).stdout.rstrip("\n")
    except (OSError, subprocess.CalledProcessError):
        return ""


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"
