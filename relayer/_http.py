"""What the HTTP middlewares (WSGI, ASGI, and so Flask) share: the request
part of a record, request ids in and out, and how a request ends.

Field names are the original relayer's, so that consumers built for it keep
working. The request's text fields are clipped to
:data:`~relayer._encoding.FIELD_LIMIT` characters (see
:func:`~relayer._encoding.clip`), the same way for every middleware: a huge
query string or header (uvicorn, or gunicorn with ``--limit-request-line 0``,
let them through) shrinks instead of making the record too large for Kafka.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from ._encoding import FIELD_LIMIT, clip
from ._ids import incoming_request_id
from ._redact import Redactor
from ._relayer import Relayer
from ._unit import UnitOfWork

HeaderGetter = Callable[[str], Optional[str]]


def open_request(
    relayer: Relayer, request_id: Optional[str], traceparent: Optional[str]
) -> UnitOfWork:
    """Start the unit of work of a request, with the caller's request id (the
    value of ``request_id_header``) and W3C ``traceparent`` when they are usable.
    """
    return relayer.open_unit(incoming_request_id(request_id), traceparent)


def request_fields(
    *,
    request_id: Optional[str],
    method: Optional[str],
    path: str,
    query_string: str,
    user_agent: Optional[str],
    real_ip: Optional[str],
    forwarded_for: Optional[str],
    peer: Optional[str],
    redactor: Optional[Redactor],
) -> Dict[str, Any]:
    """The request part of a record.

    No header is recorded but ``User-Agent``, ``X-Real-IP`` (as
    ``remote_addr``, before the peer address) and ``X-Forwarded-For``: never
    ``Authorization`` or ``Cookie``. Query-string parameters whose names look
    secret are masked by ``redactor``. Path, query string and header values
    longer than ``FIELD_LIMIT`` characters are clipped, the query string after
    it is masked (so that a mask is never cut).
    """
    if query_string:
        if redactor is not None:
            query_string = redactor.query_string(query_string)
        if len(query_string) > FIELD_LIMIT:
            query_string = clip(query_string)
    if len(path) > FIELD_LIMIT:
        path = clip(path)
    if user_agent and len(user_agent) > FIELD_LIMIT:
        user_agent = clip(user_agent)
    remote_addr = real_ip or peer
    if remote_addr and len(remote_addr) > FIELD_LIMIT:
        remote_addr = clip(remote_addr)
    if forwarded_for and len(forwarded_for) > FIELD_LIMIT:
        forwarded_for = clip(forwarded_for)
    return {
        "user_agent": user_agent,
        "method": method,
        "path": path,
        "query_string": query_string,
        "remote_addr": remote_addr,
        "x_forwarded_for": forwarded_for,
        "request_id": request_id,
    }


def scan_response_headers(
    headers: Iterable[Tuple[str, str]], id_header_lower: str
) -> Tuple[Optional[int], bool]:
    """``(content_length, has_request_id)`` of a response's headers: the first
    ``Content-Length`` as an int (``None`` if absent or not a number), and whether
    the app set the request-id header itself (then it is not echoed).
    """
    length: Optional[int] = None
    seen_length = has_id = False
    for name, value in headers:
        lowered = name.lower()
        if lowered == "content-length":
            if not seen_length:
                seen_length = True
                try:
                    length = int(value)
                except ValueError:
                    pass
        elif lowered == id_header_lower:
            has_id = True
    return length, has_id


def finish_request(
    relayer: Relayer,
    scope: UnitOfWork,
    fields: Dict[str, Any],
    status: Optional[int],
    content_length: Optional[int],
    failed: bool = False,
) -> None:
    """Write the record of a request that ended with ``status`` (``None``:
    no response was sent; recorded as 500). Server errors, and requests whose
    application ``failed`` after the response started, are always kept when
    sampling. Its events (``event_delivery="on_success"``) go if it did not
    fail and its status is below 400.
    """
    if status is None:
        status = 500
    fields["status"] = status
    fields["content_length"] = content_length
    fields["request_time"] = scope.elapsed_ms()
    relayer.write_record(
        scope, fields, failed=failed or status >= 500, succeeded=not failed and status < 400
    )
