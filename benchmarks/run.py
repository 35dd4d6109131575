"""Run every benchmark side by side, print the table, write ``RESULTS.md``.

    python -m benchmarks.run            # the full run (a few minutes), writes benchmarks/RESULTS.md
    python -m benchmarks.run --smoke    # seconds: tiny sizes, one repetition, writes nothing

The broker is ``$RELAYER_TEST_BOOTSTRAP`` if set, else a local KRaft broker
started (and stopped) here. Exit status: 0 when the broker holds every
message each contender sent, 1 when any was lost (or anything failed). A
target that is missed is printed as MISS and never changes the exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from . import cases
from .cases import Section, Sizes, Target
from .harness import CpuClock, Ledger, broker, machine
from .orig_venv import original_worker

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

_UNIT_FORMAT = {
    "µs": "{:,.3f} µs",
    "events/s": "{:,.0f}/s",
    "bytes": "{:,.0f} B",
}


def _cell(value: float, unit: str) -> str:
    fmt = _UNIT_FORMAT.get(unit, "{:,.3f}")
    if unit == "µs" and abs(value) >= 10:
        fmt = "{:,.1f} µs"
    return fmt.format(value)


def render_section(section: Section) -> str:
    lines = [
        f"### {section.title}",
        "",
        "| | median | min | max | compared | target |",
        "|---|---:|---:|---:|---|---|",
    ]
    for row in section.rows:
        if row.stats is None:
            values = ["", "", ""]
        else:
            values = [_cell(v, row.unit) for v in (row.stats.median, row.stats.min, row.stats.max)]
        lines.append(f"| {row.label} | {' | '.join(values)} | {row.compared} | {row.target} |")
    lines.append("")
    lines.extend(f"- {note}" for note in section.notes)
    return "\n".join(lines).rstrip() + "\n"


def render_targets(targets: Sequence[Target]) -> str:
    lines = ["### Targets (medians of this run)", "", "| target | measured | |", "|---|---:|---|"]
    lines.extend(f"| {t.text} | {t.shown} | **{t.verdict}** |" for t in targets)
    return "\n".join(lines) + "\n"


def render_delivery(ledger: Ledger, held: Dict[str, int]) -> str:
    lines = [
        "### Delivery: what each contender sent vs what the broker holds",
        "",
        "| topic | sent | held | |",
        "|---|---:|---:|---|",
    ]
    for topic, sent in sorted(ledger.sent.items()):
        got = held.get(topic, 0)
        verdict = "ok" if got == sent else ("LOST" if got < sent else "DUPLICATES")
        role = topic.split(f"{ledger.run_id}-", 1)[-1]
        lines.append(f"| {role} | {sent:,} | {got:,} | {verdict} |")
    total_sent, total_held = sum(ledger.sent.values()), sum(held.values())
    lines.append(f"| **all** | **{total_sent:,}** | **{total_held:,}** | |")
    return "\n".join(lines) + "\n"


def render_setup(
    facts: Dict[str, str],
    broker_text: str,
    orig_versions: Dict[str, str],
    sizes: Sizes,
    busy: str,
) -> str:
    rows = [
        ("Machine", f"{facts['cores']} cores, {facts['cpu']}, {facts['ram']} RAM ({facts['os']})"),
        ("Python", facts["python"]),
        ("relayer", facts["relayer"]),
        ("confluent-kafka / librdkafka", f"{facts['confluent-kafka']} / {facts['librdkafka']}"),
        ("orjson", facts["orjson"]),
        ("Flask / Werkzeug", f"{facts['flask']} / {facts['werkzeug']}"),
        ("Kafka", broker_text),
        (
            "relayer 1.0.0's venv",
            ", ".join(f"{k} {v}" for k, v in orig_versions.items()) or "not run",
        ),
        ("Machine load", busy),
        ("Sizes", ", ".join(f"{k}={v:,}" for k, v in asdict(sizes).items())),
        ("Date", facts["date"]),
    ]
    lines = ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes and one repetition (CI); fails only if messages are lost",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"write the results there (default: {RESULTS.name} for a full run, nothing for --smoke)",
    )
    args = parser.parse_args(argv)
    sizes = cases.SMOKE if args.smoke else cases.FULL
    output = args.output if args.output is not None else (None if args.smoke else RESULTS)
    started = time.monotonic()
    clock = CpuClock()

    def progress(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {text}", file=sys.stderr, flush=True)

    sections: List[Section] = []
    external = os.environ.get("RELAYER_TEST_BOOTSTRAP")
    progress(f"using the broker at {external}" if external else "starting a local broker")
    with broker() as kafka:
        ledger = Ledger(kafka.bootstrap)
        try:
            orig_topics = {
                "emit_topic": ledger.topic("orig-emit"),
                "rpc_records": ledger.topic("orig-rpc-records"),
                "flask_events": ledger.topic("orig-flask-events"),
                "flask_records": ledger.topic("orig-flask-records"),
            }
            progress("starting relayer 1.0.0's worker")
            with original_worker(kafka.bootstrap, orig_topics) as orig:
                progress("1-3: emit and log, per call")
                sections += cases.bench_calls(ledger, orig, orig_topics, sizes)
                progress("4: Flask requests")
                sections += cases.bench_flask(ledger, orig, orig_topics, sizes)
                orig_versions = orig.versions
            progress("5: end to end")
            sections += cases.bench_end_to_end(ledger, sizes)
            progress("6: memory with the broker down")
            sections += cases.bench_memory(sizes)
            progress("counting what the broker holds")
            held = ledger.held()
        finally:
            ledger.delete_topics()
            progress("stopping the broker")

    busy = CpuClock().since(clock)
    lost = {t: (s, held.get(t, 0)) for t, s in ledger.sent.items() if held.get(t, 0) < s}
    targets = [t for s in sections for t in s.targets]
    mode = "smoke run (tiny sizes: the figures mean little)" if args.smoke else "full run"
    text = "\n".join(
        [
            f"## relayer benchmarks: {mode}",
            "",
            render_setup(machine(), kafka.description, orig_versions, sizes, busy),
            *(render_section(s) for s in sections),
            render_targets(targets),
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
