"""Building the aggregated record of a unit of work.

The record is ``{source, logging_topic, date, <request or call fields>,
request_id, trace_id?, span_id?, <custom fields>, timings?, sender,
sample_rate, lines, truncated_lines?}``.

A record too large for ``message.max.bytes`` gives up as few lines as it can:
its biggest ones (see :func:`encode_record`), and says how many it lost in
``truncated_lines``. ``set()`` values are clipped when they are encoded
(:func:`encoded_field`), so that one of them cannot cost the record.
"""

from __future__ import annotations

import math
import os
import random
import socket
from typing import Any, Dict, List, Mapping, Optional, Tuple

import orjson

from ._encoding import FIELD_LIMIT, clip, dumps
from ._unit import Fragment, UnitOfWork, utc
from .exceptions import (
    ConfigurationError,
    InvalidFieldError,
    MessageTooLargeError,
    NonJSONSerializableMessageError,
)

#: Field names relayer writes itself: ``set()`` cannot take them.
RESERVED_FIELDS = frozenset(
    {
        "source", "logging_topic", "date", "user_agent", "method", "path", "query_string",
        "remote_addr", "x_forwarded_for", "request_id", "status", "content_length",
        "request_time", "service", "service_time", "error", "trace_id", "span_id",
        "timings", "sender", "sample_rate", "lines", "truncated_lines",
    }
)  # fmt: skip

#: The longest name of a ``set()`` field, in characters.
FIELD_NAME_LIMIT = 256
#: The most characters of JSON a ``set()`` value keeps: a longer one is
#: recorded as a string, its JSON clipped by :func:`~relayer._encoding.clip`.
FIELD_VALUE_LIMIT = FIELD_LIMIT

