"""The original relayer 1.0.0 in a venv of its own, and the worker that runs
there (:mod:`benchmarks.original`).

The venv lives in ``$RELAYER_KAFKA_CACHE/bench-venv-orig-py3XX`` (default
``~/.cache/relayer/bench-venv-orig-py3XX``, one per Python version) and is
reused while its recipe is unchanged. Everything comes from PyPI through pip:

- ``kafka-python==2.3.3``: relayer 1.0.0 pins kafka-python 1.3.4, which
  neither imports on Python 3.7+ (``async`` became a keyword) nor speaks the
  protocol versions Kafka 4 kept; 2.3.3 does both (and is the version the
  test extras already use);
- the dev venv's own Flask and Werkzeug versions, so that the bare-Flask
  baselines of the two processes are the same code;
- ``relayer==1.0.0`` itself, ``--no-deps``. Its ``setup.py`` does
  ``from pip.req import parse_requirements`` (pip < 10): for the build
  only, a ``pip/req.py`` stand-in that reads a requirements file is put
  into the venv's pip, then removed. The build runs without isolation,
  with ``setuptools<72`` (which still accepts ``tests_require``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List

from .harness import REPO_ROOT, Ledger
from .machine import version

ORIGINAL = "relayer==1.0.0"
KAFKA_PYTHON = "kafka-python==2.3.3"
BUILD_TOOLS = ["setuptools<72", "wheel"]

_PIP_REQ_SHIM = '''\
"""Stand-in for pip < 10's pip.req, for building relayer 1.0.0 only."""
from types import SimpleNamespace


def parse_requirements(filename, session=None):
    with open(filename) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return [SimpleNamespace(req=line) for line in lines if line and not line.startswith("-")]
'''


def venv_dir() -> Path:
    root = os.environ.get("RELAYER_KAFKA_CACHE") or Path.home() / ".cache" / "relayer"
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"  # one per Python (tox runs several)
    return Path(root).expanduser() / f"bench-venv-orig-{tag}"


def recipe() -> List[str]:
    """What the venv holds; a change rebuilds it."""
    return [
        ORIGINAL,
        KAFKA_PYTHON,
        f"flask=={version('flask')}",
        f"werkzeug=={version('werkzeug')}",
        f"python=={sys.version_info[0]}.{sys.version_info[1]}",
    ]


def ensure_venv(log: IO[str] = sys.stderr) -> Path:
    """Return the venv's python, building the venv first if needed (under a lock)."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    marker = venv / "bench-recipe.json"
    wanted = recipe()
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and json.loads(marker.read_text()) == wanted and python.exists():
            return python
        print(f"building the original relayer's venv in {venv} ...", file=log, flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(venv)])
        pip = [str(python), "-m", "pip", "--quiet", "--disable-pip-version-check"]
        _run([*pip, "install", KAFKA_PYTHON, *wanted[2:4], *BUILD_TOOLS])
        pip_dir = Path(
            _run(
                [str(python), "-c", "import pip, os; print(os.path.dirname(pip.__file__))"]
            ).strip()
        )
        shim = pip_dir / "req.py"
        shim.write_text(_PIP_REQ_SHIM)
        try:
            _run([*pip, "install", "--no-deps", "--no-build-isolation", ORIGINAL])
        finally:
            shim.unlink()
        marker.write_text(json.dumps(wanted))
        return python


def _run(cmd: List[str]) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-2000:]}{res.stderr[-2000:]}"
        )
    return res.stdout


class OriginalWorker:
    """A running :mod:`benchmarks.original` worker in the original's venv."""

    def __init__(self, python: Path) -> None:
        self.proc = subprocess.Popen(
            [str(python), "-I", str(REPO_ROOT / "benchmarks" / "original.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.versions: Dict[str, str] = {}
        #: Its topics: ``emit_topic``, ``rpc_records``, ``flask_events``, ``flask_records``.
        self.topics: Dict[str, str] = {}

    def call(self, op: str, **args: Any) -> Dict[str, Any]:
        """Send one command; return its answer (raise with the worker's traceback)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"the original relayer's worker died:\n{err[-3000:]}")
        answer: Dict[str, Any] = json.loads(line)
        if not answer.pop("ok"):
            raise RuntimeError(f"original relayer worker, {op}: {answer['error']}")
        return answer

    def flush(self) -> None:
        """Wait until kafka-python has delivered everything (the ``settle`` of its contenders)."""
        self.call("flush")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.proc.poll() is None:
                self.call("quit")
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def original_worker(ledger: Ledger, log: IO[str] = sys.stderr) -> Iterator[OriginalWorker]:
    """Create its topics, start the worker (building the venv if needed), set
    it up; stop it at the end. ``make bench`` only: ``--smoke`` never calls this.
    """
    topics = {
        "emit_topic": ledger.topic("orig-emit"),
        "rpc_records": ledger.topic("orig-rpc-records"),
        "flask_events": ledger.topic("orig-flask-events"),
        "flask_records": ledger.topic("orig-flask-records"),
    }
    worker = OriginalWorker(ensure_venv(log))
    worker.topics = topics
    try:
        setup = worker.call("setup", bootstrap=ledger.bootstrap, **topics)
        worker.versions = {k: str(v) for k, v in setup.items()}
        yield worker
    finally:
        worker.close()
