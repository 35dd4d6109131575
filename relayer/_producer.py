"""The one place that talks to confluent-kafka.

:class:`DeliveryProducer` wraps a ``confluent_kafka.Producer`` so that
producing never blocks the caller and never raises because Kafka is slow or
down, and so that every message is accounted for:

- the librdkafka handle is built lazily, in the process that first produces,
  so a relayer built before ``os.fork()`` (gunicorn ``--preload``) builds a
  fresh one in each child;
- a daemon thread polls it, which serves delivery reports, errors and
  librdkafka's own logs (see confluent-kafka's ``examples/producer.py``);
- a message librdkafka cannot queue (buffer full) is dropped and counted;
  failed deliveries are counted by reason; both are reported on the
  ``relayer`` logger, the first at once, then at most once per
  ``report_interval``;
- :meth:`close` flushes with a bounded wait and reports what it gave up on
  (lost, or sent but not confirmed); an ``atexit`` hook closes every live
  producer.
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import logging
import os
import re
import threading
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple, Union

import confluent_kafka

from . import _settings
from ._redact import redacted_config
from .exceptions import ConfigurationError

logger = logging.getLogger("relayer")

#: librdkafka settings relayer uses unless ``producer_opts`` overrides them.
DEFAULT_PRODUCER_CONFIG: Mapping[str, Any] = {
    # acks=all, retries without duplicates, per-partition order kept.
    "enable.idempotence": True,
    # JSON compresses well; lz4 costs the least CPU of the codecs.
    "compression.type": "lz4",
    "linger.ms": 5,
    # The Java client's partitioner: a key lands on the same partition
    # whichever client (or the original, kafka-python based relayer) wrote it.
    "partitioner": "murmur2_random",
    # A bounded buffer: past either limit new messages are dropped and counted.
    "queue.buffering.max.messages": 100_000,
    "queue.buffering.max.kbytes": 65_536,
    "client.id": "relayer",
}

#: The part of librdkafka's error texts that changes each time.
_VARYING = re.compile(r" \(after \d+ms in state \w+(, \d+ identical error\(s\) suppressed)?\)")

Headers = List[Tuple[str, Union[str, bytes, None]]]

DeliveryErrorCallback = Callable[[confluent_kafka.KafkaError, str, Optional[bytes]], None]


class _LibrdkafkaLog:
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

#: How long :meth:`DeliveryProducer.close` waits, after purging, for the
#: reports of the purged messages (librdkafka queues those of the messages
#: in flight a moment later; it takes well under a millisecond).
_PURGE_WAIT = 0.5


class _Accounts:
    """Counters shared with librdkafka's callbacks (kept apart from the
    producer so that the librdkafka handle holds no reference back to it).
    """

    def __init__(self, on_delivery_error: Optional[DeliveryErrorCallback]) -> None:
        self.lock = threading.Lock()
        #: One tick per message librdkafka took (or that was dropped).
        #: ``next()`` on an ``itertools.count`` is atomic, so the hot path
        #: takes no lock.
        self.calls = itertools.count()
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
            next(self.calls)
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

    def produced(self) -> int:
        """How many messages librdkafka took or were dropped so far."""
        # An itertools.count shows its next value only through its repr.
        return int(repr(self.calls)[6:-1])

    def report(self) -> None:
        """Log, in one line, what failed or was dropped since the last report."""
        with self.lock:
            unreported, self.unreported = self.unreported, Counter()
        if unreported:
            logger.warning(
                "relayer: delivery problems since the last report: %s",
                ", ".join(f"{n} {why}" for why, n in unreported.most_common()),
            )


class DeliveryProducer:
    """A fork-safe, never-blocking, accounted wrapper of ``confluent_kafka.Producer``."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        shutdown_timeout: float = 5.0,
        report_interval: float = 10.0,
        on_delivery_error: Optional[DeliveryErrorCallback] = None,
        when_full: str = "drop",
        block_timeout: float = 0.5,
    ) -> None:
        config = {**DEFAULT_PRODUCER_CONFIG, **config}
        for reserved in _RESERVED:
            if reserved in config:
                raise ConfigurationError(
                    f"producer_opts cannot set {reserved!r}: relayer counts deliveries "
                    "itself; pass on_delivery_error= to hear about failures"
                )
        self._user_error_cb = config.pop("error_cb", None)
        when_full = _settings.choice("when_full", when_full, ("drop", "block"))
        shutdown_timeout = _settings.seconds("shutdown_timeout", shutdown_timeout)
        block_timeout = _settings.seconds("block_timeout", block_timeout)
        report_interval = _settings.seconds("report_interval", report_interval)
        on_delivery_error = _settings.callback("on_delivery_error", on_delivery_error)
        _settings.buffer_bounds(config)
        _validate(config, report_interval)
        self._config = config
        #: The librdkafka settings in force (with librdkafka's own defaults
        #: for message.max.bytes filled in).
        self.config: Mapping[str, Any] = {"message.max.bytes": 1_000_000, **config}
        self.shutdown_timeout = shutdown_timeout
        self.report_interval = report_interval
        self.when_full = when_full
        self.block_timeout = block_timeout
        self._on_delivery_error = on_delivery_error
        self._init_process_state()
        _live.add(self)

    def _init_process_state(self) -> None:
        self._rdk: Optional[confluent_kafka.Producer] = None
        self._build_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: Optional[threading.Thread] = None
        self._accounts = _Accounts(self._on_delivery_error)
        #: Counts one message ``send`` queued (atomic: no lock needed).
        self.count: Callable[[], int] = self._accounts.calls.__next__
        #: ``produce`` of this process's librdkafka handle once it is built;
        #: until then, a stand-in that builds it (and, once closed, raises
        #: KafkaException so that the message is dropped).
        self.send: Callable[..., None] = self._send_first
        self._closed = False
        self._unusable = ""  # why librdkafka refused to start, if it did

    # -- producing ---------------------------------------------------------

    def produce(
        self,
        topic: str,
        value: bytes,
        key: Union[str, bytes, None] = None,
        headers: Optional[Headers] = None,
    ) -> None:
        """Queue one message; never blocks, never raises.

        A message that cannot be queued (buffer full, producer closed, or
        ``send`` raised anything else, such as a TypeError for a bad header)
        is dropped and counted. A ``str`` key must be valid Unicode
        (librdkafka gets it as UTF-8).
        """
        try:
            self.send(topic, value, key, -1, None, None, 0, headers)
        except Exception as exc:
            self.refused(exc, topic, value, key, headers)
        else:
            self.count()

    # The hot path of ``produce`` for callers that inline it (Relayer.emit):
    #
    #     try:
    #         producer.send(topic, value, key, -1, None, None, 0, headers)
    #     except Exception as exc:
    #         producer.refused(exc, topic, value, key, headers)
    #     else:
    #         producer.count()
    #
    # ``send`` is positional (a keyword argument costs confluent-kafka
    # 0.5 µs). ``count()`` comes after ``send``, and only when it returned:
    # a message is counted once librdkafka has it, so that stats() never
    # takes one that is not queued yet for delivered; ``refused`` counts
    # the others itself (queued after a wait, or dropped).

    def refused(
        self,
        exc: Exception,
        topic: str,
        value: bytes,
        key: Union[str, bytes, None],
        headers: Optional[Headers],
    ) -> None:
        """What ``produce`` does when ``send`` raised ``exc``: wait for room
        (BufferError with ``when_full="block"``) or drop the message; either
        way, count it. Never raises.
        """
        if isinstance(exc, BufferError):
            if self.when_full == "block":
                self._produce_when_room(topic, value, key, headers)
            else:
                self._accounts.drop("buffer full")
        elif isinstance(exc, confluent_kafka.KafkaException):
            self._accounts.drop(_reason(exc))
        else:
            self._accounts.unexpected(exc)

    def lost(self, reason: str) -> None:
        """Count one message as produced and dropped for ``reason`` (for a
        message that could not even be built, such as a record that could
        not be encoded); it is reported like every drop.
        """
        self._accounts.drop(reason)

    def _send_first(self, topic: str, value: bytes, key: Any, *args: Any) -> None:
        """``send`` until this process has a handle: build it, then produce;
        once closed (or if librdkafka cannot start), raise KafkaException,
        which ``refused`` counts as a drop.
        """
        rdk = self._build()
        if rdk is None:
            reason = self._unusable or "producer closed"
            raise confluent_kafka.KafkaException(
                confluent_kafka.KafkaError(confluent_kafka.KafkaError._STATE, reason)
            )
        rdk.produce(topic, value, key, *args)

    def _produce_when_room(
        self,
        topic: str,
        value: bytes,
        key: Union[str, bytes, None],
        headers: Optional[Headers],
    ) -> None:
        """``when_full="block"``: wait up to ``block_timeout`` for room, then
        drop; count the message either way.
        """
        deadline = time.monotonic() + self.block_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._accounts.drop("buffer full")
                return
            rdk = self._rdk
            if rdk is None or self._closed:  # closed meanwhile
                self._accounts.drop("producer closed")
                return
            try:
                rdk.poll(min(remaining, 0.005))  # serves delivery reports, which frees room
                rdk.produce(topic, value, key, headers=headers)
            except BufferError:
                continue
            except confluent_kafka.KafkaException as exc:
                self._accounts.drop(_reason(exc))
                return
            except Exception as exc:
                self._accounts.unexpected(exc)
                return
            self.count()
            return

    def _build(self) -> Optional[confluent_kafka.Producer]:
        with self._build_lock:
            if self._closed:
                return None
            if self._rdk is None and not self._unusable:
                accounts = self._accounts
                config = {
                    "logger": _LibrdkafkaLog(self.report_interval),
                    **self._config,
                    "delivery.report.only.error": True,
                    "on_delivery": accounts.on_delivery,
                    "error_cb": accounts.error_callback(self._user_error_cb),
                }
                logger.debug(
                    "relayer: starting a producer in process %d with %s",
                    os.getpid(),
                    redacted_config(self._config),
                )
                try:
                    rdk = confluent_kafka.Producer(config)
                except Exception as exc:
                    # Settings were checked at construction; what fails here
                    # depends on the machine (a CA file that went missing…),
                    # or is bootstrap.servers, which the check leaves out.
                    self._unusable = f"producer could not start: {_reason(exc)}"
                    logger.error("relayer: %s; its messages are dropped", self._unusable)
                    return None
                self._poller = threading.Thread(
                    target=_poll_forever,
                    args=(rdk, accounts, self._stop, self.report_interval),
                    name="relayer-poller",
                    daemon=True,
                )
                self._poller.start()
                self._rdk = rdk
            if self._rdk is not None:
                self.send = self._rdk.produce
            return self._rdk

    # -- delivery ------------------------------------------------------------

    def pending(self) -> int:
        """How many messages are queued or in flight, not yet reported."""
        return self.stats()["pending"]

    def _in_queue(self, most: int) -> int:
        """Messages librdkafka has not delivered yet.

        Its count may include an event not served yet, hence at most ``most``.
        """
        rdk = self._rdk
        return min(len(rdk), most) if rdk is not None else 0

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for delivery; return how many are still pending.

        ``timeout`` is a finite number of seconds ``>= 0``; a wait longer than
        librdkafka can be asked for (2**31 - 1 ms, about 24.8 days) is cut to
        that. A negative, NaN or infinite ``timeout`` (which librdkafka would
        take for "wait forever") or one that is not a number raises
        :class:`~relayer.ConfigurationError` at once, without waiting.
        """
        wait = _settings.seconds("timeout", timeout)
        rdk = self._rdk
        if rdk is not None:
            rdk.flush(min(wait, _settings.LONGEST_WAIT))
        return self.pending()

    def stats(self) -> Dict[str, int]:
        """Counts of this process's messages; see :meth:`relayer.Relayer.stats`.

        ``delivered`` never counts a message before librdkafka let go of it
        without a failure report; it is exact whenever librdkafka's queue is
        empty (after :meth:`flush` returned 0, or :meth:`close`).
        """
        accounts = self._accounts
        with accounts.lock:
            failed, dropped = accounts.failed, accounts.dropped
            # The poller may count a failure before the thread that queued
            # the message counts it produced: it was produced all the same.
            produced = max(accounts.produced(), failed + dropped)
        # delivered is a subtraction: counting each delivery would take a
        # Python callback per message, which halves the throughput (hence
        # delivery.report.only.error). It never overstates, as each term
        # errs one way only:
        # - produced counts a message only once librdkafka has it (send()
        #   returned; see produce), or together with its drop;
        # - failed is counted in the failure report's callback, which
        #   librdkafka calls before it destroys the message;
        # - pending is len(rdk), librdkafka's rd_kafka_outq_len: messages not
        #   destroyed yet plus the ops in its reply queue (error events, log
        #   lines, failure reports not served yet), so it can only overstate
        #   the messages pending; it is capped at what is not accounted for.
        # So produced - failed - dropped - pending is at most the messages
        # librdkafka destroyed without a failure report: the delivered ones.
        pending = self._in_queue(produced - failed - dropped)
        return {
            "produced": produced,
            "delivered": produced - failed - dropped - pending,
            "failed": failed,
            "dropped": dropped,
            "pending": pending,
        }

    def close(self, timeout: Optional[float] = None) -> int:
        """Flush for at most ``timeout`` seconds (default: ``shutdown_timeout``),
        stop the poller, and give up on what is left.

        ``timeout`` takes the values :meth:`flush` takes (anything else raises
        :class:`~relayer.ConfigurationError` at once, and closes nothing).
        After the wait, what librdkafka still holds is purged and counted as
        failed, which takes up to half a second more. Messages never sent
        are logged as lost; messages sent but not acknowledged as "not
        confirmed delivered": some may have reached Kafka.

        Returns how many messages it gave up on (0 when all were delivered).
        Idempotent; producing after ``close`` drops (and counts) the message.
        """
        wait = self.shutdown_timeout if timeout is None else _settings.seconds("timeout", timeout)
        with self._build_lock:
            if self._closed:
                return 0
            self._closed = True
            self.send = self._send_first  # which now drops
            rdk = self._rdk
        _live.discard(self)
        given_up = 0
        if rdk is not None:
            rdk.flush(min(wait, _settings.LONGEST_WAIT))
            self._stop.set()
            if self._poller is not None:
                self._poller.join()
            if self.pending():
                given_up = self._give_up(rdk)
            self._rdk = None
        self._accounts.report()
        return given_up

    def _give_up(self, rdk: confluent_kafka.Producer) -> int:
        """Purge what librdkafka still holds, count it failed, log what is
        known of it, and return how many messages that was.
        """
        accounts = self._accounts
        with accounts.lock:
            failed, in_flight = accounts.failed, accounts.purged_in_flight
        # Each purged message gets a failure report: _PURGE_QUEUE if it was
        # never sent (lost), _PURGE_INFLIGHT if it was sent and not
        # acknowledged (it may have reached Kafka). Serve them all.
        rdk.purge()
        rdk.flush(_PURGE_WAIT)
        with accounts.lock:
            # Reports librdkafka did not hand over: their fate is unknown.
            unaccounted = accounts.produced() - accounts.failed - accounts.dropped
            unknown = max(self._in_queue(unaccounted), 0)
            if unknown:
                accounts.failed += unknown
                accounts.unreported["failed (not confirmed when closed)"] += unknown
            accounts.closed = True
            given_up = accounts.failed - failed
            unconfirmed = accounts.purged_in_flight - in_flight + unknown
        lost = given_up - unconfirmed
        if lost:
            logger.error("relayer: %d message(s) could not be delivered in time and are lost", lost)
        if unconfirmed:
            logger.error(
                "relayer: %d message(s) were not confirmed delivered in time (some may "
                "have reached Kafka)",
                unconfirmed,
            )
        return given_up

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("started" if self._rdk else "idle")
        servers = self._config.get("bootstrap.servers")
        return (
            f"<DeliveryProducer {state} bootstrap.servers={servers!r} when_full={self.when_full!r}>"
        )


#: Settings relayer's delivery accounting owns.
_RESERVED = ("on_delivery", "callback", "delivery.report.only.error", "dr_cb", "dr_msg_cb")


def _reason(exc: Exception) -> str:
    """The text of a KafkaException's error, as librdkafka put it (else the repr)."""
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, confluent_kafka.KafkaError) else repr(exc)


