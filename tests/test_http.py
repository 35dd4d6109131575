"""What the WSGI and ASGI middlewares share: the same raw request gives the same record,
and oversized text fields are clipped (relayer._http.request_fields)."""

import asyncio
from urllib.parse import unquote, unquote_to_bytes

import pytest

from relayer._encoding import FIELD_LIMIT
from relayer._http import request_fields
from relayer._redact import Redactor
from relayer.asgi import RelayerMiddleware as ASGIMiddleware
from relayer.wsgi import RelayerMiddleware as WSGIMiddleware

REQUEST_FIELDS = [
    "user_agent",
    "method",
    "path",
    "query_string",
    "remote_addr",
    "x_forwarded_for",
    "request_id",
    "status",
    "content_length",
]


def wsgi_environ(target, headers):
    """The environ a PEP 3333 server (gunicorn's code) makes of a raw request: PATH_INFO
    percent-decoded, it and everything else as latin-1 str."""
    path, _, query = target.partition(b"?")
    environ = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "REMOTE_ADDR": "10.0.0.1",
    }
    for name, value in headers:
        environ["HTTP_" + name.decode("latin-1").upper().replace("-", "_")] = value.decode(
            "latin-1"
        )
    return environ


def asgi_scope(target, headers):
    """The scope an ASGI server (uvicorn's, hypercorn's, daphne's code) makes of it:
    ``path`` percent-decoded and UTF-8-decoded by ``urllib.parse.unquote``, the rest bytes."""
    path, _, query = target.partition(b"?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(path.decode("ascii")),
        "raw_path": path,
        "query_string": query,
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in headers],
        "client": ("10.0.0.1", 5000),
        "server": ("testserver", 80),
    }


def wsgi_app(environ, start_response):
    start_response("200 OK", [("Content-Length", "5")])
    return [b"hello"]


async def asgi_app(scope, receive, send):
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]}
    )
    await send({"type": "http.response.body", "body": b"hello"})


def records(relayer_patch, target, headers):
    """The records of one raw request sent through the WSGI and the ASGI middleware."""
    WSGIMiddleware(wsgi_app, "logs", "k:1")(wsgi_environ(target, headers), lambda *args: None)

    async def send(message):
        pass

    asyncio.run(ASGIMiddleware(asgi_app, "logs", "k:1")(asgi_scope(target, headers), None, send))
    wsgi_record, asgi_record = relayer_patch.messages("logs")
    return wsgi_record, asgi_record


RAW_REQUESTS = {
    "ascii": (b"/orders/7?a=1&b=x", [(b"User-Agent", b"tests/1.0")]),
    "invalid utf-8 in the path": (b"/a%ffb", []),
    "utf-8 and invalid utf-8 everywhere": (
        b"/caf%C3%A9/%e2%82/x%ff?q=caf\xc3\xa9&r=\xff\xfe&s=%ff",
        [
            (b"User-Agent", "agent é €".encode()),
            (b"X-Real-IP", b"\xff\xfe"),
            (b"X-Forwarded-For", b"10.0.0.1, caf\xc3\xa9, \xe2\x82"),
        ],
    ),
}


@pytest.mark.parametrize("name", list(RAW_REQUESTS))
def test_the_same_raw_request_gives_the_same_record(relayer_patch, name):
    target, headers = RAW_REQUESTS[name]
    headers = [*headers, (b"X-Request-ID", b"req-1")]
    wsgi_record, asgi_record = records(relayer_patch, target, headers)
    assert {k: wsgi_record[k] for k in REQUEST_FIELDS} == {
        k: asgi_record[k] for k in REQUEST_FIELDS
    }


def test_invalid_utf8_is_replaced_and_valid_utf8_decoded(relayer_patch):
    target, headers = RAW_REQUESTS["utf-8 and invalid utf-8 everywhere"]
    for record in records(relayer_patch, target, headers):
        assert record["path"] == "/café/\ufffd/x\ufffd"
        assert record["query_string"] == "q=café&r=\ufffd\ufffd&s=%ff"  # not percent-decoded
        assert record["user_agent"] == "agent é €"
        assert record["remote_addr"] == "\ufffd\ufffd"
        assert record["x_forwarded_for"] == "10.0.0.1, café, \ufffd"


def test_oversized_field_of_the_same_raw_request_is_clipped_alike(relayer_patch):
    big = "é" * (FIELD_LIMIT + 10)
    target = b"/?q=" + big.encode()
    headers = [(b"X-Forwarded-For", big.encode())]
    wsgi_record, asgi_record = records(relayer_patch, target, headers)
    marker = f"...[{FIELD_LIMIT + 12} characters, clipped]"
    assert (
        wsgi_record["query_string"]
        == asgi_record["query_string"]
        == "q=" + big[: FIELD_LIMIT - 2] + marker
    )
    marker = f"...[{FIELD_LIMIT + 10} characters, clipped]"
    assert (
        wsgi_record["x_forwarded_for"]
        == asgi_record["x_forwarded_for"]
        == big[:FIELD_LIMIT] + marker
    )


# -- request_fields: clipping --------------------------------------------------------------


def fields(**given):
    arguments = {
        "request_id": "r",
        "method": "GET",
        "path": "/",
        "query_string": "",
        "user_agent": None,
        "real_ip": None,
        "forwarded_for": None,
        "peer": None,
        "redactor": None,
    }
    arguments.update(given)
    return request_fields(**arguments)


@pytest.mark.parametrize(
    ("argument", "field"),
    [
        ("path", "path"),
        ("query_string", "query_string"),
        ("user_agent", "user_agent"),
        ("real_ip", "remote_addr"),
        ("peer", "remote_addr"),
        ("forwarded_for", "x_forwarded_for"),
    ],
)
def test_text_fields_are_clipped_past_the_limit(argument, field):
    at_limit = "x" * FIELD_LIMIT
    assert fields(**{argument: at_limit})[field] == at_limit
    assert fields(**{argument: at_limit + "y"})[field] == (
        at_limit + f"...[{FIELD_LIMIT + 1} characters, clipped]"
    )


def test_the_query_string_is_clipped_after_redaction():
    query = "a=" + "x" * 8000 + "&password=" + "s" * 1000 + "&b=" + "y" * 1000
    clipped = fields(query_string=query, redactor=Redactor())["query_string"]
    assert "&password=***&b=yyy" in clipped
    assert clipped.endswith(f"...[{len(query) - 997} characters, clipped]")  # the masked length
    assert "sss" not in clipped