#: Fields that make a record what it is: never clipped to make it fit.
_IDENTITY = frozenset(
    {
        "source", "logging_topic", "date", "request_id", "trace_id", "span_id",
        "timings", "sender", "sample_rate", "lines", "truncated_lines",
    }
)  # fmt: skip
#: The characters a value clipped to make a record fit keeps.
_FIT_CLIP = 64
#: Put between the lines encoded all at once, to split them apart after: orjson
#: never writes a NUL byte (it escapes one in a string).
_GAP = Fragment(b"\x00")

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
        if (
            not isinstance(sample_rate, (int, float))
            or isinstance(sample_rate, bool)
            or not 0.0 <= sample_rate <= 1.0
        ):
            raise ConfigurationError(
                f"sample_rate must be a number between 0 and 1, not {sample_rate!r}"
            )
        if slow_threshold_ms is not None and (
            not isinstance(slow_threshold_ms, (int, float))
            or isinstance(slow_threshold_ms, bool)
            or not 0 <= slow_threshold_ms < math.inf
        ):
            raise ConfigurationError(
                f"slow_threshold_ms must be a finite number >= 0 or None, not {slow_threshold_ms!r}"
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

    def keep(self, scope: UnitOfWork, failed: bool) -> bool:
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

    def unit_record(self, scope: UnitOfWork, fields: Mapping[str, Any]) -> Dict[str, Any]:
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

    The name is a non-empty ``str`` of at most :data:`FIELD_NAME_LIMIT`
    characters that JSON can carry (no lone surrogates), and not one relayer
    writes itself; a ``str`` subclass is judged by its characters, whatever
    its methods say. A value whose JSON has more than :data:`FIELD_VALUE_LIMIT`
    characters is recorded as a string instead: its JSON text clipped, with a
    visible marker (``'{"blob":"xxx...[2000011 characters, clipped]'``).

    :raises InvalidFieldError: the name is not such a string.
    :raises NonJSONSerializableMessageError: the value is not JSON.
    """
    if not isinstance(name, str):
        raise InvalidFieldError(f"a field name must be a non-empty str, not {type(name).__name__}")
    text = name if type(name) is str else str.__str__(name)
    if not text or len(text) > FIELD_NAME_LIMIT:
        raise InvalidFieldError(
            f"a field name must be a non-empty str of at most {FIELD_NAME_LIMIT} characters, "
            f"not {clip(text, 64)!r}"
        )
    try:
        text.encode()
        if text is not name:
            name.encode()  # what the subclass says, too
    except Exception as exc:
        raise InvalidFieldError(
            f"field name {clip(text, 64)!r} cannot be encoded as UTF-8: {exc}"
        ) from exc
    if text in RESERVED_FIELDS:
        raise InvalidFieldError(f"{text!r} is a field relayer writes itself; pick another name")
    encoded = dumps(value, f"value of field {text!r}")
    if len(encoded) > FIELD_VALUE_LIMIT:  # bytes: at least as many as characters
        json_text = encoded.decode()
        if len(json_text) > FIELD_VALUE_LIMIT:
            encoded = _orjson_dumps(clip(json_text, FIELD_VALUE_LIMIT))
    return Fragment(encoded)


def encode_record(record: Dict[str, Any], max_bytes: int) -> bytes:
    """``record`` as JSON of at most ``max_bytes``, giving up as few lines as it can.

    A record too large gives up its biggest lines until the others fit; of
    lines as big, those nearest the middle go first (of two as near, the
    later one), so the first and last lines stay. The kept lines keep their
    order, and ``truncated_lines`` counts the lines lost, added to any count
    the record already has. A line JSON cannot carry is lost the same way,
    rather than the record.

    If the record does not fit even without lines, the values of its custom
    fields and its long strings (``error``, ``path``…) are clipped to 64
    characters with a marker, biggest first, until it does; failing that,
    its custom fields are left out, biggest first. The fields are kept before
    the lines: those get the room left.

    ``record`` is changed in place when it is too large. Takes O(n log n) for
    n lines, each encoded once more after the whole record was.

    :raises NonJSONSerializableMessageError: a field is not JSON.
    :raises MessageTooLargeError: not even a record without lines nor custom
        fields fits in ``max_bytes``.
    """
    try:
        value = dumps(record, "record")
    except NonJSONSerializableMessageError:
        pass  # a line that JSON cannot carry, most likely: it is left out below
    else:
        if len(value) <= max_bytes:
            return value
    lines, lost = _encoded_lines(record["lines"])
    lost += record.get("truncated_lines", 0)
    record["lines"] = []
    record["truncated_lines"] = 0  # keeps its place if it has one
    # Bytes for the lines and the digits of the count, once all else is written.
    room = max_bytes - len(dumps(record, "record")) + 1
    if room < len(str(lost + len(lines))):
        room = _fit_fields(record, max_bytes, lost + len(lines))
    kept = _lines_that_fit(lines, room, lost)
    record["lines"] = Fragment(b"[" + b",".join(kept) + b"]")
    record["truncated_lines"] = lost + len(lines) - len(kept)
    if not record["truncated_lines"]:  # too large for its fields alone
        del record["truncated_lines"]
    value = dumps(record, "record")
    if len(value) > max_bytes:  # cannot happen: the sizes above are exact
        raise MessageTooLargeError(f"a record of {len(value)} bytes is over {max_bytes}")
    return value


def _encoded_lines(lines: List[Any]) -> Tuple[List[bytes], int]:
    """The JSON of each line, and how many lines JSON cannot carry (left out).

    The lines are encoded in one call, with a NUL byte between them to split
    them apart: one ``orjson.dumps`` per line costs many times as much (each
    call allocates its own buffer).
    """
    if not lines:
        return [], 0
    spaced = [_GAP] * (2 * len(lines) - 1)
    spaced[::2] = lines
    try:
        encoded = _orjson_dumps(spaced)
    except TypeError:
        pass
    else:
        # A line from a Fragment of anyone's bytes might hold NUL bytes itself.
        if encoded.count(b"\x00") == len(lines) - 1:
            return encoded[1:-1].split(b",\x00,"), 0
    kept: List[bytes] = []
    for line in lines:  # one by one: the rare line with non-str keys, or not JSON
        try:
            kept.append(dumps(line, "line"))
        except NonJSONSerializableMessageError:
            pass
    return kept, len(lines) - len(kept)


def _lines_that_fit(lines: List[bytes], room: int, lost: int) -> List[bytes]:
    """The most ``lines`` that fit in ``room`` bytes, with their commas and
    the digits of the count of lines lost (``lost`` plus those left out here),
    in their order: all but the biggest ones.
    """
    n = len(lines)
    sizes = [len(line) + 1 for line in lines]  # with a comma
    # The order lines go in: the middle one, then outwards, the later one of a
    # pair first; then, biggest first (a stable sort keeps that order for ties).
    order = [n // 2] * n
    order[n % 2 :: 2] = range((n + 1) // 2, n)
    order[n % 2 + 1 :: 2] = range(n // 2 - 1, -1, -1)
    order.sort(key=sizes.__getitem__, reverse=True)
    total = sum(sizes) - 1  # the kept lines and their commas
    left_out = 0
    while left_out < n and total + len(str(lost + left_out)) > room:
        total -= sizes[order[left_out]]
        left_out += 1
    return [lines[i] for i in sorted(order[left_out:])]


def _fit_fields(record: Dict[str, Any], max_bytes: int, most_lost: int) -> int:
    """Make the line-less ``record`` fit in ``max_bytes`` with a count of up to
    ``most_lost`` lines lost; return the bytes left for lines and the count.

    Clips the values of custom fields and the strings of other fields, biggest
    first (of values as big, the later first), until it fits; then, if need
    be, leaves out custom fields in the same order.

    :raises MessageTooLargeError: the record does not fit even so.
    """
    need = len(dumps(record, "record")) - 1 + len(str(most_lost)) - max_bytes
    clippable: List[Tuple[int, str, Any, int]] = []
    for name, value in record.items():
        if name in _IDENTITY:
            continue
        if name not in RESERVED_FIELDS:  # a custom field: a string of its JSON
            encoded = dumps(value, f"value of field {name!r}")
            size = len(encoded)
            clipped: Any = clip(encoded.decode(), _FIT_CLIP)
        elif isinstance(value, str):
            size = len(_orjson_dumps(value))
            clipped = clip(value, _FIT_CLIP)
        else:
            continue
        clippable.append((size, name, clipped, len(_orjson_dumps(clipped))))
    clippable.reverse()  # of values as big, the later ones first
    clippable.sort(key=lambda entry: entry[0], reverse=True)
    sizes: Dict[str, int] = {}
    for size, name, clipped, clipped_size in clippable:
        if need > 0 and clipped_size < size:
            record[name] = clipped
            need -= size - clipped_size
            size = clipped_size
        sizes[name] = size
    custom = [name for name in reversed(record) if name in sizes and name not in RESERVED_FIELDS]
    custom.sort(key=sizes.__getitem__, reverse=True)
    for name in custom:
        if need <= 0:
            break
        del record[name]
        need -= len(_orjson_dumps(name)) + sizes[name] + 2  # with its colon and comma
    room = max_bytes - len(dumps(record, "record")) + 1
    if room < len(str(most_lost)):
        raise MessageTooLargeError(
            f"a record cannot fit in {max_bytes} bytes even without its lines and custom "
            f"fields: it takes {max_bytes - room + len(str(most_lost))}"
        )
    return room
