"""Facts about the machine and the versions, for the results: how busy the
machine was, the RSS of a process, the library versions.
"""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version
from typing import Dict, List

import relayer

from .harness import REPO_ROOT


@dataclass
class CpuClock:
    """The machine's CPU counters (``/proc/stat``), to tell how busy it was
    while the benchmarks ran: other people's work and a hypervisor's steal
    both show in the figures.
    """

    jiffies: List[int] = field(default_factory=lambda: CpuClock.read())
    load: float = field(default_factory=lambda: os.getloadavg()[0])

    @staticmethod
    def read() -> List[int]:
        try:
            with open("/proc/stat") as f:
                return [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return []

    def since(self, start: CpuClock) -> str:
        """What the machine did between ``start`` and this reading."""
        if not (self.jiffies and start.jiffies):
            return f"load average {start.load:.1f} at the start, {self.load:.1f} at the end"
        delta = [b - a for a, b in zip(start.jiffies, self.jiffies)]
        total = sum(delta[:8]) or 1  # user nice system idle iowait irq softirq steal
        busy = total - delta[3] - delta[4]
        steal = delta[7] if len(delta) > 7 else 0
        return (
            f"load average {start.load:.1f} at the start, {self.load:.1f} at the end; "
            f"CPU busy {100 * busy / total:.0f}% of all cores during the run (this suite "
            f"included), steal {100 * steal / total:.1f}%"
        )


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _first(path: str, prefix: str) -> str:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def machine() -> Dict[str, str]:
    """Cores, CPU model, RAM, OS, Python and library versions, date and commit."""
    import confluent_kafka

    mem_kb = _first("/proc/meminfo", "MemTotal")
    ram = f"{int(mem_kb.split()[0]) / 1024**2:.1f} GiB" if mem_kb != "unknown" else mem_kb
    commit = _git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = [line[3:] for line in _git("status", "--porcelain", "relayer").splitlines()]
    if changed:
        commit += f", with uncommitted changes to {', '.join(changed)}"
    return {
        "cores": str(os.cpu_count()),
        "cpu": _first("/proc/cpuinfo", "model name"),
        "ram": ram,
        "os": platform.platform(),
        "python": platform.python_version(),
        "relayer": f"{relayer.__version__} (commit {commit})",
        "confluent-kafka": version("confluent-kafka"),
        "librdkafka": confluent_kafka.libversion()[0],
        "orjson": version("orjson"),
        "flask": version("flask"),
        "werkzeug": version("werkzeug"),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _git(*args: str) -> str:
    """A read-only git command's output in the repository ("" if it fails)."""
    try:
        return subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=True
        ).stdout.rstrip("\n")
    except (OSError, subprocess.CalledProcessError):
        return ""


def version(dist: str) -> str:
    """The installed version of ``dist`` (in this venv)."""
    try:
        return _dist_version(dist)
    except PackageNotFoundError:
        return "not installed"
