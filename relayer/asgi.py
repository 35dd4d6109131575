"""An ASGI middleware that makes each HTTP request a unit of work.

It works for any ASGI 3 application (FastAPI, Starlette, Django's ASGI
handler, Quart…) and imports none of them:

.. code-block:: python

    app.add_middleware(ASGIMiddleware, logging_topic="logs", kafka_hosts="kafka:9092")

Each ``http`` request gets its own scope, current while the application runs
(it runs in the middleware's task, so ``relayer.current()``, a
:class:`~relayer.Relayer`'s ``log`` and captured ``logging`` see it). The
request id is echoed on the response, and one record, the same as the WSGI
middleware's, goes to the logging topic when the application returns or
raises: after the response, and after background tasks that run once it has
been sent (Starlette's ``BackgroundTasks``), so that their lines are in it
too. The body is passed through message by message, never buffered: lines
logged while a response streams are in the record. ``lifespan`` and
``websocket`` scopes pass through.

Text is recorded as the WSGI middleware records it, so that the same raw
request (the same request-target and header bytes) gives the same record:

- the path is the scope's ``path``, which the server has percent-decoded and
  decoded as UTF-8 with invalid bytes replaced by U+FFFD (uvicorn, hypercorn
  and daphne use ``urllib.parse.unquote``), as WSGI's ``PATH_INFO`` is
  percent-decoded before the WSGI middleware decodes it the same way: the raw
  path ``/a%ffb`` is recorded as ``/a\ufffdb`` by both. ``raw_path`` is not
  used: it is still percent-encoded, optional, and not every server puts
  ``root_path`` in it;
- the query string (not percent-decoded, in WSGI either) and header values
  are bytes, decoded as UTF-8 with invalid bytes replaced by U+FFFD.
"""

from __future__ import annotations

from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    List,
    MutableMapping,
    Optional,
    Tuple,
    Union,
)

from ._http import (
    HeaderGetter,
    finish_request,
    open_request,
    request_fields,
    scan_response_headers,
)
from ._relayer import Relayer
from ._unit import UnitOfWork, enter, leave

__all__ = ["ASGIMiddleware", "RelayerMiddleware"]

ASGIScope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[ASGIScope, Receive, Send], Awaitable[None]]

_LATIN_1 = "latin-1"


class ASGIMiddleware:
    """Wrap an ASGI application so that every HTTP request writes one record.

    Pass either a ready :class:`~relayer.Relayer` as ``relayer=`` or the
    arguments to build one (``logging_topic``, ``kafka_hosts`` and any other
    :class:`~relayer.Relayer` keyword). All are keywords as well, so that
    ``app.add_middleware(ASGIMiddleware, logging_topic=..., kafka_hosts=...)``
    works. The relayer is :attr:`relayer`.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,  # positional-only: so mypy accepts the class in Starlette's add_middleware
        logging_topic: Optional[str] = None,
        kafka_hosts: Union[str, Iterable[str], None] = None,
        *,
        relayer: Optional[Relayer] = None,
        **kwargs: Any,
    ) -> None:
        self.app = app
        self.relayer = (
            relayer if relayer is not None else Relayer(logging_topic, kafka_hosts, **kwargs)  # type: ignore[arg-type]
        )

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        """Serve one connection (the ASGI entry point)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        relayer = self.relayer
        header = _header_getter(scope.get("headers") or ())
        unit = open_request(
            relayer, header(relayer.request_id_header.lower()), header("traceparent")
        )
        response = _Response()

        def finish(failed: bool) -> None:
            client = scope.get("client")
            root_path: str = scope.get("root_path", "")
            path: str = scope.get("path", "")
            if root_path and not (path == root_path or path.startswith(root_path + "/")):
                path = root_path + path  # else the path already holds it (newer servers)
            fields = request_fields(
                request_id=unit.request_id,
                method=scope.get("method"),
                path=path,
                query_string=scope.get("query_string", b"").decode("utf-8", "replace"),
                user_agent=header("user-agent"),
                real_ip=header("x-real-ip"),
                forwarded_for=header("x-forwarded-for"),
                peer=client[0] if client else None,
                redactor=relayer.redactor,
            )
            finish_request(relayer, unit, fields, response.status, response.length(scope), failed)

        async def relay(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                message = response.start(message, relayer.request_id_header, unit)
            elif kind == "http.response.body":
                response.sent += len(message.get("body", b""))
            await send(message)

        token = enter(unit)
        failed = True
        try:
            await self.app(scope, receive, relay)
            failed = False
        finally:
            leave(token)
            finish(failed)


class _Response:
    """What one request's response has sent so far."""

    __slots__ = ("content_length", "sent", "status")

    def __init__(self) -> None:
        self.status: Optional[int] = None
        self.content_length: Optional[int] = None
        self.sent = 0  # body bytes

    def start(self, message: Message, header_name: str, unit: UnitOfWork) -> Message:
        """Note status and ``content-length``; return ``message`` with the request id."""
        self.status = int(message["status"])
        raw = list(message.get("headers") or ())
        decoded = [(name.decode(_LATIN_1), value.decode(_LATIN_1)) for name, value in raw]
        lowered = header_name.lower()
        self.content_length, has_id = scan_response_headers(decoded, lowered)
        if has_id:
            return message
        echoed = (lowered.encode(_LATIN_1), unit.request_id.encode(_LATIN_1))
        return {**message, "headers": [*raw, echoed]}

    def length(self, scope: ASGIScope) -> Optional[int]:
        """The ``content_length`` of the record: the header, else the body
        bytes sent (``None`` for a response that has no body, as in WSGI).
        """
        if self.content_length is not None:
            return self.content_length
        status = self.status
        if status is None or scope.get("method") == "HEAD" or status < 200 or status in (204, 304):
            return None
        return self.sent


def _header_getter(headers: Iterable[Tuple[bytes, bytes]]) -> HeaderGetter:
    """A lookup of request headers by lowercase name; repeated ones are joined
    by ``", "``. Only the values looked up are decoded: as UTF-8, invalid bytes
    replaced with U+FFFD.
    """
    found: Dict[str, List[bytes]] = {}
    for name, value in headers:
        found.setdefault(name.decode(_LATIN_1).lower(), []).append(value)

    def header(name: str) -> Optional[str]:
        values = found.get(name)
        return None if values is None else b", ".join(values).decode("utf-8", "replace")

    return header


#: The original name, kept so that existing imports work.
RelayerMiddleware = ASGIMiddleware
