"""relayer.flask.FlaskRelayer, through Flask's test client and RelayerPatch."""

import gc
import re
import threading
import time
import weakref

import pytest
from flask import Flask, Response

from relayer import (
    ConfigurationError,
    InvalidFieldError,
    NonJSONSerializableMessageError,
    OutsideUnitOfWorkError,
    Relayer,
)
from relayer.flask import FlaskRelayer

from .helpers import RECORD_FIELDS, create_flask_app


@pytest.fixture
def flask_relayer():
    """The app's extension, made before the app as in the README's extensions.py."""
    return FlaskRelayer()


@pytest.fixture
def app(relayer_patch, flask_relayer):
    return create_flask_app(flask_relayer)


@pytest.fixture
def client(app):
    return app.test_client()


def records(patch, topic="logging_topic"):
    return patch.messages(topic)


def test_record_fields_and_values(client, relayer_patch):
    started = time.perf_counter()
    response = client.get(
        "/?a=1&b=x",
        headers={
            "User-Agent": "tests/1.0",
            "X-Real-IP": "10.0.0.9",
            "X-Forwarded-For": "10.0.0.9, 10.0.0.1",
            "X-Request-ID": "req-123",
        },
    )
    took_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200
    [record] = records(relayer_patch)  # written by the time the request returned
    assert list(record) == RECORD_FIELDS
    assert record["source"] == "logging_topic"
    assert record["logging_topic"] == "logging_topic"
    assert record["user_agent"] == "tests/1.0"
    assert record["method"] == "GET"
    assert record["path"] == "/"
    assert record["query_string"] == "a=1&b=x"
    assert record["remote_addr"] == "10.0.0.9"
    assert record["x_forwarded_for"] == "10.0.0.9, 10.0.0.1"
    assert record["request_id"] == "req-123"
    assert record["status"] == 200
    assert record["content_length"] == 4
    assert 0 < record["request_time"] <= took_ms, "milliseconds, within the client's call"
    assert [(line["log_level"], line["payload"]) for line in record["lines"]] == [
        ("info", "Getting root")
    ]


def test_remote_addr_without_proxy_headers(client, relayer_patch):
    client.get("/")
    record = records(relayer_patch)[0]
    assert record["remote_addr"] == "127.0.0.1"
    assert record["x_forwarded_for"] is None
    assert re.fullmatch("[0-9a-f]{32}", record["request_id"]), "generated when not sent"


def test_emit_goes_to_its_topic_and_to_the_record(client, relayer_patch):
    assert client.post("/").status_code == 201
    [event] = relayer_patch.messages("entity_created")
    assert event["payload"] == {"id": 10}
    assert relayer_patch.mocked_producer.keys("entity_created") == [b"10"]
    [record] = records(relayer_patch)
    assert record["status"] == 201
    assert record["lines"] == [event]


def test_view_that_raises_still_gets_a_record_testing_mode(app, client, relayer_patch):
    app.testing = True
    with pytest.raises(ValueError, match="boom"):
        client.get("/fail")
    [record] = records(relayer_patch)
    assert record["status"] == 500
    assert record["lines"][0]["payload"] == "about to fail"


def test_view_that_raises_still_gets_a_record_production_mode(client, relayer_patch):
    assert client.get("/fail").status_code == 500
    [record] = records(relayer_patch)
    assert record["status"] == 500
    assert record["lines"][0]["payload"] == "about to fail"


def test_streamed_response_record_written_when_stream_ends(client, relayer_patch):
    response = client.get("/stream", buffered=False)
    assert records(relayer_patch) == [], "not before the stream has ended"
    assert response.get_data() == b"0\n1\n2\n"
    response.close()
    [record] = records(relayer_patch)
    assert [line["payload"] for line in record["lines"]] == ["chunk 0", "chunk 1", "chunk 2"]
    assert record["content_length"] == 6
    assert record["status"] == 200


