"""Instructions per call, counted by valgrind's callgrind: figures that a busy
machine cannot move.

    python -m benchmarks.instructions                # every case, a table
    python -m benchmarks.instructions --case emit    # one case (and the ratios it is in)
    python -m benchmarks.instructions --smoke        # every case, N small, one valgrind

Each figure is ``(I(N) - I(0)) / N``: the instructions of the main thread of a
fresh process that makes ``N`` calls, less those of the same process making
none, divided by ``N``. Only the main thread is counted (``--separate-threads``),
so librdkafka's own threads and the pollers, whose work depends on wall
time, stay out of it. The broker address refuses connections (127.0.0.1:1):
what is counted is the enqueue, not the network. Time medians (``make bench``)
see what instructions miss (allocation, caches, librdkafka's threads); quote
both.

The cases are the contenders of the time benchmarks (benchmarks/contenders.py),
built by the same functions and called through the same loop
(``timed_loop``): the floor (``raw_emit*``), relayer with default settings
(``emit``, ``emit_in_unit``: whatever ``Relayer(...)`` gives) and with
``kafka_headers=True`` (``emit_headers``), ``log`` three ways, and the Flask
apps (``flask_*``, per request). The last rows are the micro-optimisations
relayer keeps on its hot paths, each measured beside what it replaces: a
trick stays only while its row shows it pays.

``--smoke`` (what ``python -m benchmarks.run --smoke`` uses) counts every
case with small ``N`` in seconds: one valgrind process imports everything
once, then forks a child per case and ``N`` (a forked child's count starts
from its parent's, which ``I(N) - I(0)`` cancels).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

if TYPE_CHECKING:
    from .report import Section

HOSTS = "127.0.0.1:1"  # refuses connections: only the enqueue is counted
#: The logging topic of every relayer, hence its ``source``, and the floor's source.
LOGS = "logs"
#: The event type (and topic) of every event.
TOPIC = "bench"

#: Units of work in the cases that run inside one: the same number whatever
#: N (relayer's and the floor's alike), so that I(N) - I(0) holds the calls
#: alone (and each call's share of its record).
UNITS = 20
#: Calls (requests) made before counting starts, in I(0) as in I(N): the
#: producer connected (or trying), topics known, and the code warm: Python
#: 3.11 specialises a function's bytecode during its first calls, a cost
#: that would otherwise fall on the first counted calls.
WARMUP = 200
WARMUP_REQUESTS = 20


def _event() -> Tuple[Any, ...]:
    """The arguments of every emit, as in the time benchmarks."""
    from .contenders import KEY, PAYLOAD, SUBTYPE

    return (TOPIC, SUBTYPE, PAYLOAD, KEY)


def _settled() -> None:
    """Called once a case is set up, just before what is counted: a full
    collection, then every object alive moved out of the collector's reach
    (``gc.freeze``), so that the collections the calls trigger walk what the
    calls made, not the heap of the imports (which differs from case to case,
    and is bigger in ``--smoke``'s forked children).
    """
    import gc

    gc.collect()
    gc.freeze()


def _per_unit(n: int) -> int:
    if n % UNITS:
        raise ValueError(f"N must be a multiple of UNITS={UNITS}, not {n}")
    return n // UNITS


# -- the floor: benchmarks.contenders' raw emitters ---------------------------------------


def _raw_emit(n: int, headers: int) -> None:
    from .contenders import RawProducer, raw_emitter, timed_loop

    emit = raw_emitter(RawProducer(HOSTS), LOGS, headers)
    args = _event()
    timed_loop(emit, args, WARMUP)
    _settled()
    timed_loop(emit, args, n)


def _raw_emit_in_unit(n: int) -> None:
    from .contenders import RawProducer, RawUnit, raw_unit_emitter, raw_unit_record, timed_loop

    raw = RawProducer(HOSTS)
    args = _event()
    warm = RawUnit()
    timed_loop(raw_unit_emitter(raw, LOGS, warm), args, WARMUP)
    raw_unit_record(raw, LOGS, warm)
    per_unit = _per_unit(n)
    _settled()
    for _ in range(UNITS):
        unit = RawUnit()
        timed_loop(raw_unit_emitter(raw, LOGS, unit), args, per_unit)
        raw_unit_record(raw, LOGS, unit)


# -- relayer --------------------------------------------------------------------------


def _emit(n: int, **settings: Any) -> None:
    from relayer import Relayer

    from .contenders import timed_loop

    relayer = Relayer(LOGS, HOSTS, **settings)
    args = _event()
    timed_loop(relayer.emit, args, WARMUP)
    _settled()
    timed_loop(relayer.emit, args, n)


def _in_units(n: int, bound: Callable[[Any, Any], Callable[..., None]], log: bool) -> None:
    """``n`` calls of ``bound(relayer, unit)`` in ``UNITS`` units of work, as
    the time benchmarks make them (``Relayer.unit_of_work("benchmark")``);
    each unit writes its record when it ends.
    """
    from relayer import Relayer

    from .contenders import MESSAGE, timed_loop

    instance = Relayer(LOGS, HOSTS)
    event = _event()
    instance.emit(*event)
    args = ("info", MESSAGE) if log else event
    with instance.unit_of_work("benchmark") as unit:
        timed_loop(bound(instance, unit), args, WARMUP)
    per_unit = _per_unit(n)
    _settled()
    for _ in range(UNITS):
        with instance.unit_of_work("benchmark") as unit:
            timed_loop(bound(instance, unit), args, per_unit)


def _flask_log(instance: Any, unit: Any) -> Callable[..., None]:
    from relayer.flask import FlaskRelayer

    return FlaskRelayer().log  # no app: inside a unit of work it acts on the unit's relayer


# -- Flask: benchmarks.contenders' apps, per request -----------------------------------


def _flask(n: int, which: str) -> None:
    from .contenders import RawProducer, bare_app, lower_bound_app, relayer_app, timed_loop

    if which == "bare":
        app = bare_app()
    elif which == "relayer":
        app, _ = relayer_app(HOSTS, LOGS, TOPIC)
    else:
        app = lower_bound_app(RawProducer(HOSTS), LOGS, TOPIC)
    client = app.test_client()
    timed_loop(client.get, ("/",), WARMUP_REQUESTS)
    _settled()
    timed_loop(client.get, ("/",), n)


class _Topics:
    """What the peers' builders need of a :class:`~benchmarks.harness.Ledger`:
    topic names (nothing is consumed here).
    """

    def topic(self, name: str) -> str:
        return name


def _flask_peer(n: int, which: str) -> None:
    """A peer's app (benchmarks.flask_bench), per request."""
    from .contenders import RawProducer, timed_loop
    from .flask_bench import otel_app, sentry_app

    peer = (otel_app if which == "otel" else sentry_app)(RawProducer(HOSTS), _Topics())  # type: ignore[arg-type]
    if peer is None:
        raise RuntimeError(f"{which}: not installed (relayer[bench])")
    client = peer.app.test_client()
    timed_loop(client.get, ("/",), WARMUP_REQUESTS)
    _settled()
    timed_loop(client.get, ("/",), n)


def peers_installed() -> bool:
    """Whether the peers' packages (the ``bench`` extra) are importable."""
    import importlib.util

    try:  # find_spec imports the parent packages, which may be missing too
        return all(
            importlib.util.find_spec(name) is not None
            for name in ("opentelemetry.instrumentation.flask", "sentry_sdk")
        )
    except ModuleNotFoundError:
        return False


# -- the micro-optimisations relayer keeps, each beside what it saves ------------------


def _raw_client() -> Any:
    import confluent_kafka

    return confluent_kafka.Producer({"bootstrap.servers": HOSTS, "linger.ms": 5})


def _produce(n: int, positional: bool, encode_key: bool, all_args: bool = True) -> None:
    from .contenders import KEY

    client = _raw_client()
    value = b'{"id":10}'
    _settled()
    for _ in range(n):
        key = KEY.encode() if encode_key else KEY
        if not all_args:
            client.produce("bench", value, key)
        elif positional:
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
        ticks = itertools.count()
        for _ in range(n):
            next(ticks)


def _debug_check(n: int, cache: bool) -> None:
    import logging

    logger = logging.getLogger("relayer")
    enabled = logger.isEnabledFor
    cached = getattr(logger, "_cache", {}).get
    for _ in range(n):
        if cache:
            if cached(logging.DEBUG) is not False and enabled(logging.DEBUG):
                pass
        elif enabled(logging.DEBUG):
            pass


def _unit_add(n: int, inline: bool) -> None:
    from relayer import Relayer
    from relayer._unit import Fragment

    relayer = Relayer(LOGS, HOSTS)
    value = b'{"id":10}'
    unit = relayer.open_unit()
    _settled()
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


def _event_id(n: int, inline: bool) -> None:
    from relayer import _ids
    from relayer._ids import new_event_id

    _settled()
    for _ in range(n):
        if inline:
            f"{_ids.EVENT_PREFIX}{next(_ids.EVENT_TICKS):012x}"
        else:
            new_event_id()


#: Each kept optimisation (first) and what it replaces (second).
OPTIMISATIONS = {
    "positional produce() (DeliveryProducer.produce)": ("produce_positional", "produce_keywords"),
    "three arguments without headers (DeliveryProducer.produce)": (
        "produce_three_args",
        "produce_positional",
    ),
    "str keys passed through (Relayer.emit)": ("produce_positional", "produce_encoded_key"),
    "itertools.count, no lock (Accounts.count)": ("count_itertools", "count_lock"),
    "logging's cache read first (DeliveryProducer.produce)": ("debug_cache", "debug_isenabledfor"),
    "UnitOfWork.add inlined (Relayer.emit)": ("unit_add_inline", "unit_add_method"),
    "new_event_id() inlined (Relayer.emit)": ("event_id_inline", "event_id_call"),
}

CASES: Dict[str, Callable[[int], None]] = {
    "raw_emit": lambda n: _raw_emit(n, 0),
    "emit": _emit,
    "raw_emit_in_unit": _raw_emit_in_unit,
    "emit_in_unit": lambda n: _in_units(n, lambda instance, unit: instance.emit, False),
    "raw_emit_headers": lambda n: _raw_emit(n, 5),
    "emit_headers": lambda n: _emit(n, kafka_headers=True),
    "log_in_unit": lambda n: _in_units(n, lambda instance, unit: instance.log, True),
    "rpc_log_in_unit": lambda n: _in_units(n, lambda instance, unit: unit.log, True),
    "flask_log_in_unit": lambda n: _in_units(n, _flask_log, True),
    "flask_bare": lambda n: _flask(n, "bare"),
    "flask_request": lambda n: _flask(n, "relayer"),
    "flask_lower_bound": lambda n: _flask(n, "lower_bound"),
    "event_id_inline": lambda n: _event_id(n, True),
    "event_id_call": lambda n: _event_id(n, False),
    "flask_otel": lambda n: _flask_peer(n, "otel"),
    "flask_sentry": lambda n: _flask_peer(n, "sentry"),
    "produce_positional": lambda n: _produce(n, True, False),
    "produce_three_args": lambda n: _produce(n, True, False, all_args=False),
    "produce_keywords": lambda n: _produce(n, False, False),
    "produce_encoded_key": lambda n: _produce(n, True, True),
    "count_itertools": lambda n: _count(n, False),
    "count_lock": lambda n: _count(n, True),
    "debug_cache": lambda n: _debug_check(n, True),
    "debug_isenabledfor": lambda n: _debug_check(n, False),
    "unit_add_inline": lambda n: _unit_add(n, True),
    "unit_add_method": lambda n: _unit_add(n, False),
}
#: How many calls (requests) each case makes when counted.
CALLS = {
    **{case: 20000 for pair in OPTIMISATIONS.values() for case in pair},
    "raw_emit": 5000,
    "emit": 5000,
    "raw_emit_in_unit": 5000,
    "emit_in_unit": 5000,
    "raw_emit_headers": 5000,
    "emit_headers": 5000,
    "log_in_unit": 20000,
    "rpc_log_in_unit": 20000,
    "flask_log_in_unit": 20000,
    "flask_bare": 400,
    "flask_request": 400,
    "flask_lower_bound": 400,
    "flask_otel": 400,
    "flask_sentry": 400,
}
#: The peers' cases: counted when their packages are installed.
PEER_CASES = ("flask_otel", "flask_sentry")
#: ``--smoke``: calls per case (a multiple of UNITS), requests per Flask case.
SMOKE_CALLS = 200
SMOKE_REQUESTS = 40
#: The one optimisation row ``benchmarks.run --smoke`` counts (cheap: no import of relayer).
SMOKE_OPTIMISATION = "itertools.count, no lock (Accounts.count)"

#: The ratios the targets read: figure name -> (relayer's case, the floor's case).
RATIOS = {
    "emit/raw instructions": ("emit", "raw_emit"),
    "emit uow/raw uow instructions": ("emit_in_unit", "raw_emit_in_unit"),
    "emit headers/raw headers instructions": ("emit_headers", "raw_emit_headers"),
}
FLASK_RATIO = "flask added/lower bound added instructions"
#: The peers' ratios: what relayer adds over what each peer adds, in instructions.
PEER_RATIOS = {
    "flask_otel": "flask added/otel added instructions",
    "flask_sentry": "flask added/sentry added instructions",
}


def smoke_calls(case: str) -> int:
    return SMOKE_REQUESTS if case.startswith("flask_") and "log" not in case else SMOKE_CALLS


def ratios(results: Mapping[str, float]) -> Dict[str, float]:
    """The ratios of :data:`RATIOS` and the Flask one (added over bare Flask,
    relayer's / the lower bound's), for those whose cases are in ``results``.
    """
    out = {
        name: results[a] / results[b] for name, (a, b) in RATIOS.items() if {a, b} <= set(results)
    }
    if {"flask_request", "flask_lower_bound", "flask_bare"} <= set(results):
        bare = results["flask_bare"]
        out[FLASK_RATIO] = (results["flask_request"] - bare) / (results["flask_lower_bound"] - bare)
    return out


# -- counting ---------------------------------------------------------------------------


def valgrind() -> Optional[str]:
    """The path of valgrind, or ``None`` when it is not installed."""
    return shutil.which("valgrind")


def _callgrind(out: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def _main_thread(out: str) -> int:
    """Instructions of the main thread (thread 1) in callgrind's file ``out``."""
    path = Path(f"{out}-01")
    match = re.search(r"^summary: (\d+)", path.read_text(), re.M)
    assert match, f"no summary in {path}"
    return int(match[1])


def count(case: str, n: int) -> int:
    """Instructions of the main thread of a fresh process running ``case`` with ``n`` calls."""
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "cg.out")
        _callgrind(out, "--child", case, str(n))
        return _main_thread(out)


def per_call(case: str, n: Optional[int] = None) -> float:
    """``(I(N) - I(0)) / N`` for ``case``, each count in a fresh process."""
    n = CALLS[case] if n is None else n
    return (count(case, n) - count(case, 0)) / n


def measure(cases: Sequence[str], jobs: Optional[int] = None) -> Dict[str, float]:
    """:func:`per_call` of each case with its :data:`CALLS`, ``jobs`` valgrind
    processes at a time (default: one per core; instruction counts do not
    depend on what else runs).
    """
    runs = [(case, n) for case in cases for n in (0, CALLS[case])]
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        counts = dict(zip(runs, pool.map(lambda run: count(*run), runs)))
    return {case: (counts[case, CALLS[case]] - counts[case, 0]) / CALLS[case] for case in cases}


def measure_forked(cases: Sequence[str]) -> Dict[str, float]:
    """``(I(N) - I(0)) / N`` of each case with :func:`smoke_calls`, counted
    in children forked by one valgrind process that imported everything
    first: seconds instead of minutes. A child's count starts from its
    parent's at the fork, which the difference cancels (to within the
    parent's few instructions between two forks).
    """
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "cg.%p")
        plan = [f"{case}={smoke_calls(case)}" for case in cases]
        jobs = str(os.cpu_count() or 1)
        served = _callgrind(out, "--serve", jobs, *plan).stdout
        pids: Dict[Tuple[str, int], int] = {}
        for line in served.splitlines():
            case, n, pid = line.split()
            pids[case, int(n)] = int(pid)
        counts = {run: _main_thread(out.replace("%p", str(pid))) for run, pid in pids.items()}
    return {
        case: (counts[case, n] - counts[case, 0]) / n
        for case, n in ((case, smoke_calls(case)) for case in cases)
    }


