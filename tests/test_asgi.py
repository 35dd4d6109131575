"""relayer.asgi.RelayerMiddleware with hand-written ASGI apps and a tiny driver (no framework)."""

import asyncio
import logging
import time

import pytest

import relayer as relayer_module
from relayer import Relayer, RelayerLogHandler
from relayer._encoding import FIELD_LIMIT
from relayer.asgi import RelayerMiddleware

from .helpers import HEX32, RECORD_FIELDS
from .schemas import validate


def http_scope(method="GET", path="/", query=b"", headers=(), client=("10.0.0.1", 5000), **extra):
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers],
        "client": client,
        "server": ("testserver", 80),
        **extra,
    }


async def drive(app, scope, on_send=None):
    """Run one request; return the messages the server was sent."""
    sent = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if requests:
            return requests.pop(0)
        await asyncio.sleep(3600)  # a real server waits for the disconnect

    async def send(message):
        sent.append(message)
        if on_send is not None:
            on_send(message)

    await app(scope, receive, send)
    return sent


def run(app, scope=None, **kwargs):
    return asyncio.run(drive(app, scope or http_scope(), **kwargs))


def response_headers(sent):
    return dict(sent[0]["headers"])


def text_app(body=b"hello", status=200, headers=None, log=None):
    """An app answering ``body`` (with its content-length unless ``headers`` is given)."""

    async def app(scope, receive, send):
        if log:
            middleware.relayer.log("info", log)
        await receive()
        raw = headers if headers is not None else [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    middleware = RelayerMiddleware(app, logging_topic="logs", kafka_hosts="k:1")
    return middleware


async def hello_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


def wrap(app, **kwargs):
    return RelayerMiddleware(app, logging_topic="logs", kafka_hosts="k:1", **kwargs)


pytestmark = pytest.mark.usefixtures("schema_checked")


@pytest.fixture
def capture_root():
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(previous)
    for handler in [h for h in root.handlers if isinstance(h, RelayerLogHandler)]:
        root.removeHandler(handler)


# -- the record ----------------------------------------------------------------------------


def test_record_fields_and_values(relayer_patch):
    app = text_app(log="hello there")
    scope = http_scope(
        "POST",
        "/orders/7",
        b"a=1&b=x",
        headers=[
            ("User-Agent", "tests/1.0"),
            ("X-Real-IP", "10.0.0.9"),
            ("X-Forwarded-For", "10.0.0.9, 10.0.0.1"),
            ("X-Request-ID", "req-123"),
            ("Authorization", "Bearer secret"),
            ("Cookie", "session=secret"),
        ],
    )
    started = time.perf_counter()
    sent = run(app, scope)
    took_ms = (time.perf_counter() - started) * 1000
    assert sent[1]["body"] == b"hello"
    [record] = relayer_patch.messages("logs")
    assert list(record) == RECORD_FIELDS  # the same fields as Flask's, in the same order
    assert validate(record) == "request_record"
    assert record["source"] == "logs" and record["logging_topic"] == "logs"
    assert record["user_agent"] == "tests/1.0"
    assert record["method"] == "POST"
    assert record["path"] == "/orders/7"
    assert record["query_string"] == "a=1&b=x"
    assert record["remote_addr"] == "10.0.0.9"
    assert record["x_forwarded_for"] == "10.0.0.9, 10.0.0.1"
    assert record["request_id"] == "req-123"
    assert record["status"] == 200
    assert record["content_length"] == 5
    assert 0 < record["request_time"] <= took_ms, "milliseconds, within the server's call"
    assert [(line["log_level"], line["payload"]) for line in record["lines"]] == [
        ("info", "hello there")
    ]
    assert "secret" not in str(record)


def test_peer_address_and_no_proxy_headers(relayer_patch):
    run(text_app(), http_scope(client=("192.0.2.4", 41000)))
    run(text_app(), http_scope(client=None))
    first, second = relayer_patch.messages("logs")
    assert first["remote_addr"] == "192.0.2.4" and first["x_forwarded_for"] is None
    assert first["user_agent"] is None
    assert second["remote_addr"] is None


def test_root_path_is_part_of_the_path(relayer_patch):
    run(text_app(), http_scope(path="/items/1", root_path="/api"))
    run(text_app(), http_scope(path="/api/items/2", root_path="/api"))  # newer servers
    paths = [record["path"] for record in relayer_patch.messages("logs")]
    assert paths == ["/api/items/1", "/api/items/2"]


def test_utf8_path_query_and_headers_decoded_as_wsgi_does(relayer_patch):
    scope = http_scope(path="/café", query="q=café".encode())
    scope["headers"] = [(b"user-agent", "agent é".encode()), (b"x-real-ip", b"\xff\xfe")]
    run(text_app(), scope)
    [record] = relayer_patch.messages("logs")
    assert record["path"] == "/café" and record["query_string"] == "q=café"
    assert record["user_agent"] == "agent é"
    assert record["remote_addr"] == "\ufffd\ufffd"  # not UTF-8: replaced, never an error


def test_invalid_utf8_in_query_and_headers_is_replaced(relayer_patch):
    scope = http_scope(path="/a\ufffdb", query=b"q=caf\xc3\xa9&r=\xff&s=%ff")
    scope["raw_path"] = b"/a%ffb"  # the server decoded path, as the ASGI spec says
    scope["headers"] = [
        (b"user-agent", b"agent \xe2\x82"),
        (b"x-forwarded-for", b"10.0.0.1, \xff"),
        (b"x-forwarded-for", "café".encode()),
    ]
    run(text_app(), scope)
    [record] = relayer_patch.messages("logs")
    assert record["path"] == "/a\ufffdb"
    assert record["query_string"] == "q=café&r=\ufffd&s=%ff"
    assert record["user_agent"] == "agent \ufffd"
    assert record["x_forwarded_for"] == "10.0.0.1, \ufffd, café"


MEGABYTE = 1 << 20


@pytest.mark.parametrize(
    ("where", "name", "field", "value"),
    [
        ("query", None, "query_string", "q=" + "x" * MEGABYTE),
        ("query", None, "query_string", "q=" + "é" * MEGABYTE),
        ("header", b"x-forwarded-for", "x_forwarded_for", "10.0.0.1, " * (MEGABYTE // 10)),
        ("path", None, "path", "/" + "p" * MEGABYTE),
        ("header", b"user-agent", "user_agent", "a" * MEGABYTE),
        ("header", b"x-real-ip", "remote_addr", "1" * MEGABYTE),
    ],
)
def test_an_oversized_field_is_clipped_and_the_record_kept(
    relayer_patch, where, name, field, value
):
    scope = http_scope()
    if where == "query":
        scope["query_string"] = value.encode()
    elif where == "path":
        scope["path"], scope["raw_path"] = value, value.encode()
    else:
        scope["headers"] = [(name, value.encode())]
    run(text_app(), scope)
    [(raw, _)] = relayer_patch.produced_messages["logs"]
    assert len(raw) < 1_000_000  # Kafka's default message.max.bytes
    [record] = relayer_patch.messages("logs")
    assert record[field] == value[:FIELD_LIMIT] + f"...[{len(value)} characters, clipped]"


def test_repeated_headers_are_joined(relayer_patch):
    scope = http_scope(headers=[("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "10.0.0.2")])
    run(text_app(), scope)
    assert relayer_patch.messages("logs")[0]["x_forwarded_for"] == "10.0.0.1, 10.0.0.2"


def test_secret_query_parameters_are_masked(relayer_patch):
    run(text_app(), http_scope(query=b"user=bob&password=hunter2&api_key=k"))
    [record] = relayer_patch.messages("logs")
    assert record["query_string"] == "user=bob&password=***&api_key=***"


@pytest.mark.parametrize(
    ("method", "status", "headers", "body", "expected"),
    [
        ("HEAD", 200, [(b"content-length", b"11")], b"", 11),
        ("HEAD", 200, [], b"", None),
        ("GET", 204, [], b"", None),
        ("GET", 304, [], b"", None),
        ("GET", 200, [], b"abc", 3),  # no header: the bytes sent
    ],
)
def test_head_and_no_body_statuses(relayer_patch, method, status, headers, body, expected):
    sent = run(text_app(body, status, headers), http_scope(method))
    assert sent[0]["status"] == status
    [record] = relayer_patch.messages("logs")
    assert (record["method"], record["status"]) == (method, status)
    assert record["content_length"] == expected


# -- request ids ---------------------------------------------------------------------------


def test_incoming_request_id_is_used_and_echoed(relayer_patch):
    sent = run(text_app(), http_scope(headers=[("X-Request-ID", "abc-123")]))
    assert response_headers(sent)[b"x-request-id"] == b"abc-123"
    assert response_headers(sent)[b"content-length"] == b"5"  # the app's headers are kept
    assert relayer_patch.messages("logs")[0]["request_id"] == "abc-123"


def test_request_id_generated_when_missing_or_unusable(relayer_patch):
    first = run(text_app())
    second = run(text_app(), http_scope(headers=[("X-Request-ID", "has spaces")]))
    ids = [response_headers(sent)[b"x-request-id"].decode() for sent in (first, second)]
    assert all(HEX32.fullmatch(i) for i in ids) and ids[0] != ids[1]
    assert [record["request_id"] for record in relayer_patch.messages("logs")] == ids


def test_request_id_set_by_the_app_is_not_duplicated(relayer_patch):
    app = text_app(headers=[(b"x-request-id", b"from-app")])
    sent = run(app, http_scope(headers=[("X-Request-ID", "incoming")]))
    assert [v for k, v in sent[0]["headers"] if k == b"x-request-id"] == [b"from-app"]


def test_request_id_header_name_is_configurable(relayer_patch):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = wrap(app, request_id_header="X-Correlation-ID")
    sent = run(middleware, http_scope(headers=[("X-Correlation-ID", "corr-1")]))
    assert response_headers(sent)[b"x-correlation-id"] == b"corr-1"
    assert relayer_patch.messages("logs")[0]["request_id"] == "corr-1"


def test_the_apps_message_is_not_mutated(relayer_patch):
    start = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}

    async def app(scope, receive, send):
        await send(start)
        await send({"type": "http.response.body", "body": b""})

    sent = run(wrap(app))
    assert start["headers"] == [(b"content-length", b"0")]
    assert b"x-request-id" in response_headers(sent)


# -- the unit of work ----------------------------------------------------------------------


def test_current_relayer_inside_the_app(relayer_patch):
    async def app(scope, receive, send):
        current = relayer_module.current()
        current.emit("orders", "created", {"id": 1}, partition_key="1")
        current.log("info", {"order": 1, "token": "t"})
        current.set("user_id", 42)
        with current.timer("db"):
            await asyncio.sleep(0)
        middleware.relayer.log("info", "from the Relayer")
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    middleware = wrap(app)
    run(middleware, http_scope("POST", headers=[("X-Request-ID", "r-1")]))
    [event] = relayer_patch.messages("orders")
    assert event["payload"] == {"id": 1} and event["request_id"] == "r-1"
    [record] = relayer_patch.messages("logs")
    assert record["status"] == 201 and record["user_id"] == 42
    assert validate(record) == "request_record" and validate(event) == "event"
    assert record["timings"]["db"]["count"] == 1
    assert [line.get("payload") for line in record["lines"]] == [
        {"id": 1},
        {"order": 1, "token": "***"},
        "from the Relayer",
    ]


def test_the_scope_is_left_when_the_request_ends(relayer_patch):
    async def fail(scope, receive, send):
        raise ValueError("x")

    async def main():  # one task for both requests, as a server's connection handler
        with Relayer("outer", "k:1").unit_of_work("outer") as outer:
            await drive(wrap(hello_app), http_scope())
            assert relayer_module._current_unit() is outer.unit
            with pytest.raises(ValueError):
                await drive(wrap(fail), http_scope())
            assert relayer_module._current_unit() is outer.unit

    asyncio.run(main())
    assert [r["status"] for r in relayer_patch.messages("logs")] == [200, 500]


def test_captured_logging(relayer_patch, capture_root):
    async def app(scope, receive, send):
        logging.getLogger("app").warning("low stock: %d", 3)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    run(wrap(app, capture_logging=True))
    [line] = relayer_patch.messages("logs")[0]["lines"]
    assert line["log_level"] == "warning" and line["payload"] == "low stock: 3"
    assert line["logger"] == "app"


def test_streamed_body_with_lines_logged_mid_stream(relayer_patch):
    seen = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            relayer_module.current().log("info", f"chunk {i}")
            await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        relayer_module.current().log("info", "last")
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        relayer_module.current().log("info", "background task")  # after the response
        seen.append(len(relayer_patch.messages("logs")))

    def on_send(message):
        if message.get("more_body"):
            assert relayer_patch.messages("logs") == [], "not before the stream has ended"

    sent = run(wrap(app), on_send=on_send)
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b"ababab"
    assert seen == [0], "written when the app returns, background work included"
    [record] = relayer_patch.messages("logs")
    assert record["content_length"] == 6
    assert [line["payload"] for line in record["lines"]] == [
        "chunk 0",
        "chunk 1",
        "chunk 2",
        "last",
        "background task",
    ]


def test_body_is_never_buffered(relayer_patch):
    order = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            order.append(f"app {i}")
            await send({"type": "http.response.body", "body": b"x", "more_body": i < 2})

    run(wrap(app), on_send=lambda m: order.append(m["type"].rsplit(".", 1)[1]))
    assert order == ["start", "app 0", "body", "app 1", "body", "app 2", "body"]


def test_trailers_are_passed_and_recorded_once(relayer_patch):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [], "trailers": True})
        await send({"type": "http.response.body", "body": b"abc"})
        await send({"type": "http.response.trailers", "headers": [], "more_trailers": False})
        assert relayer_patch.messages("logs") == []  # the record waits for the app to return

    sent = run(wrap(app))
    assert sent[-1]["type"] == "http.response.trailers"
    [record] = relayer_patch.messages("logs")
    assert record["content_length"] == 3


def test_exception_before_the_response_is_a_500_and_propagates(relayer_patch):
    error = KeyError("boom")

    async def app(scope, receive, send):
        relayer_module.current().log("error", "about to fail")
        raise error

    with pytest.raises(KeyError) as raised:
        run(wrap(app))
    assert raised.value is error
    [record] = relayer_patch.messages("logs")
    assert record["status"] == 500 and record["content_length"] is None
    assert record["lines"][0]["payload"] == "about to fail"


def test_exception_after_the_response_started(relayer_patch):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("stream broke")

    with pytest.raises(RuntimeError, match="stream broke"):
        run(wrap(app))
    [record] = relayer_patch.messages("logs")
    assert record["status"] == 200 and record["content_length"] == 4  # what was sent


def test_exception_after_the_last_body_message_writes_one_record(relayer_patch):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        raise RuntimeError("background task failed")

    with pytest.raises(RuntimeError):
        run(wrap(app))
    assert [r["status"] for r in relayer_patch.messages("logs")] == [200]


def test_app_that_sends_nothing_is_recorded_as_500(relayer_patch):
    async def app(scope, receive, send):
        pass

    assert run(wrap(app)) == []
    [record] = relayer_patch.messages("logs")
    assert record["status"] == 500


def test_cancelled_request_is_recorded_once(relayer_patch):
    started = asyncio.Event()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        started.set()
        await asyncio.sleep(3600)

    async def main():
        task = asyncio.ensure_future(drive(wrap(app), http_scope()))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    [record] = relayer_patch.messages("logs")
    assert record["status"] == 200 and record["content_length"] == 0


def test_server_send_failure_still_writes_the_record(relayer_patch):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    async def main():
        async def send(message):
            if message["type"] == "http.response.body":
                raise OSError("client went away")

        await wrap(app)(http_scope(), None, send)

    with pytest.raises(OSError):
        asyncio.run(main())
    [record] = relayer_patch.messages("logs")
    assert record["status"] == 200


def test_concurrent_requests_never_see_each_others_lines(relayer_patch):
    count = 8
    arrived = []
    all_arrived = None

    async def app(scope, receive, send):
        name = scope["path"][1:]
        relayer_module.current().log("info", f"{name}-before")
        arrived.append(name)
        if len(arrived) == count:
            all_arrived.set()
        await all_arrived.wait()  # every request is inside the app at once
        middleware.relayer.log("info", f"{name}-after")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0)
        relayer_module.current().log("info", f"{name}-streaming")
        await send({"type": "http.response.body", "body": name.encode()})

    middleware = wrap(app)

    async def main():
        nonlocal all_arrived
        all_arrived = asyncio.Event()
        await asyncio.gather(*(drive(middleware, http_scope(path=f"/r{i}")) for i in range(count)))

    asyncio.run(main())
    found = relayer_patch.messages("logs")
    assert len(found) == count
    assert {record["path"] for record in found} == {f"/r{i}" for i in range(count)}
    for record in found:
        name = record["path"][1:]
        assert [line["payload"] for line in record["lines"]] == [
            f"{name}-before",
            f"{name}-after",
            f"{name}-streaming",
        ]
        assert record["content_length"] == len(name)


# -- other scopes pass through -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["lifespan", "websocket"])
def test_other_scopes_pass_straight_through(relayer_patch, kind):
    calls = []

    async def app(scope, receive, send):
        calls.append((scope, receive, send, relayer_module._current_unit()))
        await send({"type": f"{kind}.sent"})

    scope = {"type": kind, "asgi": {"version": "3.0"}, "path": "/ws", "headers": []}
    original = dict(scope)

    async def receive():
        return {"type": f"{kind}.connect"}

    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(wrap(app)(scope, receive, send))
    [(seen_scope, seen_receive, seen_send, current)] = calls
    assert seen_scope is scope and scope == original
    assert seen_receive is receive and seen_send is send  # not wrapped
    assert current is None, "no unit of work"
    assert sent == [{"type": f"{kind}.sent"}]
    assert relayer_patch.produced_messages == {}


# -- construction --------------------------------------------------------------------------


def test_keyword_arguments_go_to_the_relayer(relayer_patch):
    middleware = RelayerMiddleware(
        hello_app, logging_topic="logs", kafka_hosts="k:1", topic_prefix="p_", source="svc"
    )
    assert isinstance(middleware.relayer, Relayer)
    assert middleware.relayer.record_topic == "p_logs" and middleware.relayer.source == "svc"
    run(middleware)
    assert relayer_patch.messages("p_logs")[0]["source"] == "svc"
    positional = RelayerMiddleware(hello_app, "other", "k:1", capture_logging=False)
    assert positional.relayer.record_topic == "other" and positional.app is hello_app


def test_sample_rate_keeps_failures(relayer_patch):
    async def app(scope, receive, send):
        status = int(scope["path"][1:])
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = wrap(app, sample_rate=0.0)
    for status in (200, 503, 200):
        run(middleware, http_scope(path=f"/{status}"))
    assert [r["status"] for r in relayer_patch.messages("logs")] == [503]


def test_an_existing_relayer_can_be_passed(relayer_patch):
    shared = Relayer("shared", "k:1")
    middleware = RelayerMiddleware(hello_app, relayer=shared)
    assert middleware.relayer is shared
    run(middleware)
    assert len(relayer_patch.messages("shared")) == 1
