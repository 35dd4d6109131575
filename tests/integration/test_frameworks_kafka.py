"""FastAPI (ASGI middleware) and Django (WSGI middleware) against a real broker:
events and records arrive, with their Kafka headers.

Every test uses its own uuid topics (see conftest.py).
"""

from __future__ import annotations

import time
import uuid

import orjson
from confluent_kafka import Consumer
from django.http import JsonResponse, StreamingHttpResponse
from django.test import override_settings
from django.urls import path as django_path
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from starlette.testclient import TestClient
from werkzeug.test import Client

import relayer
from relayer.asgi import RelayerMiddleware as ASGIRelayerMiddleware
from relayer.wsgi import RelayerMiddleware as WSGIRelayerMiddleware
from tests.helpers import RECORD_FIELDS, configure_django
from tests.schemas import validate


def consume_with_headers(bootstrap, topic, n, timeout=30.0):
    """``[(decoded value, headers dict)]`` of the first ``n`` messages of ``topic``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            headers = {name: value.decode() for name, value in msg.headers() or ()}
            found.append((orjson.loads(msg.value()), headers))
    finally:
        consumer.close()
    assert len(found) == n, f"consumed {len(found)} of {n} messages from {topic}"
    return found


def check_headers(event_headers, record_headers, request_id, events):
    """The headers consumers route on (a subset: relayer may add more)."""
    common = {"content-type": "application/json", "schema_version": "1", "request_id": request_id}
    expected_event = {**common, "event_type": events, "event_subtype": "created"}
    assert {name: event_headers.get(name) for name in expected_event} == expected_event
    assert {name: record_headers.get(name) for name in common} == common


def test_fastapi_records_and_events_arrive(kafka_bootstrap, new_topic):
    events = new_topic(prefix="orders")
    logs = new_topic(prefix="logs")
    app = FastAPI()
    app.add_middleware(
        ASGIRelayerMiddleware, logging_topic=logs, kafka_hosts=kafka_bootstrap, kafka_headers=True
    )

    @app.post("/orders/{order_id}", status_code=201)
    async def create_order(order_id: int):
        current = relayer.current()
        current.log("info", f"creating order {order_id}")
        current.emit(events, "created", {"id": order_id}, partition_key=str(order_id))
        return {"id": order_id}

    @app.get("/report")
    def report():
        def rows():
            for i in range(3):
                relayer.current().log("info", f"row {i}")
                yield f"{i}\n"

        return StreamingResponse(rows(), media_type="text/plain")

    with TestClient(app) as client:
        assert client.post("/orders/5", headers={"X-Request-ID": "fa-1"}).status_code == 201
        assert client.get("/report", headers={"X-Request-ID": "fa-2"}).text == "0\n1\n2\n"
        middleware = client.app.middleware_stack
        while not isinstance(middleware, ASGIRelayerMiddleware):
            middleware = middleware.app
        assert middleware.relayer.flush(30) == 0
    assert middleware.relayer.stats()["delivered"] == 3

    [(event, event_headers)] = consume_with_headers(kafka_bootstrap, events, 1)
    assert event["payload"] == {"id": 5} and event["request_id"] == "fa-1"
    (order, order_headers), (streamed, _) = consume_with_headers(kafka_bootstrap, logs, 2)
    check_headers(event_headers, order_headers, "fa-1", events)
    assert list(order) == RECORD_FIELDS
    assert validate(order) == validate(streamed) == "request_record" and validate(event) == "event"
    assert order["path"] == "/orders/5" and order["status"] == 201
    assert order["request_id"] == "fa-1"
    assert [line.get("payload") for line in order["lines"]] == ["creating order 5", {"id": 5}]
    assert streamed["request_id"] == "fa-2" and streamed["content_length"] == 6
    assert [line["payload"] for line in streamed["lines"]] == ["row 0", "row 1", "row 2"]


def django_order(request, order_id):
    current = relayer.current()
    current.log("info", f"creating order {order_id}")
    topic = request.headers["X-Events-Topic"]  # the test's own topic
    current.emit(topic, "created", {"id": order_id}, partition_key=str(order_id))
    return JsonResponse({"id": order_id}, status=201)


def django_report(request):
    def rows():
        for i in range(3):
            relayer.current().log("info", f"row {i}")
            yield f"{i}\n"

    return StreamingHttpResponse(rows(), content_type="text/plain")


urlpatterns = [
    django_path("orders/<int:order_id>", django_order),
    django_path("report", django_report),
]


def test_django_records_and_events_arrive(kafka_bootstrap, new_topic):
    events = new_topic(prefix="orders")
    logs = new_topic(prefix="logs")
    configure_django()
    from django.core.wsgi import get_wsgi_application

    middleware = WSGIRelayerMiddleware(
        get_wsgi_application(), logging_topic=logs, kafka_hosts=kafka_bootstrap, kafka_headers=True
    )
    client = Client(middleware)
    with override_settings(ROOT_URLCONF=__name__):
        response = client.post(
            "/orders/9", headers={"X-Request-ID": "dj-1", "X-Events-Topic": events}
        )
        assert response.status_code == 201 and response.get_data() == b'{"id": 9}'
        response.close()
        response = client.get("/report", headers={"X-Request-ID": "dj-2"})
        assert response.get_data() == b"0\n1\n2\n"
        response.close()
    assert middleware.relayer.flush(30) == 0
    assert middleware.relayer.stats()["delivered"] == 3

    [(event, event_headers)] = consume_with_headers(kafka_bootstrap, events, 1)
    assert event["payload"] == {"id": 9} and event["request_id"] == "dj-1"
    (order, order_headers), (streamed, _) = consume_with_headers(kafka_bootstrap, logs, 2)
    check_headers(event_headers, order_headers, "dj-1", events)
    assert list(order) == RECORD_FIELDS
    assert validate(order) == validate(streamed) == "request_record" and validate(event) == "event"
    assert order["path"] == "/orders/9" and order["method"] == "POST"
    assert order["status"] == 201 and order["content_length"] == 9
    assert [line.get("payload") for line in order["lines"]] == ["creating order 9", {"id": 9}]
    assert streamed["request_id"] == "dj-2" and streamed["content_length"] == 6
    assert [line["payload"] for line in streamed["lines"]] == ["row 0", "row 1", "row 2"]