def _serve(plan: Sequence[str], jobs: int) -> None:
    """Under valgrind: import what the cases need, then for each ``case=N``
    fork a child running ``case`` with 0 calls and, right after, one with
    ``N``, at most ``max(jobs, 2)`` children at a time; print ``case n pid``
    of each child once all have run.
    """
    import confluent_kafka  # noqa: F401
    import flask  # noqa: F401

    import relayer.flask  # noqa: F401

    from . import contenders  # noqa: F401

    pairs = [(case, int(calls)) for case, calls in (item.split("=") for item in plan)]
    running: Dict[int, Tuple[str, int]] = {}
    done: List[Tuple[str, int, int]] = []
    failed: List[Tuple[str, int]] = []

    def reap() -> None:
        pid, status = os.wait()
        case, n = running.pop(pid)
        if status == 0:
            done.append((case, n, pid))
        else:
            failed.append((case, n))

    for case, calls in pairs:
        # The two children of a case are forked back to back (no wait in
        # between): the parent's instructions between the two forks, which
        # the second child's count has more, are the same few for every case.
        while running and len(running) + 2 > jobs:
            reap()
        for n in (0, calls):
            pid = os.fork()
            if pid == 0:
                try:
                    CASES[case](n)
                except BaseException:
                    traceback.print_exc()
                    os._exit(1)
                os._exit(0)
            running[pid] = (case, n)
    while running:
        reap()
    if failed:
        raise SystemExit(f"these children (case, N) failed: {failed}")
    for case, n, pid in done:
        print(case, n, pid)


