"""Turning user input into the bytes Kafka gets: JSON values, keys, topic names.

Each function here either returns bytes (or a valid name) or raises a
:class:`~relayer.exceptions.RelayerError` subclass that says what was wrong.
They run on the hot path, so the common case comes first and costs one type
check.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Iterable, Optional, Tuple, Union

import orjson

from ._client import Headers
from .exceptions import (
    InvalidLogMessageError,
    InvalidPartitionKeyError,
    InvalidTopicError,
    MessageTooLargeError,
    NonJSONSerializableMessageError,
    UnsupportedPartitionKeyTypeError,
)

PartitionKey = Union[str, bytes, uuid.UUID, None]
"""What ``emit`` accepts as ``partition_key``."""

_dumps = orjson.dumps
_NON_STR_KEYS = orjson.OPT_NON_STR_KEYS
_TOPIC_RE = re.compile(r"[a-zA-Z0-9._-]{1,249}")

#: The most characters a text field of a record keeps (query string, header
#: values, error message): longer ones are clipped by :func:`clip`.
FIELD_LIMIT = 8192
#: The most characters a string log message keeps (see :func:`clip`).
LINE_LIMIT = 65536


def clip(text: str, limit: int = FIELD_LIMIT) -> str:
    """``text`` if it has at most ``limit`` characters, else its first ``limit``
    characters followed by a visible marker: ``"...[1048576 characters, clipped]"``
    (the length is the original's).
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text)} characters, clipped]"


def describe(obj: object, limit: int = 200) -> str:
    """``repr(obj)`` for an error message, at most ``limit`` characters; an
    object whose ``repr`` raises is named by its type instead.
    """
    try:
        text = repr(obj)
    except Exception:
        return f"<{type(obj).__name__} object>"
    return text if len(text) <= limit else text[:limit] + "..."


