"""The unit of work: what one request or RPC call emitted and logged.

One ``ContextVar`` holds the current :class:`UnitOfWork`. A framework layer sets
it when a unit of work starts and resets it with its token in ``finally``, so
each thread and each asyncio task sees only its own unit of work (see structlog's
``contextvars`` module for the pattern).

Lines are stored cheaply and turned into JSON-ready dicts only once, when the
record is written: an emitted message is kept as the exact bytes that went to
Kafka (an ``orjson.Fragment``), a log line as a ``(level, payload, time)``
tuple, or ``(level, payload, time, extra)`` for one captured from ``logging``.

A unit of work is bounded by what its record can carry, whatever the unit of work
logs or emits: the first lines are kept while they fit in three quarters of
the record's room (counted in bytes of JSON, roughly), then only the last
ones, within a quarter; the lines in between are counted in ``dropped`` (the
record's ``truncated_lines``). Custom fields get a quarter of the room, and at
most :data:`MAX_TIMERS` timer names are kept.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from collections import deque
from contextlib import ContextDecorator
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, Tuple, Union

import orjson

from ._encoding import LINE_LIMIT, describe, valid_text
from .exceptions import InvalidFieldError

if TYPE_CHECKING:
    from ._client import Message
    from ._relayer import Relayer

Fragment = orjson.Fragment
LogLine = Union[
    Tuple[str, Union[str, "orjson.Fragment"], float],
    Tuple[str, Union[str, "orjson.Fragment"], float, Dict[str, Any]],
]
Line = Union["orjson.Fragment", LogLine]

_current: ContextVar[Optional[UnitOfWork]] = ContextVar("relayer_unit_of_work", default=None)
current_unit = _current.get
_perf_ns = time.perf_counter_ns
_time = time.time

#: What a log line's JSON adds to its level and payload: the keys, quotes,
#: the ISO timestamp and a comma.
LINE_OVERHEAD = 80
#: The most timer names one unit of work keeps; further names are not timed.
MAX_TIMERS = 256
#: The longest timer name.
MAX_TIMER_NAME = 256
#: Guards the tail of every unit of work once its head is full (a rare path).
_tail_lock = threading.Lock()


class UnitOfWork:
    """The lines, custom fields, timings and ids of one unit of work.

    ``lines`` only grows by ``append`` (atomic in CPython), so a unit of work may be
    written to from threads the unit of work starts. A line is appended to
    ``lines`` directly while ``room`` (bytes) allows; past that, :meth:`add`
    keeps the last lines in a bounded tail.
    """

    __slots__ = (
        "_field_sizes",
        "_started_perf",
        "_tail",
        "_tail_room",
        "dropped",
        "field_room",
        "fields",
        "held",
        "lines",
        "relayer",
        "request_id",
        "room",
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
        hold: bool = False,
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
        budget = relayer.record_room
        #: Bytes of JSON the first lines may still take.
        self.room = budget * 3 // 4
        #: Bytes of JSON the custom fields may still take.
        self.field_room = budget // 4
        self._field_sizes: Dict[str, int] = {}
        #: The last lines once ``room`` ran out: ``(line, size)``, oldest first.
        self._tail: Optional[Deque[Tuple[Line, int]]] = None
        self._tail_room = budget // 4
        #: Lines given up between the first and the last ones.
        self.dropped = 0
        #: With ``event_delivery="on_success"``: the events emitted so far,
        #: each with its line, produced (or discarded) when the unit of work
        #: ends; ``None``: events are produced at once.
        self.held: Optional[List[Tuple[Message, Line]]] = [] if hold else None

    def add(self, line: Line, size: int) -> None:
        """Keep ``line``, about ``size`` bytes of JSON: among the first lines
        while they have room, else among the last ones (dropping the oldest of
        those, counted in :attr:`dropped`, to make room).
        """
        room = self.room - size
        if room >= 0:
            self.room = room
            self.lines.append(line)
            return
        with _tail_lock:
            tail = self._tail
            if tail is None:
                tail = self._tail = deque()
            tail.append((line, size))
            self._tail_room -= size
            while self._tail_room < 0:
                self._tail_room += tail.popleft()[1]
                self.dropped += 1

    def set_field(self, name: str, value: orjson.Fragment, size: int) -> bool:
        """Keep custom field ``name`` (``size`` bytes of JSON) if the fields have
        room for it; return whether it was kept.
        """
        sizes = self._field_sizes
        room = self.field_room - size - len(name) + sizes.get(name, -len(name))
        if room < 0:
            return False
        self.field_room = room
        self.fields[name] = value
        sizes[name] = size + len(name)
        return True

    def add_timing(self, name: str, elapsed_ms: float) -> None:
        """Count one run of timer ``name`` that took ``elapsed_ms`` (a new name
        past :data:`MAX_TIMERS` is not timed).
        """
        entry = self.timings.get(name)
        if entry is None:
            if len(self.timings) < MAX_TIMERS:
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

    def mark_discarded(self, events: List[Tuple[Message, Line]]) -> None:
        """Mark the lines of ``events`` (held, then not produced) with
        ``"discarded": true`` in the record.
        """
        marked = {id(line): Fragment(_discarded(message.value)) for message, line in events}
        self.lines[:] = [marked.get(id(line), line) for line in self.lines]
        if self._tail is not None:
            with _tail_lock:
                self._tail = deque((marked.get(id(line), line), size) for line, size in self._tail)

    def rendered_lines(self) -> List[Any]:
        """The lines as they go into the record, in the order they happened
        (the first ones, then the last ones if some were dropped in between).
        """
        lines: List[Line] = self.lines
        if self._tail is not None:
            with _tail_lock:
                lines = [*lines, *(line for line, _ in self._tail)]
        return [line if type(line) is Fragment else log_line_dict(line) for line in lines]


def _discarded(value: bytes) -> bytes:
    """``value`` (compact JSON) with ``"discarded": true``: an object gets the
    key; another value (from ``emit_raw``) is wrapped as ``message``.
    """
    if value == b"{}":
        return b'{"discarded":true}'
    if value[:1] == b"{":
        return value[:-1] + b',"discarded":true}'
    return b'{"discarded":true,"message":' + value + b"}"


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

    def __init__(self, name: str, unit_of: Callable[[], Optional[UnitOfWork]]) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidFieldError(f"a timer name must be a non-empty str, not {describe(name)}")
        name = str.__str__(name)  # a subclass's own methods are not trusted
        if len(name) > MAX_TIMER_NAME or not valid_text(name):
            raise InvalidFieldError(
                f"a timer name must be valid Unicode (no lone surrogates) of at most "
                f"{MAX_TIMER_NAME} characters, not {describe(name)}"
            )
        self.name = name
        self._unit_of = unit_of
        self._unit: Optional[UnitOfWork] = None
        self._started = 0.0

    def _recreate_cm(self) -> Timer:  # a fresh timer per decorated call (thread-safe)
        return Timer(self.name, self._unit_of)

    def __enter__(self) -> Timer:
        self._unit = self._unit_of()
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._unit is not None:
            self._unit.add_timing(self.name, (time.perf_counter() - self._started) * 1000.0)


def utc(at: float) -> datetime:
    """A ``time.time()`` value as an aware UTC datetime (orjson writes ISO-8601)."""
    return datetime.fromtimestamp(at, timezone.utc)


def enter(unit: Optional[UnitOfWork]) -> Any:
    """Make ``unit`` current; return the token to give to :func:`leave`."""
    return _current.set(unit)


def leave(token: Any) -> None:
    """Restore the unit of work that was current before :func:`enter`."""
    _current.reset(token)


class _Current(enum.Enum):
    """The type of :data:`CURRENT`: a one-member enum, so that ``unit is
    CURRENT`` narrows the type (the sentinel idiom type checkers know).
    """

    CURRENT = "CURRENT"

    def __repr__(self) -> str:
        return "CURRENT"


#: The default ``unit`` of :meth:`Relayer.emit`: the current unit of work.
CURRENT = _Current.CURRENT


def fast_log(unit: UnitOfWork, log_level: Any, message: Any) -> bool:
    """Add an ASCII string line of at most ``LINE_LIMIT`` characters to
    ``unit`` without further checks, if it is one; return whether it was.

    The first step of every ``log()`` in a unit of work, the common case
    without a call; anything else goes to :meth:`Relayer._log
    <relayer.Relayer._log>`.
    """
    if (
        type(message) is str
        and type(log_level) is str
        and message.isascii()
        and log_level.isascii()
    ):
        size = len(message) + len(log_level)
        if size <= LINE_LIMIT:
            size += LINE_OVERHEAD
            room = unit.room - size
            if room >= 0:  # UnitOfWork.add, inlined: 466 instructions less per line
                unit.room = room
                unit.lines.append((log_level, message, _time()))
            else:
                unit.add((log_level, message, _time()), size)
            return True
    return False
