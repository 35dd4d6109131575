"""Request ids, trace ids, headers, set/timer, sender, sampling, current()."""

import asyncio
import os
import socket
import time

import pytest
from flask import Flask

import relayer as relayer_module
from relayer import InvalidFieldError, NonJSONSerializableMessageError, OutsideUnitOfWorkError
from relayer.flask import FlaskRelayer
from relayer.rpc import make_rpc_relayer

from .helpers import HEX32


def flask_app(**kwargs):
    app = Flask(__name__)
    ext = FlaskRelayer(app, "logs", "k:1", **kwargs)

    @app.get("/")
    def index():
        ext.emit("orders", "created", {"id": 1})
        ext.log("info", "hello")
        return "ok"

    @app.get("/fail")
    def fail():
        return "no", 503

    @app.get("/raise")
    def boom():
        raise RuntimeError("x")

    return app, ext


class TestRequestIds:
    def test_incoming_id_is_used_echoed_and_put_on_events(self, relayer_patch):
        app, _ = flask_app()
        response = app.test_client().get("/", headers={"X-Request-ID": "abc-123"})
        assert response.headers["X-Request-ID"] == "abc-123"
        assert relayer_patch.messages("orders")[0]["request_id"] == "abc-123"
        assert relayer_patch.messages("logs")[0]["request_id"] == "abc-123"

    def test_generated_when_missing_or_unusable(self, relayer_patch):
        app, _ = flask_app()
        client = app.test_client()
        first = client.get("/").headers["X-Request-ID"]
        second = client.get("/", headers={"X-Request-ID": "has spaces " + "x" * 200})
        assert HEX32.fullmatch(first)
        assert HEX32.fullmatch(second.headers["X-Request-ID"])
        assert first != second.headers["X-Request-ID"]
        ids = [r["request_id"] for r in relayer_patch.messages("logs")]
        assert ids == [first, second.headers["X-Request-ID"]]

    def test_header_name_is_configurable(self, relayer_patch):
        app, _ = flask_app(request_id_header="X-Correlation-ID")
        response = app.test_client().get("/", headers={"X-Correlation-ID": "corr-1"})
        assert response.headers["X-Correlation-ID"] == "corr-1"
        assert relayer_patch.messages("logs")[0]["request_id"] == "corr-1"

    def test_rpc_ids_passed_inherited_or_generated(self, relayer_patch):
        decorator = make_rpc_relayer("rpclogs", "k:1")

        @decorator
        def inner(relayer=None):
            return relayer.request_id

        @decorator
        def outer(relayer=None):
            return relayer.request_id, inner()

        assert inner(relayer_request_id="from-caller") == "from-caller"
        generated, inherited = outer()
        assert HEX32.fullmatch(generated) and inherited == generated
        assert [r["request_id"] for r in relayer_patch.messages("rpclogs")] == [
            "from-caller", generated, generated,
        ]  # fmt: skip


class TestTraceIds:
    TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
    SPAN = "00f067aa0ba902b7"

    def test_traceparent(self, relayer_patch):
        app, _ = flask_app()
        app.test_client().get("/", headers={"traceparent": f"00-{self.TRACE}-{self.SPAN}-01"})
        record = relayer_patch.messages("logs")[0]
        assert (record["trace_id"], record["span_id"]) == (self.TRACE, self.SPAN)

    @pytest.mark.parametrize(
        "value", ["garbage", f"00-{'0' * 32}-{SPAN}-01", "ff-" + "1" * 32 + "-" + "1" * 16 + "-01"]
    )
    def test_invalid_traceparent_ignored(self, relayer_patch, value):
        app, _ = flask_app()
        app.test_client().get("/", headers={"traceparent": value})
        assert "trace_id" not in relayer_patch.messages("logs")[0]

    def test_active_opentelemetry_span(self, relayer_patch):
        from opentelemetry.sdk.trace import TracerProvider

        tracer = TracerProvider().get_tracer("tests")
        decorator = make_rpc_relayer("rpclogs", "k:1")

        @decorator
        def call(relayer=None):
            pass

        with tracer.start_as_current_span("rpc") as span:
            call()
            context = span.get_span_context()
        record = relayer_patch.messages("rpclogs")[0]
        assert record["trace_id"] == format(context.trace_id, "032x")
        assert record["span_id"] == format(context.span_id, "016x")