def valid_text(text: str) -> bool:
    """Whether JSON (UTF-8) can carry ``text``: no lone surrogates."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def error_text(error: BaseException) -> str:
    """``"TypeName: message"`` for a record's ``error`` field, never raising:
    the type name alone stands in for a message whose ``str()`` raises, lone
    surrogates are escaped, and a long message is clipped (:func:`clip`).
    """
    name = type(error).__name__
    try:
        text = f"{name}: {error}"
    except Exception:
        return name
    if not valid_text(text):
        text = text.encode("utf-8", "backslashreplace").decode()
    return clip(text)


def dumps(obj: Any, what: str = "message") -> bytes:
    """Encode ``obj`` as compact JSON bytes with orjson.

    Dicts with non-string keys (``{1: "a"}``) are accepted the way the
    standard ``json`` module accepts them; orjson refuses them by default, so
    they take a second, slower pass only when the first one fails.

    :raises NonJSONSerializableMessageError: ``obj`` cannot be encoded; the
        orjson error is its ``__cause__``.
    """
    try:
        return _dumps(obj)
    except TypeError as first:
        try:
            return _dumps(obj, option=_NON_STR_KEYS)
        except TypeError:
            pass
        raise NonJSONSerializableMessageError(
            f"the {what} is not JSON serializable: {first}"
        ) from first


def encode_key(key: PartitionKey) -> Optional[bytes]:
    """Return the message-key bytes of a partition key.

    ``str`` is encoded as UTF-8, ``bytes`` is used as it is, a
    ``uuid.UUID`` gives its 16 raw bytes, ``None`` means no key.

    :raises UnsupportedPartitionKeyTypeError: any other type.
    :raises InvalidPartitionKeyError: a ``str`` that is not valid Unicode
        (lone surrogates).
    """
    cls = type(key)
    if cls is str:
        try:
            return key.encode()  # type: ignore[union-attr]
        except UnicodeEncodeError as exc:
            raise InvalidPartitionKeyError(
                f"partition key {describe(key)} cannot be encoded as UTF-8: {exc}"
            ) from exc
    if cls is bytes or key is None:
        return key  # type: ignore[return-value]
    try:
        if isinstance(key, uuid.UUID):
            return key.bytes
        if isinstance(key, str):  # a subclass: its own str(), which may raise, is not asked
            return encode_key(str.__str__(key))
        if isinstance(key, bytes):
            return b"" + key
    except InvalidPartitionKeyError:
        raise
    except Exception as exc:  # a subclass whose methods raise
        raise InvalidPartitionKeyError(
            f"partition key {describe(key)} cannot be encoded: {exc!r}"
        ) from exc
    raise UnsupportedPartitionKeyTypeError(
        "partition key must be a str, bytes, uuid.UUID or None, not "
        f"{type(key).__name__} ({describe(key)})"
    )


def topic_name(prefix: str, name: object, suffix: str) -> str:
    """Return ``prefix + name + suffix`` once it is checked to be a valid topic.

    :raises InvalidTopicError: ``name`` is not a non-empty string, or the full name is
        one Kafka would reject.
    """
    if not isinstance(name, str) or not name:
        raise InvalidTopicError(
            f"a topic or event type must be a non-empty str, not {describe(name)}"
        )
    topic = prefix + name + suffix
    if not _TOPIC_RE.fullmatch(topic) or topic in (".", ".."):
        raise InvalidTopicError(
            f"{topic!r} is not a valid Kafka topic name: it needs 1 to 249 "
            f"characters from [a-zA-Z0-9._-] (after prefix {prefix!r} and "
            f"suffix {suffix!r})"
        )
    return topic


def headers_size(headers: Iterable[Tuple[str, Union[str, bytes, None]]]) -> int:
    """The bytes librdkafka counts for headers (name and value lengths as
    varints, at most 5 bytes each here, then the bytes).
    """
    return sum(
        10 + len(name) + len(value.encode() if isinstance(value, str) else value or b"")
        for name, value in headers
    )


def header_text(subtype: Any) -> str:
    """The ``event_subtype`` header of a subtype that is not a plain ``str``.

    :raises NonJSONSerializableMessageError: it has no usable text.
    """
    if isinstance(subtype, str):
        return str.__str__(subtype)  # a subclass's own str() is not asked
    try:
        return str(subtype)
    except Exception as exc:
        raise NonJSONSerializableMessageError(
            f"the event_subtype {describe(subtype)} cannot be written as text: {exc!r}"
        ) from exc


def level_text(level: Any) -> str:
    """``level`` as a plain ``str`` of valid Unicode (JSON cannot carry a lone
    surrogate).

    :raises InvalidLogMessageError: it is not such a string.
    """
    if not isinstance(level, str):
        raise InvalidLogMessageError(
            f"log_level must be a str, not {type(level).__name__} ({describe(level)})"
        )
    text = level if type(level) is str else str.__str__(level)
    if not valid_text(text):
        raise InvalidLogMessageError(
            f"log_level must be valid Unicode (no lone surrogates), not {describe(text)}"
        )
    return text


#: What librdkafka adds to key and value when it checks message.max.bytes
#: (RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD).
WIRE_OVERHEAD = 36


def check_size(
    topic: str,
    value: bytes,
    key: Union[str, bytes, None],
    headers: Optional[Headers],
    max_bytes: int,
) -> None:
    """Raise if librdkafka would refuse this message as too large (``max_bytes``:
    message.max.bytes less :data:`WIRE_OVERHEAD`).

    :raises MessageTooLargeError: it is.
    """
    size = len(value) + (len(key) if key else 0) + headers_size(headers or ())
    if size <= max_bytes:
        return
    raise MessageTooLargeError(
        f"a message for topic {topic!r} would be {size + WIRE_OVERHEAD} bytes, over the "
        f"producer's message.max.bytes of {max_bytes + WIRE_OVERHEAD}; send less, or raise "
        "message.max.bytes in producer_opts (and max.message.bytes on the topic)"
    )
