"""relayer when Kafka misbehaves: a broker outage while serving, a full buffer, exit with the
broker down, and gunicorn --preload workers.

Each test prints the figures it measured (run with ``-s`` to see them); docs/RELIABILITY.md
quotes them. Every test uses its own uuid topics (see conftest.py).
"""

from __future__ import annotations

import math
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from relayer import Relayer
from relayer.flask import FlaskRelayer
from tools import kafka_local
from tools.kafka_local import KafkaBroker

REPO_ROOT = Path(__file__).resolve().parents[2]
BrokerFactory = Callable[..., KafkaBroker]
Consume = Callable[..., list[Any]]


def uid() -> str:
    return uuid.uuid4().hex[:12]


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 < q <= 1, nearest rank) of ``samples``, in milliseconds."""
    ordered = sorted(samples)
    return 1000 * ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def rss_mb() -> float:
    """This process's resident set size (VmRSS), in MiB."""
    status = Path("/proc/self/status").read_text()
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert found, status
    return int(found[1]) / 1024


def make_app(bootstrap: str, events: str, logs: str, **relayer_kwargs: Any) -> Flask:
    """A Flask app whose ``POST /hit/<rid>`` logs a line and emits an event ``{"id": rid}``:
    two messages per request (the event, and the request's record at its end)."""
    app = Flask(__name__)
    ext = FlaskRelayer(app, logs, bootstrap, **relayer_kwargs)

    @app.post("/hit/<rid>")
    def hit(rid: str) -> tuple[str, int]:
        ext.log("info", f"hit {rid}")
        ext.emit(events, "hit", {"id": rid}, partition_key=rid)
        return "", 204

    return app


def hit(client: FlaskClient, rid: str) -> None:
    response = client.post(f"/hit/{rid}", headers={"X-Request-ID": rid})
    assert response.status_code == 204, response.data


def assert_exactly_once(
    bootstrap: str, events: str, logs: str, rids: Sequence[str], consume_all: Consume
) -> None:
    """Every request's event and record is in Kafka once: none missing, none twice."""
    emitted = Counter(
        orjson.loads(r.value)["payload"]["id"]
        for r in consume_all(bootstrap, events, idle=2.0, timeout=90)
    )
    recorded = Counter(
        orjson.loads(r.value)["request_id"]
        for r in consume_all(bootstrap, logs, idle=2.0, timeout=90)
    )
    expected = Counter(rids)
    for name, got in (("events", emitted), ("records", recorded)):
        missing = expected - got
        extra = got - expected
        assert not missing and not extra, (
            f"{name}: {sum(missing.values())} missing (e.g. {list(missing)[:3]}), "
            f"{sum(extra.values())} duplicated or unexpected (e.g. {list(extra)[:3]})"
        )


# --- 1. outage --------------------------------------------------------------------------------


