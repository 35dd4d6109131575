"""Section 6: bytes per pending message while the broker is down, each
measurement in a fresh process (so nothing else the benchmarks did moves its
RSS): :func:`bench_memory` runs the probe below once per variant and repetition.

    python -m benchmarks.memory --bootstrap 127.0.0.1:PORT --n 200000 --variant relayer

``--bootstrap`` points at a broker that is not running (a ``KafkaBroker``
that was given ports but never started). The producer gets a buffer big
enough for all ``n`` messages; after a warm-up (the producer and its threads
exist, the first messages wait), the RSS is read before and after ``n``
emits that all stay pending. One JSON line comes out on stdout. The messages
are purged at the end: there is no broker to deliver them to.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

from relayer import Relayer
from tools.kafka_local import KafkaBroker

from .contenders import KEY, PAYLOAD, RawProducer, raw_emitter
from .harness import Sizes, Stats, rotated
from .machine import rss_bytes
from .report import Row, Section

TOPIC = "bench-memory"
WARMUP = 2_000
VARIANTS = ("raw", "raw_headers", "relayer", "relayer_headers")


def bench_memory(sizes: Sizes) -> List[Section]:
    """Bytes per pending message while the broker is down, each contender in a fresh process."""
    down = KafkaBroker()  # ports chosen, never started: nothing listens there
    per_msg: Dict[str, List[float]] = {name: [] for name in VARIANTS}
    try:
        for rep in range(sizes.memory_reps):
            for variant in rotated(list(per_msg), rep):
                res = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.memory",
                        "--bootstrap",
                        down.bootstrap,
                        "--n",
                        str(sizes.memory_n),
                        "--variant",
                        variant,
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=300,
                )
                if res.returncode != 0 or not res.stdout.strip():
                    raise RuntimeError(f"memory probe ({variant}) failed:\n{res.stderr[-3000:]}")
                out = json.loads(res.stdout.strip().splitlines()[-1])
                per_msg[variant].append((out["after"] - out["before"]) / out["n"])
    finally:
        down.close()
    six = Section("6. Memory while the broker is down (bytes per pending message)")
    stats = {name: Stats(values) for name, values in per_msg.items()}
    floor = stats["raw"].median
    six.rows.append(Row("raw produce (the floor)", stats["raw"], "bytes", "1.00x floor"))
    six.rows.append(
        Row(
            "raw produce + the same 5 headers",
            stats["raw_headers"],
            "bytes",
            f"{stats['raw_headers'].median / floor:.2f}x floor",
        )
    )
    six.rows.append(
        Row(
            "relayer `emit()` (default settings)",
            stats["relayer"],
            "bytes",
            f"{stats['relayer'].median / floor:.2f}x floor",
            target="memory",
        )
    )
    six.rows.append(
        Row(
            "relayer `emit()`, `kafka_headers=True`",
            stats["relayer_headers"],
            "bytes",
            f"{stats['relayer_headers'].median / stats['raw_headers'].median:.2f}x "
            "the floor with the same headers",
        )
    )
    six.figures["memory relayer/floor"] = stats["relayer"].median / floor
    six.notes.append(
        f"RSS of a fresh process before and after {sizes.memory_n:,} emits that all stay "
        f"pending (a broker address nothing listens on), after a warm-up of {WARMUP:,}; the same "
        "event as in 1 (its JSON is about 150 bytes). Buffer sized to hold them all."
    )
    return [six]


# -- the probe, in a fresh process ------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        required=True,
    )
    args = parser.parse_args(argv)
    room = {"messages": args.n + WARMUP + 1000, "kbytes": 2_000_000}

    emit: Callable[[], None]
    purge: Callable[[], None]
    if args.variant.startswith("relayer"):
        relayer = Relayer(
            "bench-memory-records",
            kafka_hosts=args.bootstrap,
            buffer_max_messages=room["messages"],
            buffer_max_kbytes=room["kbytes"],
            shutdown_timeout=0,
            kafka_headers=args.variant == "relayer_headers",
        )

        def emit() -> None:
            relayer.emit(TOPIC, "created", PAYLOAD, KEY)

        def purge() -> None:
            relayer.close(0)

    else:
        raw = RawProducer(
            args.bootstrap,
            **{
                "queue.buffering.max.messages": room["messages"],
                "queue.buffering.max.kbytes": room["kbytes"],
            },
        )
        floor = raw_emitter(
            raw, "bench-memory-records", headers=5 if args.variant == "raw_headers" else 0
        )

        def emit() -> None:
            floor(TOPIC, "created", PAYLOAD, KEY)

        def purge() -> None:
            raw.producer.purge()

    for _ in itertools.repeat(None, WARMUP):
        emit()
    gc.collect()
    time.sleep(0.2)
    before = rss_bytes()
    for _ in itertools.repeat(None, args.n):
        emit()
    gc.collect()
    time.sleep(0.2)
    after = rss_bytes()
    sys.stdout.write(
        json.dumps({"variant": args.variant, "n": args.n, "before": before, "after": after}) + "\n"
    )
    sys.stdout.flush()
    purge()
    os._exit(0)  # no exit-time flush towards a broker that is not there


if __name__ == "__main__":
    sys.exit(main())
