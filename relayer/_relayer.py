"""The :class:`Relayer`: emit events, log lines, write one record per unit of work."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union

import orjson

from . import _settings as check
from ._encoding import (
    LINE_LIMIT,
    PartitionKey,
    clip,
    describe,
    dumps,
    encode_key,
    topic_name,
    valid_text,
)
from ._ids import trace_ids
from ._logging import capture_logging as _capture_logging
from ._producer import DEFAULT_PRODUCER_CONFIG, DeliveryErrorCallback, DeliveryProducer, Headers
from ._record import RecordBuilder, encode_record, encoded_field
from ._redact import DEFAULT_REDACT_KEYS, Redactor
from ._scope import (
    LINE_OVERHEAD,
    Fragment,
    Scope,
    Timer,
    current_scope,
    enter,
    leave,
    log_line_dict,
)
from .exceptions import (
    ConfigurationError,
    InvalidLogMessageError,
    MessageTooLargeError,
    NonJSONSerializableMessageError,
)

logger = logging.getLogger("relayer")

_DEBUG = logging.DEBUG
_debug = logger.isEnabledFor
_UTC = timezone.utc
_now = datetime.now
_time = time.time
_orjson_dumps = orjson.dumps

#: What librdkafka adds to key and value when it checks message.max.bytes
#: (RD_KAFKAP_MESSAGE_V2_MAX_OVERHEAD).
_WIRE_OVERHEAD = 36

#: The version of the message and record formats (``schemas/``), sent in
#: each message's ``schema_version`` header.
SCHEMA_VERSION = "1"
_JSON = ("content-type", "application/json")
_VERSION = ("schema_version", SCHEMA_VERSION)
#: Room left for headers before their exact size is worth computing.
_HEADER_ROOM = 1024

#: Topic names checked once are remembered, up to this many.
_TOPIC_CACHE_SIZE = 1024

#: What ``log()`` takes as a message: a ``str`` or any JSON value (a dict,
#: list, number, ``None``…), as the original relayer did.
LogMessage = Any


class Relayer:
    """Emits JSON events to Kafka and relays one aggregated record per unit of work.

    :param logging_topic: topic of the aggregated records (prefix and suffix
        are applied to it too).
    :param kafka_hosts: ``"host:port"``, a comma-separated string of them, or
        a list of them. Required unless ``producer_opts`` has
        ``bootstrap.servers``.
    :param topic_prefix: prepended to every topic name.
    :param topic_suffix: appended to every topic name.
    :param source: the ``source`` field of events and records; defaults to
        ``topic_prefix + logging_topic + topic_suffix``.
    :param producer_opts: librdkafka settings, passed through to
        ``confluent_kafka.Producer`` over relayer's defaults
        (:data:`relayer.DEFAULT_PRODUCER_CONFIG`).
    :param shutdown_timeout: seconds :meth:`close` (and interpreter exit)
        waits for pending messages before giving them up.
    :param on_delivery_error: called as ``(error, topic, key)`` for each
        message Kafka could not take, from the poller thread.
    :param buffer_max_messages: how many messages may wait for delivery…
    :param buffer_max_kbytes: …and how many kilobytes; past either limit a
        new message is dropped (and counted), or waited for (``when_full``).
    :param when_full: ``"drop"`` (the default: never wait) or ``"block"``
        (wait up to ``block_timeout`` seconds for room, then drop).
    :param block_timeout: see ``when_full``.
    :param redact_keys: names whose values are masked in records: query-string
        parameters and the keys of logged dicts, matched case-insensitively
        as substrings (default :data:`relayer.DEFAULT_REDACT_KEYS`; ``()``
        turns it off).
    :param capture_logging: ``True`` (or a level such as ``"INFO"``) adds what
        is logged through the standard ``logging`` module during a unit of
        work to its record (see :func:`relayer.capture_logging`).
    :param request_id_header: the incoming header a request id is taken from
        (and echoed in) by the HTTP middlewares.
    :param sample_rate: the share of records written (events are always
        emitted); records of failed units of work and of slow ones are
        always written. Each record says the rate.
    :param slow_threshold_ms: units of work at least this slow are always
        recorded.
    :param service_name: sent in each record's ``sender``, with the host and
        process id.
    :param service_version: likewise.
    :param kafka_headers: send the Kafka headers (``content-type``,
        ``schema_version``, ``event_type``, ``event_subtype``, ``request_id``)
        with every message (the default). librdkafka allocates each header
        on its own: ``False`` saves about a quarter of the cost of an
        ``emit`` and half the memory of a pending message, for consumers
        that read the JSON anyway.

    :raises ConfigurationError: a setting is missing or invalid.
    :raises InvalidTopicError: the logging topic is not a valid topic name.
    """

    def __init__(
        self,
        logging_topic: str,
        kafka_hosts: Union[str, Iterable[str], None] = None,
        topic_prefix: str = "",
        topic_suffix: str = "",
        source: Optional[str] = None,
        producer_opts: Optional[Mapping[str, Any]] = None,
        *,
        shutdown_timeout: float = 5.0,
        on_delivery_error: Optional[DeliveryErrorCallback] = None,
        buffer_max_messages: int = DEFAULT_PRODUCER_CONFIG["queue.buffering.max.messages"],
        buffer_max_kbytes: int = DEFAULT_PRODUCER_CONFIG["queue.buffering.max.kbytes"],
        when_full: str = "drop",
        block_timeout: float = 0.5,
        redact_keys: Iterable[str] = DEFAULT_REDACT_KEYS,
        capture_logging: Union[bool, int, str] = False,
        request_id_header: str = "X-Request-ID",
        sample_rate: float = 1.0,
        slow_threshold_ms: Optional[float] = None,
        service_name: Optional[str] = None,
        service_version: Optional[str] = None,
        kafka_headers: bool = True,
    ) -> None:

        # Every setting is checked before anything is built: a refused
        # relayer leaves nothing behind (no producer to flush at exit, no
        # logging handler).
        if not isinstance(topic_prefix, str) or not isinstance(topic_suffix, str):
            raise ConfigurationError("topic_prefix and topic_suffix must be strings")
        if not isinstance(logging_topic, str) or not logging_topic:
            raise ConfigurationError(
                f"logging_topic must be a non-empty string, not {logging_topic!r}"
            )
        source = check.optional_text("source", source)
        shutdown_timeout = check.seconds("shutdown_timeout", shutdown_timeout)
        block_timeout = check.seconds("block_timeout", block_timeout)
        when_full = check.choice("when_full", when_full, ("drop", "block"))
        on_delivery_error = check.callback("on_delivery_error", on_delivery_error)
        redact_keys = check.names("redact_keys", redact_keys)
        capture_logging = check.log_level("capture_logging", capture_logging)
        request_id_header = check.header_name("request_id_header", request_id_header)
        service_name = check.optional_text("service_name", service_name)
        service_version = check.optional_text("service_version", service_version)
        kafka_headers = check.flag("kafka_headers", kafka_headers)
        config: Dict[str, Any] = {
            "queue.buffering.max.messages": check.positive_int(
                "buffer_max_messages", buffer_max_messages
            ),
            "queue.buffering.max.kbytes": check.positive_int(
                "buffer_max_kbytes", buffer_max_kbytes
            ),
            **check.options("producer_opts", producer_opts),
        }
        servers = _bootstrap_servers(kafka_hosts)
        if servers:
            config["bootstrap.servers"] = servers
        elif config.get("bootstrap.servers"):
            config["bootstrap.servers"] = _bootstrap_servers(
                config["bootstrap.servers"], "producer_opts['bootstrap.servers']"
            )
        else:
            raise ConfigurationError(
                "kafka_hosts is required: pass kafka_hosts='host:port' (or a list "
                "of them), set KAFKA_HOSTS in the Flask config, or put "
                "'bootstrap.servers' in producer_opts"
            )
        check.buffer_bounds(config)  # producer_opts may override the buffer_max_*

        self.logging_topic = logging_topic
        self.topic_prefix = topic_prefix
        self.topic_suffix = topic_suffix
        self.source = topic_prefix + logging_topic + topic_suffix if source is None else source
        self.record_topic = topic_name(topic_prefix, logging_topic, topic_suffix)
        self.redactor = Redactor(redact_keys)
        self.request_id_header = request_id_header
        #: Whether messages carry Kafka headers.
        self.kafka_headers = kafka_headers
        self.records = RecordBuilder(
            self.source,
            logging_topic,
            service_name=service_name,
            service_version=service_version,
            sample_rate=sample_rate,
            slow_threshold_ms=slow_threshold_ms,
        )
        self._topics: Dict[Any, str] = {}
        self._producer = DeliveryProducer(
            config,
            shutdown_timeout=shutdown_timeout,
            on_delivery_error=on_delivery_error,
            when_full=when_full,
            block_timeout=block_timeout,
        )
        self._max_message_bytes = int(self._producer.config["message.max.bytes"]) - _WIRE_OVERHEAD
        #: Values up to this size (less the key's) fit whatever their headers.
        self._value_room = self._max_message_bytes - _HEADER_ROOM
        if capture_logging:
            _capture_logging(logging.NOTSET if capture_logging is True else capture_logging)

    # -- the public calls ------------------------------------------------------

    def emit(
        self,
        event_type: str,
        event_subtype: Any,
        payload: Any,
        partition_key: PartitionKey = None,
    ) -> None:
        """Produce an event to topic ``prefix + event_type + suffix`` at once.

        The message is the JSON object ``{source, event_type, event_subtype,
        payload, timestamp}``; inside a unit of work it also carries the
        ``request_id``, and is added to the record's ``lines``. Messages with the same ``partition_key`` (``str``,
        ``bytes`` or ``uuid.UUID``) land on the same partition.

        Never blocks and never raises because of Kafka; raises a
        :class:`~relayer.RelayerError` (and produces nothing) on bad input:

        :raises InvalidTopicError: ``event_type`` makes an invalid topic name.
        :raises UnsupportedPartitionKeyTypeError: the key has another type.
        :raises NonJSONSerializableMessageError: the payload is not JSON.
        """
        scope = current_scope()
        try:
            topic = self._topics[event_type]
        except (KeyError, TypeError):
            topic = self._topic(event_type)
        if partition_key is None:
            key: Union[str, bytes, None] = None
        elif type(partition_key) is str and partition_key.isascii():
            key = partition_key  # the common case: confluent-kafka encodes it
        else:
            key = encode_key(partition_key)  # raises on bad keys
        envelope = {
            "source": self.source,
            "event_type": event_type,
            "event_subtype": event_subtype,
            "payload": payload,
            "timestamp": _now(_UTC),
        }
        headers: Optional[Headers] = None
        if self.kafka_headers:
            headers = [
                _JSON,
                _VERSION,
                ("event_type", event_type),
                (
                    "event_subtype",
                    event_subtype if type(event_subtype) is str else _header_text(event_subtype),
                ),
            ]
            if scope is not None:
                headers.append(("request_id", scope.request_id))
        if scope is not None:
            envelope["request_id"] = scope.request_id
        try:
            value = _orjson_dumps(envelope)
        except TypeError:
            value = dumps(envelope, f"event {describe(event_type)}/{describe(event_subtype)}")
        if len(value) > self._value_room - (len(key) if key else 0):
            self._check_size(topic, value, key, headers)
        if _debug(_DEBUG):
            _log_message(topic, key, value)
        # DeliveryProducer.produce, inlined: this is the hot path. Counted
        # once librdkafka has it (see DeliveryProducer.stats); refused()
        # counts a message it drops or waits for.
        producer = self._producer
        try:
            producer.send(topic, value, key, -1, None, None, 0, headers)
        except Exception as exc:
            producer.refused(exc, topic, value, key, headers)
        else:
            producer.count()
        if scope is not None:
            room = scope.room - len(value)
            if room >= 0:  # Scope.add, inlined
                scope.room = room
                scope.lines.append(Fragment(value))
            else:
                scope.add(Fragment(value), len(value))

    def emit_raw(self, topic: str, message: Any, partition_key: PartitionKey = None) -> None:
        """Produce ``message``, as JSON, to topic ``prefix + topic + suffix``.

        Like :meth:`emit` without the envelope: the message is sent as it is.
        """
        self._emit_raw(current_scope(), topic, message, partition_key)

    def log(self, log_level: str, message: LogMessage) -> None:
        """Add a line to the current unit of work's record.

        ``log_level`` is a string (``"info"``, ``"warning"``…); ``message`` is a string or any JSON value (dict, list,
        number, ``None``…), encoded as it is now (the values of secret-looking
        dict keys masked). A message longer than 65,536 characters of JSON is
        clipped, with a visible marker. Outside a unit of work there is no
        record to add to, so the line is sent at once to the logging topic as
        a record of its own (``{source, logging_topic, date, lines: [line]}``):
        it is never dropped silently.

        :raises InvalidLogMessageError: the level is not such a string.
        :raises NonJSONSerializableMessageError: the message is not JSON (or
            has lone surrogates, or is nested too deeply).
        """
        scope = current_scope()
        if scope is None or not _fast_log(scope, log_level, message):
            self._log(scope, log_level, message)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` seconds for delivery; return how many
        messages are still undelivered (0 when all were delivered).

        :raises ConfigurationError: ``timeout`` is not a finite number of
            seconds ``>= 0`` (a negative, NaN or infinite one would wait forever).
        """
        return self._producer.flush(check.seconds("timeout", timeout))

    def close(self, timeout: Optional[float] = None) -> int:
        """Flush for at most ``timeout`` seconds (default ``shutdown_timeout``)
        and release the producer; return how many messages it gave up on
        (lost, or sent but not confirmed).

        Called for every open relayer at interpreter exit. Idempotent.

        :raises ConfigurationError: ``timeout`` is given and is not a finite
            number of seconds ``>= 0``; then nothing is closed.
        """
        return self._producer.close(None if timeout is None else check.seconds("timeout", timeout))

    def stats(self) -> Dict[str, int]:
        """Delivery counts of this process: ``produced``, ``delivered``,
        ``failed``, ``dropped`` and ``pending``.

        ``produced == delivered + failed + dropped + pending`` always holds.
        """
        return self._producer.stats()

    def set(self, key: str, value: Any) -> None:
        """Add the field ``key`` to the current unit of work's record.

        ``value`` is encoded now (later changes to it do not show). Outside
        a unit of work there is no record: nothing happens.

        :raises InvalidFieldError: ``key`` is not a str, or is a field
            relayer writes itself (``status``, ``lines``…).
        :raises NonJSONSerializableMessageError: ``value`` is not JSON.
        """
        self._set(current_scope(), key, value)

    def timer(self, name: str) -> Timer:
        """Time a block (``with relayer.timer("db"):``) or each call of a
        function (``@relayer.timer("db")``) into the record's ``timings``:
        ``{"db": {"count": 2, "total_ms": 3.1}}``. Outside a unit of work it
        measures nothing.
        """
        return Timer(name, current_scope)

    def __repr__(self) -> str:
        return (
            f"<Relayer logging_topic={self.logging_topic!r} prefix={self.topic_prefix!r} "
            f"suffix={self.topic_suffix!r} {self._producer!r}>"
        )

    # -- the unit of work --------------------------------------------------------

    def open_scope(self, request_id: str = "", traceparent: Optional[str] = None) -> Scope:
        """Start a unit of work; framework layers make it current and pass it
        to :meth:`write_record` when it ends.

        ``request_id`` is the caller's (a fresh one is made if it is empty);
        the trace and span ids come from the active OpenTelemetry span, else
        from ``traceparent``.
        """
        trace_id, span_id = trace_ids(traceparent)
        return Scope(self, request_id, trace_id, span_id)

    def write_record(self, scope: Scope, fields: Mapping[str, Any], failed: bool = False) -> None:
        """Produce the aggregated record of ``scope`` to the logging topic.

        ``fields`` (request or call metadata) go after ``date``. A unit of
        work that ``failed`` (or was slow) is always recorded; others are
        sampled at ``sample_rate``. A record too large for
        ``message.max.bytes`` gives up its biggest lines first, and says how
        many lines it lost (here or while the unit of work ran) in
        ``truncated_lines``. Never raises: this runs as a request ends, where
        an error would hurt the service, so a record that cannot be built is
        logged and counted as dropped instead.
        """
        try:
            if not self.records.keep(scope, failed):
                return
            record = self.records.unit_record(scope, fields)
            if scope.dropped:
                record["truncated_lines"] = scope.dropped
            value = encode_record(record, self._record_room)
        except Exception as exc:
            # Not expected (input is checked when it is given): count it, say why.
            logger.exception("relayer: could not build the record of a unit of work")
            self._producer.lost(f"record could not be built: {describe(exc)}")
            return
        self._send(self.record_topic, value, None, self._plain_headers(scope))

    # -- the work behind the public calls (also used by ScopedRelayer) ----------

    def _emit_raw(
        self, scope: Optional[Scope], topic: str, message: Any, partition_key: PartitionKey
    ) -> None:
        try:
            full_topic = self._topics[topic]
        except (KeyError, TypeError):
            full_topic = self._topic(topic)
        key = None if partition_key is None else encode_key(partition_key)
        value = dumps(message, f"message for topic {full_topic!r}")
        headers = self._plain_headers(scope)
        if len(value) > self._value_room - (len(key) if key else 0):
            self._check_size(full_topic, value, key, headers)
        self._send(full_topic, value, key, headers)
        if scope is not None:
            scope.add(Fragment(value), len(value))

    def _log(self, scope: Optional[Scope], log_level: str, message: LogMessage) -> None:
        level = _level_text(log_level)
        payload: Union[str, orjson.Fragment]
        if isinstance(message, str):
            payload = message if type(message) is str else str.__str__(message)
            if not valid_text(payload):
                raise NonJSONSerializableMessageError(
                    "the log message is not valid Unicode (it has lone surrogates)"
                )
            payload = clip(payload, LINE_LIMIT)
            size = len(payload)
        else:
            try:
                redacted = self.redactor.payload(message)
            except RecursionError as exc:
                raise NonJSONSerializableMessageError(
                    "the log message is not JSON serializable: it is nested too deeply "
                    "or contains itself"
                ) from exc
            encoded = dumps(redacted, "log message")
            size = len(encoded)
            if size > LINE_LIMIT:  # one huge line would crowd the others out
                payload = clip(encoded.decode(), LINE_LIMIT)
                size = len(payload)
            else:
                payload = Fragment(encoded)
        line = (level, payload, _time())
        if scope is not None:
            scope.add(line, size + len(level) + LINE_OVERHEAD)
            return
        record = self.records.lone_record(log_line_dict(line), line[2])
        value = encode_record(record, self._record_room)
        self._send(self.record_topic, value, None, self._plain_headers(None))

    def _set(self, scope: Optional[Scope], key: str, value: Any) -> None:
        encoded = encoded_field(key, value)
        if scope is None:
            return
        key = str.__str__(key)  # as checked: a subclass's own methods are not trusted
        if not scope.set_field(key, encoded, len(_orjson_dumps(encoded))):
            logger.warning(
                "relayer: field %r is not recorded: the record's custom fields are full",
                key,
            )

    def _send(
        self, topic: str, value: bytes, key: Optional[bytes], headers: Optional[Headers]
    ) -> None:
        if _debug(_DEBUG):
            _log_message(topic, key, value)
        self._producer.produce(topic, value, key, headers)

    def _plain_headers(self, scope: Optional[Scope]) -> Optional[Headers]:
        """The headers of a record or a raw message (``None`` without headers)."""
        if not self.kafka_headers:
            return None
        if scope is None:
            return [_JSON, _VERSION]
        return [_JSON, _VERSION, ("request_id", scope.request_id)]

    @property
    def _record_room(self) -> int:
        """Bytes a record may take: the limit less room for its headers
        (a request id has at most 128 characters).
        """
        return self._max_message_bytes - 300

    def _check_size(
        self, topic: str, value: bytes, key: Union[str, bytes, None], headers: Optional[Headers]
    ) -> None:
        """Raise if librdkafka would refuse this message as too large."""
        size = len(value) + (len(key) if key else 0) + _headers_size(headers or ())
        if size <= self._max_message_bytes:
            return
        raise MessageTooLargeError(
            f"a message for topic {topic!r} would be {size + _WIRE_OVERHEAD} bytes, over the "
            f"producer's message.max.bytes of {self._max_message_bytes + _WIRE_OVERHEAD}; send "
            "less, or raise message.max.bytes in producer_opts (and max.message.bytes on the "
            "topic)"
        )

    def _topic(self, name: Any) -> str:
        topic = topic_name(self.topic_prefix, name, self.topic_suffix)
        if len(self._topics) < _TOPIC_CACHE_SIZE:
            self._topics[name] = topic
        return topic


