"""Building the aggregated record of a unit of work.

The record is ``{source, logging_topic, date, <request or call fields>,
request_id, trace_id?, span_id?, <custom fields>, timings?, sender,
sample_rate, lines}``; a record too large for ``message.max.bytes`` keeps its
first and last lines and says how many it lost in ``truncated_lines``.
"""

from __future__ import annotations

import os
import random
import socket
from typing import Any, Dict, List, Mapping, Optional

import orjson

from ._encoding import dumps
from ._scope import Fragment, Scope, utc
from .exceptions import ConfigurationError, InvalidFieldError

#: Field names relayer writes itself: ``set()`` cannot take them.
RESERVED_FIELDS = frozenset(
    {
        "source", "logging_topic", "date", "user_agent", "method", "path", "query_string",
        "remote_addr", "x_forwarded_for", "request_id", "status", "content_length",
        "request_time", "service", "service_time", "error", "trace_id", "span_id",
        "timings", "sender", "sample_rate", "lines", "truncated_lines",
    }
)  # fmt: skip

_orjson_dumps = orjson.dumps

#: This process's id, kept up to date across forks (``os.getpid()`` is a system call).
_pid = os.getpid()


def _note_pid() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_note_pid)


class RecordBuilder:
    """What every record of one relayer shares: source, sender, sampling."""

    def __init__(
        self,
        source: str,
        logging_topic: str,
        *,
        service_name: Optional[str],
        service_version: Optional[str],
        sample_rate: float,
        slow_threshold_ms: Optional[float],
    ) -> None:
        if not isinstance(sample_rate, (int, float)) or not 0.0 <= sample_rate <= 1.0:
            raise ConfigurationError(f"sample_rate must be between 0 and 1, not {sample_rate!r}")
        if slow_threshold_ms is not None and (
            not isinstance(slow_threshold_ms, (int, float)) or slow_threshold_ms < 0
        ):
            raise ConfigurationError(
                f"slow_threshold_ms must be a number >= 0 or None, not {slow_threshold_ms!r}"
            )
        self.source = source
        self.logging_topic = logging_topic
        self.sample_rate = float(sample_rate)
        self.slow_threshold_ms = slow_threshold_ms
        self._sender: Dict[str, Any] = {"host": socket.gethostname(), "pid": 0}
        if service_name is not None:
            self._sender["service"] = service_name
        if service_version is not None:
            self._sender["version"] = service_version

    def keep(self, scope: Scope, failed: bool) -> bool:
        """Whether a unit of work's record is written: failed and slow ones
        always are, the others with probability ``sample_rate``.
        """
        rate = self.sample_rate
        if rate >= 1.0 or failed:
            return True
        slow = self.slow_threshold_ms
        if slow is not None and scope.elapsed_ms() >= slow:
            return True
        return random.random() < rate

    def sender(self) -> Dict[str, Any]:
        """Host, process id (of this process: it changes after a fork), service, version.

        One dict per process, shared by its records: do not change it.
        """
        sender = self._sender
        if sender["pid"] != _pid:
            sender = self._sender = {**sender, "pid": _pid}
        return sender

    def unit_record(self, scope: Scope, fields: Mapping[str, Any]) -> Dict[str, Any]:
        """The record of ``scope``, with request or call ``fields``."""
        record: Dict[str, Any] = {
            "source": self.source,
            "logging_topic": self.logging_topic,
            "date": utc(scope.started),
            **fields,
            "request_id": scope.request_id,
        }
        if scope.trace_id is not None:
            record["trace_id"] = scope.trace_id
            record["span_id"] = scope.span_id
        if scope.fields:
            record.update(scope.fields)
        if scope.timings:
            record["timings"] = scope.rendered_timings()
        record["sender"] = self.sender()
        record["sample_rate"] = self.sample_rate
        record["lines"] = scope.rendered_lines()
        return record

    def lone_record(self, line: Dict[str, Any], at: float) -> Dict[str, Any]:
        """The record of a log line written outside any unit of work."""
        return {
            "source": self.source,
            "logging_topic": self.logging_topic,
            "date": utc(at),
            "sender": self.sender(),
            "lines": [line],
        }


def encoded_field(name: Any, value: Any) -> orjson.Fragment:
    """Check a ``set()`` field and encode its value now (so later changes to
    the value do not show).

    :raises InvalidFieldError: the name is not a str, or relayer writes it.
    :raises NonJSONSerializableMessageError: the value is not JSON.
    """
    if not isinstance(name, str) or not name:
        raise InvalidFieldError(f"a field name must be a non-empty str, not {name!r}")
    if name in RESERVED_FIELDS:
        raise InvalidFieldError(f"{name!r} is a field relayer writes itself; pick another name")
    return Fragment(dumps(value, f"value of field {name!r}"))


def encode_record(record: Dict[str, Any], max_bytes: int) -> bytes:
    """``record`` as JSON of at most ``max_bytes``, dropping middle lines if need be."""
    value = dumps(record, "record")
    if len(value) <= max_bytes:
        return value
    lines = [_orjson_dumps(line) for line in record["lines"]]
    record["lines"] = []
    record["truncated_lines"] = len(lines)
    budget = max_bytes - len(dumps(record, "record"))
    head: List[bytes] = []
    tail: List[bytes] = []
    first, last = 0, len(lines) - 1
    while first <= last:  # take lines from both ends, alternately, while they fit
        take_head = len(head) <= len(tail)
        line = lines[first] if take_head else lines[last]
        if len(line) + 1 > budget:
            break
        budget -= len(line) + 1
        if take_head:
            head.append(line)
            first += 1
        else:
            tail.append(line)
            last -= 1
    kept = head + tail[::-1]
    record["lines"] = [Fragment(line) for line in kept]
    record["truncated_lines"] = len(lines) - len(kept)
    return dumps(record, "record")
