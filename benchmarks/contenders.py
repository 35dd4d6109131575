"""The contenders, built here so that every comparison uses the same ones.

- the event every contender emits and the line it logs;
- the floor: a bare ``confluent_kafka.Producer`` with relayer's defaults
  (:class:`RawProducer`) and :func:`raw_emitter`, ``emit`` written by hand;
  inside a unit of work, :class:`RawUnit`, :func:`raw_unit_emitter` and
  :func:`raw_unit_record`;
- relayer's own: :func:`relayer_flush`, :func:`relayer_app`;
- the Flask apps: bare (:func:`bare_app`) and the hand-written lower bound
  (:func:`lower_bound_app`);
- :func:`timed_loop`, the timed part of every per-call sample.

Flask is imported only by the functions that build an app, so that the
callgrind cases of the floor (``benchmarks.instructions``) do not import it.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Tuple

import orjson
from confluent_kafka import Producer

import relayer
from relayer import Relayer

if TYPE_CHECKING:
    from flask import Flask

perf_ns = time.perf_counter_ns  # = benchmarks.harness.perf_ns (not imported: see above)

#: What every contender emits and logs (the original worker uses the same).
PAYLOAD = {"id": 10, "name": "widget", "price": 9.99, "tags": ["a", "b"]}
KEY = "customer-7"
SUBTYPE = "created"
MESSAGE = "processing order 10"

_now = datetime.now
_UTC = timezone.utc
_dumps = orjson.dumps
_Fragment = orjson.Fragment
_repeat = itertools.repeat

#: The floor's event ids, made as relayer makes its own (relayer._ids): a
#: random prefix for the process, then a counter, 32 hex characters.
_ID_PREFIX = os.urandom(10).hex()
_id_ticks = itertools.count()


# -- the floor: confluent-kafka by hand -------------------------------------------

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


_CONTENT_TYPE = ("content-type", "application/json")


def raw_emitter(raw: RawProducer, source: str, headers: int = 0) -> Callable[..., None]:
    """The floor: what ``emit`` does, written directly against confluent-kafka.

    The same envelope (built and dumped each call) and the same key; with
    ``headers=5`` the five headers relayer sends with an event (passed
    positionally, as relayer does), with ``headers=1`` just ``content-type``:
    the price of having any header at all.
    """
    if headers not in (0, 1, 5):
        raise ValueError(f"headers must be 0, 1 or 5, not {headers!r}")
    produce = raw.producer.produce
    if not headers:

        def emit(event_type: str, event_subtype: str, payload: Any, key: Any) -> None:
            envelope = {
                "event_id": f"{_ID_PREFIX}{next(_id_ticks):012x}",
                "source": source,
                "event_type": event_type,
                "event_subtype": event_subtype,
                "payload": payload,
                "timestamp": _now(_UTC),
            }
            produce(event_type, _dumps(envelope), key)

        return emit
    only_content_type = headers == 1

    def emit_with_headers(event_type: str, event_subtype: str, payload: Any, key: Any) -> None:
        event_id = f"{_ID_PREFIX}{next(_id_ticks):012x}"
        envelope = {
            "event_id": event_id,
            "source": source,
            "event_type": event_type,
            "event_subtype": event_subtype,
            "payload": payload,
            "timestamp": _now(_UTC),
        }
        produce(
            event_type,
            _dumps(envelope),
            key,
            -1,
            None,
            None,
            0,
            [_CONTENT_TYPE]
            if only_content_type
            else [
                _CONTENT_TYPE,
                ("schema_version", "1"),
                ("event_type", event_type),
                ("event_subtype", event_subtype),
                ("event_id", event_id),
            ],
        )

    return emit_with_headers


class RawUnit:
    """What a hand-written unit of work holds: a request id (a uuid4, as
    relayer's) and the encoded events kept for its record.
    """

    __slots__ = ("lines", "request_id")

    def __init__(self) -> None:
        self.request_id = uuid.uuid4().hex
        self.lines: List[Any] = []


def raw_unit_emitter(raw: RawProducer, source: str, unit: RawUnit) -> Callable[..., None]:
    """The floor inside a unit of work: :func:`raw_emitter` (no headers) that
    also puts the unit's request id in the envelope, as relayer does, and
    keeps the encoded event for the record (as an ``orjson.Fragment``, as
    relayer and the Flask lower bound keep it, so the record embeds it as
    it is).

    The unit is handed to the emitter (its request id and list are bound
    once): the floor does not look up a current unit, relayer does.
    """
    produce = raw.producer.produce
    request_id = unit.request_id
    keep = unit.lines.append

    def emit(event_type: str, event_subtype: str, payload: Any, key: Any) -> None:
        envelope = {
            "event_id": f"{_ID_PREFIX}{next(_id_ticks):012x}",
            "source": source,
            "event_type": event_type,
            "event_subtype": event_subtype,
            "payload": payload,
            "timestamp": _now(_UTC),
            "request_id": request_id,
        }
        value = _dumps(envelope)
        produce(event_type, value, key)
        keep(_Fragment(value))

    return emit


def raw_unit_record(raw: RawProducer, records: str, unit: RawUnit) -> None:
    """The record of a hand-written unit of work: one JSON object with its
    request id and the events it kept, produced to ``records``.
    """
    raw.producer.produce(
        records,
        _dumps(
            {
                "source": records,
                "logging_topic": records,
                "date": _now(_UTC),
                "request_id": unit.request_id,
                "lines": unit.lines,
            }
        ),
    )


# -- timing and flushing ---------------------------------------------------------


def timed_loop(call: Callable[..., Any], args: Tuple[Any, ...], n: int) -> int:
    """Nanoseconds of ``n`` calls of ``call(*args)``.

    The call is spelled out for each arity: ``call(*args)`` would add the
    cost of unpacking (about 20 ns) to every figure.
    """
    if len(args) == 4:
        a, b, c, d = args
        t0 = perf_ns()
        for _ in _repeat(None, n):
            call(a, b, c, d)
        return perf_ns() - t0
    if len(args) == 2:
        a, b = args
        t0 = perf_ns()
        for _ in _repeat(None, n):
            call(a, b)
        return perf_ns() - t0
    if len(args) == 1:
        (a,) = args
        t0 = perf_ns()
        for _ in _repeat(None, n):
            call(a)
        return perf_ns() - t0
    raise ValueError(f"no timing loop for {len(args)} arguments")


def relayer_flush(instance: Relayer) -> Callable[[float], int]:
    """Flush until nothing is pending (the poller may still be counting the last reports)."""

    def flush(timeout: float) -> int:
        deadline = time.monotonic() + timeout
        left = instance.flush(timeout)
        while left and time.monotonic() < deadline:
            time.sleep(0.005)
            left = instance.flush(max(0.0, deadline - time.monotonic()))
        return left

    return flush


# -- the Flask apps --------------------------------------------------------------


def bare_app() -> Flask:
    """Bare Flask: the view returns ``""``."""
    from flask import Flask

    app = Flask("bench_bare")

    @app.route("/")
    def view() -> str:
        return ""

    return app


def relayer_app(
    bootstrap: str, records: str, events: str, **settings: Any
) -> Tuple[Flask, Relayer]:
    """A Flask app with ``FlaskRelayer``, whose view does one emit and one log; and its
    relayer (``settings``: more :class:`~relayer.Relayer` keywords).
    """
    from flask import Flask

    from relayer.flask import FlaskRelayer

    app = Flask("bench_relayer")
    relayer = FlaskRelayer()
    relayer.init_app(app, records, kafka_hosts=bootstrap, **settings)

    @app.route("/")
    def view() -> str:
        relayer.emit(events, SUBTYPE, PAYLOAD)
        relayer.log("info", MESSAGE)
        return ""

    with app.app_context():
        return app, relayer.instance


def lower_bound_app(raw: RawProducer, records: str, events: str) -> Flask:
    """The same work as relayer's, by hand with confluent-kafka in Flask hooks:
    a list of lines per request, the event produced and kept, a log line
    kept, and one JSON record with relayer's fields produced after the view.
    """
    from flask import Flask, g, request

    app = Flask("bench_lower_bound")
    produce = raw.producer.produce
    sender = {"host": socket.gethostname(), "pid": os.getpid()}

    @app.before_request
    def start() -> None:
        # One attribute of `g` (a proxy: each access costs), unpacked where needed.
        g.unit = (time.time(), time.perf_counter(), uuid.uuid4().hex, [])

    @app.route("/")
    def view() -> str:
        _, _, request_id, lines = g.unit
        event = {
            "event_id": f"{_ID_PREFIX}{next(_id_ticks):012x}",
            "source": records,
            "event_type": events,
            "event_subtype": SUBTYPE,
            "payload": PAYLOAD,
            "timestamp": _now(_UTC),
            "request_id": request_id,
        }
        value = _dumps(event)
        produce(events, value)
        lines.append(orjson.Fragment(value))
        lines.append({"log_level": "info", "payload": MESSAGE, "timestamp": _now(_UTC)})
        return ""

    @app.after_request
    def record(response: Any) -> Any:
        started, started_perf, request_id, lines = g.unit
        environ = request.environ
        produce(
            records,
            _dumps(
                {
                    "source": records,
                    "logging_topic": records,
                    "date": datetime.fromtimestamp(started, _UTC),
                    "user_agent": environ.get("HTTP_USER_AGENT"),
                    "method": environ.get("REQUEST_METHOD"),
                    "path": environ.get("PATH_INFO"),
                    "query_string": environ.get("QUERY_STRING"),
                    "remote_addr": environ.get("HTTP_X_REAL_IP") or environ.get("REMOTE_ADDR"),
                    "x_forwarded_for": environ.get("HTTP_X_FORWARDED_FOR"),
                    "request_id": request_id,
                    "status": response.status_code,
                    "content_length": response.content_length,
                    "request_time": round((time.perf_counter() - started_perf) * 1000, 3),
                    "sender": sender,
                    "sample_rate": 1.0,
                    "lines": lines,
                }
            ),
        )
        return response

    return app
