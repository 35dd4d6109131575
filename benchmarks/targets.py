"""The acceptance targets, in one table: :data:`TARGETS`.

Each row names the figure it reads (a key of ``Section.figures``, set by the
comparison that measures it), the threshold and the direction; the run
evaluates every row against the figures it measured (:func:`evaluate`) and
shows the verdict next to the figure's row and in a table of its own. No
threshold is written anywhere else. A missed target is shown as MISS and
never changes the exit status.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple


@dataclass(frozen=True)
class Target:
    """One acceptance target: ``figure`` compared with ``limit``."""

    name: str  # what a results row refers to (``Row.target``)
    figure: str  # the figure it reads (``Section.figures``)
    limit: float
    at_most: bool  # True: figure <= limit passes; False: figure >= limit passes
    label: str  # prose; "{rule}" becomes the rule, e.g. "≤ 1.3x"
    unit: str = "x"  # of the limit and the figure: "x" (a ratio), "µs", "events/s"
    full_only: bool = False  # measured against relayer 1.0.0: `make bench` only, not --smoke

    @property
    def rule(self) -> str:
        """The threshold as shown, e.g. ``≤ 1.3x`` or ``≥ 300,000 events/s``."""
        sign = "≤" if self.at_most else "≥"
        number = f"{self.limit:,.0f}" if self.limit >= 1000 else f"{self.limit:.3g}"
        return f"{sign} {number}{'x' if self.unit == 'x' else ' ' + self.unit}"

    @property
    def text(self) -> str:
        return self.label.format(rule=self.rule)

    def show(self, value: float) -> str:
        """A measured value of this target's figure, as printed."""
        if self.unit == "x":
            return f"{value:.3f}x" if value < 10 else f"{value:.1f}x"
        if self.unit == "µs":
            return f"{value:.3f} µs"
        return f"{value:,.0f}/s"


#: Every target of the suite. Ratios are medians of per-repetition ratios
#: (see benchmarks/README.md); the Flask ones are ratios of added costs.
TARGETS: Tuple[Target, ...] = (
    Target("emit", "emit/floor", 1.3, True, "`emit()` {rule} raw produce"),
    Target(
        "emit_uow",
        "emit uow/floor uow",
        1.3,
        True,
        "`emit()` in a unit of work {rule} raw produce in a unit of work",
    ),
    Target(
        "emit_headers",
        "emit headers/floor headers",
        1.3,
        True,
        "`emit()` with `kafka_headers=True` {rule} raw produce with the same headers",
    ),
    # Instructions per call (callgrind; benchmarks/instructions.py): the same
    # comparisons, in figures the machine's noise cannot move.
    Target("instr_emit", "emit/raw instructions", 1.3, True, "`emit()` {rule} raw, instructions"),
    Target(
        "instr_emit_uow",
        "emit uow/raw uow instructions",
        1.3,
        True,
        "`emit()` in a unit of work {rule} raw in a unit of work, instructions",
    ),
    Target(
        "instr_emit_headers",
        "emit headers/raw headers instructions",
        1.3,
        True,
        "`emit()` with `kafka_headers=True` {rule} raw with the same headers, instructions",
    ),
    Target(
        "instr_flask",
        "flask added/lower bound added instructions",
        1.5,
        True,
        "Flask: added by relayer {rule} added by the lower bound, instructions",
    ),
    Target(
        "log",
        "log µs",
        0.5,
        True,
        "relayer `Relayer.log()` in a unit of work {rule}",
        "µs",
    ),
    Target(
        "log_scoped",
        "log_scoped µs",
        0.5,
        True,
        "`relayer.log()` of an RPC call (ScopedRelayer) {rule}",
        "µs",
    ),
    Target(
        "log_flask",
        "log_flask µs",
        0.5,
        True,
        "`FlaskRelayer.log()` (the Flask extension) {rule}",
        "µs",
    ),
    # The peers need the `bench` extra (`make bench` installs it): full_only lets
    # --smoke without it show "not run"; with it, --smoke measures them too.
    Target(
        "vs_otel_flask",
        "flask added/otel added",
        0.2,
        True,
        "Flask: added by relayer {rule} added by OpenTelemetry's Flask instrumentation",
        full_only=True,
    ),
    Target(
        "vs_sentry_flask",
        "flask added/sentry added",
        0.2,
        True,
        "Flask: added by relayer {rule} added by sentry-sdk's Flask integration",
        full_only=True,
    ),
    Target(
        "instr_otel",
        "flask added/otel added instructions",
        0.2,
        True,
        "Flask: added by relayer {rule} added by OpenTelemetry, instructions",
        full_only=True,
    ),
    Target(
        "instr_sentry",
        "flask added/sentry added instructions",
        0.2,
        True,
        "Flask: added by relayer {rule} added by sentry-sdk, instructions",
        full_only=True,
    ),
    Target(
        "vs_1.0.0_emit",
        "1.0.0 emit/emit",
        20,
        False,
        "{rule} faster per emit than 1.0.0",
        full_only=True,
    ),
    Target(
        "memory",
        "memory relayer/floor",
        1.01,
        True,
        "memory per pending message with default settings {rule} the raw floor's",
    ),
    Target(
        "e2e",
        "e2e events/s",  # 0 when the broker did not get every event
        300_000,
        False,
        "{rule} end to end, nothing lost",
        "events/s",
    ),
    # Section 7 (benchmarks/server.py): gunicorn, 2 sync workers, load from another process.
    Target(
        "server_rps",
        "server rps ratio",
        0.9,
        False,
        "gunicorn: requests/s with relayer {rule} bare",
    ),
    Target(
        "server_p99",
        "server p99 added µs",
        1000,
        True,
        "gunicorn: p99 latency added by relayer {rule}",
        "µs",
    ),
)


@dataclass(frozen=True)
class Verdict:
    """A target and what this run measured for it (``None``: not measured)."""

    target: Target
    value: Optional[float]

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "not run"
        t = self.target
        return "PASS" if (self.value <= t.limit if t.at_most else self.value >= t.limit) else "MISS"

    @property
    def shown(self) -> str:
        return "`make bench` only" if self.value is None else self.target.show(self.value)

    @property
    def cell(self) -> str:
        """The target column of the figure's row."""
        return f"{self.target.rule}: **{self.verdict}**"


def evaluate(figures: Mapping[str, float], with_original: bool) -> Dict[str, Verdict]:
    """Each target's verdict, by name. Raises if a figure a target reads was not
    measured (but those of the ``full_only`` targets when 1.0.0 did not run).
    """
    missing = [
        t.figure for t in TARGETS if t.figure not in figures and (with_original or not t.full_only)
    ]
    if missing:
        raise RuntimeError(f"no figure for the target(s) reading {missing}: the suite is broken")
    return {t.name: Verdict(t, figures.get(t.figure)) for t in TARGETS}