def _log_message(topic: str, key: Union[str, bytes, None], value: bytes) -> None:
    """Log a message being produced, at DEBUG (as the original relayer did)."""
    logger.debug("relayer: producing to %s (key=%r): %s", topic, key, value.decode())


def _headers_size(headers: Iterable[Tuple[str, Union[str, bytes, None]]]) -> int:
    """The bytes librdkafka counts for headers (name and value lengths as
    varints, at most 5 bytes each here, then the bytes).
    """
    return sum(
        10 + len(name) + len(value.encode() if isinstance(value, str) else value or b"")
        for name, value in headers
    )


def _header_text(subtype: Any) -> str:
    """The ``event_subtype`` header of a subtype that is not a plain ``str``.

    :raises NonJSONSerializableMessageError: it has no usable text.
    """
    if isinstance(subtype, str):
        return str.__str__(subtype)  # a subclass's own str() is not asked
    try:
        return str(subtype)
    except Exception as exc:
        raise NonJSONSerializableMessageError(
            f"the event_subtype {describe(subtype)} cannot be written as text: {exc!r}"
        ) from exc


def _level_text(level: Any) -> str:
    """``level`` as a plain ``str`` of valid Unicode (JSON cannot carry a lone
    surrogate).

    :raises InvalidLogMessageError: it is not such a string.
    """
    if not isinstance(level, str):
        raise InvalidLogMessageError(
            f"log_level must be a str, not {type(level).__name__} ({describe(level)})"
        )
    text = level if type(level) is str else str.__str__(level)
    if not valid_text(text):
        raise InvalidLogMessageError(
            f"log_level must be valid Unicode (no lone surrogates), not {describe(text)}"
        )
    return text


