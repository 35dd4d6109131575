"""Sections 1 to 3, per call: ``emit`` outside and inside a unit of work and
``log`` inside one, against the floor (raw produce, with and without
headers, and inside a unit of work) and, in a full run, relayer 1.0.0.

"Default settings" is whatever ``Relayer(logging_topic, kafka_hosts=...)``
gives; the rows with and without Kafka headers say ``kafka_headers=`` explicitly
(one of them is the default relayer itself, measured once).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

from relayer import Relayer, ScopedRelayer
from relayer.flask import FlaskRelayer

from .contenders import (
    KEY,
    MESSAGE,
    PAYLOAD,
    SUBTYPE,
    RawProducer,
    RawUnit,
    raw_emitter,
    raw_unit_emitter,
    raw_unit_record,
    relayer_flush,
    timed_loop,
)
from .harness import Ledger, Sizes, Variant, measure, must_flush, paired_ratio, scaled
from .orig_venv import OriginalWorker
from .report import Row, Section

TITLE_3 = "3. vs the original relayer 1.0.0 (kafka-python; µs per call)"
#: Section 3's text when relayer 1.0.0 is not run (``--smoke``).
NOT_RUN_3 = (
    "Not run with `--smoke`: `make bench` only (it builds relayer 1.0.0's venv with pip "
    "from PyPI, see benchmarks/README.md)."
)


def bench_calls(ledger: Ledger, sizes: Sizes, orig: Optional[OriginalWorker]) -> List[Section]:
    """Sections 1, 2 and 3 (3 only says it did not run when ``orig`` is ``None``)."""
    bootstrap = ledger.bootstrap
    records = ledger.topic("calls-records")
    instance = Relayer(records, kafka_hosts=bootstrap)  # default settings
    default_headers = instance.kafka_headers
    # The other side of kafka_headers, explicitly: the default relayer is the other one.
    other = Relayer(records, kafka_hosts=bootstrap, kafka_headers=not default_headers)
    raw = RawProducer(bootstrap)
    flush_relayer, flush_other = relayer_flush(instance), relayer_flush(other)
    flask_facade = FlaskRelayer()  # no app: inside a unit of work it acts on the unit's relayer

    def settle_relayer() -> None:
        must_flush(flush_relayer, "relayer")

    def settle_other() -> None:
        must_flush(flush_other, f"relayer (kafka_headers={not default_headers})")

    def settle_raw() -> None:
        must_flush(raw.flush, "raw producer")

    def calls(emit: Callable[..., None], topic: str) -> Callable[[int], int]:
        """A sample of ``n`` emits of the event to ``topic``."""

        def sample(n: int) -> int:
            ns = timed_loop(emit, (topic, SUBTYPE, PAYLOAD, KEY), n)
            ledger.add(topic, n)
            return ns

        return sample

    def in_unit(
        bound: Callable[[ScopedRelayer], Callable[..., None]],
        args: Tuple[Any, ...],
        topic: Optional[str],
    ) -> Callable[[int], int]:
        """A sample of ``n`` calls inside one unit of work, whose record is
        written when it ends (after the timer stops).
        """

        def sample(n: int) -> int:
            with instance.unit_of_work("benchmark") as unit:
                ns = timed_loop(bound(unit), args, n)
            ledger.add(records, 1)
            if topic is not None:
                ledger.add(topic, n)
            return ns

        return sample

    def raw_in_unit(topic: str, raw_records: str) -> Callable[[int], int]:
        """A sample of ``n`` emits of the floor inside a hand-written unit of
        work, whose record is produced after the timer stops.
        """

        def sample(n: int) -> int:
            unit = RawUnit()
            ns = timed_loop(raw_unit_emitter(raw, records, unit), (topic, SUBTYPE, PAYLOAD, KEY), n)
            raw_unit_record(raw, raw_records, unit)
            ledger.add(topic, n)
            ledger.add(raw_records, 1)
            return ns

        return sample

    t_emit_uow = ledger.topic("emit-uow")
    log = ("info", MESSAGE)
    variants = [
        Variant(
            "raw", calls(raw_emitter(raw, records), ledger.topic("raw")), sizes.emit_n, settle_raw
        ),
        Variant("emit", calls(instance.emit, ledger.topic("emit")), sizes.emit_n, settle_relayer),
        Variant(
            "raw_headers",
            calls(raw_emitter(raw, records, headers=5), ledger.topic("raw-headers")),
            sizes.emit_n,
            settle_raw,
        ),
        Variant(
            "raw_one_header",
            calls(raw_emitter(raw, records, headers=1), ledger.topic("raw-one-header")),
            sizes.emit_n,
            settle_raw,
        ),
        Variant(
            "emit_other",
            calls(other.emit, ledger.topic("emit-headers" if other.kafka_headers else "emit-bare")),
            sizes.emit_n,
            settle_other,
        ),
        Variant(
            "raw_uow",
            raw_in_unit(ledger.topic("raw-uow"), ledger.topic("raw-uow-records")),
            sizes.emit_n,
            settle_raw,
        ),
        Variant(
            "emit_uow",
            in_unit(lambda s: instance.emit, (t_emit_uow, SUBTYPE, PAYLOAD, KEY), t_emit_uow),
            sizes.emit_n,
            settle_relayer,
        ),
        Variant("log_uow", in_unit(lambda s: instance.log, log, None), sizes.log_n),
        Variant("log_scoped", in_unit(lambda s: s.log, log, None), sizes.log_n),
        Variant("log_flask", in_unit(lambda s: flask_facade.log, log, None), sizes.log_n),
    ]
    if orig is not None:
        worker = orig
        t_orig = worker.topics["emit_topic"]

        def orig_emit(n: int) -> int:
            ns = int(worker.call("emit", n=n)["ns"])
            ledger.add(t_orig, n)
            return ns

        def orig_log(n: int) -> int:
            return int(worker.call("log", n=n)["ns"])

        variants.append(Variant("orig_emit", orig_emit, sizes.orig_n, worker.flush))
        variants.append(Variant("orig_log", orig_log, sizes.orig_n))
    try:
        ns = measure(variants, sizes.reps, sizes.warmup)
        must_flush(flush_relayer, "relayer")
    finally:
        instance.close(30)
        other.close(30)
        raw.close()
    us = {key: scaled(stats, 1e-3) for key, stats in ns.items()}
    with_headers, without = ("emit", "emit_other") if default_headers else ("emit_other", "emit")
    us["emit_headers"], us["emit_no_headers"] = us[with_headers], us[without]

    def ratio(a: str, b: str) -> float:
        return paired_ratio(us[a], us[b])

    one = Section("1. `emit()` outside a unit of work vs raw `Producer.produce` (µs per call)")
    one.figures["emit/floor"] = ratio("emit", "raw")
    one.figures["emit headers/floor headers"] = ratio("emit_headers", "raw_headers")
    one.rows += [
        Row("raw produce + orjson.dumps(envelope) (the floor)", us["raw"], "µs", "1.00x floor"),
        Row(
            "raw produce + 1 header (`content-type` only)",
            us["raw_one_header"],
            "µs",
            f"{ratio('raw_one_header', 'raw'):.2f}x floor",
        ),
        Row(
            "raw produce + the same 5 headers",
            us["raw_headers"],
            "µs",
            f"{ratio('raw_headers', 'raw'):.2f}x floor",
        ),
        Row(
            f"relayer `emit()`, default settings (kafka_headers={default_headers})",
            us["emit"],
            "µs",
            f"{ratio('emit', 'raw'):.2f}x floor",
            "emit",
        ),
        Row(
            "relayer `emit()`, `kafka_headers=True`",
            us["emit_headers"],
            "µs",
            f"{ratio('emit_headers', 'raw_headers'):.2f}x floor with the same 5 headers; "
            f"{ratio('emit_headers', 'raw'):.2f}x floor",
            "emit_headers",
        ),
    ]
    if default_headers:
        one.rows.append(
            Row(
                "relayer `emit()`, `kafka_headers=False`",
                us["emit_no_headers"],
                "µs",
                f"{ratio('emit_no_headers', 'raw'):.2f}x floor",
            )
        )
    one.notes += [
        "`emit()` with default settings is judged against the floor without headers; with "
        "`kafka_headers=True` (5 headers outside a unit of work), against the floor with the "
        "same 4 headers.",
        "Both sides: the same producer settings (relayer.DEFAULT_PRODUCER_CONFIG), a thread "
        "calling poll(0.1), the same envelope dict built and dumped per call, a str key. "
        "The floor registers no delivery callback; relayer has its own delivery accounting.",
    ]

    two = Section("2. `emit()` and `log()` inside a unit of work (µs per call)")
    two.figures["emit uow/floor uow"] = ratio("emit_uow", "raw_uow")
    two.rows += [
        Row(
            "raw produce in a unit of work: + request id, event kept (the floor in a unit)",
            us["raw_uow"],
            "µs",
            f"{ratio('raw_uow', 'raw'):.2f}x floor",
        ),
        Row(
            f"relayer `emit()` in a unit of work, default settings (kafka_headers="
            f"{default_headers})",
            us["emit_uow"],
            "µs",
            f"{ratio('emit_uow', 'raw_uow'):.2f}x floor in a unit; "
            f"{ratio('emit_uow', 'emit'):.2f}x `emit()` outside",
            "emit_uow",
        ),
    ]
    for key, target, label in (
        ("log_uow", "log", "relayer `Relayer.log()`"),
        ("log_scoped", "log_scoped", "`relayer.log()` of an RPC call (ScopedRelayer)"),
        ("log_flask", "log_flask", "`FlaskRelayer.log()` (the Flask extension)"),
    ):
        two.figures[f"{target} µs"] = us[key].median
        two.rows.append(Row(label, us[key], "µs", "", target))
    two.notes.append(
        f"{sizes.emit_n:,} emits / {sizes.log_n:,} logs per sample, each sample one "
        '`Relayer.unit_of_work("benchmark")` block, timed around the loop only; the unit\'s '
        "record is written when the block ends, after the timer stops."
    )
    two.notes.append(
        "The floor in a unit: the floor's envelope plus the unit's `request_id` (a uuid4 hex), "
        "produced, and the encoded event appended to a list (as an `orjson.Fragment`); one "
        "record with that list is produced after the timer stops. The unit is handed to the "
        "floor; relayer finds the current one itself."
    )

    three = Section(TITLE_3)
    if orig is None:
        three.notes.append(NOT_RUN_3)
        return [one, two, three]
    three.figures["1.0.0 emit/emit"] = ratio("orig_emit", "emit")
    three.rows += [
        Row(
            "relayer 1.0.0 `emit()`",
            us["orig_emit"],
            "µs",
            f"{ratio('orig_emit', 'emit'):.1f}x the time of relayer `emit()`; "
            f"{ratio('orig_emit', 'emit_uow'):.1f}x of relayer's in a unit of work",
            "vs_1.0.0_emit",
        ),
        Row(
            "relayer 1.0.0 `log()`",
            us["orig_log"],
            "µs",
            f"{ratio('orig_log', 'log_uow'):.2f}x the time of relayer `Relayer.log()`",
        ),
    ]
    three.notes.append(
        f"Run in its own venv ({', '.join(f'{k} {v}' for k, v in orig.versions.items())}), "
        f"in a worker process driven in turn with the other contenders; {sizes.orig_n:,} "
        "calls per sample, inside its RPC unit of work (the original always keeps a copy)."
    )
    return [one, two, three]