def test_broker_outage_while_serving(
    broker_factory: BrokerFactory, create_topic: Callable[..., str], consume_all: Consume
) -> None:
    """The broker is stopped (SIGTERM) and restarted while a Flask app serves ~500 requests/s:
    request latency does not change while it is down, and after the restart every event and
    every record is delivered exactly once."""
    broker = broker_factory().start()
    events = create_topic(broker.bootstrap, f"outage-events-{uid()}", partitions=3)
    logs = create_topic(broker.bootstrap, f"outage-logs-{uid()}")
    app = make_app(broker.bootstrap, events, logs)
    relayer: Relayer = app.extensions["relayer"]
    client = app.test_client()
    rids: list[str] = []
    for i in range(300):  # warm-up, and the producer is connected
        rids.append(f"w{i}")
        hit(client, rids[-1])
    assert relayer.flush(30) == 0

    samples: list[tuple[float, float]] = []  # (when the request started, how long it took)
    done = threading.Event()
    errors: list[BaseException] = []

    def serve() -> None:
        """One request every 2 ms, until ``done``."""
        n = 0
        next_at = time.monotonic()
        try:
            while not done.is_set():
                rid = f"r{n}"
                started = time.monotonic()
                hit(client, rid)
                samples.append((started, time.monotonic() - started))
                rids.append(rid)
                n += 1
                next_at += 0.002
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                else:
                    next_at = time.monotonic()
        except BaseException as exc:
            errors.append(exc)

    server = threading.Thread(target=serve, name="serve")
    server.start()
    try:
        time.sleep(3)
        t_stop = time.monotonic()
        broker.stop()  # SIGTERM: a clean shutdown, same ports and data on restart
        t_down = time.monotonic()
        assert not broker.running
        time.sleep(3)
        t_start = time.monotonic()
        broker.start()
        t_up = time.monotonic()
        backlog = relayer.stats()["produced"]  # what was produced before the broker came back
        while relayer.stats()["delivered"] < backlog and time.monotonic() - t_up < 60:
            time.sleep(0.01)
        backlog_s = time.monotonic() - t_up
        time.sleep(max(0.0, 3 - backlog_s))
    finally:
        done.set()
        server.join()
    assert not errors, errors
    assert relayer.flush(60) == 0
    stats = relayer.stats()
    n = len(rids)
    assert stats == {"produced": 2 * n, "delivered": 2 * n, "failed": 0, "dropped": 0, "pending": 0}
    assert relayer.close(10) == 0

    phases = {
        "before": [d for t, d in samples if t < t_stop],
        "stopping": [d for t, d in samples if t_stop <= t < t_down],
        "outage": [d for t, d in samples if t_down <= t < t_start],
        "restarting": [d for t, d in samples if t_start <= t < t_up],
        "after": [d for t, d in samples if t >= t_up],
    }
    print(
        f"\noutage: {n} requests ({2 * n} messages); broker stop {t_down - t_stop:.1f} s, "
        f"down {t_start - t_down:.1f} s, restart {t_up - t_start:.1f} s; backlog of "
        f"{backlog} messages delivered {backlog_s:.2f} s after the restart"
    )
    for name, durations in phases.items():
        assert len(durations) > 50, (name, len(durations))
        print(
            f"  {name:<10} {len(durations):>5} requests  p50 {percentile(durations, 0.5):6.3f} ms"
            f"  p99 {percentile(durations, 0.99):6.3f} ms  max {1000 * max(durations):7.3f} ms"
        )
    p99_before = percentile(phases["before"], 0.99)
    p99_outage = percentile(phases["outage"], 0.99)
    assert p99_outage < p99_before + 5, (p99_before, p99_outage)
    slowest = max(d for _, d in samples)
    assert slowest < 0.5, f"a request took {slowest:.3f} s"  # never blocked on the network

    assert_exactly_once(broker.bootstrap, events, logs, rids, consume_all)


# --- 2. overflow ------------------------------------------------------------------------------


def serve_timed(client: FlaskClient, prefix: str, count: int) -> float:
    """Serve ``count`` requests as fast as possible; return the requests per second."""
    started = time.perf_counter()
    for i in range(count):
        hit(client, f"{prefix}{i}")
    return count / (time.perf_counter() - started)


def test_full_buffer_drops_without_slowing_down(
    kafka_bootstrap: str, new_topic: Callable[..., str], broker_factory: BrokerFactory
) -> None:
    """With the broker down and a 1000-message buffer, the app serves at full speed, every
    message is accounted for (dropped ones counted) and memory stays flat."""
    n = 2000
    # Normal: a reachable broker, default buffer.
    normal_app = make_app(kafka_bootstrap, new_topic(prefix="ovf"), new_topic(prefix="ovflogs"))
    normal = normal_app.test_client()
    serve_timed(normal, "warm", 300)
    rps_normal = serve_timed(normal, "n", 2 * n)
    assert normal_app.extensions["relayer"].close(30) == 0

    # Broker down (never started: connection refused), a small buffer.
    down = broker_factory()
    app = make_app(down.bootstrap, f"ovf-{uid()}", f"ovflogs-{uid()}", buffer_max_messages=1000)
    relayer: Relayer = app.extensions["relayer"]
    client = app.test_client()
    try:
        rss_start = rss_mb()
        serve_timed(client, "a", n)  # the first 500 requests fill the buffer
        rss_n = rss_mb()
        stats_n = relayer.stats()
        rps_full = serve_timed(client, "b", 9 * n)
        rss_10n = rss_mb()
        stats = relayer.stats()
    finally:
        lost = relayer.close(0)
    print(
        f"\noverflow: normal {rps_normal:,.0f} requests/s, buffer full {rps_full:,.0f} "
        f"requests/s; RSS {rss_start:.1f} MiB at start, {rss_n:.1f} after {n} requests, "
        f"{rss_10n:.1f} after {10 * n} (+{rss_10n - rss_n:.1f}); stats after {n}: {stats_n}, "
        f"after {10 * n}: {stats}"
    )
    assert stats["produced"] == 2 * 10 * n  # an event and a record per request
    assert stats["delivered"] == stats["failed"] == 0
    assert 0 < stats["pending"] <= 1000, stats
    assert stats["dropped"] == stats["produced"] - stats["pending"] > 0
    assert stats_n["dropped"] > 0 and stats_n["pending"] <= 1000, stats_n
    assert rps_full > 0.5 * rps_normal, (rps_normal, rps_full)
    assert rss_10n - rss_n < 20, (rss_n, rss_10n)
    assert lost == stats["pending"]
    after = relayer.stats()  # the purged messages count as failed
    assert after["pending"] == 0 and after["failed"] == lost, after
    assert after["produced"] == after["delivered"] + after["failed"] + after["dropped"]


