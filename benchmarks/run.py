"""Run every benchmark side by side, print the table, write ``RESULTS.md``.

    python -m benchmarks.run            # the full run (a few minutes), writes benchmarks/RESULTS.md
    python -m benchmarks.run --smoke    # seconds: tiny sizes, one repetition, writes nothing,
                                        # and no relayer 1.0.0 (no venv to build, no pip)

The broker is ``$RELAYER_TEST_BOOTSTRAP`` if set, else a local KRaft broker
started (and stopped) here. Exit status: 0 when the broker holds every
message each contender sent, 1 when any was lost (or anything failed). A
target that is missed is printed as MISS and never changes the exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from . import calls, end_to_end, flask_bench, memory, server
from .harness import FULL, SMOKE, Ledger, broker
from .instructions import bench_instructions
from .machine import CpuClock, machine
from .orig_venv import OriginalWorker, original_worker
from .report import Section, judge, render_delivery, render_section, render_setup, render_targets

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes and one repetition, without relayer 1.0.0 (CI); "
        "fails only if messages are lost",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"write the results there (default: {RESULTS.name} for a full run, nothing for --smoke)",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    output = args.output if args.output is not None else (None if args.smoke else RESULTS)
    started = time.monotonic()
    clock = CpuClock()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {text}", file=sys.stderr, flush=True)

    sections: List[Section] = []
    with_original = not args.smoke  # relayer 1.0.0 side by side: `make bench` only
    orig_versions: Optional[Dict[str, str]] = None
    external = os.environ.get("RELAYER_TEST_BOOTSTRAP")
    progress(f"using the broker at {external}" if external else "starting a local broker")
    with broker() as kafka:
        ledger = Ledger(kafka.bootstrap)
        try:
            with contextlib.ExitStack() as stack:
                orig: Optional[OriginalWorker] = None
                if with_original:
                    progress("starting relayer 1.0.0's worker")
                    orig = stack.enter_context(original_worker(ledger))
                    orig_versions = orig.versions
                progress("1-3: emit and log, per call" if orig else "1-2: emit and log, per call")
                sections += calls.bench_calls(ledger, sizes, orig)
                progress("4: Flask requests")
                sections += flask_bench.bench_flask(ledger, sizes, orig)
            progress("5: end to end")
            sections += end_to_end.bench_end_to_end(ledger, sizes)
            progress("6: memory with the broker down")
            sections += memory.bench_memory(sizes)
            progress("7: a real server (gunicorn)")
            sections += server.bench_server(ledger, sizes)
            progress("counting what the broker holds")
            held = ledger.held()
        finally:
            ledger.delete_topics()
            progress("stopping the broker")

    busy = CpuClock().since(clock)  # of the timed sections: callgrind's runs come after
    # Instructions need no broker, and must not share the machine with the timed sections.
    progress("8: instructions per call (callgrind)")
    timed = {k: v for s in sections for k, v in s.figures.items()}
    sections.append(bench_instructions(args.smoke, timed))
    lost = {t: (s, held.get(t, 0)) for t, s in ledger.sent.items() if held.get(t, 0) < s}
    verdicts = judge(sections, with_original)
    mode = "smoke run (tiny sizes: the figures mean little)" if args.smoke else "full run"
    text = "\n".join(
        [
            f"## relayer benchmarks: {mode}",
            "",
            render_setup(machine(), kafka.description, orig_versions, sizes, busy),
            *(render_section(s, verdicts) for s in sections),
            render_targets(verdicts),
            render_delivery(ledger, held),
            (
                f"**{len(lost)} topic(s) LOST messages: this run is not valid.**\n"
                if lost
                else "Every message sent was delivered: the broker holds all of them.\n"
            ),
            f"Run time: {time.monotonic() - started:.0f} s. "
            "How it is measured: benchmarks/README.md.\n",
        ]
    )
    print(text)
    if output is not None:
        output.write_text(
            "# Benchmark results\n\n"
            "Written by `make bench` (`python -m benchmarks.run`); see `benchmarks/README.md` "
            "for what each figure is and how it is measured.\n\n" + text
        )
        progress(f"wrote {output}")
    if lost:
        for topic, (sent, got) in lost.items():
            print(f"LOST: {topic}: sent {sent}, broker holds {got}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