def test_kafka_headers_when_turned_on(relayer_patch):
    app, _ = flask_app(kafka_headers=True)
    app.test_client().get("/", headers={"X-Request-ID": "r-1"})
    [event] = relayer_patch.mocked_producer.headers("orders")
    [value] = relayer_patch.messages("orders")
    assert event == {
        "content-type": "application/json",
        "schema_version": "1",
        "event_type": "orders",
        "event_subtype": "created",
        "event_id": value["event_id"],
        "request_id": "r-1",
    }
    [record] = relayer_patch.mocked_producer.headers("logs")
    assert record == {
        "content-type": "application/json", "schema_version": "1", "request_id": "r-1",
    }  # fmt: skip


@pytest.mark.parametrize("kwargs", [{}, {"kafka_headers": False}])
def test_no_kafka_headers_by_default(relayer_patch, kwargs):
    """By default (and with kafka_headers=False): no headers on events, records, raw
    messages and lone log lines."""
    app, ext = flask_app(**kwargs)
    app.test_client().get("/", headers={"X-Request-ID": "r-1"})
    assert app.extensions["relayer"].kafka_headers is False
    with app.app_context():
        ext.emit("orders", "direct", {"id": 2}, partition_key="k")
        ext.emit_raw("raw", [1])
        ext.log("info", "outside")
    produced = relayer_patch.mocked_producer.produced_headers
    assert set(produced) == {"orders", "logs", "raw"}
    assert [len(messages) for messages in produced.values()] == [2, 2, 1]
    assert all(headers == {} for messages in produced.values() for headers in messages)
    assert relayer_patch.messages("orders")[0]["request_id"] == "r-1"  # still in the JSON

    configured = Flask(__name__)
    configured.config["RELAYER_KAFKA_HEADERS"] = False
    FlaskRelayer(configured, "logs", "k:1")
    assert configured.extensions["relayer"].kafka_headers is False


class TestSetAndTimer:
    def test_set_and_timers_in_a_flask_request(self, relayer_patch):
        app = Flask(__name__)
        ext = FlaskRelayer(app, "logs", "k:1")

        @ext.timer("helper")
        def helper():
            return 1

        @app.get("/")
        def index():
            ext.set("user_id", 42)
            ext.set("plan", {"name": "pro"})
            with ext.timer("db"):
                time.sleep(0.01)
            with ext.timer("db"):
                time.sleep(0.01)
            helper()
            return "ok"

        app.test_client().get("/")
        record = relayer_patch.messages("logs")[0]
        assert record["user_id"] == 42 and record["plan"] == {"name": "pro"}
        assert record["timings"]["db"]["count"] == 2
        assert 20 <= record["timings"]["db"]["total_ms"] <= record["request_time"]
        assert record["timings"]["helper"]["count"] == 1

    def test_set_value_is_copied_when_set(self, relayer_patch):
        decorator = make_rpc_relayer("rpclogs", "k:1")
        value = {"n": 1}

        @decorator
        def call(relayer=None):
            relayer.set("thing", value)
            value["n"] = 2

        call()
        assert relayer_patch.messages("rpclogs")[0]["thing"] == {"n": 1}

    @pytest.mark.parametrize("name", ["status", "lines", "request_id", "", 3])
    def test_reserved_or_bad_names(self, name):
        with pytest.raises(InvalidFieldError):
            relayer_module.Relayer("logs", "k:1").set(name, 1)

    def test_unserializable_value(self):
        with pytest.raises(NonJSONSerializableMessageError):
            relayer_module.Relayer("logs", "k:1").set("x", object())

    def test_outside_a_unit_of_work_they_are_no_ops(self, relayer_patch):
        r = relayer_module.Relayer("logs", "k:1")
        r.set("x", 1)
        with r.timer("t"):
            pass
        assert relayer_patch.produced_messages == {}

    def test_timer_name_checked(self):
        with pytest.raises(InvalidFieldError):
            relayer_module.Relayer("logs", "k:1").timer("")


