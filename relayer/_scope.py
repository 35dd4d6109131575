"""The unit of work: what one request or RPC call emitted and logged.

One ``ContextVar`` holds the current :class:`Scope`. A framework layer sets
it when a unit of work starts and resets it with its token in ``finally``, so
each thread and each asyncio task sees only its own scope (see structlog's
``contextvars`` module for the pattern).

Lines are stored cheaply and turned into JSON-ready dicts only once, when the
record is written: an emitted message is kept as the exact bytes that went to
Kafka (an ``orjson.Fragment``), a log line as a ``(level, payload, time)``
tuple.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

import orjson

if TYPE_CHECKING:
    from ._relayer import Relayer

Fragment = orjson.Fragment
LogLine = Tuple[str, Union[str, "orjson.Fragment"], float]
Line = Union["orjson.Fragment", LogLine]

_current: ContextVar[Optional[Scope]] = ContextVar("relayer_scope", default=None)
current_scope = _current.get


class Scope:
    """The lines and timing of one unit of work.

    ``lines`` only grows by ``append`` (atomic in CPython), so a scope may be
    written to from threads the unit of work starts.
    """

    __slots__ = ("_started_perf", "lines", "relayer", "started")

    def __init__(self, relayer: Relayer) -> None:
        self.relayer = relayer
        self.lines: List[Line] = []
        self.started = time.time()
        self._started_perf = time.perf_counter()

    def elapsed_ms(self) -> float:
        """Milliseconds since the unit of work started, to the microsecond."""
        return round((time.perf_counter() - self._started_perf) * 1000.0, 3)

    def rendered_lines(self) -> List[Any]:
        """The lines as they go into the record, in the order they happened."""
        return [line if type(line) is Fragment else log_line_dict(line) for line in self.lines]


def log_line_dict(line: LogLine) -> Dict[str, Any]:
    """The record form of a log line: ``{log_level, payload, timestamp}``."""
    level, payload, at = line
    return {"log_level": level, "payload": payload, "timestamp": utc(at)}


def utc(at: float) -> datetime:
    """A ``time.time()`` value as an aware UTC datetime (orjson writes ISO-8601)."""
    return datetime.fromtimestamp(at, timezone.utc)


def enter(scope: Scope) -> Any:
    """Make ``scope`` current; return the token to give to :func:`leave`."""
    return _current.set(scope)


def leave(token: Any) -> None:
    """Restore the scope that was current before :func:`enter`."""
    _current.reset(token)