def test_when_full_block_waits_at_most_block_timeout(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    broker_factory: BrokerFactory,
    consume: Consume,
) -> None:
    """``when_full="block"``: with the broker down each call on a full buffer waits about
    ``block_timeout``, then drops; with the broker up it waits for room and drops nothing."""
    block_timeout = 0.1
    topic = f"block-{uid()}"
    down = Relayer(
        f"blocklogs-{uid()}",
        broker_factory().bootstrap,  # never started
        buffer_max_messages=100,
        when_full="block",
        block_timeout=block_timeout,
    )
    try:
        started = time.perf_counter()
        for i in range(100):
            down.emit(topic, "fill", {"i": i})
        fill_s = time.perf_counter() - started
        waits = []
        for i in range(10):
            started = time.perf_counter()
            down.emit(topic, "over", {"i": i})  # never raises
            waits.append(time.perf_counter() - started)
        stats = down.stats()
    finally:
        down.close(0)
    print(
        f"\nwhen_full=block, block_timeout={block_timeout}: 100 messages filled the buffer "
        f"in {1000 * fill_s:.1f} ms; each further call waited "
        f"{', '.join(f'{1000 * w:.0f}' for w in waits)} ms; stats {stats}"
    )
    assert fill_s < 1.0, "calls with room in the buffer must not wait"
    assert stats == {"produced": 110, "delivered": 0, "failed": 0, "dropped": 10, "pending": 100}
    assert all(0.8 * block_timeout <= w < block_timeout + 0.4 for w in waits), waits

    # The broker up and a tiny buffer: "block" waits for room, so nothing is dropped.
    topic = new_topic(partitions=2, prefix="block")
    up = Relayer(
        f"blocklogs-{uid()}",
        kafka_bootstrap,
        buffer_max_messages=20,
        when_full="block",
        block_timeout=10,
    )
    started = time.perf_counter()
    for i in range(1000):
        up.emit(topic, "tick", {"i": i})
    assert up.flush(30) == 0
    up_s = time.perf_counter() - started
    stats = up.stats()
    assert up.close(10) == 0
    print(f"  broker up, 20-message buffer: 1000 calls delivered in {up_s:.2f} s; stats {stats}")
    assert stats == {"produced": 1000, "delivered": 1000, "failed": 0, "dropped": 0, "pending": 0}
    received = consume(kafka_bootstrap, topic, 1000)
    assert sorted(orjson.loads(r.value)["payload"]["i"] for r in received) == list(range(1000))


# --- 3. exit with the broker down -------------------------------------------------------------

EXIT_SCRIPT = """
import logging, sys, time
logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
from relayer import Relayer
relayer = Relayer("exit-logs", {bootstrap!r}, shutdown_timeout={shutdown_timeout!r})
if {wait_for_stop!r}:
    relayer.emit({topic!r}, "probe", {{}})
    assert relayer.flush(30) == 0, relayer.stats()
    print("connected", flush=True)
    sys.stdin.readline()  # the broker is stopped meanwhile
for i in range(100):
    relayer.emit({topic!r}, "lost", {{"i": i}})
print("exiting", time.monotonic(), flush=True)  # no flush(), no close()
"""


