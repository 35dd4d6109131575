"""A WSGI middleware that makes each request a unit of work.

It works for any WSGI application; :class:`relayer.flask.FlaskRelayer`
installs it around ``app.wsgi_app``. Each request gets its own scope, and one
record goes to the logging topic when the request ends:

- for an ordinary response, by the time the application returns (so a test
  client sees it at once);
- for a streamed response, when the stream ends: the body is passed through
  chunk by chunk, never buffered, with the scope current while each chunk is
  produced, so lines logged while streaming are in the record.

A response counts as streamed unless its body is a list or tuple, it has a
``Content-Length`` header, or it can have no body (``HEAD``, 1xx, 204, 304):
a body of known length is already built, so nothing more runs for it.

Text is recorded as the ASGI middleware records it, so that the same request
gives the same record under either: PEP 3333 hands the path (percent-decoded),
the query string and header values over as latin-1 ``str``, one character a
byte; they are turned back into those bytes and decoded as UTF-8, invalid
bytes replaced with U+FFFD (``/a%ffb`` is recorded as ``/a\ufffdb``). ASCII
text, most requests, is used as it is.
"""

from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Tuple,
    Union,
)

from ._http import finish_request, open_request, scan_response_headers
from ._http import request_fields as _request_fields
from ._redact import Redactor
from ._relayer import Relayer
from ._unit import UnitOfWork, enter, leave

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["RelayerMiddleware", "WSGIMiddleware", "request_fields"]

_NO_BODY_STATUSES = frozenset({"204", "304", "100", "101", "102", "103"})


class WSGIMiddleware:
    """Wrap a WSGI application so that every request writes one record.

    Pass either a ready :class:`~relayer.Relayer` as ``relayer=`` or the
    arguments to build one (``logging_topic``, ``kafka_hosts`` and any other
    :class:`~relayer.Relayer` keyword).
    """

    def __init__(
        self,
        app: WSGIApplication,
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
        header = self.relayer.request_id_header
        self._id_header = header
        self._id_header_lower = header.lower()
        self._id_environ_key = "HTTP_" + header.upper().replace("-", "_")

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Serve one request as a unit of work (the WSGI entry point)."""
        get = environ.get
        scope = open_request(self.relayer, get(self._id_environ_key), get("HTTP_TRACEPARENT"))
        sent: List[Any] = [None, None]  # status line, Content-Length
        id_header, id_header_lower = self._id_header, self._id_header_lower

        def capture(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> Any:
            length, has_id = scan_response_headers(headers, id_header_lower)
            if not has_id:
                headers = [*headers, (id_header, scope.request_id)]
            sent[0] = status
            sent[1] = length
            return start_response(status, headers, exc_info)

        token = enter(scope)
        try:
            body = self.app(environ, capture)
        except BaseException:
            self._finish(scope, environ, "500", None, failed=True)
            raise
        finally:
            leave(token)

        status, length = sent
        if (
            length is None
            and type(body) not in (list, tuple)
            and (status or "")[:3] not in _NO_BODY_STATUSES
            and get("REQUEST_METHOD") != "HEAD"
        ):
            return _StreamedBody(body, scope, self, environ, sent)
        self._finish(scope, environ, status, length)
        return body

    def _finish(
        self,
        scope: UnitOfWork,
        environ: WSGIEnvironment,
        status: Optional[str],
        content_length: Optional[int],
        failed: bool = False,
    ) -> None:
        fields = request_fields(environ, self.relayer.redactor, scope.request_id)
        status_code = int(status[:3]) if status else None
        finish_request(self.relayer, scope, fields, status_code, content_length, failed)


class _StreamedBody:
    """Pass a streamed body through, counting bytes; write the record at its end."""

    def __init__(
        self,
        body: Iterable[bytes],
        scope: UnitOfWork,
        middleware: WSGIMiddleware,
        environ: WSGIEnvironment,
        sent: List[Any],
    ) -> None:
        self._body = body
        self._chunks: Iterator[bytes] = iter(body)
        self._unit = scope
        self._middleware = middleware
        self._environ = environ
        self._sent = sent
        self._length = 0
        self._finished = False

    def __iter__(self) -> _StreamedBody:
        return self

    def __next__(self) -> bytes:
        token = enter(self._unit)
        try:
            chunk = next(self._chunks)
        except StopIteration:
            self._finish()
            raise
        except BaseException:
            self._finish(failed=True)
            raise
        finally:
            leave(token)
        self._length += len(chunk)
        return chunk

    def close(self) -> None:
        """Close the wrapped body (within the request's scope), then write the record."""
        close = getattr(self._body, "close", None)
        try:
            if close is not None:
                token = enter(self._unit)
                try:
                    close()
                finally:
                    leave(token)
        finally:
            self._finish()

    def _finish(self, failed: bool = False) -> None:
        if not self._finished:
            self._finished = True
            self._middleware._finish(self._unit, self._environ, self._sent[0], self._length, failed)


def request_fields(
    environ: WSGIEnvironment,
    redactor: Optional[Redactor] = None,
    request_id: Optional[str] = None,
) -> Dict[str, Any]:
    """The request part of a record, from a WSGI ``environ`` (see
    :func:`relayer._http.request_fields`); ``request_id`` defaults to the
    ``X-Request-ID`` header.
    """
    get = environ.get
    path = get("SCRIPT_NAME", "") + get("PATH_INFO", "")
    query = get("QUERY_STRING", "")
    return _request_fields(
        request_id=request_id if request_id is not None else _text(get("HTTP_X_REQUEST_ID")),
        method=get("REQUEST_METHOD"),
        path=path if path.isascii() else _wsgi_str(path),
        query_string=query if query.isascii() else _wsgi_str(query),
        user_agent=_text(get("HTTP_USER_AGENT")),
        real_ip=_text(get("HTTP_X_REAL_IP")),
        forwarded_for=_text(get("HTTP_X_FORWARDED_FOR")),
        peer=get("REMOTE_ADDR"),
        redactor=redactor,
    )


def _text(value: Optional[str]) -> Optional[str]:
    """A header value of ``environ`` as text (see :func:`_wsgi_str`)."""
    return value if value is None or value.isascii() else _wsgi_str(value)


def _wsgi_str(value: str) -> str:
    """Undo WSGI's latin-1 decoding of a path, query string or header: its bytes
    as UTF-8, invalid ones replaced with U+FFFD.
    """
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:  # not a PEP 3333 str: text already (lone surrogates are replaced)
        raw = value.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "replace")


#: The original name, kept so that existing imports work.
RelayerMiddleware = WSGIMiddleware
