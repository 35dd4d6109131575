"""The JSON Schemas in relayer/schemas/ describe what relayer produces."""

import logging

import jsonschema
import pytest
from flask import Flask, Response

from relayer import Relayer, capture_logging
from relayer.flask import FlaskRelayer
from relayer.rpc import make_rpc_relayer

from .schemas import KINDS, VALIDATORS, validate


def test_every_schema_is_valid():
    for kind in KINDS:
        jsonschema.Draft202012Validator.check_schema(VALIDATORS[kind].schema)


def produce_everything():
    """A Flask app, an RPC service and a plain relayer doing all they can."""
    app = Flask(__name__)
    ext = FlaskRelayer(app, "http_logs", "k:1", service_name="shop", service_version="1.0")
    handler = capture_logging()

    @app.get("/")
    def index():
        ext.emit("orders", "created", {"id": 1, "tags": ["a"]}, partition_key="1")
        ext.emit_raw("raw", [1, 2])
        ext.log("info", "plain")
        ext.log("debug", {"password": "x", "n": 1})
        ext.set("user_id", 7)
        with ext.timer("db"):
            logging.getLogger("app").warning("captured")
        return "ok"

    @app.get("/stream")
    def stream():
        return Response(iter([b"a", b"b"]))

    @app.get("/boom")
    def boom():
        raise RuntimeError("x")

    client = app.test_client()
    client.get("/?password=p", headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"})
    client.get("/stream").close()
    client.get("/boom")

    decorator = make_rpc_relayer("rpc_logs", "k:1", sample_rate=0.5, slow_threshold_ms=0)

    @decorator
    def call(relayer=None):
        relayer.emit("orders", "paid", {"id": 1})

    @decorator
    def fails(relayer=None):
        raise KeyError("k")

    call()
    with pytest.raises(KeyError):
        fails()
    Relayer("lone_logs", "k:1").log("warning", "outside any unit of work")
    logging.getLogger().removeHandler(handler)


def test_everything_produced_matches_its_schema(relayer_patch):
    produce_everything()
    seen = set()
    for topic in relayer_patch.produced_messages:
        if topic == "raw":
            continue  # emit_raw sends the caller's own shape
        for message in relayer_patch.messages(topic):
            seen.add(validate(message))
    assert seen == set(KINDS)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("event", {"source": "s", "event_type": "e", "event_subtype": "x", "payload": 1}),
        ("event", {"source": "s", "event_type": "e", "event_subtype": "x", "payload": 1,
                   "timestamp": "2026-11-22 05:49:53"}),
        ("request_record", {"source": "s", "logging_topic": "l", "date": "2026-11-22T05:49:53+00:00",
                            "sender": {"host": "h", "pid": 1}, "lines": [], "method": "GET"}),
    ],
)  # fmt: skip
def test_schemas_reject_what_relayer_never_produces(kind, message):
    with pytest.raises(jsonschema.ValidationError):
        validate(message, kind)


def test_a_malformed_log_line_is_caught():
    record = {
        "source": "s", "logging_topic": "l", "date": "2026-11-22T05:49:53+00:00",
        "sender": {"host": "h", "pid": 1}, "lines": [{"log_level": 3, "payload": "x"}],
    }  # fmt: skip
    with pytest.raises(jsonschema.ValidationError):
        validate(record, "log_record")