def test_sender(relayer_patch):
    decorator = make_rpc_relayer("rpclogs", "k:1", service_name="billing", service_version="1.2.3")

    @decorator
    def call(relayer=None):
        pass

    call()
    sender = relayer_patch.messages("rpclogs")[0]["sender"]
    assert sender["host"] == socket.gethostname()
    assert sender["pid"] == os.getpid()
    assert sender["service"] == "billing" and sender["version"] == "1.2.3"


class TestSampling:
    def test_failures_always_kept_others_sampled_out(self, relayer_patch):
        app, _ = flask_app(sample_rate=0.0)
        client = app.test_client()
        client.get("/")
        client.get("/fail")
        client.get("/raise")
        records = relayer_patch.messages("logs")
        assert [r["status"] for r in records] == [503, 500]
        assert all(r["sample_rate"] == 0.0 for r in records)
        assert len(relayer_patch.messages("orders")) == 1, "events are always emitted"

    def test_slow_units_kept(self, relayer_patch):
        decorator = make_rpc_relayer("rpclogs", "k:1", sample_rate=0.0, slow_threshold_ms=0)

        @decorator
        def call(relayer=None):
            pass

        call()
        assert len(relayer_patch.messages("rpclogs")) == 1

    def test_rate_is_roughly_honoured(self, relayer_patch):
        decorator = make_rpc_relayer("rpclogs", "k:1", sample_rate=0.25)

        @decorator
        def call(relayer=None):
            pass

        for _ in range(2000):
            call()
        assert 350 < len(relayer_patch.messages("rpclogs")) < 650

    @pytest.mark.parametrize(
        "kwargs", [{"sample_rate": 1.5}, {"sample_rate": -0.1}, {"slow_threshold_ms": -1}]
    )
    def test_bad_settings(self, kwargs):
        with pytest.raises(relayer_module.ConfigurationError):
            relayer_module.Relayer("logs", "k:1", **kwargs)


class TestCurrent:
    def test_inside_a_request_and_a_call(self, relayer_patch):
        app = Flask(__name__)
        FlaskRelayer(app, "logs", "k:1")

        @app.get("/")
        def index():
            relayer_module.current().log("info", "deep in the stack")
            return relayer_module.current().request_id

        response = app.test_client().get("/")
        record = relayer_patch.messages("logs")[0]
        assert record["lines"][0]["payload"] == "deep in the stack"
        assert response.get_data(as_text=True) == record["request_id"]

    def test_outside(self):
        with pytest.raises(OutsideUnitOfWorkError, match="outside a unit of work"):
            relayer_module.current()


class TestRpcCallables:
    def test_static_class_bound_and_callable_objects(self, relayer_patch):
        decorator = make_rpc_relayer("rpclogs", "k:1")

        class Service:
            @decorator
            @staticmethod
            def static(x, relayer=None):
                relayer.log("info", "static")
                return x

            @decorator
            @classmethod
            def klass(cls, x, relayer=None):
                relayer.log("info", cls.__name__)
                return x

            def method(self, x, relayer=None):
                return x

        class Callable:
            def __call__(self, x, relayer=None):
                return x

        class AsyncCallable:
            async def __call__(self, x, relayer=None):
                return x

        bound = decorator(Service().method)
        assert Service.static(1) == 1 and Service().static(2) == 2
        assert Service.klass(3) == 3
        assert bound(4) == 4
        assert decorator(Callable())(5) == 5
        assert asyncio.run(decorator(AsyncCallable())(6)) == 6
        services = [r["service"] for r in relayer_patch.messages("rpclogs")]
        assert services[0].endswith("Service.static")
        assert services[2].endswith("Service.klass")
        assert services[3].endswith("Service.method")
        assert services[4].endswith("Callable") and services[5].endswith("AsyncCallable")
