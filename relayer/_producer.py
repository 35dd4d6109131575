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
import logging
import os
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Set, Union

import confluent_kafka

from . import _settings
from ._accounts import Accounts, LibrdkafkaLog, OnReport, poll_forever, reason_of
from ._client import Client, ClientFactory, Headers
from ._redact import redacted_config
from ._settings import DEFAULT_PRODUCER_CONFIG, DeliveryErrorCallback
from .exceptions import ConfigurationError

logger = logging.getLogger("relayer")
_DEBUG = logging.DEBUG
_debug = logger.isEnabledFor
#: logging's own per-level cache of isEnabledFor, read without a Python call
#: (about 400 instructions less per message: benchmarks/instructions.py).
_debug_cache = getattr(logger, "_cache", {}).get


#: How long :meth:`DeliveryProducer.close` waits, after purging, for the
#: reports of the purged messages (librdkafka queues those of the messages
#: in flight a moment later; it takes well under a millisecond).
_PURGE_WAIT = 0.5


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
        report_deliveries: bool = False,
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
        _settings.librdkafka_accepts(config, LibrdkafkaLog(report_interval))
        self._config = config
        #: The librdkafka settings in force (with librdkafka's own defaults
        #: for message.max.bytes filled in).
        self.config: Mapping[str, Any] = {"message.max.bytes": 1_000_000, **config}
        self.shutdown_timeout = shutdown_timeout
        self.report_interval = report_interval
        self.when_full = when_full
        self.block_timeout = block_timeout
        #: Whether librdkafka reports every delivery, not only failures (a
        #: Python call per message: only for producers that need
        #: ``on_report``, such as the outbox's).
        self.report_deliveries = report_deliveries
        self._on_delivery_error = on_delivery_error
        self._init_process_state()
        _live.add(self)

    def _init_process_state(self) -> None:
        #: This process's librdkafka handle, once built (with its poller).
        self._rdk: Optional[confluent_kafka.Producer] = None
        #: Where messages go: ``_rdk``, or a test double's client
        #: (:func:`set_client_factory`); ``None`` until the first message.
        self._client: Optional[Client] = None
        self._build_lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: Optional[threading.Thread] = None
        self._accounts = Accounts(self._on_delivery_error)
        self._closed = False
        self._unusable = ""  # why librdkafka refused to start, if it did

    # -- producing ---------------------------------------------------------

    def produce(
        self,
        topic: str,
        value: bytes,
        key: Union[str, bytes, None] = None,
        headers: Optional[Headers] = None,
        on_report: Optional[OnReport] = None,
    ) -> None:
        """Queue one message; never blocks, never raises.

        A message that cannot be queued (buffer full, producer closed, or
        ``send`` raised anything else, such as a TypeError for a bad header)
        is dropped and counted. A ``str`` key must be valid Unicode
        (librdkafka gets it as UTF-8). ``on_report(delivered)`` is called once
        the message is delivered (``True``; needs ``report_deliveries``), or
        failed or was dropped (``False``), from the poller thread or here.
        """
        if _debug_cache(_DEBUG) is not False and _debug(_DEBUG):  # cached False: no call
            _log_message(topic, key, value)
        try:
            client = self._client
            if client is None:
                client = self._connect()
            # Positional (keywords cost 1,400 instructions more), and without
            # headers three arguments only (benchmarks/instructions.py rows).
            if headers is None and on_report is None:
                client.produce(topic, value, key)
            else:
                report = None if on_report is None else self._accounts.reporter(on_report)
                client.produce(topic, value, key, -1, report, None, 0, headers)
        except Exception as exc:
            self._refused(exc, topic, value, key, headers, on_report)
        else:
            # Counted once librdkafka has it, so that stats() never takes one
            # not queued yet for delivered; _refused counts the others.
            next(self._accounts.ticks)

    def _refused(
        self,
        exc: Exception,
        topic: str,
        value: bytes,
        key: Union[str, bytes, None],
        headers: Optional[Headers],
        on_report: Optional[OnReport] = None,
    ) -> None:
        """What ``produce`` does when ``send`` raised ``exc``: wait for room
        (BufferError with ``when_full="block"``) or drop the message; either
        way, count it. Never raises.
        """
        if isinstance(exc, BufferError) and self.when_full == "block":
            self._produce_when_room(topic, value, key, headers, on_report)
        else:
            self._drop(exc, on_report)

    def _drop(self, why: Union[Exception, str], on_report: Optional[OnReport]) -> None:
        """Count a message that was not queued, ``why`` being what ``send``
        raised or a reason; tell its ``on_report``.
        """
        if isinstance(why, str):
            self._accounts.drop(why)
        elif isinstance(why, BufferError):
            self._accounts.drop("buffer full")
        elif isinstance(why, confluent_kafka.KafkaException):
            self._accounts.drop(reason_of(why))
        else:
            self._accounts.unexpected(why)
        if on_report is not None:
            self._accounts.report_to(on_report, False)

    def lost(self, reason: str) -> None:
        """Count one message as produced and dropped for ``reason`` (for a
        message that could not even be built, such as a record that could
        not be encoded); it is reported like every drop.
        """
        self._accounts.drop(reason)

    def _connect(self) -> Client:
        """Make (or find) the client messages go to now: a test double's, if
        one is set (:func:`set_client_factory`), else this process's librdkafka
        handle, built on first use.

        :raises KafkaException: the producer is closed, or librdkafka cannot start.
        """
        with self._build_lock:
            if self._closed or self._unusable:
                reason = self._unusable or "producer closed"
                raise confluent_kafka.KafkaException(
                    confluent_kafka.KafkaError(confluent_kafka.KafkaError._STATE, reason)
                )
            if _factory is not None:
                client: Client = _factory(self.config)
            else:
                client = self._build()
            self._client = client
            return client

    def _produce_when_room(
        self,
        topic: str,
        value: bytes,
        key: Union[str, bytes, None],
        headers: Optional[Headers],
        on_report: Optional[OnReport] = None,
    ) -> None:
        """``when_full="block"``: wait up to ``block_timeout`` for room, then
        drop; count the message either way.
        """
        deadline = time.monotonic() + self.block_timeout
        report = None if on_report is None else self._accounts.reporter(on_report)
        while True:
            remaining = deadline - time.monotonic()
            client = self._client
            if remaining <= 0:
                return self._drop("buffer full", on_report)
            if client is None or self._closed:  # closed meanwhile
                return self._drop("producer closed", on_report)
            try:
                client.poll(min(remaining, 0.005))  # serves delivery reports: frees room
                client.produce(topic, value, key, -1, report, None, 0, headers)
            except BufferError:
                continue
            except Exception as exc:
                return self._drop(exc, on_report)
            next(self._accounts.ticks)
            return

    def _build(self) -> confluent_kafka.Producer:
        """Build (once) the librdkafka handle of this process, and its poller
        (call with ``_build_lock`` held).

        :raises KafkaException: librdkafka cannot start.
        """
        if self._rdk is None:
            accounts = self._accounts
            config = {
                "logger": LibrdkafkaLog(self.report_interval),
                **self._config,
                "delivery.report.only.error": not self.report_deliveries,
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
                self._unusable = f"producer could not start: {reason_of(exc)}"
                logger.error("relayer: %s; its messages are dropped", self._unusable)
                raise confluent_kafka.KafkaException(
                    confluent_kafka.KafkaError(confluent_kafka.KafkaError._STATE, self._unusable)
                ) from None
            self._poller = threading.Thread(
                target=poll_forever,
                args=(rdk, accounts, self._stop, self.report_interval),
                name="relayer-poller",
                daemon=True,
            )
            self._poller.start()
            self._rdk = rdk
        return self._rdk

    # -- delivery ------------------------------------------------------------

    def pending(self) -> int:
        """How many messages are queued or in flight, not yet reported."""
        return self.stats()["pending"]

    def _in_queue(self, most: int) -> int:
        """Messages librdkafka has not delivered yet.

        Its count may include an event not served yet, hence at most ``most``.
        """
        client = self._client
        return min(len(client), most) if client is not None else 0

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for delivery; return how many are still pending.

        ``timeout`` is a finite number of seconds ``>= 0``; a wait longer than
        librdkafka can be asked for (2**31 - 1 ms, about 24.8 days) is cut to
        that. A negative, NaN or infinite ``timeout`` (which librdkafka would
        take for "wait forever") or one that is not a number raises
        :class:`~relayer.ConfigurationError` at once, without waiting.
        """
        wait = _settings.seconds("timeout", timeout)
        client = self._client
        if client is not None:
            client.flush(min(wait, _settings.LONGEST_WAIT))
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
            produced = max(accounts.produced, failed + dropped)
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
            self._client = None  # a message produced from now on is dropped
            rdk = self._rdk
        _live.discard(self)
        given_up = 0
        if rdk is not None:
            rdk.flush(min(wait, _settings.LONGEST_WAIT))
            self._stop.set()
            if self._poller is not None:
                self._poller.join()
            if len(rdk):
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
            unaccounted = accounts.produced - accounts.failed - accounts.dropped
            unknown = max(min(len(rdk), unaccounted), 0)
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


def _log_message(topic: str, key: Union[str, bytes, None], value: bytes) -> None:
    """Log a message being produced, at DEBUG (as the original relayer did)."""
    logger.debug("relayer: producing to %s (key=%r): %s", topic, key, value.decode())


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


def set_client_factory(factory: Optional[ClientFactory]) -> Optional[ClientFactory]:
    """The seam for test doubles: from now on every producer of this process
    sends through a client made by ``factory(config)`` (``None``: librdkafka's
    own again); return the factory that was set before.

    Each producer makes its client at its next message. A librdkafka handle a
    producer already has is kept (with what it holds) for when the factory is
    taken away. :class:`relayer.testing.RelayerPatch` is built on this.
    """
    global _factory
    previous, _factory = _factory, factory
    for producer in list(_live):
        with producer._build_lock:
            producer._client = None
    return previous


#: Set by :func:`set_client_factory`.
_factory: Optional[ClientFactory] = None

#: The librdkafka handles of the parent process, in a forked child: kept
#: referenced for good, as destroying one would join threads that did not
#: survive the fork.
_orphans: List[confluent_kafka.Producer] = []


def _forget_parent_producers() -> None:
    """In a forked child, let every producer start afresh.

    The parent's handles cannot deliver here (their threads did not survive
    the fork); each producer builds its own on first use.
    """
    for producer in list(_live):
        if producer._rdk is not None:
            _orphans.append(producer._rdk)
        producer._init_process_state()


atexit.register(_close_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_producers)
