"""What a SIGKILL (or an OOM kill) loses: what was still in librdkafka's queue, no more.

A child process serves RPC calls in a loop against the session broker (at most 2,000 a
second, a rate at which its buffer never fills: the test checks that nothing was dropped),
each call emitting one event and logging one line: one event and one record per call.
After each call it writes how many calls it has completed and how many messages were still
pending. After about 2 s it is killed with SIGKILL. Then both topics are read back: every
message must be intact and unique, only the newest ones may be missing (no hole), and no
more of them than were pending after the last completed call, nor than the rate allows in
linger.ms plus a generous margin. The figures are printed (``-s``); docs/RELIABILITY.md
quotes them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

REPO_ROOT = Path(__file__).resolve().parents[2]
LINGER_MS = 5  # relayer's default linger.ms (relayer._producer.DEFAULT_PRODUCER_CONFIG)
RUN_SECONDS = 2.0
# Generous: librdkafka's thread and the broker share 2 cores with the child; a message
# produced this long before the kill has had ample time to be sent.
MARGIN_SECONDS = 0.5

CALL_INTERVAL = 0.0005  # seconds: at most 2,000 calls/s, a rate the broker keeps up with

SERVE_SCRIPT = """
import os, sys, time
from relayer.rpc import make_rpc_relayer

bootstrap, events, logs, prefix, progress, interval = sys.argv[1:7]
interval = float(interval)
rpc = make_rpc_relayer(logs, kafka_hosts=bootstrap, kafka_headers=True)

@rpc
def hit(rid, relayer=None):
    relayer.emit(events, "hit", {"id": rid}, partition_key=rid)
    relayer.log("info", f"hit {rid}")

fd = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
done = 0
next_at = time.monotonic()
while True:
    rid = f"{prefix}-{done}"
    hit(rid, relayer_request_id=rid)
    done += 1
    stats = rpc.stats()
    # One write per call, so the last whole line survives the kill: calls completed, and
    # messages still in librdkafka's queue (queued or awaiting their ack) at that moment.
    os.write(fd, f"{done} {stats['pending']} {stats['dropped']}\\n".encode())
    next_at += interval
    pause = next_at - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    else:
        next_at = time.monotonic()
"""


def progress_of(path: Path) -> tuple[int, int, int]:
    """``(completed calls, pending messages, dropped messages)`` from the last whole line
    the child wrote; zeros before its first call completes."""
    text = path.read_text() if path.exists() else ""
    lines = text[: text.rfind("\n") + 1].splitlines()
    if not lines:
        return 0, 0, 0
    done, pending, dropped = (int(field) for field in lines[-1].split())
    return done, pending, dropped


def index_of(rid: str, prefix: str) -> int:
    head, _, tail = rid.rpartition("-")
    assert head == prefix and tail.isdigit(), f"a request id not from this run: {rid!r}"
    return int(tail)


def check_event(key: bytes | None, value: bytes | None, headers: Any, prefix: str) -> int:
    """The call index of one intact event (fails on anything malformed)."""
    assert value is not None and key is not None
    event = orjson.loads(value)
    rid = event["request_id"]
    assert event["payload"] == {"id": rid} and event["event_subtype"] == "hit", event
    assert key.decode() == rid and headers["request_id"] == rid, (key, headers, event)
    return index_of(rid, prefix)


def check_record(value: bytes | None, headers: Any, prefix: str) -> int:
    """The call index of one intact record: its event, then its log line."""
    assert value is not None
    record = orjson.loads(value)
    rid = record["request_id"]
    event, line = record["lines"]
    assert record["service"] == "hit" and "error" not in record, record
    assert event["payload"] == {"id": rid} and event["request_id"] == rid, record
    assert line["log_level"] == "info" and line["payload"] == f"hit {rid}", record
    assert headers["request_id"] == rid, headers
    return index_of(rid, prefix)


def loss(name: str, indexes: list[int], completed: int) -> int:
    """Check what arrived of one topic against ``completed`` calls; return how many of
    those calls are missing."""
    twice = [i for i, n in Counter(indexes).items() if n > 1]
    assert not twice, f"{name}: {len(twice)} duplicated, e.g. calls {twice[:5]}"
    # The call under way at the kill may have produced its messages before the count.
    beyond = [i for i in indexes if i > completed]
    assert not beyond, f"{name}: messages of calls never made: {beyond[:5]}"
    received = set(indexes)
    missing = [i for i in range(completed) if i not in received]
    if missing:  # one partition, idempotent producer: only a tail can be lost, no hole
        assert min(missing) > max(received, default=-1), (
            f"{name}: a hole: call {min(missing)} missing, call {max(received)} arrived"
        )
    return len(missing)


def test_sigkill_loses_only_the_queue(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    consume_all: Callable[..., list[Any]],
    tmp_path: Path,
) -> None:
    events, logs = new_topic(prefix="kill"), new_topic(prefix="killlogs")
    prefix = f"kill{uuid.uuid4().hex[:8]}"
    progress, stderr_path = tmp_path / "progress", tmp_path / "stderr"
    argv = [sys.executable, "-c", textwrap.dedent(SERVE_SCRIPT)]
    argv += [kafka_bootstrap, events, logs, prefix, str(progress), str(CALL_INTERVAL)]
    with open(stderr_path, "wb") as stderr:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
    try:
        deadline = time.monotonic() + 30
        while progress_of(progress)[0] == 0:  # its first call built the producer
            assert child.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "the child completed no call in 30 s"
            time.sleep(0.01)
        started, first = time.monotonic(), progress_of(progress)[0]
        time.sleep(RUN_SECONDS)
        assert child.poll() is None, stderr_path.read_text()
        child.send_signal(signal.SIGKILL)  # mid-call, as an OOM kill would
        killed_at = time.monotonic()
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    completed, pending, dropped = progress_of(progress)
    rate = (completed - first) / (killed_at - started)
    got_events = consume_all(kafka_bootstrap, events, idle=3.0, timeout=90)
    got_records = consume_all(kafka_bootstrap, logs, idle=3.0, timeout=90)
    event_ids = [check_event(r.key, r.value, r.headers, prefix) for r in got_events]
    record_ids = [check_record(r.value, r.headers, prefix) for r in got_records]
    # A full buffer drops (and counts) instead: that is another loss, not the kill's.
    assert dropped == 0, f"the child dropped {dropped} messages: its rate is too high"
    lost_events = loss("events", event_ids, completed)
    lost_records = loss("records", record_ids, completed)

    bound = max(10, round(rate * (LINGER_MS / 1000 + MARGIN_SECONDS)))
    print(
        f"\nSIGKILL after {completed} completed calls ({rate:,.0f} calls/s, "
        f"linger.ms={LINGER_MS}): {len(got_events)} events and {len(got_records)} records "
        f"in Kafka; lost {lost_events} events and {lost_records} records; {pending} "
        f"messages were pending after the last completed call; bound per topic {bound}; "
        f"the call under way at the kill: event "
        f"{'arrived' if completed in event_ids else 'absent'}, record "
        f"{'arrived' if completed in record_ids else 'absent'}"
    )
    assert completed > 100, f"only {completed} calls in {RUN_SECONDS} s"
    # Only what had not been acknowledged when the last call completed can be lost.
    assert lost_events + lost_records <= pending, (lost_events, lost_records, pending)
    assert lost_events <= bound and lost_records <= bound, (lost_events, lost_records, bound)
