"""What a comparison returns (:class:`Section`: rows, notes, figures) and the
Markdown the run prints and writes: the setup, each section, the targets,
the delivery check.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Mapping, Optional

from .harness import Ledger, Sizes, Stats
from .targets import TARGETS, Verdict, evaluate


@dataclass
class Row:
    """One line of a results table."""

    label: str
    stats: Optional[Stats]
    unit: str  # "µs", "events/s", "bytes", "instructions"
    compared: str = ""  # e.g. "1.12x floor"
    target: str = ""  # the name of a target in benchmarks.targets.TARGETS, if any


@dataclass
class Section:
    """One comparison's table; ``figures`` are what the targets read.

    ``not_measured``: figures this comparison could not measure in this run,
    and why (e.g. a tool is missing); their targets show "not run" and that
    reason instead of failing the run. ``value_column``: when set, the table
    has one value column of that name (each row's figure is a single
    number, such as an instruction count) instead of median, min and max.
    """

    title: str
    rows: List[Row] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    figures: Dict[str, float] = field(default_factory=dict)
    not_measured: Dict[str, str] = field(default_factory=dict)
    value_column: str = ""


@dataclass(frozen=True)
class NotMeasured(Verdict):
    """The verdict of a target whose figure a section could not measure."""

    why: str = ""

    @property
    def shown(self) -> str:
        return self.why


def judge(sections: List[Section], with_original: bool) -> Dict[str, Verdict]:
    """Every target's verdict (:func:`benchmarks.targets.evaluate`) from the
    figures of ``sections``; a target whose figure a section declared
    ``not_measured`` gets a :class:`NotMeasured` verdict.
    """
    figures = {k: v for s in sections for k, v in s.figures.items()}
    skipped = {k: why for s in sections for k, why in s.not_measured.items() if k not in figures}
    verdicts = evaluate({**{k: 0.0 for k in skipped}, **figures}, with_original)
    for name, verdict in verdicts.items():
        why = skipped.get(verdict.target.figure)
        if why is not None:
            verdicts[name] = NotMeasured(verdict.target, None, why)
    return verdicts


_UNIT_FORMAT = {
    "µs": "{:,.3f} µs",
    "events/s": "{:,.0f}/s",
    "bytes": "{:,.0f} B",
    "instructions": "{:,.0f}",
}


def _cell(value: float, unit: str) -> str:
    fmt = _UNIT_FORMAT.get(unit, "{:,.3f}")
    if unit == "µs" and abs(value) >= 10:
        fmt = "{:,.1f} µs"
    return fmt.format(value)


def render_section(section: Section, verdicts: Mapping[str, Verdict]) -> str:
    lines = [f"### {section.title}", ""]
    if section.rows and section.value_column:
        lines += [
            f"| | {section.value_column} | compared | target |",
            "|---|---:|---|---|",
        ]
        for row in section.rows:
            value = "" if row.stats is None else _cell(row.stats.median, row.unit)
            target = verdicts[row.target].cell if row.target else ""
            lines.append(f"| {row.label} | {value} | {row.compared} | {target} |")
        lines.append("")
    elif section.rows:
        lines += [
            "| | median | min | max | compared | target |",
            "|---|---:|---:|---:|---|---|",
        ]
        for row in section.rows:
            if row.stats is None:
                values = ["", "", ""]
            else:
                stats = (row.stats.median, row.stats.min, row.stats.max)
                values = [_cell(v, row.unit) for v in stats]
            target = verdicts[row.target].cell if row.target else ""
            lines.append(f"| {row.label} | {' | '.join(values)} | {row.compared} | {target} |")
        lines.append("")
    lines.extend(f"- {note}" for note in section.notes)
    return "\n".join(lines).rstrip() + "\n"


def render_targets(verdicts: Mapping[str, Verdict]) -> str:
    lines = ["### Targets (medians of this run)", "", "| target | measured | |", "|---|---:|---|"]
    lines.extend(
        f"| {v.target.text} | {v.shown} | **{v.verdict}** |"
        for v in (verdicts[t.name] for t in TARGETS)
    )
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
    orig_versions: Optional[Dict[str, str]],
    sizes: Sizes,
    busy: str,
) -> str:
    """The setup table; ``orig_versions`` is ``None`` when relayer 1.0.0 did not run."""
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
            "not run (`make bench` only)"
            if orig_versions is None
            else ", ".join(f"{k} {v}" for k, v in orig_versions.items()),
        ),
        ("Machine load", busy),
        ("Sizes", ", ".join(f"{k}={v:,}" for k, v in asdict(sizes).items())),
        ("Date", facts["date"]),
    ]
    lines = ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines) + "\n"