def test_stream_with_context(client, relayer_patch):
    response = client.get("/stream-with-context")
    assert response.get_data() == b"x"
    response.close()
    [record] = records(relayer_patch)
    assert [line["payload"] for line in record["lines"]] == ["inside"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_no_body_responses_are_recorded_at_once(client, relayer_patch, method):
    client.open("/empty", method=method)
    [record] = records(relayer_patch)
    assert record["status"] == 204 and record["method"] == method


def test_404_recorded(client, relayer_patch):
    assert client.get("/nope").status_code == 404
    assert records(relayer_patch)[0]["status"] == 404


def test_concurrent_requests_never_see_each_others_lines(relayer_patch):
    app = Flask(__name__)
    ext = FlaskRelayer(app, "logs", "kafka:9092")
    barrier = threading.Barrier(8)

    @app.get("/<name>")
    def view(name):
        ext.log("info", f"{name}-before")
        barrier.wait(timeout=10)
        ext.log("info", f"{name}-after")
        return name

    def call(name):
        assert app.test_client().get(f"/{name}").status_code == 200

    threads = [threading.Thread(target=call, args=(f"r{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    found = records(relayer_patch, "logs")
    assert len(found) == 8
    for record in found:
        name = record["path"][1:]
        assert [line["payload"] for line in record["lines"]] == [f"{name}-before", f"{name}-after"]


class TestInitApp:
    def test_extension_state_lives_on_the_app(self):
        app = Flask(__name__)
        ext = FlaskRelayer()
        ext.init_app(app, "logs", kafka_hosts="kafka:9092")
        assert isinstance(app.extensions["relayer"], Relayer)
        assert not hasattr(ext, "app")

    def test_second_init_app_raises_and_says_what_to_do(self):
        app = Flask(__name__)
        ext = FlaskRelayer(app, "logs", "kafka:9092")
        with pytest.raises(ConfigurationError, match="already initialised.*init_app once"):
            ext.init_app(app, "logs", "kafka:9092")

    def test_kafka_hosts_from_config(self):
        app = Flask(__name__)
        app.config["KAFKA_HOSTS"] = "from-config:9092"
        FlaskRelayer().init_app(app, "logs")
        assert (
            app.extensions["relayer"]._producer._config["bootstrap.servers"] == "from-config:9092"
        )

    def test_relayer_config_keys(self):
        app = Flask(__name__)
        app.config.update(
            RELAYER_KAFKA_HOSTS="k:1",
            RELAYER_LOGGING_TOPIC="cfg_logs",
            RELAYER_TOPIC_PREFIX="p_",
            RELAYER_TOPIC_SUFFIX="_s",
            RELAYER_SOURCE="svc",
            RELAYER_PRODUCER_OPTS={"linger.ms": 42},
        )
        FlaskRelayer(app)
        instance = app.extensions["relayer"]
        assert instance.record_topic == "p_cfg_logs_s"
        assert instance.source == "svc"
        assert instance._producer._config["linger.ms"] == 42

    def test_missing_settings(self):
        with pytest.raises(ConfigurationError, match="kafka_hosts is required"):
            FlaskRelayer(Flask(__name__), "logs")
        with pytest.raises(ConfigurationError, match="logging_topic is required"):
            FlaskRelayer(Flask(__name__), kafka_hosts="k:1")

    def test_one_extension_many_apps(self, relayer_patch):
        ext = FlaskRelayer()
        apps = []
        for name in ("one", "two"):
            app = Flask(name)
            ext.init_app(app, f"{name}_logs", kafka_hosts="k:1", topic_prefix=f"{name}_")

            @app.get("/")
            def view():
                ext.emit("evt", "s", {})
                return "ok"

            apps.append(app)
        for app in apps:
            app.test_client().get("/")
        assert set(relayer_patch.produced_messages) == {
            "one_evt", "one_one_logs", "two_evt", "two_two_logs",
        }  # fmt: skip


class TestOutsideRequests:
    def test_in_app_context(self, app, flask_relayer, relayer_patch):
        relayer = flask_relayer
        with app.app_context():
            relayer.emit("e", "s", 1)
            relayer.emit_raw("raw", [1])
            relayer.log("info", "startup")
            assert relayer.flush(0) == 0
            stats = relayer.stats()  # the patch recorded them, as delivered
            assert (stats["produced"], stats["delivered"], stats["pending"]) == (3, 3, 0)
            assert relayer.instance is app.extensions["relayer"]
        assert relayer_patch.messages("e")[0]["payload"] == 1
        assert relayer_patch.messages("raw") == [[1]]
        assert records(relayer_patch)[0]["lines"][0]["payload"] == "startup"

    def test_one_app_serves_calls_without_app_context(self, relayer_patch):
        app = Flask(__name__)
        ext = FlaskRelayer(app, "logs", "kafka:9092")
        app.test_client().get("/")  # then, as after test-client calls or at shutdown:
        ext.emit("e", "s", 1)
        ext.emit_raw("raw", [1])
        ext.log("info", "from a script")
        ext.set("ignored", 1)
        with ext.timer("ignored"):
            pass
        assert ext.flush(0) == 0
        assert relayer_patch.mocked_producer.flushed is True
        assert ext.stats()["produced"] == 4  # the 404's record and the three above
        assert ext.instance is app.extensions["relayer"]
        assert relayer_patch.messages("e")[0]["payload"] == 1
        assert relayer_patch.messages("raw") == [[1]]
        assert [r["lines"][0]["payload"] for r in records(relayer_patch, "logs")[1:]] == [
            "from a script"
        ]

    def test_apps_are_remembered_weakly(self, relayer_patch):
        ext = FlaskRelayer()
        gone = Flask("gone")
        ext.init_app(gone, "gone_logs", "kafka:9092")
        gone_ref = weakref.ref(gone)
        del gone
        gc.collect()
        assert gone_ref() is None
        ext.init_app(Flask("kept"), "kept_logs", "kafka:9092")
        ext.log("info", "to the live app")
        assert records(relayer_patch, "kept_logs")[0]["lines"][0]["payload"] == "to the live app"

    def test_several_apps_without_app_context_is_a_clear_error(self, relayer_patch):
        ext = FlaskRelayer()
        one, two = Flask("one"), Flask("two")
        ext.init_app(one, "logs", "kafka:9092", topic_prefix="one_")
        ext.init_app(two, "logs", "kafka:9092", topic_prefix="two_")
        for call in (lambda: ext.emit("e", "s", 1), ext.flush, lambda: ext.instance):
            with pytest.raises(OutsideUnitOfWorkError, match="2 apps.*'one', 'two'.*app_context"):
                call()
        with two.app_context():
            ext.emit("e", "s", 2)
            assert ext.instance is two.extensions["relayer"]
        assert relayer_patch.messages("two_e")[0]["payload"] == 2
        assert "one_e" not in relayer_patch.produced_messages

    def test_never_initialised_without_app_context_is_a_clear_error(self):
        with pytest.raises(OutsideUnitOfWorkError, match="init_app"):
            FlaskRelayer().emit("e", "s", 1)

    @pytest.mark.parametrize("apps", [0, 2])
    def test_set_and_timer_do_nothing_even_without_a_relayer(self, relayer_patch, apps):
        ext = FlaskRelayer()
        for i in range(apps):
            ext.init_app(Flask(f"app{i}"), "logs", "kafka:9092")
        ext.set("field", {"a": 1})
        with pytest.raises(InvalidFieldError, match="status"):
            ext.set("status", 1)
        with pytest.raises(NonJSONSerializableMessageError):
            ext.set("field", object())

        @ext.timer("decorated")
        def work():
            return "done"

        with ext.timer("block"):
            assert work() == "done"
        assert relayer_patch.produced_messages == {}


def test_secrets_never_reach_the_record(client, relayer_patch):
    client.get(
        "/?user=ada&password=hunter2&access_token=tok-123&api_key=K-9",
        headers={
            "Authorization": "Bearer AUTH-VALUE",
            "Proxy-Authorization": "Basic PROXY-VALUE",
            "Cookie": "session=COOKIE-VALUE",
        },
    )
    [(raw, _)] = relayer_patch.produced_messages["logging_topic"]
    for secret in (b"hunter2", b"tok-123", b"K-9", b"AUTH-VALUE", b"PROXY-VALUE", b"COOKIE-VALUE"):
        assert secret not in raw
    record = records(relayer_patch)[0]
    assert record["query_string"] == "user=ada&password=***&access_token=***&api_key=***"


def test_set_cookie_of_the_response_is_not_recorded(relayer_patch):
    app = Flask(__name__)
    FlaskRelayer(app, "logs", "k:1")

    @app.get("/login")
    def login():
        response = Response("ok")
        response.set_cookie("session", "SET-COOKIE-VALUE")
        return response

    app.test_client().get("/login")
    assert b"SET-COOKIE-VALUE" not in relayer_patch.produced_messages["logs"][0][0]
