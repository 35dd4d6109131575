"""Section 7, a real server: gunicorn (sync workers) serving the Flask apps of
section 4, bare and with ``FlaskRelayer``, under load from a client in
another process; requests/s and latency percentiles, and every record
delivered. Two more apps show how much of the cost is shipping the messages
(librdkafka and the broker share the machine's cores with the workers and
the client): relayer's with ``linger.ms`` at :data:`BATCHED_LINGER_MS`
instead of the default 5, and relayer's with the broker unreachable.

Each round starts gunicorn (``--preload --workers 2 --worker-class sync``,
on 127.0.0.1 and a free port) with one of the apps, sends untimed
warm-up requests, then the timed ones, and stops gunicorn with SIGTERM: its
workers exit gracefully and relayer's exit hook flushes their producers.
Each process of the relayer app writes its ``relayer.stats()`` when it exits
(:mod:`benchmarks.server_app`); what the workers produced goes to the ledger,
so the run's delivery check covers it. The apps alternate, the order
rotating each round.

The client is this module run as a program (``python -m benchmarks.server
--port P ...``): ``concurrency`` threads, each one connection at a time to
127.0.0.1 (gunicorn's sync workers close the connection after each
response, so every request is a new connection: ``Connection: close``), a
fixed number of requests and a hard time limit. It prints one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from tools import kafka_local

from .harness import FULL, REPO_ROOT, Ledger, Sizes, Stats, rotated
from .report import Row, Section


@dataclass(frozen=True)
class ServerSizes:
    """How much work section 7 does (the suite's :class:`Sizes` has no field for it)."""

    rounds: int  # runs of each app, alternating
    requests: int  # timed requests per run
    warmup: int  # untimed requests per run, first
    concurrency: int  # client connections at a time
    time_limit: float  # seconds, for the client's warm-up and timed requests together


WORKERS = 2
#: Two connections per sync worker: one request in service, the next waiting in the
#: listen backlog, so no worker waits for the client between requests, and the
#: latency holds one request's wait, not a long queue (with a closed loop at
#: saturation, latency ~ connections / requests/s: more connections only add queueing).
CONCURRENCY = 2 * WORKERS
SERVER_FULL = ServerSizes(
    rounds=5, requests=8_000, warmup=500, concurrency=CONCURRENCY, time_limit=120
)
SERVER_SMOKE = ServerSizes(
    rounds=1, requests=200, warmup=40, concurrency=CONCURRENCY, time_limit=30
)

#: librdkafka's linger.ms of section 7's third app (relayer's default is 5).
BATCHED_LINGER_MS = 100
APPS = {
    "bare": "benchmarks.server_app:bare()",
    "relayer": "benchmarks.server_app:relayed()",
    # Not a default: the same app batching longer, to show what shipping costs.
    "batched": f"benchmarks.server_app:relayed(linger_ms={BATCHED_LINGER_MS})",
    # A diagnostic: relayer's work in the workers without any shipping (the broker
    # address refuses connections, so librdkafka sends nothing and the broker is idle).
    "unshipped": "benchmarks.server_app:relayed(kafka_down=True)",
    # The hand-written lower bound of section 4: the least any library doing this costs.
    "lower": "benchmarks.server_app:lower_bound()",
}
BOOT_TIMEOUT = 30.0  # seconds until gunicorn listens
GRACEFUL_TIMEOUT = 20  # gunicorn's --graceful-timeout
STOP_TIMEOUT = GRACEFUL_TIMEOUT + 15.0  # seconds from SIGTERM until gunicorn must have exited


def server_sizes(sizes: Sizes) -> ServerSizes:
    return SERVER_FULL if sizes == FULL else SERVER_SMOKE


# -- the client (another process) -------------------------------------------------


def percentile(samples: Sequence[int], q: float) -> int:
    """The ``q`` quantile (0 < q <= 1, nearest rank) of ``samples``."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _load(port: int, count: int, concurrency: int, deadline: float) -> Dict[str, Any]:
    """``count`` GETs of ``/``, ``concurrency`` at a time: their latencies (ns) and errors."""
    address = ("127.0.0.1", port)
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
    tickets = itertools.count()  # next() on it is atomic under the GIL
    latencies: List[int] = []
    errors: List[str] = []
    perf_ns = time.perf_counter_ns

    def connection() -> None:
        mine: List[int] = []
        try:
            while next(tickets) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    errors.append("time limit reached")
                    return
                t0 = perf_ns()
                try:
                    with socket.create_connection(address, timeout=min(10.0, left)) as sock:
                        sock.sendall(request)
                        chunks = []
                        while True:
                            chunk = sock.recv(65536)
                            if not chunk:
                                break
                            chunks.append(chunk)
                except OSError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = perf_ns() - t0
                response = b"".join(chunks)
                if not response.startswith(b"HTTP/1.1 200 "):
                    errors.append(f"response {response[:40]!r}")
                    continue
                mine.append(elapsed)
        finally:
            latencies.extend(mine)  # list.extend is atomic under the GIL

    threads = [threading.Thread(target=connection, name=f"client-{i}") for i in range(concurrency)]
    t0 = perf_ns()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = (perf_ns() - t0) / 1e9
    return {"latencies": latencies, "errors": errors, "seconds": seconds}


def client_main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.server", description="section 7's load client"
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--time-limit", type=float, default=60.0)
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.time_limit
    warm = _load(args.port, args.warmup, args.concurrency, deadline)
    timed = _load(args.port, args.requests, args.concurrency, deadline)
    lat = timed["latencies"]
    result = {
        "warmup_ok": len(warm["latencies"]),
        "ok": len(lat),
        "errors": (warm["errors"] + timed["errors"])[:20],
        "error_count": len(warm["errors"]) + len(timed["errors"]),
        "seconds": timed["seconds"],
        "rps": len(lat) / timed["seconds"] if lat else 0.0,
        "p50_us": percentile(lat, 0.50) / 1e3 if lat else 0.0,
        "p90_us": percentile(lat, 0.90) / 1e3 if lat else 0.0,
        "p99_us": percentile(lat, 0.99) / 1e3 if lat else 0.0,
        "max_us": max(lat) / 1e3 if lat else 0.0,
    }
    print(json.dumps(result))
    return 0


# -- gunicorn ------------------------------------------------------------------


def _gunicorn_argv(app: str, port: int) -> List[str]:
    argv = [sys.executable, "-m", "gunicorn", "--preload", "--workers", str(WORKERS)]
    argv += ["--worker-class", "sync", "--bind", f"127.0.0.1:{port}"]
    argv += ["--graceful-timeout", str(GRACEFUL_TIMEOUT), "--timeout", "60"]
    argv += ["--log-level", "warning"]
    from gunicorn.config import KNOWN_SETTINGS

    if any(s.name == "control_socket_disable" for s in KNOWN_SETTINGS):
        # gunicorn >= 25.1 opens a control socket at a path shared by every
        # gunicorn of the user (~/.gunicorn/gunicorn.ctl) unless told not to.
        argv.append("--no-control-socket")
    return [*argv, app]


@dataclass
class RunResult:
    rps: float
    p50_us: float
    p99_us: float
    requests: int  # answered with 200, warm-up included
    stats: List[Dict[str, int]]  # relayer.stats() of each process that produced


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() - started > BOOT_TIMEOUT:
                raise RuntimeError(
                    f"gunicorn not listening after {BOOT_TIMEOUT:.0f} s:\n{log.read_text()}"
                ) from None
            time.sleep(0.05)


def serve_and_load(kind: str, env: Dict[str, str], ss: ServerSizes, folder: Path) -> RunResult:
    """One run: gunicorn with app ``kind``, the client's load, SIGTERM; the figures."""
    folder.mkdir()
    log = folder / "gunicorn.log"
    port = kafka_local.free_port()
    run_env = {**env, "BENCH_SERVER_STATS_DIR": str(folder)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            _gunicorn_argv(APPS[kind], port),
            cwd=REPO_ROOT,
            env=run_env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    try:
        _wait_listening(proc, port, log)
        client = subprocess.run(
            [
                *(sys.executable, "-m", "benchmarks.server", "--port", str(port)),
                *("--requests", str(ss.requests), "--warmup", str(ss.warmup)),
                *("--concurrency", str(ss.concurrency), "--time-limit", str(ss.time_limit)),
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=ss.time_limit + 30,
            check=False,
        )
        if client.returncode != 0:
            raise RuntimeError(f"the load client failed ({client.returncode}):\n{client.stderr}")
        result = json.loads(client.stdout)
        proc.send_signal(signal.SIGTERM)  # graceful: workers exit, relayer's exit hook flushes
        try:
            code = proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"gunicorn still running {STOP_TIMEOUT:.0f} s after SIGTERM:\n{log.read_text()}"
            ) from None
        if code != 0:
            raise RuntimeError(f"gunicorn exited with {code}:\n{log.read_text()}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if result["error_count"] or result["ok"] != ss.requests:
        raise RuntimeError(
            f"{kind}: {result['ok']} of {ss.requests} requests answered with 200, "
            f"{result['error_count']} failed, e.g. {result['errors'][:3]}:\n{log.read_text()}"
        )
    stats = [json.loads(path.read_text())["stats"] for path in sorted(folder.glob("*.json"))]
    return RunResult(
        rps=float(result["rps"]),
        p50_us=float(result["p50_us"]),
        p99_us=float(result["p99_us"]),
        requests=int(result["ok"]) + int(result["warmup_ok"]),
        stats=[s for s in stats if s["produced"]],
    )


# -- the section ---------------------------------------------------------------


def bench_server(ledger: Ledger, sizes: Sizes) -> List[Section]:
    """Section 7: gunicorn serving each app of :data:`APPS` in turn, alternating."""
    ss = server_sizes(sizes)
    events, records = ledger.topic("server-events"), ledger.topic("server-records")
    lower_events = ledger.topic("server-lower-events")
    lower_records = ledger.topic("server-lower-records")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
        "BENCH_SERVER_BOOTSTRAP": ledger.bootstrap,
        "BENCH_SERVER_EVENTS_TOPIC": events,
        "BENCH_SERVER_RECORDS_TOPIC": records,
        "BENCH_SERVER_LOWER_EVENTS_TOPIC": lower_events,
        "BENCH_SERVER_LOWER_RECORDS_TOPIC": lower_records,
    }
    runs: Dict[str, List[RunResult]] = {kind: [] for kind in APPS}
    workers_seen: List[int] = []
    unclean: List[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        for rnd in range(ss.rounds):
            for kind in rotated(list(runs), rnd):
                run = serve_and_load(kind, env, ss, Path(tmp) / f"{rnd}-{kind}")
                runs[kind].append(run)
                if kind == "bare":
                    continue
                if kind == "lower":  # an event and a record per request; the ledger checks them
                    ledger.add(lower_events, run.requests)
                    ledger.add(lower_records, run.requests)
                    continue
                produced = sum(s["produced"] for s in run.stats)
                if kind == "unshipped":  # nothing reaches the broker: checked, not in the ledger
                    if produced != 2 * run.requests or any(s["dropped"] for s in run.stats):
                        raise RuntimeError(
                            f"{kind} round {rnd}: {produced} messages queued for "
                            f"{run.requests} requests answered (2 each): {run.stats}"
                        )
                    continue
                # Each request produces an event and, when it ends, its record.
                ledger.add(events, produced // 2)
                ledger.add(records, produced - produced // 2)
                workers_seen.append(len(run.stats))
                if produced != 2 * run.requests:
                    raise RuntimeError(
                        f"{kind} round {rnd}: the workers produced {produced} messages "
                        f"for {run.requests} requests answered (2 each): {run.stats}"
                    )
                for s in run.stats:
                    if s["failed"] or s["dropped"] or s["pending"]:
                        unclean.append(f"{kind}, round {rnd}: {s}")

    rps = {k: Stats([r.rps for r in v]) for k, v in runs.items()}
    p50 = {k: Stats([r.p50_us for r in v]) for k, v in runs.items()}
    p99 = {k: Stats([r.p99_us for r in v]) for k, v in runs.items()}

    def rps_ratio(kind: str) -> float:
        """The median, over the rounds, of ``kind``'s requests/s over bare's."""
        return statistics.median(r.rps / b.rps for r, b in zip(runs[kind], runs["bare"]))

    def added(kind: str, latency: str) -> Stats:
        """``kind``'s ``latency`` (``p50_us``, ``p99_us``) less bare's, round by round."""
        return Stats(
            [getattr(r, latency) - getattr(b, latency) for r, b in zip(runs[kind], runs["bare"])]
        )

    ratio = rps_ratio("relayer")
    p99_added, p50_added = added("relayer", "p99_us"), added("relayer", "p50_us")

    seven = Section(
        f"7. A real server: gunicorn ({WORKERS} sync workers), load from another process "
        f"({ss.requests:,} requests per run, {ss.concurrency} at a time)"
    )
    seven.figures["server rps ratio"] = ratio
    seven.figures["server p99 added µs"] = p99_added.median
    seven.rows += [
        Row("bare Flask: requests/s", rps["bare"], "events/s"),
        Row(
            "relayer `FlaskRelayer`: requests/s",
            rps["relayer"],
            "events/s",
            f"{ratio:.3f}x bare",
            "server_rps",
        ),
        Row("bare Flask: p50 latency", p50["bare"], "µs"),
        Row("relayer: p50 latency", p50["relayer"], "µs"),
        Row("relayer: p50 ADDED over bare", p50_added, "µs"),
        Row("bare Flask: p99 latency", p99["bare"], "µs"),
        Row("relayer: p99 latency", p99["relayer"], "µs"),
        Row("relayer: p99 ADDED over bare", p99_added, "µs", "", "server_p99"),
        Row(
            f"relayer, `linger.ms` {BATCHED_LINGER_MS} (not the default): requests/s",
            rps["batched"],
            "events/s",
            f"{rps_ratio('batched'):.3f}x bare",
        ),
        Row(
            f"relayer, `linger.ms` {BATCHED_LINGER_MS}: p99 ADDED over bare",
            added("batched", "p99_us"),
            "µs",
        ),
        Row(
            "hand-written lower bound (section 4's): requests/s",
            rps["lower"],
            "events/s",
            f"{rps_ratio('lower'):.3f}x bare",
        ),
        Row("hand-written lower bound: p99 ADDED over bare", added("lower", "p99_us"), "µs"),
        Row(
            "relayer, broker unreachable (a diagnostic: nothing shipped): requests/s",
            rps["unshipped"],
            "events/s",
            f"{rps_ratio('unshipped'):.3f}x bare",
        ),
    ]
    seven.notes.append(
        f"{ss.rounds} run(s) of each app, bare, relayer, relayer with `linger.ms` "
        f"{BATCHED_LINGER_MS}, relayer with the broker unreachable and the hand-written lower "
        "bound alternating (the order rotating each round); each run is a fresh `gunicorn --preload --workers 2 --worker-class sync` "
        "on 127.0.0.1 serving the apps of section 4 (bare: the view returns an empty body; "
        "relayer: one "
        "emit and one log, so an event and a record per request), stopped with SIGTERM after "
        "the load (relayer's exit hook flushes each worker's producer)."
    )
    seven.notes.append(
        f"The client is another process (`python -m benchmarks.server`): {ss.concurrency} "
        f"threads, {ss.warmup:,} untimed requests then {ss.requests:,} timed ones, time limit "
        f"{ss.time_limit:.0f} s; sync workers close each connection, so each request is a new "
        "TCP connection (`Connection: close`). requests/s = timed requests / their wall time; "
        "latency = connect to the end of the response, nearest-rank percentiles of the run. "
        "min/max are over the runs; ratio and ADDED are taken run by run (relayer against the "
        "bare run of the same round), then the median."
    )
    seven.notes.append(
        f"Delivery: each process of the relayer app writes its `relayer.stats()` at exit; "
        f"what the workers produced ({sum(ledger.sent[t] for t in (events, records)):,} "
        f"messages, workers that produced per run: {workers_seen}) is in the ledger, and "
        "matched 2 per request answered."
    )
    seven.notes.append(
        f"The `linger.ms` {BATCHED_LINGER_MS} rows: the relayer app with librdkafka batching "
        f"for up to {BATCHED_LINGER_MS} ms instead of relayer's default 5 (fewer, larger "
        "produce requests: less CPU in librdkafka and in the broker, which share this "
        "machine's cores with the workers and the client). Not the default: a SIGKILL loses "
        "up to `linger.ms` of messages not sent yet (docs/RELIABILITY.md)."
    )
    seven.notes.append(
        "The lower bound's row: section 4's hand-written lower bound (the same events and "
        "records, with confluent-kafka in Flask hooks, relayer's producer settings), built in "
        "each worker with its own producer, flushed at exit; the broker's watermarks check "
        "that it delivered an event and a record per request answered."
    )
    seven.notes.append(
        "The broker-unreachable row: the relayer app producing to an address that refuses "
        "connections, so its workers do all of relayer's work (every message checked, encoded "
        "and queued: 2 per request, none dropped) but ship nothing, and the broker is idle. "
        "What it keeps of bare's requests/s is relayer's own cost; the rest of the gap in the "
        "rows above is the CPU that shipping takes, in librdkafka's threads and in the broker, "
        "on the same cores as the workers and the client."
    )
    seven.notes.extend(f"NOT CLEAN at exit (failed, dropped or pending): {u}" for u in unclean)
    return [seven]


if __name__ == "__main__":
    sys.exit(client_main())
