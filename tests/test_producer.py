"""DeliveryProducer on librdkafka's mock cluster, or on an address nobody
listens on (to play a broker that is down)."""

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import MappingProxyType

import confluent_kafka
import pytest

from relayer import ConfigurationError
from relayer._producer import DeliveryProducer, _close_all_at_exit, _live
from relayer._settings import DEFAULT_PRODUCER_CONFIG

from .helpers import MOCK_CLUSTER, WatchedClient

#: Nothing listens on port 1: a broker that is down.
DOWN = MappingProxyType({"bootstrap.servers": "127.0.0.1:1"})


@pytest.fixture
def producers():
    made = []

    def make(config, **kwargs):
        producer = DeliveryProducer(config, **kwargs)
        made.append(producer)
        return producer

    yield make
    for producer in made:
        producer.close(0)


def test_defaults_are_in_force_unless_overridden(producers):
    config = producers(DOWN).config
    assert config["enable.idempotence"] is True
    assert config["partitioner"] == "murmur2_random"
    assert config["bootstrap.servers"] == "127.0.0.1:1"
    assert {key: config[key] for key in DEFAULT_PRODUCER_CONFIG} == DEFAULT_PRODUCER_CONFIG
    overridden = producers({**DOWN, "linger.ms": 50, "partitioner": "consistent"}).config
    assert (overridden["linger.ms"], overridden["partitioner"]) == (50, "consistent")
    assert overridden["enable.idempotence"] is True


def test_lazy_then_delivered_and_counted(producers):
    producer = producers(MOCK_CLUSTER)
    assert producer._rdk is None
    for i in range(100):
        producer.produce("t", b"%d" % i, b"k")
    assert producer._rdk is not None
    assert producer.flush(10) == 0
    assert producer.stats() == {
        "produced": 100,
        "delivered": 100,
        "failed": 0,
        "dropped": 0,
        "pending": 0,
    }