@pytest.mark.parametrize("broker_state", ["never_started", "stopped"])
def test_exit_with_the_broker_down(
    broker_state: str, broker_factory: BrokerFactory, create_topic: Callable[..., str]
) -> None:
    """A process exits within ``shutdown_timeout`` (plus a little) when the broker is down,
    and logs how many messages it lost."""
    shutdown_timeout = 2.0
    broker = broker_factory()
    topic = f"exit-{uid()}"
    if broker_state == "stopped":
        broker.start()
        create_topic(broker.bootstrap, topic)
    script = EXIT_SCRIPT.format(
        bootstrap=broker.bootstrap,
        topic=topic,
        shutdown_timeout=shutdown_timeout,
        wait_for_stop=broker_state == "stopped",
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        if broker_state == "stopped":
            assert proc.stdout is not None and proc.stdin is not None
            assert proc.stdout.readline() == "connected\n"
            broker.stop()
            proc.stdin.write("go\n")
            proc.stdin.flush()
        stdout, stderr = proc.communicate(timeout=60)
        exited_at = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    [last_call] = [line for line in stdout.splitlines() if line.startswith("exiting ")]
    exit_s = exited_at - float(last_call.split()[1])  # CLOCK_MONOTONIC: same in both processes
    print(
        f"\nexit with the broker {broker_state.replace('_', ' ')}: exited {exit_s:.2f} s after "
        f"the last call (shutdown_timeout={shutdown_timeout}); stderr: {stderr.strip()!r}"
    )
    assert "100 message(s) could not be delivered in time and are lost" in stderr, stderr
    assert exit_s < shutdown_timeout + 1.5, exit_s


# --- 4. gunicorn --preload --------------------------------------------------------------------


def test_gunicorn_preload_workers_deliver(
    kafka_bootstrap: str, new_topic: Callable[..., str], consume_all: Consume, tmp_path: Path
) -> None:
    """``gunicorn --preload -w 2 examples.wsgi_app:app``: the relayer is built in the master,
    both forked workers produce, and on SIGTERM their exit hooks deliver everything, once."""
    events, logs = new_topic(partitions=2, prefix="gunicorn"), new_topic(prefix="gunicornlogs")
    port = kafka_local.free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "RELAYER_DEMO_BOOTSTRAP": kafka_bootstrap,
        "RELAYER_DEMO_EVENTS_TOPIC": events,
        "RELAYER_DEMO_LOGS_TOPIC": logs,
    }
    log_path = tmp_path / "gunicorn.log"
    argv = [sys.executable, "-m", "gunicorn", "--preload", "-w", "2"]
    argv += ["-b", f"127.0.0.1:{port}", "--graceful-timeout", "20", "examples.wsgi_app:app"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    started = time.monotonic()
    try:
        while True:  # the master listens before it forks the workers
            assert proc.poll() is None, log_path.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() - started < 30, log_path.read_text()
                time.sleep(0.1)

        def get(rid: str) -> int:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/hit?id={rid}&sleep=0.1", headers={"X-Request-ID": rid}
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                body = orjson.loads(response.read())
            assert body["id"] == rid
            return int(body["pid"])

        rids = [f"g{i}-{uid()}" for i in range(20)]
        # 4 at a time, each keeping its (sync) worker busy 0.1 s: both workers get requests.
        with ThreadPoolExecutor(4) as pool:
            served_by = list(pool.map(get, rids))
        served_s = time.monotonic() - started
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)  # graceful: workers exit, their exit hooks flush
        assert proc.wait(30) == 0, log_path.read_text()
        stop_s = time.monotonic() - t_term
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log_path.read_text()
    assert "could not be delivered" not in output, output

    emitted = [
        orjson.loads(r.value)["payload"] for r in consume_all(kafka_bootstrap, events, idle=2.0)
    ]
    records = [orjson.loads(r.value) for r in consume_all(kafka_bootstrap, logs, idle=2.0)]
    pids = {e["pid"] for e in emitted}
    print(
        f"\ngunicorn --preload -w 2: {len(rids)} requests served in {served_s:.1f} s (incl. "
        f"boot) by workers {sorted(Counter(served_by).items())}; master {proc.pid}; SIGTERM to "
        f"exit {stop_s:.1f} s; {len(emitted)} events and {len(records)} records in Kafka"
    )
    assert sorted(e["id"] for e in emitted) == sorted(rids), "each event exactly once"
    assert sorted(r["request_id"] for r in records) == sorted(rids), "each record exactly once"
    assert all(r["status"] == 200 and r["lines"][0]["payload"].startswith("hit ") for r in records)
    assert pids == set(served_by), (pids, served_by)
    assert len(pids) == 2 and proc.pid not in pids, (pids, proc.pid)
