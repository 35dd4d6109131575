"""Bytes per pending message while the broker is down, measured in a fresh
process (so nothing else the benchmarks did moves its RSS).

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
import sys
import time
from typing import Callable, List, Optional

from relayer import Relayer

from .cases import KEY, PAYLOAD, raw_emitter
from .harness import RawProducer, rss_bytes

TOPIC = "bench-memory"
WARMUP = 2_000


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument(
        "--variant",
        choices=("relayer", "relayer_no_headers", "raw", "raw_headers"),
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
            kafka_headers=args.variant == "relayer",
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
            raw, "bench-memory-records", headers=4 if args.variant == "raw_headers" else 0
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