def test_poller_serves_delivery_reports_without_flush(producers):
    producer = producers(MOCK_CLUSTER)
    producer.produce("t", b"v")
    deadline = time.monotonic() + 10
    while producer.stats()["delivered"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert producer.stats()["delivered"] == 1


def test_produce_never_blocks_or_raises_when_broker_down(producers):
    producer = producers({**DOWN, "queue.buffering.max.messages": 10})
    started = time.perf_counter()
    for _ in range(1000):
        producer.produce("t", b"v")
    assert time.perf_counter() - started < 1.0
    stats = producer.stats()
    assert stats["pending"] == 10
    assert stats["dropped"] == 990
    assert stats["produced"] == 1000


def test_failures_counted_reported_and_called_back(producers, caplog):
    seen = []
    producer = producers(
        {**DOWN, "message.timeout.ms": 300},
        report_interval=60,
        on_delivery_error=lambda err, topic, key: seen.append((err.name(), topic, key)),
    )
    for _ in range(5):
        producer.produce("t", b"v", b"k")
    assert producer.flush(5) == 0
    assert producer.stats()["failed"] == 5
    assert seen == [("_MSG_TIMED_OUT", "t", b"k")] * 5
    with caplog.at_level(logging.WARNING, logger="relayer"):
        producer.close(0)
    reports = [r.getMessage() for r in caplog.records if "delivery problems" in r.getMessage()]
    failed = [
        int(n) for r in reports for n in re.findall(r"(\d+) failed \(Local: Message timed out\)", r)
    ]
    assert sum(failed) == 5, reports
    assert len(reports) <= 2, "failures are reported in a line or two, not one per message"


def test_the_first_problem_is_reported_at_once(producers, caplog):
    producer = producers({**DOWN, "message.timeout.ms": 100}, report_interval=60)
    with caplog.at_level(logging.WARNING, logger="relayer"):
        producer.produce("t", b"v")
        deadline = time.monotonic() + 5
        while "delivery problems" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "delivery problems" in caplog.text


def test_reports_are_rate_limited(producers, caplog):
    producer = producers({**DOWN, "message.timeout.ms": 50}, report_interval=0.5)
    with caplog.at_level(logging.WARNING, logger="relayer"):
        started = time.monotonic()
        deadline = started + 1.6
        sent = 0
        while time.monotonic() < deadline:
            producer.produce("t", b"v")
            sent += 1
            time.sleep(0.005)
        producer.flush(5)
        elapsed = time.monotonic() - started
    reports = [r for r in caplog.records if "delivery problems" in r.getMessage()]
    assert sent > 100
    # The first at once, then at most one per 0.5 s (the poller may report once
    # more while flush waits for the last failures): a few, not one per message.
    assert 1 <= len(reports) <= 2 + int(elapsed / 0.5), (len(reports), elapsed)
    assert producer.stats()["failed"] == sent


def test_librdkafka_logs_are_routed_and_rate_limited(producers, caplog):
    producer = producers(DOWN, report_interval=10)
    with caplog.at_level(logging.DEBUG, logger="relayer.librdkafka"):
        producer.produce("t", b"v")
        time.sleep(1.5)
    lines = [r for r in caplog.records if r.name == "relayer.librdkafka"]
    assert lines, "librdkafka's connection errors reach the relayer.librdkafka logger"
    facilities = [r.getMessage().split(" ", 1)[0] for r in lines]
    assert len(facilities) == len(set(facilities)), "one line per facility per interval"


def test_a_raising_callback_does_not_break_delivery(producers, caplog):
    def boom(err, topic, key):
        raise RuntimeError("user bug")

    producer = producers({**DOWN, "message.timeout.ms": 100}, on_delivery_error=boom)
    producer.produce("t", b"v")
    producer.flush(5)
    assert producer.stats()["failed"] == 1
    assert "on_delivery_error callback raised" in caplog.text


def test_close_is_bounded_idempotent_and_counts_the_lost(producers, caplog):
    producer = producers(DOWN)
    for _ in range(3):
        producer.produce("t", b"v")
    started = time.monotonic()
    assert producer.close(0.5) == 3
    assert time.monotonic() - started < 3
    assert "3 message(s) could not be delivered" in caplog.text
    stats = producer.stats()
    assert stats["failed"] == 3 and stats["pending"] == 0
    assert producer.close() == 0
    producer.produce("t", b"late")
    assert producer.stats()["dropped"] == 1
    assert producer not in _live


def test_close_without_any_message(producers):
    producer = producers(DOWN)
    assert producer.close() == 0
    assert producer._rdk is None


def test_atexit_hook_flushes_live_producers(producers):
    producer = producers(MOCK_CLUSTER)
    producer.produce("t", b"v")
    _close_all_at_exit()
    assert producer.stats()["delivered"] == 1
    assert producer not in _live


def test_repr_does_not_start_anything():
    producer = DeliveryProducer(DOWN)
    assert "idle" in repr(producer)
    producer.close()
    assert "closed" in repr(producer)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_builds_its_own_producer_and_delivers(producers):
    producer = producers(MOCK_CLUSTER)
    producer.produce("t", b"parent")
    assert producer.flush(10) == 0
    parent_rdk = producer._rdk
    pid = os.fork()
    if pid == 0:  # child: exit code 0 only if it delivered on a fresh handle
        code = 1
        try:
            stats = producer.stats()
            fresh = producer._rdk is None and stats["delivered"] == 0
            producer.produce("t", b"child")
            delivered = producer.flush(10) == 0 and producer.stats()["delivered"] == 1
            code = 0 if fresh and delivered and producer._rdk is not parent_rdk else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    producer.produce("t", b"parent again")
    assert producer.flush(10) == 0
    assert producer.stats()["delivered"] == 2


def run_python(code, timeout=30):
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc, time.monotonic() - started


def test_exit_with_broker_down_is_bounded_and_says_what_was_lost():
    proc, elapsed = run_python(
        """
        import logging
        logging.basicConfig(level=logging.WARNING)
        from relayer import Relayer
        r = Relayer("logs", "127.0.0.1:1", shutdown_timeout=1.0)
        for i in range(7):
            r.emit("orders", "created", {"i": i})
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "7 message(s) could not be delivered" in proc.stderr
    assert elapsed < 1.0 + 4.0  # interpreter start + shutdown_timeout + margin


def test_exit_flushes_without_explicit_flush():
    proc, _ = run_python(
        """
        import atexit, sys
        from relayer import Relayer
        r = Relayer("logs", "mock:9092", producer_opts={"test.mock.num.brokers": 1})
        for i in range(50):
            r.emit("orders", "created", {"i": i})
        # atexit runs hooks last-registered first: this one runs after relayer's.
        import relayer._producer
        atexit.unregister(relayer._producer._close_all_at_exit)
        atexit.register(lambda: print("stats", r.stats()))
        atexit.register(relayer._producer._close_all_at_exit)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "'delivered': 50" in proc.stdout


def test_when_full_block_waits_up_to_block_timeout_then_drops(producers):
    producer = producers(
        {**DOWN, "queue.buffering.max.messages": 2}, when_full="block", block_timeout=0.2
    )
    producer.produce("t", b"1")
    producer.produce("t", b"2")
    started = time.monotonic()
    producer.produce("t", b"3")
    waited = time.monotonic() - started
    assert 0.2 <= waited < 1.0
    assert producer.stats()["dropped"] == 1


def test_when_full_block_succeeds_once_there_is_room(producers):
    producer = producers(
        {**MOCK_CLUSTER, "queue.buffering.max.messages": 5, "linger.ms": 0},
        when_full="block",
        block_timeout=5,
    )
    for i in range(200):
        producer.produce("t", b"%d" % i)
    assert producer.flush(10) == 0
    assert producer.stats() == {
        "produced": 200, "delivered": 200, "failed": 0, "dropped": 0, "pending": 0,
    }  # fmt: skip


def test_user_error_cb_is_called_too(producers):
    seen = []
    producer = producers({**DOWN, "error_cb": seen.append})
    producer.produce("t", b"v")
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    assert seen and seen[0].code() in (
        confluent_kafka.KafkaError._TRANSPORT,
        confluent_kafka.KafkaError._ALL_BROKERS_DOWN,
    )


def test_a_producer_that_cannot_start_drops_and_counts_never_raises(producers, caplog, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_bytes(Path("/etc/ssl/certs/ca-certificates.crt").read_bytes())
    producer = producers({**DOWN, "security.protocol": "SSL", "ssl.ca.location": str(ca)})
    ca.unlink()  # gone between construction and the first message
    producer.produce("t", b"v")
    producer.produce("t", b"w")
    assert producer.stats()["dropped"] == 2
    assert caplog.text.count("producer could not start") == 1


# -- timeouts that would hang ----------------------------------------------------


@pytest.mark.parametrize("setting", ["shutdown_timeout", "block_timeout"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, "5"])
def test_timeout_settings_that_would_hang_are_refused(setting, value):
    before = set(_live)
    with pytest.raises(ConfigurationError, match=setting):
        DeliveryProducer(DOWN, when_full="block", **{setting: value})
    assert set(_live) == before


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1, -0.001, "1", None])
def test_flush_and_close_refuse_timeouts_that_would_hang(producers, value):
    # librdkafka reads a negative timeout, and NaN or inf (which overflow its
    # int of milliseconds), as "wait forever". A short message.timeout.ms
    # bounds what an unchecked flush would wait here.
    producer = producers({**DOWN, "message.timeout.ms": 300})
    producer.produce("t", b"v")
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="timeout must be a finite number"):
        producer.flush(value)
    if value is not None:
        with pytest.raises(ConfigurationError, match="timeout must be a finite number"):
            producer.close(value)
    assert time.monotonic() - started < 0.2, "refused at once, without waiting"
    assert producer in _live, "a refused close() closes nothing"


