"""The :class:`Relayer`: emit events, log lines, write one record per unit of work.

Every public ``emit``, ``emit_raw`` and ``log`` (the relayer's and those of
the facades in :mod:`relayer._facades`) goes through one path that takes the
unit of work as a parameter: :meth:`Relayer.emit` and :meth:`Relayer.emit_raw`
(``unit=``, the current one by default), and :func:`fast_log` then
:meth:`Relayer._log`.
Every message goes to Kafka through :meth:`DeliveryProducer.produce
<relayer._producer.DeliveryProducer.produce>`.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import orjson

from . import _ids
from ._client import Headers, Message
from ._encoding import (
    LINE_LIMIT,
    WIRE_OVERHEAD,
    PartitionKey,
    check_size,
    clip,
    describe,
    dumps,
    encode_key,
    level_text,
    topic_name,
    valid_text,
)
from ._headers import event_headers, plain_headers
from ._held import HeldEvents
from ._ids import trace_ids
from ._logging import capture_logging as _capture_logging
from ._producer import DeliveryProducer
from ._record import RecordBuilder, encode_record, encoded_field
from ._redact import Redactor
from ._settings import Settings, seconds
from ._unit import (
    CURRENT,
    LINE_OVERHEAD,
    Fragment,
    Line,
    Timer,
    UnitOfWork,
    _Current,
    current_unit,
    fast_log,
    log_line_dict,
)
from .exceptions import (
    NonJSONSerializableMessageError,
)

if TYPE_CHECKING:
    from ._facades import CallUnit

logger = logging.getLogger("relayer")

_UTC = timezone.utc
_now = datetime.now
_time = time.time
_orjson_dumps = orjson.dumps


#: Room left for headers before their exact size is worth computing.
_HEADER_ROOM = 1024

#: Topic names checked once are remembered, up to this many.
_TOPIC_CACHE_SIZE = 1024

#: What ``log()`` takes as a message: a ``str`` or any JSON value (a dict,
#: list, number, ``None``…), as the original relayer did.
LogMessage = Any


class Relayer:
    """Emits JSON events to Kafka and relays one aggregated record per unit of work.

    ``Relayer(logging_topic, kafka_hosts=None, topic_prefix="", topic_suffix="",
    source=None, producer_opts=None, **settings)``: every setting is a field of
    :class:`relayer.Settings`, which says what each means; the first six may
    also be given by position, as in the original relayer. They are checked
    before anything is built, and kept as :attr:`settings`.

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
        **settings: Any,
    ) -> None:
        #: The settings in force, checked.
        self.settings = Settings.from_kwargs(
            logging_topic=logging_topic,
            kafka_hosts=kafka_hosts,
            topic_prefix=topic_prefix,
            topic_suffix=topic_suffix,
            source=source,
            producer_opts=producer_opts,
            **settings,
        )
        s = self.settings
        self.logging_topic = s.logging_topic
        self.topic_prefix = s.topic_prefix
        self.topic_suffix = s.topic_suffix
        self.source = s.full_source
        self.record_topic = topic_name(s.topic_prefix, s.logging_topic, s.topic_suffix)
        self.redactor = Redactor(s.redact_keys)
        self.request_id_header = s.request_id_header
        #: Whether messages carry Kafka headers.
        self.kafka_headers = s.kafka_headers
        self.records = RecordBuilder(
            self.source,
            s.logging_topic,
            service_name=s.service_name,
            service_version=s.service_version,
            sample_rate=s.sample_rate,
            slow_threshold_ms=s.slow_threshold_ms,
        )
        self._topics: Dict[Any, str] = {}
        self._producer = DeliveryProducer(
            s.producer_config(),
            shutdown_timeout=s.shutdown_timeout,
            on_delivery_error=s.on_delivery_error,
            when_full=s.when_full,
            block_timeout=s.block_timeout,
        )
        self._max_message_bytes = int(self._producer.config["message.max.bytes"]) - WIRE_OVERHEAD
        #: Values up to this size (less the key's) fit whatever their headers.
        self._value_room = self._max_message_bytes - _HEADER_ROOM
        #: Bytes a record may take: the limit less room for its headers (a
        #: request id has at most 128 characters).
        self.record_room = self._max_message_bytes - 300
        #: With ``event_delivery="on_success"``: the events units of work hold.
        self._hold = s.event_delivery == "on_success"
        self._held = HeldEvents(self._producer)
        if s.capture_logging:
            _capture_logging(logging.NOTSET if s.capture_logging is True else s.capture_logging)

    # -- the public calls ------------------------------------------------------

    def emit(
        self,
        event_type: str,
        event_subtype: Any,
        payload: Any,
        partition_key: PartitionKey = None,
        *,
        unit: Union[UnitOfWork, _Current, None] = CURRENT,
        into: Optional[List[Tuple[Message, Optional[Line]]]] = None,
    ) -> None:
        """Produce an event to topic ``prefix + event_type + suffix`` at once.

        The message is the JSON object ``{event_id, source, event_type,
        event_subtype, payload, timestamp}``; inside a unit of work it also
        carries the ``request_id``, and is added to the record's ``lines``.
        ``event_id`` (32 hex characters) is unique to this event: consumers
        dedupe on it. Messages with the same ``partition_key`` (``str``,
        ``bytes`` or ``uuid.UUID``) land on the same partition. ``unit`` is
        the unit of work the event belongs to: the current one by default
        (the facades pass theirs; ``None``: none).

        With ``event_delivery="on_success"``, an event of a unit of work is
        held and produced when the unit of work ends successfully (see
        :mod:`relayer._held`). ``into``: append the checked, encoded
        :class:`~relayer._client.Message`, with its line in the record (or
        ``None``), to this list instead of producing it (the outbox does).

        Never blocks and never raises because of Kafka; raises a
        :class:`~relayer.RelayerError` (and produces nothing) on bad input:

        :raises InvalidTopicError: ``event_type`` makes an invalid topic name.
        :raises UnsupportedPartitionKeyTypeError: the key has another type.
        :raises NonJSONSerializableMessageError: the payload is not JSON.
        :raises MessageTooLargeError: the event is over ``message.max.bytes``.
        """
        if unit is CURRENT:
            unit = current_unit()
        try:
            topic = self._topics[event_type]
        except (KeyError, TypeError):
            topic = self._topic(event_type)
        if partition_key is None:
            key: Union[str, bytes, None] = None
        elif type(partition_key) is str and partition_key.isascii():
            key = partition_key  # confluent-kafka encodes it, for 420 instructions less
        else:
            key = encode_key(partition_key)  # raises on bad keys
        event_id = f"{_ids.EVENT_PREFIX}{next(_ids.EVENT_TICKS):012x}"  # new_event_id(), inline
        envelope = {
            "event_id": event_id,
            "source": self.source,
            "event_type": event_type,
            "event_subtype": event_subtype,
            "payload": payload,
            "timestamp": _now(_UTC),
        }
        if unit is not None:
            envelope["request_id"] = unit.request_id
        headers: Optional[Headers] = None
        if self.kafka_headers:
            headers = event_headers(event_type, event_subtype, event_id, unit)
        try:
            value = _orjson_dumps(envelope)
        except TypeError:
            value = dumps(envelope, f"event {describe(event_type)}/{describe(event_subtype)}")
        if len(value) > self._value_room - (len(key) if key else 0):
            check_size(topic, value, key, headers, self._max_message_bytes)
        if unit is None:
            if into is None:
                self._producer.produce(topic, value, key, headers)
            else:
                into.append((Message(topic, value, key, headers, event_id), None))
            return
        line = Fragment(value)
        room = unit.room - len(value)
        if room >= 0:  # UnitOfWork.add, inlined: 466 instructions less per event
            unit.room = room
            unit.lines.append(line)
        else:
            unit.add(line, len(value))
        if into is not None:
            into.append((Message(topic, value, key, headers, event_id), line))
        elif unit.held is None:
            self._producer.produce(topic, value, key, headers)
        else:
            self._held.hold(unit, Message(topic, value, key, headers, event_id), line)

    def emit_raw(
        self,
        topic: str,
        message: Any,
        partition_key: PartitionKey = None,
        *,
        unit: Union[UnitOfWork, _Current, None] = CURRENT,
    ) -> None:
        """Produce ``message``, as JSON, to topic ``prefix + topic + suffix``.

        Like :meth:`emit` without the envelope (and so without an
        ``event_id``): the message is sent as it is.
        """
        if unit is CURRENT:
            unit = current_unit()
        try:
            full_topic = self._topics[topic]
        except (KeyError, TypeError):
            full_topic = self._topic(topic)
        key = None if partition_key is None else encode_key(partition_key)
        value = dumps(message, f"message for topic {full_topic!r}")
        headers = self._plain_headers(unit)
        if len(value) > self._value_room - (len(key) if key else 0):
            check_size(full_topic, value, key, headers, self._max_message_bytes)
        if unit is None:
            self._producer.produce(full_topic, value, key, headers)
            return
        line = Fragment(value)
        unit.add(line, len(value))
        if unit.held is None:
            self._producer.produce(full_topic, value, key, headers)
        else:
            self._held.hold(unit, Message(full_topic, value, key, headers, ""), line)

    def log(self, log_level: str, message: LogMessage) -> None:
        """Add a line to the current unit of work's record.

        ``log_level`` is a string (``"info"``, ``"warning"``…); ``message`` is
        a string or any JSON value (dict, list, number, ``None``…), encoded as
        it is now (the values of secret-looking dict keys masked). A message
        longer than 65,536 characters of JSON is clipped, with a visible
        marker. Outside a unit of work there is no record to add to, so the
        line is sent at once to the logging topic as a record of its own
        (``{source, logging_topic, date, lines: [line]}``): it is never
        dropped silently.

        :raises InvalidLogMessageError: the level is not such a string.
        :raises NonJSONSerializableMessageError: the message is not JSON (or
            has lone surrogates, or is nested too deeply).
        """
        unit = current_unit()
        if unit is None or not fast_log(unit, log_level, message):
            self._log(unit, log_level, message)

    def set(self, key: str, value: Any) -> None:
        """Add the field ``key`` to the current unit of work's record.

        ``value`` is encoded now (later changes to it do not show). Outside
        a unit of work there is no record: nothing happens.

        :raises InvalidFieldError: ``key`` is not a str, or is a field
            relayer writes itself (``status``, ``lines``…).
        :raises NonJSONSerializableMessageError: ``value`` is not JSON.
        """
        self._set(current_unit(), key, value)

    def timer(self, name: str) -> Timer:
        """Time a block (``with relayer.timer("db"):``) or each call of a
        function (``@relayer.timer("db")``) into the record's ``timings``:
        ``{"db": {"count": 2, "total_ms": 3.1}}``. Outside a unit of work it
        measures nothing.
        """
        return Timer(name, current_unit)

    def unit_of_work(
        self,
        name: str,
        *,
        request_id: Optional[str] = None,
        traceparent: Optional[str] = None,
    ) -> CallUnit:
        """A unit of work of its own: a job, a task, a consumed message, a CLI command.

        As a context manager (``with``, or ``async with``) it yields a
        :class:`~relayer.ScopedRelayer`; as a decorator of a function or an
        ``async def`` function, each call is a unit of work. When it ends it
        writes a call record: ``service`` = ``name``, ``service_time``, and
        ``error`` when it raised (the exception goes on unchanged). The
        ``request_id`` is the given one (when it is usable) or a fresh one;
        ``traceparent`` is a W3C trace context. Inside, :func:`relayer.current`
        and this relayer's ``emit``/``log`` go to it.
        """
        from ._facades import CallUnit

        return CallUnit(self, name, request_id, traceparent)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` seconds for delivery; return how many
        messages are still undelivered (0 when all were delivered).

        :raises ConfigurationError: ``timeout`` is not a finite number of
            seconds ``>= 0`` (a negative, NaN or infinite one would wait forever).
        """
        return self._producer.flush(seconds("timeout", timeout))

    def close(self, timeout: Optional[float] = None) -> int:
        """Flush for at most ``timeout`` seconds (default ``shutdown_timeout``)
        and release the producer; return how many messages it gave up on
        (lost, or sent but not confirmed).

        Called for every open relayer at interpreter exit. Idempotent.

        :raises ConfigurationError: ``timeout`` is given and is not a finite
            number of seconds ``>= 0``; then nothing is closed.
        """
        return self._producer.close(None if timeout is None else seconds("timeout", timeout))

    def stats(self) -> Dict[str, int]:
        """Delivery counts of this process: ``produced``, ``delivered``,
        ``failed``, ``dropped`` and ``pending``.

        ``produced == delivered + failed + dropped + pending`` always holds.
        ``delivered`` never counts a message before librdkafka let go of it
        without a failure report, and is exact whenever nothing is pending.
        """
        return self._producer.stats()

    def __repr__(self) -> str:
        return (
            f"<Relayer logging_topic={self.logging_topic!r} prefix={self.topic_prefix!r} "
            f"suffix={self.topic_suffix!r} {self._producer!r}>"
        )

    # -- units of work, for framework layers ---------------------------------------

    def open_unit(self, request_id: str = "", traceparent: Optional[str] = None) -> UnitOfWork:
        """Start a unit of work; a framework layer makes it current
        (:func:`relayer._unit.enter`) and passes it to :meth:`write_record`
        when it ends. Jobs and tasks use :meth:`unit_of_work` instead.

        ``request_id`` is the caller's (a fresh one is made if it is empty);
        the trace and span ids come from the active OpenTelemetry span, else
        from ``traceparent``.
        """
        trace_id, span_id = trace_ids(traceparent)
        return UnitOfWork(self, request_id, trace_id, span_id, hold=self._hold)

    def write_record(
        self,
        unit: UnitOfWork,
        fields: Mapping[str, Any],
        failed: bool = False,
        succeeded: Optional[bool] = None,
    ) -> None:
        """Produce the aggregated record of ``unit`` to the logging topic.

        Its held events (``event_delivery="on_success"``) go first if it
        ``succeeded`` (default: ``not failed``; for HTTP, a status below 400
        too), else are marked discarded.

        ``fields`` (request or call metadata) go after ``date``. A unit of
        work that ``failed`` (or was slow) is always recorded; others are
        sampled at ``sample_rate``. A record too large for
        ``message.max.bytes`` gives up its biggest lines first, and says how
        many lines it lost (here or while the unit of work ran) in
        ``truncated_lines``. Never raises: this runs as a request ends, where
        an error would hurt the service, so a record that cannot be built is
        logged and counted as dropped instead.
        """
        if unit.held is not None:
            self._held.release(unit, not failed if succeeded is None else succeeded)
        try:
            if not self.records.keep(unit, failed):
                return
            record = self.records.unit_record(unit, fields)
            if unit.dropped:
                record["truncated_lines"] = unit.dropped
            value = encode_record(record, self.record_room)
        except Exception as exc:
            # Not expected (input is checked when it is given): count it, say why.
            logger.exception("relayer: could not build the record of a unit of work")
            self._producer.lost(f"record could not be built: {describe(exc)}")
            return
        self._producer.produce(self.record_topic, value, None, self._plain_headers(unit))

    # -- the one path behind each public call (also taken by the facades) ---------

    def _log(self, unit: Optional[UnitOfWork], log_level: str, message: LogMessage) -> None:
        """:meth:`log` into ``unit``, for what :func:`fast_log` did not take."""
        level = level_text(log_level)
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
        if unit is not None:
            unit.add(line, size + len(level) + LINE_OVERHEAD)
            return
        record = self.records.lone_record(log_line_dict(line), line[2])
        value = encode_record(record, self.record_room)
        self._producer.produce(self.record_topic, value, None, self._plain_headers(None))

    def _set(self, unit: Optional[UnitOfWork], key: str, value: Any) -> None:
        """:meth:`set` in ``unit``."""
        encoded = encoded_field(key, value)
        if unit is None:
            return
        key = str.__str__(key)  # as checked: a subclass's own methods are not trusted
        if not unit.set_field(key, encoded, len(_orjson_dumps(encoded))):
            logger.warning(
                "relayer: field %r is not recorded: the record's custom fields are full",
                key,
            )

    def _plain_headers(self, unit: Optional[UnitOfWork]) -> Optional[Headers]:
        """The headers of a record or a raw message (``None`` without headers)."""
        return plain_headers(unit) if self.kafka_headers else None

    def _topic(self, name: Any) -> str:
        topic = topic_name(self.topic_prefix, name, self.topic_suffix)
        if len(self._topics) < _TOPIC_CACHE_SIZE:
            self._topics[name] = topic
        return topic
