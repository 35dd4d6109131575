"""One RPC call that logs N lines: its memory peak, and what writing its record costs.

    python -m benchmarks.flood --lines 1000000                # both modes, one fresh process each
    python -m benchmarks.flood --lines 1000000 --mode patch   # one mode, in this process

A relayer is built with ``make_rpc_relayer("logs", kafka_hosts="127.0.0.1:1",
producer_opts={"message.timeout.ms": 1000})``, then one decorated call does
``relayer.log("info", f"line {i}")`` N times and returns. Two modes, so that nothing
needs a broker:

- ``patch``: under ``relayer.testing.RelayerPatch``. Nothing connects; the record's
  produce is recorded in memory, so the patch keeps the record's bytes.
- ``unreachable``: the real produce path. librdkafka copies the record into its queue,
  where it waits (nothing listens on port 1) until it fails after 1 s.

Either way the record write is encoding + produce. One JSON line per mode comes out on
stdout (sizes in MiB, times in seconds):

- ``rss_before``: VmRSS just before the call (after a warm-up call, so the producer
  exists); ``rss_end_of_loop``: VmRSS when the loop ends (the lines held in memory);
- ``peak_rss``: VmHWM after the call. VmHWM is the peak of the process's whole life,
  hence one fresh process per mode; ``hwm_before`` shows it was lower before the call;
- ``rss_growth`` = ``peak_rss`` - ``rss_before``; ``rss_after``: VmRSS after the call;
- ``loop_s``: the logging loop, timed inside the function;
- ``end_of_call_s``: from the function body's return to the decorator's return (the
  record write, and anything else the decorator does at the end);
  ``write_record_s``: ``Relayer.write_record`` alone (null if the code never calls it);
- ``record_bytes``, ``record_lines`` and ``truncated_lines`` (null if the record has
  none) of the record produced; ``relayer_file``: which relayer was imported.

To read the record, the script keeps the bytes of what is produced to ``logs`` (at most
``message.max.bytes``, 1 MB by default), in both modes; it counts in ``rss_after``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

MODES = ("patch", "unreachable")
TOPIC = "logs"


def status_mib(field: str) -> float:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status") as f:
        found = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    assert found, field
    return round(int(found[1]) / 1024, 1)


def keep_records() -> List[bytes]:
    """A list that gets every value produced to the logging topic, in either mode
    (``DeliveryProducer.produce`` wrapped; it stays empty if the code has no such method)."""
    produced: List[bytes] = []
    try:
        from relayer._producer import DeliveryProducer

        real_produce = DeliveryProducer.produce
    except (ImportError, AttributeError):
        return produced

    def produce(self: Any, topic: str, value: bytes, *args: Any, **kwargs: Any) -> Any:
        if topic == TOPIC:
            produced.append(value)
        return real_produce(self, topic, value, *args, **kwargs)

    DeliveryProducer.produce = produce  # type: ignore[method-assign]
    return produced


def measure(lines: int, mode: str) -> Dict[str, Any]:
    """Run the flood once in this process and return the figures."""
    import relayer
    from relayer import Relayer
    from relayer.rpc import make_rpc_relayer
    from relayer.testing import RelayerPatch

    produced = keep_records()
    writes: List[float] = []
    real_write_record = Relayer.write_record

    def write_record(self: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return real_write_record(self, *args, **kwargs)
        finally:
            writes.append(time.perf_counter() - started)

    Relayer.write_record = write_record  # type: ignore[method-assign]
    patch = RelayerPatch().start() if mode == "patch" else None
    rpc = make_rpc_relayer(
        TOPIC, kafka_hosts="127.0.0.1:1", producer_opts={"message.timeout.ms": 1000}
    )
    marks: Dict[str, float] = {}

    @rpc
    def flood(n: int, relayer: Any = None) -> None:
        started = time.perf_counter()
        for i in range(n):
            relayer.log("info", f"line {i}")
        marks["returned"] = time.perf_counter()
        marks["loop_s"] = marks["returned"] - started
        marks["rss_end_of_loop"] = status_mib("VmRSS")

    flood(1)  # warm-up: the producer (and librdkafka's handle) exists before the measure
    produced.clear()
    writes.clear()
    gc.collect()
    rss_before, hwm_before = status_mib("VmRSS"), status_mib("VmHWM")
    flood(lines)
    end_of_call_s = time.perf_counter() - marks["returned"]
    peak, rss_after = status_mib("VmHWM"), status_mib("VmRSS")

    record = json.loads(produced[-1]) if produced else {}
    result = {
        "mode": mode,
        "lines": lines,
        "rss_before": rss_before,
        "hwm_before": hwm_before,
        "rss_end_of_loop": marks["rss_end_of_loop"],
        "peak_rss": peak,
        "rss_growth": round(peak - rss_before, 1),
        "rss_after": rss_after,
        "loop_s": round(marks["loop_s"], 3),
        "end_of_call_s": round(end_of_call_s, 3),
        "write_record_s": round(writes[-1], 3) if writes else None,
        "records_produced": len(produced),
        "record_bytes": len(produced[-1]) if produced else None,
        "record_lines": len(record.get("lines", ())) if produced else None,
        "truncated_lines": record.get("truncated_lines"),
        "relayer_file": relayer.__file__,
    }
    rpc.close(0)
    if patch is not None:
        patch.stop()
    return result


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flood", description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines the call logs")
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both")
    args = parser.parse_args(argv)
    if args.mode != "both":
        print(json.dumps(measure(args.lines, args.mode)), flush=True)
        return 0
    for mode in MODES:  # a fresh process each: VmHWM never goes down
        argv = [sys.executable, "-m", "benchmarks.flood", "--lines", str(args.lines)]
        subprocess.run([*argv, "--mode", mode], check=True, env=os.environ)
    return 0


if __name__ == "__main__":
    sys.exit(main())