def test_a_huge_timeout_is_capped_to_what_librdkafka_can_wait(producers):
    # librdkafka takes an int of milliseconds: 1e7 s (1e10 ms) would wrap,
    # possibly to a negative number, which means "wait forever".
    waits = []

    class Handle:
        def flush(self, timeout):
            waits.append(timeout)
            return 0

        def __len__(self):
            return 0

    producer = producers(DOWN)
    producer._client = Handle()
    assert producer.flush(1e7) == 0
    assert producer.flush(1.5) == 0
    producer._client = None
    assert waits == [2_147_483, 1.5]  # (2**31 - 1) ms, in whole seconds


# -- the configuration probe -------------------------------------------------------


def test_the_configuration_probe_prints_nothing_and_logs_to_relayer_librdkafka(capfd, caplog):
    with caplog.at_level(logging.DEBUG, logger="relayer.librdkafka"):
        producer = DeliveryProducer({**DOWN, "debug": "all"})
    producer.close(0)
    assert capfd.readouterr().err == "", "librdkafka printed to stderr"
    assert any(r.name == "relayer.librdkafka" for r in caplog.records)


# -- accounting ----------------------------------------------------------------------


def test_delivered_is_exact_after_flush_on_the_mock_cluster(producers):
    producer = producers(MOCK_CLUSTER)
    for i in range(500):
        producer.produce("t", b"%d" % i)
    assert producer.flush(10) == 0
    stats = producer.stats()
    assert stats["delivered"] == 500 and stats["pending"] == 0


def test_delivered_stays_zero_while_the_broker_is_down(producers):
    producer = producers({**DOWN, "message.timeout.ms": 500})
    for _ in range(20):
        producer.produce("t", b"v")
    seen = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = producer.stats()
        seen.append(stats)
        if stats["failed"] == 20:
            break
        time.sleep(0.01)
    assert all(s["delivered"] == 0 for s in seen), [s for s in seen if s["delivered"]]
    assert all(s["produced"] == 20 == s["pending"] + s["failed"] for s in seen)
    assert seen[0]["pending"] == 20 and seen[-1]["failed"] == 20


