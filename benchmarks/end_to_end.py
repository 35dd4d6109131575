"""Section 5, end to end: events/s from one process until the broker holds
them all, for relayer (with and without headers) and the floor (likewise).
"""

from __future__ import annotations

import itertools
from typing import Callable, Dict, List, Tuple

from relayer import Relayer

from .contenders import PAYLOAD, SUBTYPE, RawProducer, raw_emitter, relayer_flush
from .harness import Ledger, Sizes, Stats, paired_ratio, perf_ns, rotated
from .report import Row, Section


def bench_end_to_end(ledger: Ledger, sizes: Sizes) -> List[Section]:
    """Events/s from one process until the broker holds them all: emit
    ``e2e_n`` as fast as possible, flush, wait for the watermark.
    """
    bootstrap = ledger.bootstrap
    n = sizes.e2e_n
    warm = min(10_000, n)
    room = {"messages": n + warm, "kbytes": 1_048_576}
    instance = Relayer(
        ledger.topic("e2e-records"),
        kafka_hosts=bootstrap,
        buffer_max_messages=room["messages"],
        buffer_max_kbytes=room["kbytes"],
    )
    headers_instance = Relayer(  # the other side of kafka_headers (the default is False)
        ledger.topic("e2e-records-headers"),
        kafka_hosts=bootstrap,
        buffer_max_messages=room["messages"],
        buffer_max_kbytes=room["kbytes"],
        kafka_headers=True,
    )
    raw = RawProducer(
        bootstrap,
        **{
            "queue.buffering.max.messages": room["messages"],
            "queue.buffering.max.kbytes": room["kbytes"],
        },
    )
    # name -> (emit, its topic, flush)
    contenders: Dict[str, Tuple[Callable[..., None], str, Callable[[float], int]]] = {
        "relayer": (instance.emit, ledger.topic("e2e-relayer"), relayer_flush(instance)),
        "relayer_headers": (
            headers_instance.emit,
            ledger.topic("e2e-relayer-headers"),
            relayer_flush(headers_instance),
        ),
        "raw": (raw_emitter(raw, "bench"), ledger.topic("e2e-raw"), raw.flush),
        "raw_headers": (
            raw_emitter(raw, "bench", headers=5),
            ledger.topic("e2e-raw-headers"),
            raw.flush,
        ),
    }
    rates: Dict[str, List[float]] = {name: [] for name in contenders}
    loop_rates: Dict[str, List[float]] = {name: [] for name in contenders}
    lost: List[str] = []

    def run(name: str, count: int) -> Tuple[float, float]:
        emit, topic, flush = contenders[name]
        t0 = perf_ns()
        for _ in itertools.repeat(None, count):
            emit(topic, SUBTYPE, PAYLOAD, None)
        t_emitted = perf_ns()
        ledger.add(topic, count)
        flush(120)
        held = ledger.wait_held(topic, timeout=60)
        t_done = perf_ns()
        if held != ledger.sent[topic]:
            lost.append(f"{name}: broker holds {held:,} of {ledger.sent[topic]:,}")
        return count / ((t_done - t0) / 1e9), count / ((t_emitted - t0) / 1e9)

    try:
        for name in contenders:
            run(name, warm)
        for rep in range(sizes.e2e_reps):
            for name in rotated(list(contenders), rep):
                rate, loop_rate = run(name, n)
                rates[name].append(rate)
                loop_rates[name].append(loop_rate)
    finally:
        instance.close(30)
        headers_instance.close(30)
        raw.close()

    stats = {name: Stats(values) for name, values in rates.items()}
    loops = {name: Stats(values) for name, values in loop_rates.items()}
    five = Section(
        f"5. End to end: {n:,} events from one process until the broker holds them all (events/s)"
    )
    five.rows.append(Row("raw produce (the floor)", stats["raw"], "events/s", "1.00x floor"))
    five.rows.append(
        Row(
            "raw produce + the same 5 headers",
            stats["raw_headers"],
            "events/s",
            f"{paired_ratio(stats['raw_headers'], stats['raw']):.2f}x floor",
        )
    )
    five.figures["e2e events/s"] = 0.0 if lost else stats["relayer"].median  # nothing lost
    five.rows.append(
        Row(
            "relayer `emit()` (default settings)",
            stats["relayer"],
            "events/s",
            f"{paired_ratio(stats['relayer'], stats['raw']):.2f}x floor",
            "e2e",
        )
    )
    five.rows.append(
        Row(
            "relayer `emit()`, `kafka_headers=True`",
            stats["relayer_headers"],
            "events/s",
            f"{paired_ratio(stats['relayer_headers'], stats['raw_headers']):.2f}x the floor "
            "with the same headers",
        )
    )
    for name, label in (
        ("raw", "raw: the produce loop alone"),
        ("raw_headers", "raw + headers: the produce loop alone"),
        ("relayer", "relayer: the emit loop alone"),
    ):
        five.rows.append(Row(label, loops[name], "events/s"))
    five.notes.append(
        f"{sizes.e2e_reps} runs each, the order rotating; one topic of 1 partition per "
        f"contender; the buffer sized to hold all N (buffer_max_messages={room['messages']:,}), "
        "other settings default, no key. The time runs from the first emit until flush has "
        "returned (for relayer: until its flush reports nothing pending) and the topic's high "
        "watermark equals what was sent."
    )
    five.notes.extend(f"LOST: {line}" for line in lost)
    return [five]