def _bootstrap_servers(kafka_hosts: Any, setting: str = "kafka_hosts") -> str:
    """``kafka_hosts`` as librdkafka's ``bootstrap.servers`` (``""`` for None)."""
    if kafka_hosts is None:
        return ""
    if isinstance(kafka_hosts, str):
        hosts = [h.strip() for h in kafka_hosts.split(",")]
    else:
        try:
            hosts = [h.strip() if isinstance(h, str) else h for h in kafka_hosts]
        except TypeError:
            hosts = [kafka_hosts]
    for host in hosts:
        if not isinstance(host, str) or not host.isprintable() or any(c.isspace() for c in host):
            raise ConfigurationError(
                f"{setting} must be 'host:port' or a list of them (such as "
                f"['kafka1:9092', 'kafka2:9092']), not {kafka_hosts!r}: {host!r} is not a "
                "host:port"
            )
    if not all(hosts):
        raise ConfigurationError(f"{setting} has an empty entry: {kafka_hosts!r}")
    return ",".join(hosts)


class RelayerFacade:
    """``emit``, ``emit_raw``, ``log``, ``flush`` and ``stats`` for objects
    that stand for a :class:`Relayer` (the scoped RPC relayer, the Flask
    extension): subclasses say which relayer and which scope a call goes to.
    """

    __slots__ = ()

    def _bound(self) -> Tuple[Relayer, Optional[Scope]]:
        raise NotImplementedError

    @property
    def instance(self) -> Relayer:
        """The underlying :class:`Relayer`."""
        return self._bound()[0]

    def emit(
        self,
        event_type: str,
        event_subtype: Any,
        payload: Any,
        partition_key: PartitionKey = None,
    ) -> None:
        """:meth:`Relayer.emit` (see there)."""
        relayer, scope = self._bound()
        if scope is current_scope():
            relayer.emit(event_type, event_subtype, payload, partition_key)
            return
        token = enter(scope)  # a ScopedRelayer used from a thread its call started
        try:
            relayer.emit(event_type, event_subtype, payload, partition_key)
        finally:
            leave(token)

    def emit_raw(self, topic: str, message: Any, partition_key: PartitionKey = None) -> None:
        """:meth:`Relayer.emit_raw` (see there)."""
        relayer, scope = self._bound()
        relayer._emit_raw(scope, topic, message, partition_key)

    def log(self, log_level: str, message: LogMessage) -> None:
        """:meth:`Relayer.log` (see there)."""
        relayer, scope = self._bound()
        if scope is None or not _fast_log(scope, log_level, message):
            relayer._log(scope, log_level, message)

    def set(self, key: str, value: Any) -> None:
        """:meth:`Relayer.set` (see there)."""
        relayer, scope = self._bound()
        relayer._set(scope, key, value)

    def timer(self, name: str) -> Timer:
        """:meth:`Relayer.timer` (see there)."""
        return Timer(name, lambda: self._bound()[1])

    def flush(self, timeout: float = 10.0) -> int:
        """:meth:`Relayer.flush` (see there)."""
        return self.instance.flush(timeout)

    def stats(self) -> Dict[str, int]:
        """:meth:`Relayer.stats` (see there)."""
        return self.instance.stats()


