"""Real apps behind the relayer middlewares: FastAPI (ASGI, through Starlette's
TestClient) and Django (WSGI, through werkzeug's Client; and once through ASGI),
with RelayerPatch. The frameworks are test extras: without them these tests fail.
"""

import asyncio
import contextlib
import logging

import pytest
from django.conf import settings
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.test import override_settings
from django.urls import path as django_path
from fastapi import FastAPI, HTTPException
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.testclient import TestClient
from starlette.websockets import WebSocket
from werkzeug.test import Client

import relayer
from relayer import RelayerLogHandler
from relayer.asgi import RelayerMiddleware as ASGIRelayerMiddleware
from relayer.wsgi import RelayerMiddleware as WSGIRelayerMiddleware

from .helpers import HEX32, RECORD_FIELDS, configure_django, create_flask_app
from .schemas import validate


def payloads(record):
    return [line["payload"] for line in record["lines"]]


pytestmark = pytest.mark.usefixtures("schema_checked")


@pytest.fixture
def capture_root():
    """Remove the handler ``capture_logging=True`` installs on the root logger."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, RelayerLogHandler)]:
        root.removeHandler(handler)


# -- FastAPI -------------------------------------------------------------------------------


def create_fastapi_app(**kwargs):
    lifespan_scopes = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        lifespan_scopes.append(relayer._current_unit())
        yield

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(
        ASGIRelayerMiddleware, logging_topic="logs", kafka_hosts="kafka:9092", **kwargs
    )
    app.state.lifespan_scopes = lifespan_scopes

    @app.get("/sync/{order_id}")
    def sync_view(order_id: int):
        current = relayer.current()
        current.emit("orders", "created", {"id": order_id}, partition_key=str(order_id))
        current.log("info", f"sync order {order_id}")
        current.set("order_id", order_id)
        with current.timer("db"):
            pass
        return {"id": order_id}

    @app.post("/async/{order_id}", status_code=201)
    async def async_view(order_id: int):
        current = relayer.current()
        current.log("info", {"order": order_id, "api_key": "k"})
        current.emit("orders", "created", {"id": order_id})
        with current.timer("db"):
            await asyncio.sleep(0)
        current.set("order_id", order_id)
        return {"id": order_id}

    @app.get("/stream")
    def stream_view():
        def chunks():
            for i in range(3):
                relayer.current().log("info", f"chunk {i}")
                yield f"{i}\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/astream")
    async def async_stream_view():
        async def chunks():
            for i in range(3):
                relayer.current().log("info", f"achunk {i}")
                await asyncio.sleep(0)
                yield f"{i}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/missing")
    def missing_view():
        relayer.current().log("info", "looking")
        raise HTTPException(status_code=404, detail="no such thing")

    @app.get("/boom")
    async def boom_view():
        relayer.current().log("error", "about to fail")
        raise RuntimeError("boom")

    @app.get("/warn")
    def warn_view():
        logging.getLogger("app").warning("low stock: %d", 3)
        return "ok"

    @app.get("/compare")
    def compare_view():
        return PlainTextResponse("same")

    @app.websocket("/ws")
    async def ws_view(websocket: WebSocket):
        await websocket.accept()
        await websocket.send_text("hi")
        await websocket.close()

    return app


@pytest.fixture
def fastapi_client(relayer_patch):
    with TestClient(create_fastapi_app()) as client:
        yield client


class TestFastAPI:
    def test_sync_endpoint(self, fastapi_client, relayer_patch):
        response = fastapi_client.get("/sync/7", headers={"X-Request-ID": "req-7"})
        assert response.status_code == 200 and response.json() == {"id": 7}
        assert response.headers["x-request-id"] == "req-7"
        [event] = relayer_patch.messages("orders")
        assert event["payload"] == {"id": 7} and event["request_id"] == "req-7"
        [record] = relayer_patch.messages("logs")
        assert list(record)[: len(RECORD_FIELDS) - 3] == RECORD_FIELDS[:-3]
        assert record["path"] == "/sync/7" and record["method"] == "GET"
        assert record["status"] == 200 and record["content_length"] == len(response.content)
        assert record["request_id"] == "req-7"
        assert record["remote_addr"] == "testclient"
        assert record["order_id"] == 7 and record["timings"]["db"]["count"] == 1
        assert [line.get("event_type") for line in record["lines"]] == ["orders", None]
        assert record["lines"][1]["payload"] == "sync order 7"

    def test_async_endpoint(self, fastapi_client, relayer_patch):
        response = fastapi_client.post("/async/8?token=abc&x=1")
        assert response.status_code == 201
        generated = response.headers["x-request-id"]
        assert HEX32.fullmatch(generated)
        [record] = relayer_patch.messages("logs")
        assert record["request_id"] == generated
        assert record["method"] == "POST" and record["status"] == 201
        assert record["query_string"] == "token=***&x=1"
        assert record["order_id"] == 8 and record["timings"]["db"]["count"] == 1
        assert record["lines"][0]["payload"] == {"order": 8, "api_key": "***"}
        assert relayer_patch.messages("orders")[0]["request_id"] == generated

    @pytest.mark.parametrize(("url", "prefix"), [("/stream", "chunk"), ("/astream", "achunk")])
    def test_streaming_endpoint(self, fastapi_client, relayer_patch, url, prefix):
        with fastapi_client.stream("GET", url) as response:
            assert b"".join(response.iter_bytes()) == b"0\n1\n2\n"
        [record] = relayer_patch.messages("logs")
        assert payloads(record) == [f"{prefix} {i}" for i in range(3)]
        assert record["content_length"] == 6 and record["status"] == 200

    def test_http_exception_is_its_status(self, fastapi_client, relayer_patch):
        response = fastapi_client.get("/missing")
        assert response.status_code == 404
        assert HEX32.fullmatch(response.headers["x-request-id"])
        [record] = relayer_patch.messages("logs")
        assert record["status"] == 404 and payloads(record) == ["looking"]
        assert record["request_id"] == response.headers["x-request-id"]

    def test_unknown_route_is_a_404(self, fastapi_client, relayer_patch):
        assert fastapi_client.get("/nope").status_code == 404
        assert relayer_patch.messages("logs")[0]["status"] == 404

    def test_plain_exception_is_recorded_as_500(self, relayer_patch):
        app = create_fastapi_app()
        with TestClient(app, raise_server_exceptions=False) as client:
            assert client.get("/boom").status_code == 500
        [record] = relayer_patch.messages("logs")
        assert record["status"] == 500 and payloads(record) == ["about to fail"]
        with TestClient(app) as client, pytest.raises(RuntimeError, match="boom"):
            client.get("/boom")  # the exception reaches the server unchanged
        assert [r["status"] for r in relayer_patch.messages("logs")] == [500, 500]

    def test_capture_logging(self, relayer_patch, capture_root):
        with TestClient(create_fastapi_app(capture_logging=True)) as client:
            assert client.get("/warn").status_code == 200
        [line] = relayer_patch.messages("logs")[0]["lines"]
        assert (line["log_level"], line["payload"], line["logger"]) == (
            "warning",
            "low stock: 3",
            "app",
        )

    def test_lifespan_and_websocket_pass_through(self, relayer_patch):
        app = create_fastapi_app()
        with TestClient(app) as client:
            with client.websocket_connect("/ws") as websocket:
                assert websocket.receive_text() == "hi"
        assert app.state.lifespan_scopes == [None]  # the startup ran, outside any request
        assert relayer_patch.produced_messages == {}

    def test_middleware_exposes_its_relayer(self, fastapi_client, relayer_patch):
        fastapi_client.get("/sync/1")
        middleware = fastapi_client.app.middleware_stack
        while not isinstance(middleware, ASGIRelayerMiddleware):
            middleware = middleware.app
        assert middleware.relayer.record_topic == "logs"
        stats = middleware.relayer.stats()  # patched: recorded, as if delivered
        recorded = sum(len(messages) for messages in relayer_patch.produced_messages.values())
        assert stats["produced"] == stats["delivered"] == recorded == 2  # the event, the record


# -- Django --------------------------------------------------------------------------------


def django_index(request):
    current = relayer.current()
    current.emit("orders", "created", {"id": 3}, partition_key="3")
    current.log("info", "django index")
    current.set("user_id", 42)
    with current.timer("db"):
        pass
    return JsonResponse({"ok": True})


def django_fail(request):
    relayer.current().log("error", "about to fail")
    raise RuntimeError("django boom")


def django_stream(request):
    def chunks():
        for i in range(3):
            relayer.current().log("info", f"chunk {i}")
            yield f"{i}\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


def django_compare(request):
    return HttpResponse("same", content_type="text/plain")


urlpatterns = (
    django_path("", django_index),
    django_path("fail", django_fail),
    django_path("stream", django_stream),
    django_path("compare", django_compare),
)


@pytest.fixture
def django_settings():
    configure_django()
    with override_settings(ROOT_URLCONF=__name__):  # whoever configured Django first
        yield settings


def django_wsgi_client(**kwargs):
    from django.core.wsgi import get_wsgi_application

    middleware = WSGIRelayerMiddleware(
        get_wsgi_application(), logging_topic="logs", kafka_hosts="kafka:9092", **kwargs
    )
    return Client(middleware), middleware


def django_get(client, url, **kwargs):
    """GET through werkzeug's Client, body read (a Django ``HttpResponse`` has no
    Content-Length, so its record is written when the server is done with the body).
    """
    response = client.get(url, environ_base={"REMOTE_ADDR": "192.0.2.1"}, **kwargs)
    response.get_data()
    response.close()
    return response


@pytest.fixture
def django_client(django_settings, relayer_patch):
    return django_wsgi_client()[0]


class TestDjango:
    def test_view_using_current(self, django_client, relayer_patch):
        response = django_get(django_client, "/?a=1", headers={"X-Request-ID": "dj-1"})
        assert response.status_code == 200 and response.json == {"ok": True}
        assert response.headers["X-Request-ID"] == "dj-1"
        [event] = relayer_patch.messages("orders")
        assert event["payload"] == {"id": 3} and event["request_id"] == "dj-1"
        [record] = relayer_patch.messages("logs")
        assert record["path"] == "/" and record["query_string"] == "a=1"
        assert record["status"] == 200 and record["content_length"] == len(response.data)
        assert record["remote_addr"] == "192.0.2.1" and record["request_id"] == "dj-1"
        assert record["user_id"] == 42 and record["timings"]["db"]["count"] == 1
        assert record["lines"][1]["payload"] == "django index"

    def test_error_is_a_500(self, django_client, relayer_patch):
        response = django_get(django_client, "/fail")
        assert response.status_code == 500
        [record] = relayer_patch.messages("logs")
        assert record["status"] == 500 and payloads(record) == ["about to fail"]

    def test_not_found(self, django_client, relayer_patch):
        assert django_get(django_client, "/nope").status_code == 404
        assert relayer_patch.messages("logs")[0]["status"] == 404

    def test_streaming_http_response(self, django_client, relayer_patch):
        response = django_client.get("/stream", buffered=False)
        assert relayer_patch.messages("logs") == [], "not before the stream has ended"
        assert response.get_data() == b"0\n1\n2\n"
        response.close()
        [record] = relayer_patch.messages("logs")
        assert payloads(record) == ["chunk 0", "chunk 1", "chunk 2"]
        assert record["status"] == 200 and record["content_length"] == 6

    def test_django_through_the_asgi_middleware(self, django_settings, relayer_patch):
        from django.core.asgi import get_asgi_application

        app = ASGIRelayerMiddleware(
            get_asgi_application(), logging_topic="logs", kafka_hosts="kafka:9092"
        )
        client = TestClient(app)  # not as a context manager: Django refuses lifespan scopes
        response = client.get("/", headers={"X-Request-ID": "dj-asgi"})
        assert response.json() == {"ok": True}
        assert response.headers["x-request-id"] == "dj-asgi"
        assert client.get("/fail").status_code == 500
        index_record, fail_record = relayer_patch.messages("logs")
        assert index_record["request_id"] == "dj-asgi" and index_record["user_id"] == 42
        assert index_record["lines"][1]["payload"] == "django index"
        assert index_record["content_length"] == len(response.content)
        assert fail_record["status"] == 500 and payloads(fail_record) == ["about to fail"]


# -- the same record everywhere ------------------------------------------------------------


def test_same_record_in_every_framework(django_settings, relayer_patch):
    flask_app = create_flask_app()

    @flask_app.get("/compare")
    def flask_compare():
        return "same", 200, {"Content-Type": "text/plain"}

    url = "/compare?a=1&password=hunter2"
    headers = {
        "User-Agent": "tests/1.0",
        "X-Real-IP": "10.0.0.9",
        "X-Forwarded-For": "10.0.0.9, 10.0.0.1",
        "X-Request-ID": "same-1",
    }
    flask_app.test_client().get(url, headers=headers)
    [flask_record] = relayer_patch.messages("logging_topic")

    django_get(django_wsgi_client()[0], url, headers=headers)
    with TestClient(create_fastapi_app()) as client:
        client.get(url, headers=headers)
    django_record, fastapi_record = relayer_patch.messages("logs")

    for record in (flask_record, django_record, fastapi_record):
        assert list(record) == RECORD_FIELDS
        assert validate(record) == "request_record"
    expected = {
        "user_agent": "tests/1.0",
        "method": "GET",
        "path": "/compare",
        "query_string": "a=1&password=***",
        "remote_addr": "10.0.0.9",
        "x_forwarded_for": "10.0.0.9, 10.0.0.1",
        "request_id": "same-1",
        "status": 200,
        "content_length": 4,
    }
    for record in (flask_record, django_record, fastapi_record):
        assert {name: record[name] for name in expected} == expected