def _validate(config: Mapping[str, Any], report_interval: float) -> None:
    """Refuse settings librdkafka would refuse, now rather than at the first message.

    A throwaway handle without ``bootstrap.servers`` checks every other
    setting without connecting anywhere (about a millisecond). Its log lines
    (many, with ``debug`` set) go where the real producer's go, the
    ``relayer.librdkafka`` logger, never to stderr: with a ``logger``,
    librdkafka queues them, ``poll`` serves them, and the few it logs while
    it is destroyed are dropped with its queue.
    """
    probe = {
        "logger": _LibrdkafkaLog(report_interval),
        **{k: v for k, v in config.items() if k != "bootstrap.servers"},
        "log_level": 0,
    }
    try:
        handle = confluent_kafka.Producer(probe)
    except (confluent_kafka.KafkaException, TypeError, ValueError) as exc:
        detail = exc.args[0].str() if isinstance(exc, confluent_kafka.KafkaException) else exc
        raise ConfigurationError(f"invalid producer setting: {detail}") from exc
    handle.poll(0)


def _poll_forever(
    rdk: confluent_kafka.Producer,
    accounts: _Accounts,
    stop: threading.Event,
    report_interval: float,
) -> None:
    next_report = time.monotonic()  # the first problem is reported at once
    while not stop.is_set():
        rdk.poll(0.1)
        if accounts.unreported and time.monotonic() >= next_report:
            accounts.report()
            next_report = time.monotonic() + report_interval


# -- process-wide handling: exit and fork ---------------------------------

#: Producers not closed yet. Strong references on purpose: a relayer dropped
#: without ``close()`` is still flushed at exit rather than lost.
_live: Set[DeliveryProducer] = set()


def live_producers() -> List[DeliveryProducer]:
    """The producers of this process not closed yet."""
    return list(_live)


def _close_all_at_exit() -> None:
    for producer in list(_live):
        try:
            producer.close()
        except Exception:  # pragma: no cover - never break interpreter exit
            logger.exception("relayer: error while closing a producer at exit")


def _forget_parent_producers() -> None:
    """In a forked child, drop the parent's librdkafka handles.

    Their threads did not survive the fork, so they can neither deliver nor
    be destroyed safely (destroying one joins threads that do not exist):
    each is leaked on purpose, and the child builds its own on first use.
    """
    for producer in list(_live):
        rdk = producer._rdk
        if rdk is not None:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(rdk))
        producer._init_process_state()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_producers)
