"""The benchmark suite's short run (``python -m benchmarks.run --smoke``)
against the session broker: every code path of ``make bench`` but the
side-by-side with relayer 1.0.0 runs, with tiny sizes. It fails only if a
message was lost (or the suite broke), never because something was slow.

The smoke run needs no package registry: relayer 1.0.0's venv (built with
pip from PyPI) is ``make bench`` only. To prove it, the run gets an empty
cache folder (no venv to reuse) and a pip that may not use any index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_smoke(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RELAYER_TEST_BOOTSTRAP": kafka_bootstrap,
        "RELAYER_KAFKA_CACHE": str(tmp_path),  # where relayer 1.0.0's venv would be built
        "PIP_NO_INDEX": "1",  # and pip could not fetch anything to build it
    }
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--smoke"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
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
        "### 7. A real server",
        "### 8. Instructions per call (callgrind)",
        "### Targets",
        "### Delivery",
    ):
        assert heading in out, report
    assert "| relayer `emit()`, default settings (kafka_headers=" in out, report
    assert "| relayer `emit()`, `kafka_headers=True` |" in out, report
    assert "| raw produce in a unit of work: + request id, event kept" in out, report
    assert "| relayer `FlaskRelayer`: ADDED over bare |" in out, report
    # Instructions per call: counted by callgrind when valgrind is installed (it is in
    # CI), else the section says so; either way the run does not fail because of it.
    instructions = out.split("### 8. Instructions per call (callgrind)", 1)[1].split("###", 1)[0]
    if shutil.which("valgrind"):
        for row in (
            "| raw produce + orjson.dumps(envelope) (the floor) | ",
            "| relayer `emit()`, default settings (kafka_headers=",
            "| relayer `emit()` in a unit of work, default settings | ",
            "| relayer `emit()`, `kafka_headers=True` | ",
            "| relayer `Relayer.log()` in a unit of work | ",
            "| relayer `FlaskRelayer`: ADDED over bare | ",
        ):
            assert row in instructions, report
        assert "Not run with `--smoke`: the rows of the micro-optimisations" in instructions, report
    else:
        assert "Not measured: valgrind is not installed" in instructions, report
    # Nothing lost: the run exits 1 then, and says so.
    assert "Every message sent was delivered" in out, report
    assert "LOST" not in out, report
    # relayer 1.0.0 did not run: no venv built, no worker, no topics of its own.
    assert "Not run with `--smoke`: `make bench` only" in out, report
    assert "| relayer 1.0.0's venv | not run (`make bench` only) |" in out, report
    assert "| orig-" not in out, report
    assert "relayer 1.0.0" not in res.stderr, report
    assert not list(tmp_path.iterdir()), report
