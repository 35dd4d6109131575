"""The benchmark suite's short run (``python -m benchmarks.run --smoke``)
against the session broker: every code path of ``make bench`` runs, with
tiny sizes. It fails only if a message was lost (or the suite broke), never
because something was slow.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_smoke(kafka_bootstrap: str) -> None:
    env = {**os.environ, "RELAYER_TEST_BOOTSTRAP": kafka_bootstrap}
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,  # the first run also builds relayer 1.0.0's venv (pip, ~20 s)
        check=False,
    )
    report = f"stdout:\n{res.stdout[-6000:]}\nstderr:\n{res.stderr[-6000:]}"
    assert res.returncode == 0, report
    out = res.stdout
    for heading in (
        "### 1. `emit()` outside a unit of work",
        "### 2. `emit()` and `log()` inside a unit of work",
        "### 3. vs the original relayer 1.0.0",
        "### 4. Flask requests",
        "### 5. End to end",
        "### 6. Memory",
        "### Targets",
        "### Delivery",
    ):
        assert heading in out, report
    assert "| relayer `emit()` |" in out, report
    assert "Every message sent was delivered" in out, report
    assert "LOST" not in out, report