# -- the section of `python -m benchmarks.run` ------------------------------------------

TITLE = "8. Instructions per call (callgrind)"

#: The cases of the section, in its order, and their labels.
ROWS = (
    ("raw_emit", "raw produce + orjson.dumps(envelope) (the floor)"),
    ("emit", "relayer `emit()`, default settings (kafka_headers={headers})"),
    ("raw_emit_in_unit", "the floor in a unit of work: + request id, event kept"),
    ("emit_in_unit", "relayer `emit()` in a unit of work, default settings"),
    ("raw_emit_headers", "raw produce + the same 5 headers"),
    ("emit_headers", "relayer `emit()`, `kafka_headers=True`"),
    ("log_in_unit", "relayer `Relayer.log()` in a unit of work"),
    ("rpc_log_in_unit", "`relayer.log()` of an RPC call (ScopedRelayer)"),
    ("flask_log_in_unit", "`FlaskRelayer.log()` (the Flask extension)"),
    ("flask_bare", "bare Flask, per request"),
)
#: Which figure each relayer row is judged on (the targets' names).
ROW_TARGETS = {
    "emit": ("instr_emit", "emit/raw instructions", "emit/floor"),
    "emit_in_unit": ("instr_emit_uow", "emit uow/raw uow instructions", "emit uow/floor uow"),
    "emit_headers": (
        "instr_emit_headers",
        "emit headers/raw headers instructions",
        "emit headers/floor headers",
    ),
}
#: Each relayer case's floor.
FLOOR_OF = dict(RATIOS.values())
#: The time median (a figure of section 2) beside each log case.
TIME_OF_LOG = {
    "log_in_unit": "log µs",
    "rpc_log_in_unit": "log_scoped µs",
    "flask_log_in_unit": "log_flask µs",
}


