"""The unit of work: what one request or RPC call emitted and logged.

One ``ContextVar`` holds the current :class:`Scope`. A framework layer sets
it when a unit of work starts and resets it with its token in ``finally``, so
each thread and each asyncio task sees only its own scope (see structlog's
``contextvars`` module for the pattern).

Lines are stored cheaply and turned into JSON-ready dicts only once, when the
record is written: an emitted message is kept as the exact bytes that went to
Kafka (an ``orjson.Fragment``), a log line as a ``(level, payload, time)``
tuple, or ``(level, payload, time, extra)`` for one captured from ``logging``.
"""

from __future__ import annotations

import os
import time
from contextlib import ContextDecorator
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

import orjson

from .exceptions import InvalidFieldError

if TYPE_CHECKING:
    from ._relayer import Relayer

Fragment = orjson.Fragment
LogLine = Union[
    Tuple[str, Union[str, "orjson.Fragment"], float],
    Tuple[str, Union[str, "orjson.Fragment"], float, Dict[str, Any]],
]
Line = Union["orjson.Fragment", LogLine]

_current: ContextVar[Optional[Scope]] = ContextVar("relayer_scope", default=None)
current_scope = _current.get
_perf_ns = time.perf_counter_ns


class Scope:
    """The lines, custom fields, timings and ids of one unit of work.

    ``lines`` only grows by ``append`` (atomic in CPython), so a scope may be
    written to from threads the unit of work starts.
    """

    __slots__ = (
        "_started_perf",
        "fields",
        "lines",
        "relayer",
        "request_id",
        "span_id",
        "started",
        "timings",
        "trace_id",
    )

    def __init__(
        self,
        relayer: Relayer,
        request_id: str = "",
        trace_id: Optional[str] = None,
        span_id: Optional[str] = None,
    ) -> None:
        self.relayer = relayer
        self.lines: List[Line] = []
        self.started = time.time()
        self._started_perf = _perf_ns()
        self.request_id = request_id or new_request_id()
        self.trace_id = trace_id
        self.span_id = span_id
        #: Fields added with ``set()``: name → encoded JSON value.
        self.fields: Dict[str, orjson.Fragment] = {}
        #: Timers: name → [count, total milliseconds].
        self.timings: Dict[str, List[float]] = {}

    def add_timing(self, name: str, elapsed_ms: float) -> None:
        """Count one run of timer ``name`` that took ``elapsed_ms``."""
        entry = self.timings.get(name)
        if entry is None:
            self.timings[name] = [1, elapsed_ms]
        else:
            entry[0] += 1
            entry[1] += elapsed_ms

    def rendered_timings(self) -> Dict[str, Dict[str, float]]:
        """``{name: {"count": n, "total_ms": ms}}``, in the order timers first ran."""
        return {
            name: {"count": int(count), "total_ms": round(total, 3)}
            for name, (count, total) in self.timings.items()
        }

    def elapsed_ms(self) -> float:
        """Milliseconds since the unit of work started, to the microsecond."""
        return (_perf_ns() - self._started_perf) // 1000 / 1000

    def rendered_lines(self) -> List[Any]:
        """The lines as they go into the record, in the order they happened."""
        return [line if type(line) is Fragment else log_line_dict(line) for line in self.lines]


def log_line_dict(line: LogLine) -> Dict[str, Any]:
    """The record form of a log line: ``{log_level, payload, timestamp}``, plus
    ``logger`` and ``exc_info`` for a line captured from ``logging``.
    """
    rendered = {"log_level": line[0], "payload": line[1], "timestamp": utc(line[2])}
    if len(line) == 4:
        rendered.update(line[3])
    return rendered


def new_request_id() -> str:
    """A fresh request id: 32 random hex digits.

    ``os.urandom(16).hex()`` costs a quarter of ``uuid.uuid4().hex``.
    """
    return os.urandom(16).hex()


class Timer(ContextDecorator):
    """Adds the elapsed milliseconds of a block (or of each call of a decorated
    function) to the ``timings`` of the unit of work it runs in; outside one,
    it measures nothing and costs next to nothing.
    """

    def __init__(self, name: str, scope_of: Callable[[], Optional[Scope]]) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidFieldError(f"a timer name must be a non-empty str, not {name!r}")
        self.name = name
        self._scope_of = scope_of
        self._scope: Optional[Scope] = None
        self._started = 0.0

    def _recreate_cm(self) -> Timer:  # a fresh timer per decorated call (thread-safe)
        return Timer(self.name, self._scope_of)

    def __enter__(self) -> Timer:
        self._scope = self._scope_of()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._scope is not None:
            self._scope.add_timing(self.name, (time.perf_counter() - self._started) * 1000.0)


def utc(at: float) -> datetime:
    """A ``time.time()`` value as an aware UTC datetime (orjson writes ISO-8601)."""
    return datetime.fromtimestamp(at, timezone.utc)


def enter(scope: Optional[Scope]) -> Any:
    """Make ``scope`` current; return the token to give to :func:`leave`."""
    return _current.set(scope)


def leave(token: Any) -> None:
    """Restore the scope that was current before :func:`enter`."""
    _current.reset(token)
