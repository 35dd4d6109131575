"""Section 4: requests through Flask's test client: bare Flask, relayer, the
hand-written lower bound and, in a full run, relayer 1.0.0 (with its own
bare baseline, in its venv).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from .contenders import (
    RawProducer,
    bare_app,
    lower_bound_app,
    relayer_app,
    relayer_flush,
    timed_loop,
)
from .harness import Ledger, Sizes, Variant, measure, must_flush, paired_diff, scaled
from .orig_venv import OriginalWorker
from .report import Row, Section


def bench_flask(ledger: Ledger, sizes: Sizes, orig: Optional[OriginalWorker]) -> List[Section]:
    """Section 4 (without relayer 1.0.0's rows when ``orig`` is ``None``)."""
    bootstrap = ledger.bootstrap
    rel_events, rel_records = ledger.topic("flask-events"), ledger.topic("flask-records")
    lb_events, lb_records = ledger.topic("lower-events"), ledger.topic("lower-records")

    raw = RawProducer(bootstrap)
    bare = bare_app().test_client()
    rel_app, rel_instance = relayer_app(bootstrap, rel_records, rel_events)
    rel = rel_app.test_client()
    lower = lower_bound_app(raw, lb_records, lb_events).test_client()
    flush_relayer = relayer_flush(rel_instance)

    def requests(client: Any, topics: List[str]) -> Callable[[int], int]:
        get = client.get

        def sample(n: int) -> int:
            ns = timed_loop(get, ("/",), n)
            for topic in topics:
                ledger.add(topic, n)
            return ns

        return sample

    variants = [
        Variant("bare", requests(bare, []), sizes.flask_n),
        Variant(
            "relayer",
            requests(rel, [rel_events, rel_records]),
            sizes.flask_n,
            lambda: must_flush(flush_relayer, "relayer (Flask)"),
        ),
        Variant(
            "lower",
            requests(lower, [lb_events, lb_records]),
            sizes.flask_n,
            lambda: must_flush(raw.flush, "lower bound"),
        ),
    ]
    if orig is not None:
        worker = orig

        def orig_requests(variant: str, topics: List[str]) -> Callable[[int], int]:
            def sample(n: int) -> int:
                ns = int(worker.call("flask", variant=variant, n=n)["ns"])
                for topic in topics:
                    ledger.add(topic, n)
                return ns

            return sample

        orig_topics = [worker.topics["flask_events"], worker.topics["flask_records"]]
        variants.append(Variant("orig_bare", orig_requests("bare", []), sizes.flask_n))
        variants.append(
            Variant(
                "orig_relayer",
                orig_requests("relayer", orig_topics),
                sizes.flask_n,
                worker.flush,
            )
        )
    try:
        ns = measure(variants, sizes.flask_reps, sizes.warmup)
    finally:
        rel_instance.close(30)
        raw.close()
    us = {key: scaled(stats, 1e-3) for key, stats in ns.items()}
    added = {
        "relayer": paired_diff(us["relayer"], us["bare"]),
        "lower": paired_diff(us["lower"], us["bare"]),
    }
    ratio = added["relayer"].median / added["lower"].median

    four = Section("4. Flask requests through the test client (µs per request)")
    four.figures["flask added/lower bound added"] = ratio
    four.rows += [
        Row("bare Flask (the view does nothing)", us["bare"], "µs"),
        Row("hand-written lower bound: ADDED over bare", added["lower"], "µs", "1.00x lower bound"),
        Row(
            "relayer `FlaskRelayer`: ADDED over bare",
            added["relayer"],
            "µs",
            f"{ratio:.2f}x lower bound",
            "flask",
        ),
    ]
    if orig is not None:
        added["orig_relayer"] = paired_diff(us["orig_relayer"], us["orig_bare"])
        less = added["orig_relayer"].median / added["relayer"].median
        four.figures["1.0.0 flask added/flask added"] = less
        four.rows += [
            Row("bare Flask in relayer 1.0.0's venv", us["orig_bare"], "µs"),
            Row(
                "relayer 1.0.0 `FlaskRelayer`: ADDED over its bare Flask",
                added["orig_relayer"],
                "µs",
                f"{less:.1f}x the cost relayer adds",
                "vs_1.0.0_flask",
            ),
        ]
    four.rows += [
        Row("relayer `FlaskRelayer`: whole request", us["relayer"], "µs"),
        Row("lower bound: whole request", us["lower"], "µs"),
    ]
    if orig is not None:
        four.rows.append(Row("relayer 1.0.0: whole request", us["orig_relayer"], "µs"))
    four.notes.append(
        "Each view (but bare) does one emit and one log; the record of the request is produced "
        "when it ends. ADDED = the contender's sample minus the bare sample of the same "
        "repetition (same process), so min/max are of those paired differences. The lower "
        "bound sends no Kafka headers and does not echo X-Request-ID; relayer does both."
    )
    if orig is None:
        four.notes.append("relayer 1.0.0's rows: `make bench` only (not run with `--smoke`).")
    return [four]
