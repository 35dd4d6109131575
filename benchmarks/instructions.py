"""Instructions per call, counted by valgrind's callgrind: figures that a busy
machine cannot move.

    python -m benchmarks.instructions                # every case, a table
    python -m benchmarks.instructions --case emit    # one case

The last rows are the micro-optimisations relayer keeps on its hot paths,
each measured beside what it replaces: a trick stays only while its row shows
it pays.

Each figure is ``(I(N) - I(0)) / N``: the instructions of the main thread of a
fresh process that makes ``N`` calls, less those of the same process making
none, divided by ``N``. Only the main thread is counted (``--separate-threads``),
so librdkafka's own threads and relayer's poller, whose work depends on wall
time, stay out of it. The broker address refuses connections (127.0.0.1:1):
what is counted is the enqueue, not the network. Time medians (``make bench``)
see what instructions miss (allocation, caches); quote both.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List

#: The event of every case, as in the time benchmarks.
PAYLOAD = {"id": 10, "name": "widget", "price": 9.99, "tags": ["a", "b"]}
KEY = "customer-7"
HOSTS = "127.0.0.1:1"  # refuses connections: only the enqueue is counted

#: Units of work in the cases that run inside one: the same number whatever
#: N, so that I(N) - I(0) holds the calls alone.
UNITS = 20


def _emit(n: int) -> None:
    from relayer import Relayer

    relayer = Relayer("logs", HOSTS)
    relayer.emit("bench", "created", PAYLOAD, KEY)  # the producer exists before counting
    for _ in range(n):
        relayer.emit("bench", "created", PAYLOAD, KEY)


def _in_units(n: int, body: Callable[..., None]) -> None:
    from relayer.rpc import make_rpc_relayer

    rpc = make_rpc_relayer("logs", HOSTS)
    rpc.instance.emit("bench", "created", PAYLOAD, KEY)

    @rpc
    def unit(count: int, relayer: object = None) -> None:
        body(rpc.instance, relayer, count)

    for _ in range(UNITS):
        unit(n // UNITS)


def _emit_in_unit(n: int) -> None:
    def body(instance: object, scoped: object, count: int) -> None:
        emit = instance.emit  # type: ignore[attr-defined]
        for _ in range(count):
            emit("bench", "created", PAYLOAD, KEY)

    _in_units(n, body)


def _log_in_unit(n: int) -> None:
    def body(instance: object, scoped: object, count: int) -> None:
        log = instance.log  # type: ignore[attr-defined]
        for _ in range(count):
            log("info", "processing order 10")

    _in_units(n, body)


def _rpc_log(n: int) -> None:
    def body(instance: object, scoped: object, count: int) -> None:
        log = scoped.log  # type: ignore[attr-defined]
        for _ in range(count):
            log("info", "processing order 10")

    _in_units(n, body)


def _flask(n: int, with_relayer: bool) -> None:
    from flask import Flask

    app = Flask(__name__)
    if with_relayer:
        from relayer.flask import FlaskRelayer

        relayer = FlaskRelayer(app, "logs", HOSTS)

        @app.get("/")
        def view() -> str:
            relayer.emit("bench", "created", PAYLOAD, KEY)
            relayer.log("info", "processing order 10")
            return "ok"

    else:

        @app.get("/")
        def view() -> str:
            return "ok"

    client = app.test_client()
    client.get("/")
    for _ in range(n):
        client.get("/")


# -- the micro-optimisations relayer keeps, each beside what it saves ------------------


def _raw_client() -> Any:
    import confluent_kafka

    return confluent_kafka.Producer({"bootstrap.servers": HOSTS, "linger.ms": 5})


def _produce(n: int, positional: bool, encode_key: bool) -> None:
    client = _raw_client()
    value = b'{"id":10}'
    for _ in range(n):
        key = KEY.encode() if encode_key else KEY
        if positional:
            client.produce("bench", value, key, -1, None, None, 0, None)
        else:
            client.produce("bench", value=value, key=key)


def _count(n: int, lock: bool) -> None:
    import itertools
    import threading

    if lock:
        guard, total = threading.Lock(), 0
        for _ in range(n):
            with guard:
                total += 1
    else:
        tick = itertools.count().__next__
        for _ in range(n):
            tick()


def _debug_check(n: int, cache: bool) -> None:
    import logging

    logger = logging.getLogger("relayer")
    enabled = logger.isEnabledFor
    cached = getattr(logger, "_cache", {}).get
    for _ in range(n):
        if cache:
            debug = cached(logging.DEBUG)
            if debug is None:
                debug = enabled(logging.DEBUG)
        else:
            enabled(logging.DEBUG)


def _unit_add(n: int, inline: bool) -> None:
    from relayer import Relayer
    from relayer._unit import Fragment

    relayer = Relayer("logs", HOSTS)
    value = b'{"id":10}'
    unit = relayer.open_unit()
    for _ in range(n):
        if unit.room < 1000:
            unit = relayer.open_unit()
        if inline:
            room = unit.room - len(value)
            if room >= 0:
                unit.room = room
                unit.lines.append(Fragment(value))
            else:
                unit.add(Fragment(value), len(value))
        else:
            unit.add(Fragment(value), len(value))


#: Each kept optimisation (first) and what it replaces (second).
OPTIMISATIONS = {
    "positional produce() (Relayer.emit)": ("produce_positional", "produce_keywords"),
    "str keys passed through (Relayer.emit)": ("produce_positional", "produce_encoded_key"),
    "itertools.count, no lock (Accounts.count)": ("count_itertools", "count_lock"),
    "logging's cache read first (DeliveryProducer.produce)": ("debug_cache", "debug_isenabledfor"),
    "UnitOfWork.add inlined (Relayer.emit)": ("unit_add_inline", "unit_add_method"),
}

CASES: Dict[str, Callable[[int], None]] = {
    "produce_positional": lambda n: _produce(n, True, False),
    "produce_keywords": lambda n: _produce(n, False, False),
    "produce_encoded_key": lambda n: _produce(n, True, True),
    "count_itertools": lambda n: _count(n, False),
    "count_lock": lambda n: _count(n, True),
    "debug_cache": lambda n: _debug_check(n, True),
    "debug_isenabledfor": lambda n: _debug_check(n, False),
    "unit_add_inline": lambda n: _unit_add(n, True),
    "unit_add_method": lambda n: _unit_add(n, False),
    "emit": _emit,
    "emit_in_unit": _emit_in_unit,
    "log_in_unit": _log_in_unit,
    "rpc_log_in_unit": _rpc_log,
    "flask_request": lambda n: _flask(n, True),
    "flask_bare": lambda n: _flask(n, False),
}
#: How many calls each case makes when counted.
CALLS = {
    **{case: 20000 for pair in OPTIMISATIONS.values() for case in pair},
    "emit": 5000,
    "emit_in_unit": 5000,
    "log_in_unit": 20000,
    "rpc_log_in_unit": 20000,
    "flask_request": 400,
    "flask_bare": 400,
}


def count(case: str, n: int) -> int:
    """Instructions of the main thread of a fresh process running ``case`` with ``n`` calls."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "cg.out"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "benchmarks.instructions",
                "--child",
                case,
                str(n),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        main_thread = Path(f"{out}-01")
        match = re.search(r"^summary: (\d+)", main_thread.read_text(), re.M)
        assert match, f"no summary in {main_thread}"
        return int(match[1])


def per_call(case: str) -> float:
    """``(I(N) - I(0)) / N`` for ``case``."""
    n = CALLS[case]
    return (count(case, n) - count(case, 0)) / n


def main(argv: List[str] | None = None) -> int:
    """Print instructions per call of the chosen cases (all by default)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), action="append")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        CASES[args.child[0]](int(args.child[1]))
        sys.stdout.flush()
        os._exit(0)  # no exit flush: the broker refuses connections
    results = {case: per_call(case) for case in args.case or CASES}
    for case, figure in results.items():
        print(f"{case:18} {figure:12,.0f} instructions per call")
    if "flask_request" in results and "flask_bare" in results:
        added = results["flask_request"] - results["flask_bare"]
        print(f"{'flask_added':18} {added:12,.0f} instructions per request over bare Flask")
    for what, (kept, instead) in OPTIMISATIONS.items():
        if kept in results and instead in results:
            saved = results[instead] - results[kept]
            print(f"{what}: saves {saved:,.0f} instructions per call ({kept} vs {instead})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
