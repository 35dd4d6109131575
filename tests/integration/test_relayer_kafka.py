"""relayer against a real Kafka broker: events, records, keys, prefixes,
late brokers, exit and fork.

Every test uses its own uuid topics (see conftest.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
import uuid
from collections import defaultdict
from pathlib import Path

import orjson
from flask import Flask

from relayer import Relayer
from relayer.flask import FlaskRelayer
from relayer.rpc import make_rpc_relayer

from ..schemas import validate

REPO_ROOT = Path(__file__).resolve().parents[2]
HEX32 = re.compile("[0-9a-f]{32}")


def values(records):
    return [orjson.loads(r.value) for r in records]


def uid() -> str:
    return uuid.uuid4().hex[:12]


def test_events_and_records_round_trip(kafka_bootstrap, new_topic, consume):
    events = new_topic(partitions=3, prefix="orders")
    logs = new_topic(prefix="logs")
    app = Flask(__name__)
    ext = FlaskRelayer(app, logs, kafka_bootstrap, kafka_headers=True)

    @app.post("/orders/<int:order_id>")
    def create_order(order_id):
        ext.log("info", f"creating order {order_id}")
        ext.emit(events, "created", {"id": order_id}, partition_key=str(order_id))
        return {"id": order_id}, 201

    client = app.test_client()
    for i in range(5):
        assert client.post(f"/orders/{i}", headers={"X-Request-ID": f"r{i}"}).status_code == 201
    with app.app_context():
        assert ext.flush(30) == 0
        stats = ext.stats()
    assert stats == {"produced": 10, "delivered": 10, "failed": 0, "dropped": 0, "pending": 0}

    event_records = consume(kafka_bootstrap, events, 5)
    emitted = values(event_records)
    for consumed in event_records:
        assert consumed.headers["content-type"] == "application/json"
        assert consumed.headers["schema_version"] == "1"
        assert consumed.headers["event_type"] == events
        assert consumed.headers["request_id"] == orjson.loads(consumed.value)["request_id"]
    assert {validate(e) for e in emitted} == {"event"}
    assert sorted(e["payload"]["id"] for e in emitted) == list(range(5))
    assert {e["event_type"] for e in emitted} == {events}
    assert {e["source"] for e in emitted} == {logs}

    records = sorted(values(consume(kafka_bootstrap, logs, 5)), key=lambda r: r["request_id"])
    assert {validate(r) for r in records} == {"request_record"}
    assert [r["request_id"] for r in records] == [f"r{i}" for i in range(5)]
    for i, record in enumerate(records):
        assert record["method"] == "POST" and record["path"] == f"/orders/{i}"
        assert record["status"] == 201 and record["request_time"] > 0
        assert record["lines"][0]["payload"] == f"creating order {i}"
        assert record["lines"][1]["payload"] == {"id": i}


def test_every_key_lands_on_exactly_one_partition(kafka_bootstrap, new_topic, consume):
    topic = new_topic(partitions=6, prefix="keys")
    relayer = Relayer("unused-logs", kafka_bootstrap)
    keys = [f"user-{i}" for i in range(30)] + [uuid.UUID(int=i) for i in range(10)] + [b"\x00raw"]
    for round_ in range(5):
        for key in keys:
            relayer.emit(topic, "tick", {"round": round_}, partition_key=key)
    assert relayer.close(30) == 0

    received = consume(kafka_bootstrap, topic, 5 * len(keys))
    partitions = defaultdict(set)
    for record in received:
        partitions[record.key].add(record.partition)
    assert len(partitions) == len(keys)
    assert all(len(p) == 1 for p in partitions.values()), partitions
    assert len({p for ps in partitions.values() for p in ps}) > 1, "keys spread over partitions"
    assert partitions[uuid.UUID(int=3).bytes], "a uuid key is sent as its 16 raw bytes"
    # Per-key order is kept.
    by_key = defaultdict(list)
    for record in received:
        by_key[record.key].append(orjson.loads(record.value)["payload"]["round"])
    assert all(rounds == sorted(rounds) for rounds in by_key.values())


def test_prefix_and_suffix(kafka_bootstrap, create_topic, consume):
    prefix, suffix = f"p{uid()}.", ".stg"
    for name in ("events", "logs"):
        create_topic(kafka_bootstrap, f"{prefix}{name}{suffix}")
    decorator = make_rpc_relayer("logs", kafka_bootstrap, topic_prefix=prefix, topic_suffix=suffix)

    class Handler:
        @decorator
        def handle(self, n, relayer=None):
            relayer.emit("events", "handled", {"n": n})
            return n

    assert Handler().handle(7) == 7
    assert decorator.close(30) == 0
    [event] = values(consume(kafka_bootstrap, f"{prefix}events{suffix}", 1))
    [record] = values(consume(kafka_bootstrap, f"{prefix}logs{suffix}", 1))
    assert event["payload"] == {"n": 7}
    assert event["source"] == f"{prefix}logs{suffix}"
    assert record["service"].endswith("Handler.handle")
    assert validate(record) == "call_record" and validate(event) == "event"
    assert record["lines"] == [event]


def test_record_of_a_failing_request(kafka_bootstrap, new_topic, consume):
    logs = new_topic(prefix="logs")
    app = Flask(__name__)
    ext = FlaskRelayer(app, logs, kafka_bootstrap)

    @app.get("/fail")
    def fail():
        ext.log("error", "failing")
        raise RuntimeError("boom")

    assert app.test_client().get("/fail").status_code == 500
    assert app.extensions["relayer"].close(30) == 0
    [record] = values(consume(kafka_bootstrap, logs, 1))
    assert record["status"] == 500
    assert record["lines"][0]["payload"] == "failing"


def test_broker_started_after_the_requests_were_served(broker_factory, consume):
    broker = broker_factory()  # ports chosen, nothing listening yet
    events, logs = f"late-events-{uid()}", f"late-logs-{uid()}"
    app = Flask(__name__)
    ext = FlaskRelayer(app, logs, broker.bootstrap)

    @app.post("/<int:n>")
    def view(n):
        ext.emit(events, "created", {"n": n}, partition_key=str(n))
        return "", 204

    client = app.test_client()
    slowest = 0.0
    for n in range(50):
        started = time.perf_counter()
        assert client.post(f"/{n}").status_code == 204
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.5, f"a request waited {slowest:.3f} s on the missing broker"
    relayer = app.extensions["relayer"]
    assert relayer.stats()["pending"] == 100

    broker.start()
    assert relayer.flush(60) == 0
    assert relayer.stats()["delivered"] == 100
    assert sorted(e["payload"]["n"] for e in values(consume(broker.bootstrap, events, 50))) == list(
        range(50)
    )
    assert len(consume(broker.bootstrap, logs, 50)) == 50


def run_script(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_exit_without_flush_loses_nothing(kafka_bootstrap, new_topic, consume):
    events, logs = new_topic(prefix="exit"), new_topic(prefix="exitlogs")
    run_script(
        f"""
        from relayer.rpc import make_rpc_relayer
        rpc = make_rpc_relayer({logs!r}, {kafka_bootstrap!r})

        @rpc
        def call(i, relayer=None):
            relayer.emit({events!r}, "sent", {{"i": i}})

        for i in range(500):
            call(i)
        # no flush(), no close(): the exit hook must deliver everything
        """
    )
    assert sorted(e["payload"]["i"] for e in values(consume(kafka_bootstrap, events, 500))) == list(
        range(500)
    )
    assert len(consume(kafka_bootstrap, logs, 500)) == 500


def test_forked_children_deliver(kafka_bootstrap, new_topic, consume):
    topic = new_topic(prefix="fork")
    run_script(
        f"""
        import os, sys
        from relayer import Relayer
        relayer = Relayer("logs", {kafka_bootstrap!r})   # built before the fork
        relayer.emit({topic!r}, "parent", {{"pid": os.getpid()}})
        assert relayer.flush(30) == 0                    # the parent's producer is running
        children = []
        for n in range(3):
            pid = os.fork()
            if pid == 0:
                relayer.emit({topic!r}, "child", {{"n": n}})
                sys.exit(0)                              # exit hook delivers, as in gunicorn
            children.append(pid)
        for pid in children:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        relayer.emit({topic!r}, "parent", {{"after": True}})
        """
    )
    received = values(consume(kafka_bootstrap, topic, 5))
    assert sorted(e["payload"]["n"] for e in received if e["event_subtype"] == "child") == [0, 1, 2]
    assert sum(e["event_subtype"] == "parent" for e in received) == 2


def test_the_readme_demo_runs(kafka_bootstrap):
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    proc = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Read back 14 of 14 messages." in proc.stdout
    assert "GET /report -> 200" in proc.stdout and "streamed row 2" in proc.stdout
    assert "InventoryService.reserve" in proc.stdout
    # The orders went through the outbox: the committed ones arrived once each,
    # with an event_id; the rolled-back one (422) never did; no row is left.
    assert '"quantity": 0} -> 422' in proc.stdout
    assert "3 through the outbox (0 rows left)." in proc.stdout
    prefix = re.search(r"--prefix (demo\w+\.)", proc.stdout).group(1)
    tail = [sys.executable, "-m", "relayer", "tail", "orders", "--prefix", prefix]
    tail += ["-b", kafka_bootstrap, "--from-beginning", "--json"]
    read = subprocess.run(tail, capture_output=True, text=True, check=True, timeout=60)
    orders = [orjson.loads(line) for line in read.stdout.splitlines()]
    assert sorted(o["payload"]["id"] for o in orders) == [1, 2, 3]
    assert all(HEX32.fullmatch(o["event_id"]) for o in orders)
    assert len({o["event_id"] for o in orders}) == 3
    for order in orders:
        assert f"event_id={order['event_id']}" in proc.stdout


def test_a_rich_record_end_to_end(kafka_bootstrap, new_topic, consume):
    """Logging capture, request and trace ids, set/timer, sender, sampling and
    headers, as a consumer of the real topics sees them."""
    import logging

    events, logs = new_topic(prefix="rich"), new_topic(prefix="richlogs")
    app = Flask(__name__)
    ext = FlaskRelayer(
        app,
        logs,
        kafka_bootstrap,
        capture_logging=True,
        service_name="shop",
        service_version="9.9",
        sample_rate=0.0,  # only failed and slow requests are recorded
        slow_threshold_ms=10_000,
        kafka_headers=True,
    )
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(logging.INFO)

    @app.get("/ok")
    def ok():
        ext.emit(events, "viewed", {"n": 1})
        return "ok"

    @app.get("/fail")
    def fail():
        ext.set("order_id", 42)
        with ext.timer("db"):
            logging.getLogger("app.db").warning("slow query")
        ext.emit(events, "failed", {"n": 2})
        return "no", 503

    trace = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    try:
        client = app.test_client()
        assert client.get("/ok").status_code == 200
        response = client.get("/fail", headers={"X-Request-ID": "rich-1", "traceparent": trace})
    finally:
        root.setLevel(previous_level)
        for handler in list(root.handlers):
            if type(handler).__name__ == "RelayerLogHandler":
                root.removeHandler(handler)
    assert response.headers["X-Request-ID"] == "rich-1"
    with app.app_context():
        assert ext.flush(30) == 0

    [(topic, _, _, raw, headers)] = consume(kafka_bootstrap, logs, 1)  # /ok was sampled out
    record = orjson.loads(raw)
    assert validate(record) == "request_record"
    assert headers["request_id"] == record["request_id"] == "rich-1"
    assert (record["trace_id"], record["span_id"]) == ("a" * 32, "b" * 16)
    assert record["order_id"] == 42 and record["timings"]["db"]["count"] == 1
    assert record["sender"]["service"] == "shop" and record["sender"]["version"] == "9.9"
    assert record["sample_rate"] == 0.0 and record["status"] == 503
    captured = [line for line in record["lines"] if line.get("logger") == "app.db"]
    assert captured and captured[0]["payload"] == "slow query"
    emitted = {e["event_subtype"]: e for e in values(consume(kafka_bootstrap, events, 2))}
    assert emitted["failed"]["request_id"] == "rich-1", "events carry the request id"
    assert HEX32.fullmatch(emitted["viewed"]["request_id"])


def test_events_only_for_requests_that_succeeded(kafka_bootstrap, new_topic, consume, consume_all):
    events = new_topic(prefix="orders")
    logs = new_topic(prefix="logs")
    app = Flask(__name__)
    app.config["RELAYER_EVENT_DELIVERY"] = "on_success"
    ext = FlaskRelayer(app, logs, kafka_bootstrap, kafka_headers=True)

    @app.post("/orders/<int:order_id>")
    def create_order(order_id):
        ext.emit(events, "created", {"id": order_id})
        ext.emit(events, "paid", {"id": order_id})
        if order_id % 2:
            return {"error": "declined"}, 402
        return {"id": order_id}, 201

    client = app.test_client()
    for i in range(4):
        client.post(f"/orders/{i}")
    with app.app_context():
        assert ext.flush(30) == 0
    produced = consume(kafka_bootstrap, events, 4)
    assert [(orjson.loads(r.value)["payload"]["id"], r.headers["event_subtype"]) for r in produced] == [
        (0, "created"), (0, "paid"), (2, "created"), (2, "paid"),
    ]  # fmt: skip
    ids = {orjson.loads(r.value)["event_id"] for r in produced}
    assert {r.headers["event_id"] for r in produced} == ids and len(ids) == 4
    records = values(consume(kafka_bootstrap, logs, 4))
    for record in records:
        validate(record)
        events_in_record = [line for line in record["lines"] if "event_type" in line]
        discarded = [line.get("discarded", False) for line in events_in_record]
        assert discarded == ([True, True] if record["status"] == 402 else [False, False])
    kept = {line["event_id"] for r in records for line in r["lines"] if "discarded" not in line}
    assert kept == ids
    # Nothing more arrives: the declined orders' events were never produced.
    assert len(consume_all(kafka_bootstrap, events)) == 4
