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
- :meth:`close` flushes with a bounded wait and reports what was lost; an
  ``atexit`` hook closes every live producer.
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


class _Accounts:
    """Counters shared with librdkafka's callbacks (kept apart from the
    producer so that the librdkafka handle holds no reference back to it).
    """

    def __init__(self, on_delivery_error: Optional[DeliveryErrorCallback]) -> None:
        self.lock = threading.Lock()
        #: One tick per message handed to ``produce``. ``next()`` on an
        #: ``itertools.count`` is atomic, so the hot path takes no lock.
        self.calls = itertools.count()
        self.failed = 0
        self.dropped = 0
        self.unreported: Counter[str] = Counter()
        self.on_delivery_error = on_delivery_error

    def on_delivery(self, err: Optional[confluent_kafka.KafkaError], msg: Any) -> None:
        # librdkafka reports failures only (delivery.report.only.error): a
        # Python call per delivered message would halve the throughput.
        if err is None:
            return
        with self.lock:
            self.failed += 1
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
        with self.lock:
            self.dropped += 1
            self.unreported[f"dropped ({reason})"] += 1

    def produced(self) -> int:
        """How many messages were handed to ``produce`` so far."""
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
        _validate(config)
        if when_full not in ("drop", "block"):
            raise ConfigurationError(f"when_full must be 'drop' or 'block', not {when_full!r}")
        if block_timeout < 0:
            raise ConfigurationError(f"block_timeout must be >= 0, not {block_timeout!r}")
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
        #: Counts one message handed to ``send`` (atomic: no lock needed).
        self.count: Callable[[], int] = self._accounts.calls.__next__
        #: ``produce`` of this process's librdkafka handle once it is built;
        #: until then, a stand-in that builds it (and drops, once closed).
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
        """Queue one message; never blocks, never raises for Kafka's sake.

        A message that cannot be queued (buffer full, producer closed) is
        dropped and counted. A ``str`` key must be valid Unicode (librdkafka
        gets it as UTF-8).
        """
        self.count()
        try:
            self.send(topic, value, key, -1, None, None, 0, headers)
        except (BufferError, confluent_kafka.KafkaException) as exc:
            self.refused(exc, topic, value, key, headers)

    # The hot path of ``produce`` for callers that inline it (Relayer.emit):
    # ``count()``, then ``send(topic, value, key, -1, None, None, 0, headers)``
    # (positional: a keyword argument costs confluent-kafka 0.5 µs), and on
    # BufferError or KafkaException, ``refused(...)``.

    def refused(
        self,
        exc: Exception,
        topic: str,
        value: bytes,
        key: Union[str, bytes, None],
        headers: Optional[Headers],
    ) -> None:
        """What ``produce`` does when librdkafka refused a message: wait for
        room (``when_full="block"``) or drop it, and count it.
        """
        if isinstance(exc, BufferError):
            if self.when_full == "block":
                self._produce_when_room(topic, value, key, headers)
            else:
                self._accounts.drop("buffer full")
        else:
            self._accounts.drop(exc.args[0].str() if exc.args else repr(exc))

    def _send_first(self, topic: str, value: bytes, key: Any, *args: Any) -> None:
        """``send`` until this process has a handle: build it, then produce;
        once closed, drop.
        """
        rdk = self._build()
        if rdk is None:
            self._accounts.drop(self._unusable or "producer closed")
        else:
            rdk.produce(topic, value, key, *args)

    def _produce_when_room(
        self,
        topic: str,
        value: bytes,
        key: Union[str, bytes, None],
        headers: Optional[Headers],
    ) -> None:
        """``when_full="block"``: wait up to ``block_timeout`` for room, then drop."""
        deadline = time.monotonic() + self.block_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._accounts.drop("buffer full")
                return
            rdk = self._rdk
            if rdk is None:  # closed meanwhile
                self._accounts.drop("producer closed")
                return
            rdk.poll(min(remaining, 0.005))  # serves delivery reports, which frees room
            try:
                rdk.produce(topic, value, key, headers=headers)
                return
            except BufferError:
                continue
            except confluent_kafka.KafkaException as exc:
                self._accounts.drop(exc.args[0].str() if exc.args else repr(exc))
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
                except confluent_kafka.KafkaException as exc:
                    # Settings were checked at construction; what fails here
                    # depends on the machine (a CA file that went missing…).
                    self._unusable = f"producer could not start: {exc.args[0].str()}"
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
        """Wait up to ``timeout`` seconds for delivery; return how many are still pending."""
        rdk = self._rdk
        if rdk is not None:
            rdk.flush(timeout)
        return self.pending()

    def stats(self) -> Dict[str, int]:
        """Counts of this process's messages; see :meth:`relayer.Relayer.stats`."""
        accounts = self._accounts
        with accounts.lock:
            produced = accounts.produced()
            failed, dropped = accounts.failed, accounts.dropped
        # A message leaves librdkafka's queue delivered, or failed (reported).
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

        Returns how many messages were lost. Idempotent; producing after
        ``close`` drops (and counts) the message.
        """
        with self._build_lock:
            if self._closed:
                return 0
            self._closed = True
            self.send = self._send_first  # which now drops
            rdk = self._rdk
        _live.discard(self)
        if rdk is None:
            return 0
        rdk.flush(self.shutdown_timeout if timeout is None else timeout)
        remaining = self.pending()
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        self._rdk = None
        if remaining:
            # Purged messages get a delivery report (_PURGE_QUEUE), so they
            # are counted as failed; serve those reports before reporting.
            rdk.purge()
            rdk.flush(0)
            logger.error(
                "relayer: %d message(s) could not be delivered in time and are lost",
                remaining,
            )
        self._accounts.report()
        return remaining

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("started" if self._rdk else "idle")
        servers = self._config.get("bootstrap.servers")
        return (
            f"<DeliveryProducer {state} bootstrap.servers={servers!r} when_full={self.when_full!r}>"
        )


#: Settings relayer's delivery accounting owns.
_RESERVED = ("on_delivery", "callback", "delivery.report.only.error", "dr_cb", "dr_msg_cb")


def _validate(config: Mapping[str, Any]) -> None:
    """Refuse settings librdkafka would refuse, now rather than at the first message.

    A throwaway handle without ``bootstrap.servers`` checks every other
    setting without connecting anywhere (about a millisecond).
    """
    probe = {k: v for k, v in config.items() if k != "bootstrap.servers"}
    probe["log_level"] = 0
    try:
        confluent_kafka.Producer(probe)
    except (confluent_kafka.KafkaException, TypeError, ValueError) as exc:
        detail = exc.args[0].str() if isinstance(exc, confluent_kafka.KafkaException) else exc
        raise ConfigurationError(f"invalid producer setting: {detail}") from exc


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