def bench_instructions(smoke: bool, time_figures: Mapping[str, float]) -> Section:
    """The section: every case's instructions per call (per request for
    Flask), the ratios the targets read (beside the time medians' ratios of
    the same run, from ``time_figures``) and the kept micro-optimisations.
    Says so, and measures nothing, when valgrind is not installed.
    """
    from dataclasses import fields

    from relayer import Settings

    from .harness import Stats
    from .report import Row, Section

    section = Section(TITLE, value_column="instructions per call")
    figures = [*RATIOS, FLASK_RATIO, *PEER_RATIOS.values()]
    if valgrind() is None:
        section.notes.append(
            "Not measured: valgrind is not installed (`apt-get install valgrind`); the targets "
            'in instructions show "not run".'
        )
        section.not_measured.update({f: "valgrind not installed" for f in figures})
        return section
    kept_cases = {case for pair in OPTIMISATIONS.values() for case in pair}
    peers = peers_installed()
    cases = [case for case in CASES if peers or case not in PEER_CASES]
    if not peers:
        from .flask_bench import PEERS_MISSING

        section.not_measured.update({f: PEERS_MISSING for f in PEER_RATIOS.values()})
    if smoke:
        # The forked children for the cases of the targets; of the optimisations'
        # rows, one, counted as a full run counts (fresh processes, full N),
        # which takes that path through CI too.
        results = measure_forked([case for case in cases if case not in kept_cases])
        results.update(measure(OPTIMISATIONS[SMOKE_OPTIMISATION]))
    else:
        results = measure(cases)
    section.figures.update(ratios(results))
    section.figures.update({f"instructions {case}": value for case, value in results.items()})
    headers = next(f.default for f in fields(Settings) if f.name == "kafka_headers")

    def one(value: float) -> Stats:
        return Stats([value])

    def beside(time_figure: str) -> str:
        ratio = time_figures.get(time_figure)
        return "" if ratio is None else f" (time medians: {ratio:.2f}x)"

    for case, label in ROWS:
        compared = ""
        target = ""
        if case in ROW_TARGETS:
            target, figure, time_figure = ROW_TARGETS[case]
            compared = f"{section.figures[figure]:.3f}x {FLOOR_OF[case]}" + beside(time_figure)
        elif case in FLOOR_OF.values():
            compared = f"{results[case] / results['raw_emit']:.2f}x raw_emit"
        elif case in TIME_OF_LOG and TIME_OF_LOG[case] in time_figures:
            compared = f"time median: {time_figures[TIME_OF_LOG[case]]:.3f} µs"
        section.rows.append(
            Row(label.format(headers=headers), one(results[case]), "instructions", compared, target)
        )
    bare = results["flask_bare"]
    lower, added = results["flask_lower_bound"] - bare, results["flask_request"] - bare
    section.rows += [
        Row(
            "hand-written lower bound: ADDED over bare",
            one(lower),
            "instructions",
            "1.00x lower bound",
        ),
        Row(
            "relayer `FlaskRelayer`: ADDED over bare",
            one(added),
            "instructions",
            f"{section.figures[FLASK_RATIO]:.3f}x lower bound"
            + beside("flask added/lower bound added"),
            "instr_flask",
        ),
    ]
    for case, name in (("flask_otel", "OpenTelemetry"), ("flask_sentry", "sentry-sdk")):
        if case not in results:
            continue
        peer_added = results[case] - bare
        section.figures[PEER_RATIOS[case]] = added / peer_added
        time_figure = (
            "flask added/otel added" if case == "flask_otel" else "flask added/sentry added"
        )
        section.rows.append(
            Row(
                f"{name} (+ raw produce): ADDED over bare",
                one(peer_added),
                "instructions",
                f"relayer adds {added / peer_added:.3f}x this" + beside(time_figure),
                "instr_otel" if case == "flask_otel" else "instr_sentry",
            )
        )
    for what, (kept, instead) in OPTIMISATIONS.items():
        if smoke and what != SMOKE_OPTIMISATION:
            continue
        saved = results[instead] - results[kept]
        section.rows.append(
            Row(
                f"kept: {what}",
                one(results[kept]),
                "instructions",
                f"saves {saved:,.0f} per call ({kept} vs {instead}: {results[instead]:,.0f})",
            )
        )
    n_calls = (
        f"N = {SMOKE_CALLS} calls, {SMOKE_REQUESTS} Flask requests, counted in children "
        "forked by one valgrind process that imported everything first (seconds; `--smoke` "
        "only: within a few per cent of a full run's figures)"
        if smoke
        else f"N = {CALLS['emit']:,} emits, {CALLS['log_in_unit']:,} logs, "
        f"{CALLS['flask_request']:,} Flask requests, each count in a fresh valgrind process "
        "(repeatable to well under 1%)"
    )
    section.notes += [
        "(I(N) - I(0)) / N instructions of the main thread (`valgrind --tool=callgrind "
        f"--separate-threads=yes`), {n_calls}; each case warmed up first ({WARMUP} calls, "
        f"{WARMUP_REQUESTS} requests), then `gc.collect()` and `gc.freeze()`. The broker "
        "address refuses connections "
        f"({HOSTS}): the enqueue is counted, not the network, nor librdkafka's threads, the "
        "pollers, allocation stalls or caches: the time medians of sections 1-4 see those; "
        "quote both.",
        "The contenders are those of sections 1, 2 and 4, built by the same functions. In a unit "
        f"of work ({UNITS} units whatever N, relayer's and the floor's) each call's figure "
        "includes its share of the unit's record (relayer's record, the floor's list of events "
        "dumped and produced).",
        "Flask: instructions per request through the test client; ADDED = the app's figure less "
        "bare Flask's.",
    ]
    if smoke:
        section.notes.append(
            f"Not run with `--smoke`: the rows of the micro-optimisations relayer keeps but "
            f"{SMOKE_OPTIMISATION!r} (counted in fresh processes, as `make bench` counts every "
            "case); `make bench`, or `python -m benchmarks.instructions`, has them all."
        )
    return section


