"""``relayer tail`` as a process against a real Kafka broker, reading what relayer produced."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest
from flask import Flask, abort

from relayer import Relayer
from relayer.flask import FlaskRelayer
from relayer.rpc import make_rpc_relayer

REPO_ROOT = Path(__file__).resolve().parents[2]
TIME = r"\d\d:\d\d:\d\d\.\d{3}"
MS = r"\d+\.\dms"
CANCEL_KEY = uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
EXITS_WITHIN = 30  # seconds: a tail that has caught up exits by itself, well before this


def command(bootstrap, *argv):
    """``relayer tail ARGV -b BOOTSTRAP`` (without ``-b`` if ``bootstrap`` is None)."""
    return [
        sys.executable,
        "-m",
        "relayer",
        "tail",
        *argv,
        *(["-b", bootstrap] if bootstrap else []),
    ]


def tail(bootstrap, *argv, env=None):
    """Run the command; it must exit by itself within EXITS_WITHIN s."""
    started = time.monotonic()
    done = subprocess.run(
        command(bootstrap, *argv),
        capture_output=True,
        text=True,
        timeout=EXITS_WITHIN,
        cwd=REPO_ROOT,
        env=env,
    )
    done.elapsed = time.monotonic() - started
    return done


def ok(done):
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout.splitlines()


@pytest.fixture(scope="module")
def shop(kafka_bootstrap, topic_factory):
    """Two topics filled by a Flask app, an RPC service and a plain Relayer: 5 request
    records and 2 RPC records in ``logs``, 4 events in ``events``."""
    events, logs = topic_factory(partitions=3, prefix="events"), topic_factory(2, "logs")
    app = Flask(__name__)
    ext = FlaskRelayer(app, logs, kafka_bootstrap)

    @app.post("/orders/<int:order_id>")
    def create_order(order_id):
        ext.log("info", f"creating order {order_id}")
        ext.emit(events, "created", {"id": order_id}, partition_key=f"order-{order_id}")
        return {"id": order_id}, 201

    @app.get("/boom")
    def boom():
        ext.log("error", "failing")
        raise RuntimeError("boom")

    @app.get("/missing")
    def missing():
        abort(404)

    client = app.test_client()
    for order_id in (1, 2, 3):
        assert client.post(f"/orders/{order_id}").status_code == 201
    assert client.get("/boom").status_code == 500
    assert client.get("/missing").status_code == 404
    with app.app_context():
        assert ext.flush(30) == 0

    rpc = make_rpc_relayer(logs, kafka_bootstrap)

    class Inventory:
        @rpc
        def reserve(self, sku, relayer=None):
            relayer.log("info", f"reserving {sku}")
            return {"abc": 1}[sku]

    assert Inventory().reserve("abc") == 1
    with pytest.raises(KeyError):
        Inventory().reserve("none")
    assert rpc.close(30) == 0

    plain = Relayer(logs, kafka_bootstrap)
    plain.emit(events, "cancelled", {"id": 9}, partition_key=CANCEL_KEY)
    assert plain.close(30) == 0
    return events, logs


def test_from_beginning_prints_everything_and_exits(kafka_bootstrap, shop):
    events, logs = shop
    done = tail(kafka_bootstrap, logs, events, "--from-beginning")
    lines = ok(done)
    assert done.stderr == ""
    assert done.elapsed < EXITS_WITHIN
    expected = [
        *(rf"{TIME}  201  POST  /orders/{i}  {MS}  2 lines" for i in (1, 2, 3)),
        rf"{TIME}  500  GET  /boom  {MS}  1 line",
        rf"{TIME}  404  GET  /missing  {MS}  0 lines",
        rf"{TIME}  \S+Inventory\.reserve  {MS}  1 line",
        rf"{TIME}  \S+Inventory\.reserve  {MS}  1 line  error: KeyError: 'none'",
        *(rf'{TIME}  {events}  key=order-{i}  {events}/created  {{"id":{i}}}' for i in (1, 2, 3)),
        rf'{TIME}  {events}  key={CANCEL_KEY}  {events}/cancelled  {{"id":9}}',
    ]
    assert len(lines) == len(expected), lines
    for pattern in expected:
        assert [line for line in lines if re.fullmatch(pattern, line)], (pattern, lines)


def test_default_starts_at_the_end(kafka_bootstrap, shop):
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    done = tail(None, *shop, env=env)  # the bootstrap comes from the environment
    assert ok(done) == []
    assert done.stderr == ""
    assert done.elapsed < 15


def test_where(kafka_bootstrap, shop):
    events, logs = shop
    [line] = ok(tail(kafka_bootstrap, logs, "--from-beginning", "--where", "status>=500"))
    assert re.fullmatch(rf"{TIME}  500  GET  /boom  {MS}  1 line", line)
    both = ["--where", "path=/orders/2", "--where", "method=POST"]
    [line] = ok(tail(kafka_bootstrap, logs, "--from-beginning", *both))
    assert "  /orders/2  " in line
    lines = ok(tail(kafka_bootstrap, logs, "--from-beginning", "--where", "status!=201"))
    assert len(lines) == 4  # /boom, /missing, and the RPC records, which have no status
    lines = ok(
        tail(kafka_bootstrap, events, "--from-beginning", "--where", "payload.id>1", "--json")
    )
    assert sorted(orjson.loads(line)["payload"]["id"] for line in lines) == [2, 3, 9]


def test_json_is_what_relayer_produced(kafka_bootstrap, shop, consume):
    events, logs = shop
    lines = ok(tail(kafka_bootstrap, events, logs, "--from-beginning", "--json"))
    produced = consume(kafka_bootstrap, [events, logs], 11)

    def canonical(values):
        return sorted(orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for v in values)

    assert canonical(orjson.loads(line) for line in lines) == canonical(
        orjson.loads(r.value) for r in produced
    )


def test_fields(kafka_bootstrap, shop):
    events, logs = shop
    argv = ["--from-beginning", "--where", "method=GET", "--json", "-k", "status", "path"]
    lines = ok(tail(kafka_bootstrap, logs, *argv))
    assert sorted(lines) == ['{"status":404,"path":"/missing"}', '{"status":500,"path":"/boom"}']
    lines = ok(
        tail(kafka_bootstrap, events, "--from-beginning", "-k", "payload.id", "event_subtype")
    )
    assert sorted(lines) == [
        "payload.id=1  event_subtype=created",
        "payload.id=2  event_subtype=created",
        "payload.id=3  event_subtype=created",
        "payload.id=9  event_subtype=cancelled",
    ]


def test_lines(kafka_bootstrap, shop):
    events, logs = shop
    lines = ok(
        tail(kafka_bootstrap, logs, "--from-beginning", "--lines", "--where", "path=/orders/1")
    )
    assert re.fullmatch(rf"{TIME}  201  POST  /orders/1  {MS}  2 lines", lines[0])
    assert lines[1:] == ["    info: creating order 1", f'    event: {events}/created {{"id":1}}']
    argv = [
        "--from-beginning",
        "--lines",
        "--where",
        "service!=x",
        "--where",
        "lines.0.payload=reserving abc",
    ]
    lines = ok(tail(kafka_bootstrap, logs, *argv))
    assert len(lines) == 2 and lines[1] == "    info: reserving abc"


def test_key(kafka_bootstrap, shop):
    events, _ = shop
    [line] = ok(tail(kafka_bootstrap, events, "--from-beginning", "--key", "order-2", "--json"))
    assert orjson.loads(line)["payload"] == {"id": 2}
    [line] = ok(tail(kafka_bootstrap, events, "--from-beginning", "--key", CANCEL_KEY.hex))
    assert line.endswith(f'{events}/cancelled  {{"id":9}}')


def test_prefix_and_suffix(kafka_bootstrap, create_topic):
    prefix, suffix, name = "stg_", "_v2", f"tail{uuid.uuid4().hex[:12]}"
    for topic in (name, f"{name}-logs"):
        create_topic(kafka_bootstrap, f"{prefix}{topic}{suffix}")
    relayer = Relayer(f"{name}-logs", kafka_bootstrap, topic_prefix=prefix, topic_suffix=suffix)
    relayer.emit(name, "created", {"id": 1}, partition_key="k1")
    relayer.log("info", "outside any request")
    assert relayer.close(30) == 0
    argv = [name, f"{name}-logs", "--prefix", prefix, "--suffix", suffix, "--from-beginning"]
    lines = ok(tail(kafka_bootstrap, *argv))
    assert len(lines) == 2
    topic = f"{prefix}{name}{suffix}"
    assert [line for line in lines if line.endswith(f'{topic}  key=k1  {name}/created  {{"id":1}}')]
    [record] = [orjson.loads(line) for line in lines if line.startswith("{")]
    assert record["lines"][0]["payload"] == "outside any request"
    done = tail(kafka_bootstrap, name, "--from-beginning")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"relayer tail: no such topic on {kafka_bootstrap}: {name}"]


def test_missing_topic_exits_2(kafka_bootstrap, new_topic):
    there, missing = new_topic(), f"missing-{uuid.uuid4().hex[:12]}"
    done = tail(kafka_bootstrap, there, missing)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"relayer tail: no such topic on {kafka_bootstrap}: {missing}\n"


class Reader:
    """The lines of a pipe, read on a thread, so that a test can wait for one with a timeout."""

    def __init__(self, stream):
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream):
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def next(self, timeout=30.0):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no line within {timeout} s")

    def rest(self):
        self.thread.join(30)
        return "".join(iter(self.lines.get_nowait, None))


def test_follow_prints_new_messages_until_ctrl_c(kafka_bootstrap, new_topic):
    events = new_topic(partitions=2, prefix="follow")
    relayer = Relayer("unused-logs", kafka_bootstrap)
    relayer.emit(events, "old", {"n": 0}, partition_key="a")
    assert relayer.flush(30) == 0
    argv = command(kafka_bootstrap, events, "--follow")
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT
    ) as proc:
        try:
            out, err = Reader(proc.stdout), Reader(proc.stderr)
            ready = err.next()
            assert ready == f"relayer tail: following {events} from the end; Ctrl-C to stop\n"
            for n, key in enumerate(["a", "b", "c"], start=1):
                relayer.emit(events, "new", {"n": n}, partition_key=key)
            assert relayer.flush(30) == 0
            got = [out.next() for _ in range(3)]
            assert sorted(line.split("  ")[-1] for line in got) == [
                '{"n":1}\n',
                '{"n":2}\n',
                '{"n":3}\n',
            ]
            assert all(f"  {events}  key=" in line and f"{events}/new" in line for line in got)
            time.sleep(0.5)  # nothing else (not the old message) comes
            assert out.lines.empty()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=15) == 130
            assert out.rest() == "" and err.rest() == ""
        finally:
            if proc.poll() is None:
                proc.kill()