def test_a_message_is_counted_only_once_librdkafka_has_it(producers):
    """stats() while send() runs (another thread's, between count and queueing)
    must not count the message being sent as delivered."""
    producer = producers(MOCK_CLUSTER)
    producer.produce("t", b"first")
    assert producer.flush(10) == 0
    during = []
    producer._client = WatchedClient(producer._client, lambda: during.append(producer.stats()))
    producer.produce("t", b"second")
    assert during[0]["delivered"] == 1, during
    assert producer.flush(10) == 0
    assert producer.stats()["delivered"] == 2


def test_a_failed_message_is_counted_failed_before_librdkafka_lets_go_of_it(producers):
    """Why delivered never overstates: pending is len(rdk), and the message
    whose failure is being reported is still in it."""
    inside = []
    producer = producers(
        {**DOWN, "message.timeout.ms": 100},
        on_delivery_error=lambda err, topic, key: inside.append(
            (len(producer._rdk), producer.stats())
        ),
    )
    producer.produce("t", b"v")
    assert producer.flush(5) == 0
    [(queued, stats)] = inside
    assert queued == 1, "librdkafka still holds the message while its failure is reported"
    assert stats["failed"] == 1 and stats["delivered"] == 0


def test_an_unexpected_error_from_send_is_a_counted_drop(producers, caplog):
    producer = producers(MOCK_CLUSTER)
    producer.produce("t", b"v")
    assert producer.flush(10) == 0
    for _ in range(3):
        producer.produce("t", "not bytes", headers=[("h", 5)])  # confluent-kafka: TypeError
    assert producer.flush(10) == 0
    stats = producer.stats()
    assert stats == {"produced": 4, "delivered": 1, "failed": 0, "dropped": 3, "pending": 0}
    logged = [r for r in caplog.records if "raised" in r.getMessage() and r.exc_info]
    assert len(logged) == 1, "logged once per reason, with its traceback"
    producer.close(0)
    assert "3 dropped (send raised TypeError)" in caplog.text


def test_lost_counts_a_message_produced_and_dropped(producers, caplog):
    producer = producers(DOWN)
    producer.lost("record could not be encoded")
    assert producer.stats() == {
        "produced": 1, "delivered": 0, "failed": 0, "dropped": 1, "pending": 0,
    }  # fmt: skip
    producer.close(0)
    assert "1 dropped (record could not be encoded)" in caplog.text


def test_drops_are_counted_with_the_message_when_closed_or_full(producers):
    producer = producers({**DOWN, "queue.buffering.max.messages": 1})
    producer.produce("t", b"1")
    producer.produce("t", b"2")  # buffer full
    assert producer.stats() == {
        "produced": 2, "delivered": 0, "failed": 0, "dropped": 1, "pending": 1,
    }  # fmt: skip
    producer.close(0)
    producer.produce("t", b"3")  # closed
    assert producer.stats() == {
        "produced": 3, "delivered": 0, "failed": 1, "dropped": 2, "pending": 0,
    }  # fmt: skip


# -- close() with a broker that stopped answering -------------------------------------

MOCK_BROKER = """
import sys, time, confluent_kafka
producer = confluent_kafka.Producer({"test.mock.num.brokers": 1})
broker = next(iter(producer.list_topics(timeout=10).brokers.values()))
print(f"{broker.host}:{broker.port}", flush=True)
time.sleep(120)
"""


@pytest.fixture
def frozen_broker():
    """A mock broker in another process, and a way to freeze it (SIGSTOP):
    it then takes requests (the kernel buffers them) and answers none."""
    if not hasattr(signal, "SIGSTOP"):
        pytest.skip("needs SIGSTOP")
    child = subprocess.Popen([sys.executable, "-c", MOCK_BROKER], stdout=subprocess.PIPE, text=True)
    try:
        address = child.stdout.readline().strip()
        assert address, "the mock broker did not start"

        def freeze():
            os.kill(child.pid, signal.SIGSTOP)
            _, status = os.waitpid(child.pid, os.WUNTRACED)
            assert os.WIFSTOPPED(status)

        yield address, freeze
    finally:
        os.kill(child.pid, signal.SIGCONT)
        child.kill()
        child.wait()
        child.stdout.close()


def test_close_says_not_confirmed_for_messages_in_flight(producers, frozen_broker, caplog):
    address, freeze = frozen_broker
    producer = producers({"bootstrap.servers": address})
    for _ in range(10):
        producer.produce("t", b"before")
    assert producer.flush(10) == 0
    freeze()
    for _ in range(100):
        producer.produce("t", b"after")
    time.sleep(0.3)  # sent (linger.ms is 5), never acknowledged
    assert producer.stats()["pending"] == 100
    assert producer.close(0.5) == 100
    assert "100 message(s) were not confirmed delivered in time" in caplog.text
    assert "could not be delivered in time and are lost" not in caplog.text
    assert producer.stats() == {
        "produced": 110, "delivered": 10, "failed": 100, "dropped": 0, "pending": 0,
    }  # fmt: skip