# -- the command --------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    """Print instructions per call of the chosen cases (all by default)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.instructions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--case", choices=list(CASES), action="append")
    parser.add_argument(
        "--smoke", action="store_true", help="small N, in children of one valgrind process"
    )
    parser.add_argument("--jobs", type=int, help="valgrind processes at a time (default: cores)")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--serve", nargs="+", metavar="JOBS CASE=N", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        CASES[args.child[0]](int(args.child[1]))
        sys.stdout.flush()
        os._exit(0)  # no exit flush: the broker refuses connections
    if args.serve:
        _serve(args.serve[1:], int(args.serve[0]))
        sys.stdout.flush()
        os._exit(0)
    if valgrind() is None:
        print("valgrind is not installed: nothing to count", file=sys.stderr)
        return 1
    cases = args.case or list(CASES)
    results = measure_forked(cases) if args.smoke else measure(cases, args.jobs)
    for case, figure in results.items():
        n = smoke_calls(case) if args.smoke else CALLS[case]
        print(f"{case:20} {figure:12,.0f} instructions per call (N={n:,})")
    for name, value in ratios(results).items():
        print(f"{name:45} {value:.3f}x")
    if "flask_request" in results and "flask_bare" in results:
        added = results["flask_request"] - results["flask_bare"]
        print(f"{'flask_added':20} {added:12,.0f} instructions per request over bare Flask")
    if "flask_lower_bound" in results and "flask_bare" in results:
        added = results["flask_lower_bound"] - results["flask_bare"]
        print(f"{'lower_bound_added':20} {added:12,.0f} instructions per request over bare Flask")
    for what, (kept, instead) in OPTIMISATIONS.items():
        if kept in results and instead in results:
            saved = results[instead] - results[kept]
            print(f"{what}: saves {saved:,.0f} instructions per call ({kept} vs {instead})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
