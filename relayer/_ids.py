"""Event ids, request ids and trace ids.

- An event id is 32 hex characters: 20 from a random prefix drawn for each
  process (drawn again in a forked child), then a 12-digit counter. Unique
  across processes, forks, restarts and machines (80 random bits per
  process), and readable as a UUID's hex by consumers that store them so.

- A request id comes from the incoming header (``X-Request-ID`` by default)
  when it is a short printable string, else a fresh one is generated.
- A trace id and span id come from the active OpenTelemetry span, when
  ``opentelemetry`` is installed and a span is recording, else from a W3C
  ``traceparent`` header.
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any, Optional, Tuple

_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")

#: This process's event id prefix: 20 random hex characters (see
#: :func:`new_event_id`; :meth:`Relayer.emit <relayer.Relayer.emit>` makes the
#: same id inline, which saves a Python call per event).
EVENT_PREFIX = os.urandom(10).hex()
#: The counter after :data:`EVENT_PREFIX` (``next()`` on it is atomic).
EVENT_TICKS = itertools.count()


def new_event_id() -> str:
    """A fresh event id (32 hex characters)."""
    return f"{EVENT_PREFIX}{next(EVENT_TICKS):012x}"


def _new_event_prefix() -> None:
    """In a forked child: a prefix of its own, so that parent and child never
    make the same id.
    """
    global EVENT_PREFIX, EVENT_TICKS
    EVENT_PREFIX = os.urandom(10).hex()
    EVENT_TICKS = itertools.count()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_event_prefix)

TraceIds = Tuple[Optional[str], Optional[str]]
_NO_IDS: TraceIds = (None, None)

_otel_trace: Any = None  # the opentelemetry.trace module, once looked for
_otel_looked = False


def incoming_request_id(value: Optional[str]) -> str:
    """``value`` if it is usable as a request id, else ``""`` (generate one)."""
    if value and _REQUEST_ID.fullmatch(value):
        return value
    return ""


def trace_ids(traceparent: Optional[str] = None) -> TraceIds:
    """``(trace_id, span_id)`` as lowercase hex, or ``(None, None)``."""
    otel = _otel_trace if _otel_looked else _find_otel()
    if otel is not None:
        context = otel.get_current_span().get_span_context()
        if context.is_valid:
            return format(context.trace_id, "032x"), format(context.span_id, "016x")
    if traceparent:
        match = _TRACEPARENT.fullmatch(traceparent.strip().lower())
        if match and match[1] != "ff" and set(match[2]) != {"0"} and set(match[3]) != {"0"}:
            return match[2], match[3]
    return _NO_IDS


def _find_otel() -> Any:
    """The ``opentelemetry.trace`` module, or ``None`` when it is not installed
    (looked for once, at the first unit of work).
    """
    global _otel_trace, _otel_looked
    try:
        from opentelemetry import trace

        _otel_trace = trace
    except ImportError:
        _otel_trace = None
    _otel_looked = True
    return _otel_trace