def _fast_log(scope: Scope, log_level: Any, message: Any) -> bool:
    """Add an ASCII string line of at most ``LINE_LIMIT`` characters to
    ``scope`` without further checks, if it is one.

    The hot path of every ``log()``; anything else goes to :meth:`Relayer._log`.
    """
    if (
        type(message) is str
        and type(log_level) is str
        and message.isascii()
        and log_level.isascii()
    ):
        size = len(message) + len(log_level)
        if size <= LINE_LIMIT:
            size += LINE_OVERHEAD
            room = scope.room - size
            if room >= 0:  # Scope.add, inlined
                scope.room = room
                scope.lines.append((log_level, message, _time()))
            else:
                scope.add((log_level, message, _time()), size)
            return True
    return False


class ScopedRelayer(RelayerFacade):
    """A relayer bound to one unit of work (what the RPC decorator injects).

    Its lines go to that unit of work even from threads the call starts,
    where the context variable is not set.
    """

    __slots__ = ("_relayer", "scope")

    def __init__(self, instance: Relayer, scope: Scope) -> None:
        self._relayer = instance
        self.scope = scope

    def _bound(self) -> Tuple[Relayer, Optional[Scope]]:
        return self._relayer, self.scope

    @property
    def request_id(self) -> str:
        """The request id of this unit of work."""
        return self.scope.request_id

    def log(self, log_level: str, message: LogMessage) -> None:
        """:meth:`Relayer.log` (see there), in this unit of work."""
        scope = self.scope
        if not _fast_log(scope, log_level, message):
            self._relayer._log(scope, log_level, message)

    def __repr__(self) -> str:
        return f"<ScopedRelayer of {self._relayer!r}>"
