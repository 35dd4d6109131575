"""Delivery accounting: the counters librdkafka's callbacks feed, and the
poller thread that serves them.

A producer's counts (produced, failed, dropped) live here, apart from the
producer, so that the librdkafka handle holds no reference back to it. A
daemon thread polls the handle, which serves delivery reports, errors and
librdkafka's own logs (see confluent-kafka's ``examples/producer.py``);
failed deliveries and drops are counted by reason, and reported on the
``relayer`` logger: the first at once, then at most once per interval.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import time
from collections import Counter
from typing import Any, Callable, Dict, Optional, Set

import confluent_kafka

from ._settings import DeliveryErrorCallback

logger = logging.getLogger("relayer")

#: The part of librdkafka's error texts that changes each time.
_VARYING = re.compile(r" \(after \d+ms in state \w+(, \d+ identical error\(s\) suppressed)?\)")


class LibrdkafkaLog:
    """Where librdkafka's own log lines go (served by the poller thread): the
    ``relayer.librdkafka`` logger, one line per facility (``FAIL``,
    ``ERROR``…) per ``interval`` seconds. While a broker is down librdkafka
    logs every reconnection attempt; its errors are counted and reported
    anyway, so the repeats add nothing.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last: Dict[str, float] = {}

    def log(self, level: int, fmt: str, facility: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last.get(facility, -self.interval) >= self.interval:
            self.last[facility] = now
            _librdkafka_logger.log(level, fmt, facility, *args)


_librdkafka_logger = logging.getLogger("relayer.librdkafka")


#: Told, once for a message, whether it was delivered (``False``: it failed,
#: or was dropped).
OnReport = Callable[[bool], None]


class Accounts:
    """Counters shared with librdkafka's callbacks (kept apart from the
    producer so that the librdkafka handle holds no reference back to it).
    """

    def __init__(self, on_delivery_error: Optional[DeliveryErrorCallback]) -> None:
        self.lock = threading.Lock()
        #: One tick per message librdkafka took, or dropped: ``next(ticks)``
        #: is atomic, so the hot path takes no lock, which would cost 1,700
        #: instructions more per message (``python -m benchmarks.instructions``,
        #: its optimisation rows).
        self.ticks = itertools.count()
        self.failed = 0
        self.dropped = 0
        #: Of the failed: purged while in flight (sent, not acknowledged).
        self.purged_in_flight = 0
        #: Set once close() has counted what it gave up on: later reports
        #: (if librdkafka served any while being destroyed) are not counted twice.
        self.closed = False
        self.unreported: Counter[str] = Counter()
        self.logged: Set[str] = set()  # reasons of unexpected errors already logged
        self.on_delivery_error = on_delivery_error

    def on_delivery(self, err: Optional[confluent_kafka.KafkaError], msg: Any) -> None:
        # librdkafka reports failures only (delivery.report.only.error): a
        # Python call per delivered message would halve the throughput.
        if err is None or self.closed:
            return
        with self.lock:
            self.failed += 1
            if err.code() == confluent_kafka.KafkaError._PURGE_INFLIGHT:
                self.purged_in_flight += 1
            self.unreported[f"failed ({err.str()})"] += 1
        callback = self.on_delivery_error
        if callback is not None:
            try:
                callback(err, msg.topic(), msg.key())
            except Exception:
                logger.exception("relayer: on_delivery_error callback raised")

    def reporter(self, on_report: OnReport) -> Callable[[Any, Any], None]:
        """The delivery callback of one message: counted as every message is,
        then ``on_report(delivered)``.
        """

        def report(err: Optional[confluent_kafka.KafkaError], msg: Any) -> None:
            self.on_delivery(err, msg)
            self.report_to(on_report, err is None)

        return report

    @staticmethod
    def report_to(on_report: OnReport, delivered: bool) -> None:
        """Call ``on_report(delivered)``; log what it raised (it runs in the
        poller thread, which must go on).
        """
        try:
            on_report(delivered)
        except Exception:
            logger.exception("relayer: a delivery report callback raised")

    def on_error(self, err: confluent_kafka.KafkaError) -> None:
        reason = _VARYING.sub("", err.str())
        with self.lock:
            self.unreported[f"client error ({reason})"] += 1

    def error_callback(
        self, user_callback: Optional[Callable[[confluent_kafka.KafkaError], None]]
    ) -> Callable[[confluent_kafka.KafkaError], None]:
        """Return librdkafka's ``error_cb``: count the error, then call the user's own."""
        if user_callback is None:
            return self.on_error

        def both(err: confluent_kafka.KafkaError) -> None:
            self.on_error(err)
            try:
                user_callback(err)
            except Exception:
                logger.exception("relayer: the error_cb of producer_opts raised")

        return both

    def drop(self, reason: str) -> None:
        """Count one message as produced and dropped (together: stats() never
        sees one without the other).
        """
        with self.lock:
            next(self.ticks)
            self.dropped += 1
            self.unreported[f"dropped ({reason})"] += 1

    def unexpected(self, exc: Exception) -> None:
        """Count as dropped a message whose ``send`` raised something other
        than BufferError or KafkaException; log the first of each kind.
        """
        reason = f"send raised {type(exc).__name__}"
        with self.lock:
            first = reason not in self.logged
            self.logged.add(reason)
        self.drop(reason)
        if first:
            logger.error(
                "relayer: producing a message raised %r: it is dropped and counted "
                "(as are the next ones that raise %s; they are not logged again)",
                exc,
                type(exc).__name__,
                exc_info=exc,
            )

    @property
    def produced(self) -> int:
        """Messages librdkafka took, and messages dropped, so far."""
        return int(repr(self.ticks)[6:-1])  # a count shows its next value only in its repr

    def report(self) -> None:
        """Log, in one line, what failed or was dropped since the last report."""
        with self.lock:
            unreported, self.unreported = self.unreported, Counter()
        if unreported:
            logger.warning(
                "relayer: delivery problems since the last report: %s",
                ", ".join(f"{n} {why}" for why, n in unreported.most_common()),
            )


def reason_of(exc: Exception) -> str:
    """The text of a KafkaException's error, as librdkafka put it (else the repr)."""
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, confluent_kafka.KafkaError) else repr(exc)


def poll_forever(
    rdk: confluent_kafka.Producer,
    accounts: Accounts,
    stop: threading.Event,
    report_interval: float,
) -> None:
    next_report = time.monotonic()  # the first problem is reported at once
    while not stop.is_set():
        rdk.poll(0.1)
        if accounts.unreported and time.monotonic() >= next_report:
            accounts.report()
            next_report = time.monotonic() + report_interval
