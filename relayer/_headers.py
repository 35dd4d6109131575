"""The Kafka headers of relayer's messages (with ``kafka_headers=True``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ._client import Headers
from ._encoding import header_text

if TYPE_CHECKING:
    from ._unit import UnitOfWork

#: The version of the message and record formats (``schemas/``), sent in
#: each message's ``schema_version`` header.
SCHEMA_VERSION = "1"
_JSON = ("content-type", "application/json")
_VERSION = ("schema_version", SCHEMA_VERSION)


def event_headers(
    event_type: str, event_subtype: Any, event_id: str, unit: Optional[UnitOfWork]
) -> Headers:
    """The headers of an event: content-type, schema_version, event_type,
    event_subtype, event_id, and request_id inside a unit of work.

    :raises NonJSONSerializableMessageError: the subtype has no usable text.
    """
    headers: Headers = [
        _JSON,
        _VERSION,
        ("event_type", event_type),
        (
            "event_subtype",
            event_subtype if type(event_subtype) is str else header_text(event_subtype),
        ),
        ("event_id", event_id),
    ]
    if unit is not None:
        headers.append(("request_id", unit.request_id))
    return headers


def plain_headers(unit: Optional[UnitOfWork]) -> Headers:
    """The headers of a record or a raw message: content-type, schema_version,
    and request_id inside a unit of work.
    """
    if unit is None:
        return [_JSON, _VERSION]
    return [_JSON, _VERSION, ("request_id", unit.request_id)]
