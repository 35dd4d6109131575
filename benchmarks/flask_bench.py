"""Section 4: requests through Flask's test client: bare Flask, relayer, the
hand-written lower bound, the peers a team would pick instead (OpenTelemetry's
Flask instrumentation and sentry-sdk's Flask integration, from the ``bench``
extra) and, in a full run, relayer 1.0.0 (with its own bare baseline, in its
venv).

The peers' tools are process-global by nature; each is confined to its own
app here (see :func:`otel_app` and :func:`sentry_app`), and each run checks
that the tool saw exactly the requests of its own app.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional

from flask import Flask

from .contenders import (
    MESSAGE,
    PAYLOAD,
    SUBTYPE,
    RawProducer,
    bare_app,
    lower_bound_app,
    raw_emitter,
    relayer_app,
    relayer_flush,
    timed_loop,
)
from .harness import Ledger, Sizes, Variant, measure, must_flush, paired_diff, scaled
from .orig_venv import OriginalWorker
from .report import Row, Section

#: What the peers' rows say when their packages are missing (`make test`'s venv).
PEERS_MISSING = "not run: install relayer[bench]"
#: sentry-sdk's DSN: a reserved domain, never contacted (the transport drops everything).
SENTRY_DSN = "https://public@example.invalid/1"


class Peer(NamedTuple):
    """A peer's Flask app, what it flushes after each sample, how many
    requests its tool recorded (spans exported, transactions captured), and
    how to take it down.
    """

    app: Flask
    events: str  # its topic
    flush: Callable[[], None]
    recorded: Callable[[], int]
    close: Callable[[], None]


def _peer_view(app: Flask, raw: RawProducer, events: str, log: Callable[[], None]) -> None:
    """The view of both peers: the floor's event (its envelope, produced with
    raw confluent-kafka, no key, no headers, no request id: the tools give
    none without more work), then the log line handed to the tool.
    """
    emit = raw_emitter(raw, events)

    @app.route("/")
    def view() -> str:
        emit(events, SUBTYPE, PAYLOAD, None)
        log()
        return ""


def otel_app(raw: RawProducer, ledger: Ledger) -> Optional[Peer]:
    """OpenTelemetry's Flask instrumentation on one app instance
    (``FlaskInstrumentor().instrument_app``: its WSGI wrapper and hooks go
    on that app only), with a ``TracerProvider`` of its own (never the
    global one) whose ``BatchSpanProcessor`` exports to an exporter that
    drops. The log line is an event on the request's span
    (``span.add_event``), the cheapest idiomatic way. ``None`` without the
    packages.
    """
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        return None

    class DropExporter(SpanExporter):
        """Counts the spans, sends nothing."""

        spans = 0

        def export(self, spans: Any) -> Any:
            DropExporter.spans += len(spans)
            return SpanExportResult.SUCCESS

    events = ledger.topic("otel-events")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    get_current_span = trace.get_current_span
    line = {"level": "info", "message": MESSAGE}

    def log() -> None:
        get_current_span().add_event("log", line)

    app = Flask("bench_otel")
    _peer_view(app, raw, events, log)
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)

    def flush() -> None:
        if not provider.force_flush(30_000):
            raise RuntimeError("OpenTelemetry: spans still unexported after 30 s")

    def close() -> None:
        FlaskInstrumentor().uninstrument_app(app)
        provider.shutdown()

    return Peer(app, events, flush, lambda: DropExporter.spans, close)


#: The ``Flask.__call__`` that sentry-sdk's FlaskIntegration installs (once per process).
_sentry_call: Optional[Callable[..., Any]] = None


def sentry_app(raw: RawProducer, ledger: Ledger) -> Optional[Peer]:
    """sentry-sdk's Flask integration, every request traced
    (``traces_sample_rate=1.0``), with a transport that drops every envelope
    (nothing reaches the network). The log line is a breadcrumb.

    ``sentry_sdk.init`` is global: its FlaskIntegration replaces
    ``Flask.__call__`` (the WSGI middleware that starts the transaction) and
    connects receivers to Flask's signals for every app. Confined here: the
    replaced ``__call__`` is put back on ``Flask`` and given to a subclass
    that only this app is of, and the receivers are reconnected for this app
    as sender only; ``default_integrations=False`` keeps sentry's other
    patches (logging, threading, stdlib...) out. Nothing else in the process
    goes through sentry, which :attr:`Peer.recorded` shows: exactly one
    transaction per request of this app. ``None`` without the package.
    """
    try:
        import sentry_sdk
        from sentry_sdk.integrations import flask as sentry_flask
        from sentry_sdk.transport import Transport
    except ImportError:
        return None
    from flask.signals import before_render_template, got_request_exception, request_started

    class DropTransport(Transport):
        """Counts the transactions, sends nothing."""

        transactions = 0

        def capture_envelope(self, envelope: Any) -> None:
            if envelope.get_transaction_event() is not None:
                DropTransport.transactions += 1

    events = ledger.topic("sentry-events")
    global _sentry_call
    unpatched = Flask.__call__
    sentry_sdk.init(
        dsn=SENTRY_DSN,
        transport=DropTransport,
        traces_sample_rate=1.0,
        integrations=[sentry_flask.FlaskIntegration()],
        default_integrations=False,
        auto_enabling_integrations=False,
    )
    if Flask.__call__ is not unpatched:  # the first init of the process patched Flask
        _sentry_call = Flask.__call__
        Flask.__call__ = unpatched  # type: ignore[method-assign]
    if _sentry_call is None:
        raise RuntimeError("sentry-sdk's FlaskIntegration did not patch Flask.__call__")

    class SentryFlask(Flask):
        __call__ = _sentry_call

    app = SentryFlask("bench_sentry")
    add_breadcrumb = sentry_sdk.add_breadcrumb

    def log() -> None:
        add_breadcrumb(message=MESSAGE, level="info")

    _peer_view(app, raw, events, log)
    receivers = [
        (request_started, sentry_flask._request_started),
        (got_request_exception, sentry_flask._capture_exception),
        (before_render_template, sentry_flask._add_sentry_trace),
    ]
    for signal, receiver in receivers:
        signal.disconnect(receiver)
        signal.connect(receiver, sender=app)

    def flush() -> None:
        sentry_sdk.flush(30)

    def close() -> None:
        for signal, receiver in receivers:
            signal.disconnect(receiver, sender=app)
        sentry_sdk.get_client().close(30)
        sentry_sdk.get_global_scope().set_client(None)

    return Peer(app, events, flush, lambda: DropTransport.transactions, close)


def bench_flask(ledger: Ledger, sizes: Sizes, orig: Optional[OriginalWorker]) -> List[Section]:
    """Section 4 (without relayer 1.0.0's rows when ``orig`` is ``None``; without
    the peers' figures when their packages are missing, which only ``--smoke``
    allows).
    """
    bootstrap = ledger.bootstrap
    rel_events, rel_records = ledger.topic("flask-events"), ledger.topic("flask-records")
    lb_events, lb_records = ledger.topic("lower-events"), ledger.topic("lower-records")

    raw = RawProducer(bootstrap)
    peers: Dict[str, Peer] = {}
    try:
        for key, build in (("otel", otel_app), ("sentry", sentry_app)):
            peer = build(raw, ledger)
            if peer is not None:
                peers[key] = peer
    except BaseException:
        for peer in peers.values():
            peer.close()
        raw.close()
        raise
    if orig is not None and len(peers) < 2:
        for peer in peers.values():
            peer.close()
        raw.close()
        raise RuntimeError(
            "section 4's peers need the bench extra: pip install -e '.[bench]' (`make bench` does)"
        )
    bare = bare_app().test_client()
    rel_app, rel_instance = relayer_app(bootstrap, rel_records, rel_events)
    rel = rel_app.test_client()
    lower = lower_bound_app(raw, lb_records, lb_events).test_client()
    flush_relayer = relayer_flush(rel_instance)
    served: Dict[str, int] = {key: 0 for key in peers}

    def requests(client: Any, topics: List[str], key: str = "") -> Callable[[int], int]:
        get = client.get

        def sample(n: int) -> int:
            ns = timed_loop(get, ("/",), n)
            for topic in topics:
                ledger.add(topic, n)
            if key:
                served[key] += n
            return ns

        return sample

    def settle_peer(peer: Peer, what: str) -> Callable[[], None]:
        def settle() -> None:
            must_flush(raw.flush, what)
            peer.flush()

        return settle

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
    for key, peer in peers.items():
        variants.append(
            Variant(
                key,
                requests(peer.app.test_client(), [peer.events], key),
                sizes.flask_n,
                settle_peer(peer, key),
            )
        )
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
        recorded = {key: peer.recorded() for key, peer in peers.items()}
    finally:
        rel_instance.close(30)
        for peer in peers.values():
            peer.close()
        raw.close()
    for key, count in recorded.items():
        # One span / one transaction per request of the peer's own app, none for the others'.
        if count != served[key]:
            raise RuntimeError(
                f"{key}: the tool recorded {count} requests, its app served {served[key]}: "
                "it is not confined to its own app (or dropped some)"
            )
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
            f"{ratio:.2f}x lower bound (the target is in instructions: section 8)",
        ),
    ]
    for key, label, figure, target in (
        ("otel", "OpenTelemetry `FlaskInstrumentor`", "flask added/otel added", "vs_otel_flask"),
        ("sentry", "sentry-sdk `FlaskIntegration`", "flask added/sentry added", "vs_sentry_flask"),
    ):
        row_label = f"{label} (+ raw produce): ADDED over bare"
        if key not in peers:
            four.rows.append(Row(row_label, None, "µs", PEERS_MISSING, target))
            continue
        added[key] = paired_diff(us[key], us["bare"])
        share = added["relayer"].median / added[key].median
        four.figures[figure] = share
        four.rows.append(
            Row(row_label, added[key], "µs", f"relayer adds {share:.3f}x this", target)
        )
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
            ),
        ]
    four.rows += [
        Row("relayer `FlaskRelayer`: whole request", us["relayer"], "µs"),
        Row("lower bound: whole request", us["lower"], "µs"),
    ]
    four.rows += [Row(f"{key}: whole request", us[key], "µs") for key in peers]
    if orig is not None:
        four.rows.append(Row("relayer 1.0.0: whole request", us["orig_relayer"], "µs"))
    four.notes.append(
        "Each view (but bare) does one emit and one log; the record of the request is produced "
        "when it ends. ADDED = the contender's sample minus the bare sample of the same "
        "repetition (same process), so min/max are of those paired differences. The lower "
        "bound sends no Kafka headers and does not echo X-Request-ID; relayer does both."
    )
    four.notes.append(
        "The peers: the view produces the event with raw confluent-kafka (the floor's "
        "envelope, no request id) and hands the log line to the tool: a span event under "
        "OpenTelemetry (BatchSpanProcessor, an exporter that drops), a breadcrumb under "
        "sentry-sdk (every request traced, a transport that drops). Each tool is confined to "
        "its own app and saw exactly its app's requests."
        + ("" if len(peers) == 2 else " Not run here: install relayer[bench] (`make bench` does).")
    )
    if orig is None:
        four.notes.append("relayer 1.0.0's rows: `make bench` only (not run with `--smoke`).")
    return [four]
