"""A relayer's settings: one frozen :class:`Settings`, checked before
anything is built.

:class:`Settings` is the one list of settings: :class:`~relayer.Relayer`
takes its fields as keywords, :mod:`relayer.flask` reads ``RELAYER_`` + the
upper-cased name of each from ``app.config``, and the README's configuration
table is tested against it. Below it, one check function per kind of value:
each returns the value to use and raises :class:`~relayer.ConfigurationError`
with a message that names the setting, shows the bad value and says what a
valid one looks like.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import confluent_kafka

from ._redact import DEFAULT_REDACT_KEYS
from .exceptions import ConfigurationError

#: librdkafka's integer settings and timeouts are C ``int``\ s.
INT_MAX = 2**31 - 1

#: The longest wait librdkafka can be asked for, in seconds: its timeouts are
#: an ``int`` of milliseconds (about 24.8 days).
LONGEST_WAIT = INT_MAX // 1000

#: RFC 7230 ``token``: what an HTTP header name is made of.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

#: An integer as librdkafka reads it (``strtol`` with base 0) and as Python
#: does alike: no leading zero (octal), no ``_``, no fraction.
_DECIMAL = re.compile(r"\s*\+?(0|[1-9][0-9]*)\s*")

#: The librdkafka settings that bound the buffer, and what 0 would mean.
_BOUNDS = {
    "queue.buffering.max.messages": "no limit on the number of buffered messages",
    "queue.buffering.max.kbytes": "",  # librdkafka refuses 0 itself
    "message.timeout.ms": "retry forever: a message that cannot be delivered never fails",
    "delivery.timeout.ms": "retry forever: a message that cannot be delivered never fails",
}

_T = TypeVar("_T")

#: librdkafka settings relayer uses unless ``producer_opts`` overrides them.
DEFAULT_PRODUCER_CONFIG: Mapping[str, Any] = MappingProxyType(
    {
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
)

DeliveryErrorCallback = Callable[[Any, str, Optional[bytes]], None]
"""``on_delivery_error(error, topic, key)``: error is a ``confluent_kafka.KafkaError``."""


def _doc(text: str) -> Any:
    return {"doc": text}


@dataclass(frozen=True)
class Settings:
    """Every setting of a relayer, checked and normalised when it is made.

    Build it with :meth:`from_kwargs` (what :class:`~relayer.Relayer` does);
    each field's ``metadata["doc"]`` says what it means (the README's
    configuration table says the same, and a test keeps them in step).

    :raises ConfigurationError: a setting is missing or invalid.
    """

    logging_topic: str = field(
        metadata=_doc("topic of the aggregated records (prefix and suffix apply to it too)")
    )
    kafka_hosts: Union[str, Sequence[str], None] = field(
        default=None,
        metadata=_doc(
            '`"host:port"`, `"h1:9092,h2:9092"` or a list. Required, unless `producer_opts` '
            "has `bootstrap.servers`."
        ),
    )
    topic_prefix: str = field(default="", metadata=_doc("added before every topic name"))
    topic_suffix: str = field(default="", metadata=_doc("added after every topic name"))
    source: Optional[str] = field(
        default=None,
        metadata=_doc("the `source` field (default `prefix + logging_topic + suffix`)"),
    )
    producer_opts: Mapping[str, Any] = field(
        default_factory=dict,
        metadata=_doc("librdkafka settings, over relayer's defaults (`DEFAULT_PRODUCER_CONFIG`)"),
    )
    shutdown_timeout: float = field(
        default=5.0,
        metadata=_doc("seconds `close()` and interpreter exit wait for pending messages"),
    )
    on_delivery_error: Optional[DeliveryErrorCallback] = field(
        default=None,
        metadata=_doc("`callback(error, topic, key)` for each message Kafka could not take"),
    )
    buffer_max_messages: int = field(
        default=DEFAULT_PRODUCER_CONFIG["queue.buffering.max.messages"],
        metadata=_doc("how many messages may wait for delivery"),
    )
    buffer_max_kbytes: int = field(
        default=DEFAULT_PRODUCER_CONFIG["queue.buffering.max.kbytes"],
        metadata=_doc("how many kilobytes may wait for delivery"),
    )
    when_full: str = field(
        default="drop",
        metadata=_doc('`"drop"` a message that does not fit, or `"block"` for `block_timeout`'),
    )
    block_timeout: float = field(
        default=0.5, metadata=_doc('seconds `when_full="block"` waits for room')
    )
    redact_keys: Tuple[str, ...] = field(
        default=DEFAULT_REDACT_KEYS,
        metadata=_doc("names whose values are masked in records (`()`: none)"),
    )
    capture_logging: Union[bool, int, str] = field(
        default=False,
        metadata=_doc("`True` or a level: add what `logging` logs during a unit of work"),
    )
    request_id_header: str = field(
        default="X-Request-ID",
        metadata=_doc("the header a request id is read from and echoed in"),
    )
    sample_rate: float = field(
        default=1.0, metadata=_doc("the share of records written (failed and slow: all)")
    )
    slow_threshold_ms: Optional[float] = field(
        default=None, metadata=_doc("units of work at least this slow are always recorded")
    )
    service_name: Optional[str] = field(default=None, metadata=_doc("in each record's `sender`"))
    service_version: Optional[str] = field(default=None, metadata=_doc("in each record's `sender`"))
    kafka_headers: bool = field(
        default=False, metadata=_doc("whether every message carries the Kafka headers")
    )
    event_delivery: str = field(
        default="immediate",
        metadata=_doc(
            '`"immediate"`: events go at once; `"on_success"`: those of a unit of work go when '
            "it ends successfully, and not if it failed"
        ),
    )

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> Settings:
        """Settings from keywords named as the fields.

        :raises ConfigurationError: an unknown name, or a bad value.
        """
        unknown = sorted(set(kwargs) - set(names_of_settings()))
        if unknown:
            raise ConfigurationError(
                f"unknown setting(s) {', '.join(map(repr, unknown))}; the settings are: "
                + ", ".join(names_of_settings())
            )
        return cls(**kwargs)

    def __post_init__(self) -> None:
        # Every setting is checked here, before anything is built: a refused
        # relayer leaves nothing behind (no producer to flush at exit, no
        # logging handler).
        if not isinstance(self.logging_topic, str) or not self.logging_topic:
            raise ConfigurationError(
                f"logging_topic must be a non-empty string, not {self.logging_topic!r}"
            )
        if not isinstance(self.topic_prefix, str) or not isinstance(self.topic_suffix, str):
            raise ConfigurationError("topic_prefix and topic_suffix must be strings")
        checked: Dict[str, Any] = {
            "source": optional_text("source", self.source),
            "producer_opts": MappingProxyType(options("producer_opts", self.producer_opts)),
            "shutdown_timeout": seconds("shutdown_timeout", self.shutdown_timeout),
            "on_delivery_error": callback("on_delivery_error", self.on_delivery_error),
            "buffer_max_messages": positive_int("buffer_max_messages", self.buffer_max_messages),
            "buffer_max_kbytes": positive_int("buffer_max_kbytes", self.buffer_max_kbytes),
            "when_full": choice("when_full", self.when_full, ("drop", "block")),
            "block_timeout": seconds("block_timeout", self.block_timeout),
            "redact_keys": names("redact_keys", self.redact_keys),
            "capture_logging": log_level("capture_logging", self.capture_logging),
            "request_id_header": header_name("request_id_header", self.request_id_header),
            "sample_rate": share("sample_rate", self.sample_rate),
            "slow_threshold_ms": optional_milliseconds("slow_threshold_ms", self.slow_threshold_ms),
            "service_name": optional_text("service_name", self.service_name),
            "service_version": optional_text("service_version", self.service_version),
            "kafka_headers": flag("kafka_headers", self.kafka_headers),
            "event_delivery": choice(
                "event_delivery", self.event_delivery, ("immediate", "on_success")
            ),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        buffer_bounds(self.producer_config())  # producer_opts may override buffer_max_*

    def producer_config(self) -> Dict[str, Any]:
        """The librdkafka settings relayer adds to its defaults: the buffer
        bounds, ``producer_opts``, and ``bootstrap.servers``.

        :raises ConfigurationError: no Kafka host is given, or one is malformed.
        """
        config: Dict[str, Any] = {
            "queue.buffering.max.messages": self.buffer_max_messages,
            "queue.buffering.max.kbytes": self.buffer_max_kbytes,
            **self.producer_opts,
        }
        servers = bootstrap_servers("kafka_hosts", self.kafka_hosts)
        if servers:
            config["bootstrap.servers"] = servers
        elif config.get("bootstrap.servers"):
            config["bootstrap.servers"] = bootstrap_servers(
                "producer_opts['bootstrap.servers']", config["bootstrap.servers"]
            )
        else:
            raise ConfigurationError(
                "kafka_hosts is required: pass kafka_hosts='host:port' (or a list "
                "of them), set KAFKA_HOSTS in the Flask config, or put "
                "'bootstrap.servers' in producer_opts"
            )
        return config

    @property
    def full_source(self) -> str:
        """``source``, or by default ``topic_prefix + logging_topic + topic_suffix``."""
        if self.source is not None:
            return self.source
        return self.topic_prefix + self.logging_topic + self.topic_suffix


def names_of_settings() -> List[str]:
    """The names of every setting, in order."""
    return [f.name for f in dataclasses.fields(Settings)]


def flask_key(name: str) -> str:
    """The ``app.config`` key of setting ``name``: ``RELAYER_`` + its name upper-cased."""
    return "RELAYER_" + name.upper()


def seconds(name: str, value: Any) -> float:
    """A duration: an int or float of seconds, finite and ``>= 0`` (not a bool)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            duration = float(value)
        except OverflowError:
            duration = math.inf
        if math.isfinite(duration) and duration >= 0:
            return duration
    raise ConfigurationError(
        f"{name} must be a finite number of seconds >= 0 (such as 5 or 0.5), not {value!r}"
    )


def positive_int(name: str, value: Any) -> int:
    """A count librdkafka takes: an int from 1 to 2**31 - 1 (not a bool)."""
    if type(value) is int and 1 <= value <= INT_MAX:
        return value
    raise ConfigurationError(f"{name} must be an int from 1 to {INT_MAX}, not {value!r}")


def choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """One of the strings ``choices``."""
    if isinstance(value, str) and value in choices:
        return value
    allowed = " or ".join(repr(c) for c in choices)
    raise ConfigurationError(f"{name} must be {allowed}, not {value!r}")


def flag(name: str, value: Any) -> bool:
    """``True`` or ``False``, nothing else (``"no"`` would be true)."""
    if isinstance(value, bool):
        return value
    raise ConfigurationError(f"{name} must be True or False, not {value!r}")


def optional_text(name: str, value: Any) -> Optional[str]:
    """``None``, or a str that is valid Unicode (JSON cannot carry a lone surrogate)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be None or a str, not {value!r}")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ConfigurationError(
            f"{name} must be None or a str of valid Unicode, not {value!r} (it has a "
            "lone surrogate)"
        ) from None
    return value


def header_name(name: str, value: Any) -> str:
    """An HTTP header name: one or more RFC 7230 token characters."""
    if isinstance(value, str) and _TOKEN.fullmatch(value):
        return value
    raise ConfigurationError(
        f"{name} must be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~, "
        f"such as 'X-Request-ID'), not {value!r}"
    )


def share(name: str, value: Any) -> float:
    """A number from 0 to 1 (not a bool)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    raise ConfigurationError(f"{name} must be a number between 0 and 1, not {value!r}")


def optional_milliseconds(name: str, value: Any) -> Optional[float]:
    """``None``, or a finite number of milliseconds ``>= 0`` (not a bool)."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf:
        return float(value)
    raise ConfigurationError(f"{name} must be a finite number >= 0 or None, not {value!r}")


def bootstrap_servers(name: str, value: Any) -> str:
    """``"host:port"``, a comma-separated string or a list of them, as
    librdkafka's ``bootstrap.servers`` (``""`` for ``None``).
    """
    if value is None:
        return ""
    hosts: List[Any]
    if isinstance(value, str):
        hosts = [h.strip() for h in value.split(",")]
    else:
        try:
            hosts = [h.strip() if isinstance(h, str) else h for h in value]
        except TypeError:
            hosts = [value]
    for host in hosts:
        if not isinstance(host, str) or not host.isprintable() or any(c.isspace() for c in host):
            raise ConfigurationError(
                f"{name} must be 'host:port' or a list of them (such as "
                f"['kafka1:9092', 'kafka2:9092']), not {value!r}: {host!r} is not a "
                "host:port"
            )
    if not all(hosts):
        raise ConfigurationError(f"{name} has an empty entry: {value!r}")
    return ",".join(hosts)


def names(name: str, value: Any) -> Tuple[str, ...]:
    """Strings: an iterable of str (read once), or one str."""
    if isinstance(value, str):
        return (value,)
    try:
        items = tuple(value)
    except TypeError:
        items = None
    if items is None or not all(isinstance(item, str) for item in items):
        raise ConfigurationError(
            f"{name} must be a list of str (such as ['password', 'token'], or () for "
            f"none), not {value!r}"
        )
    return items


def options(name: str, value: Any) -> Dict[str, Any]:
    """``None`` or a mapping with str keys (librdkafka settings); a copy."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"{name} must be a dict of librdkafka settings (such as "
            f"{{'linger.ms': 10}}) or None, not {value!r}"
        )
    for key in value:
        if not isinstance(key, str):
            raise ConfigurationError(
                f"{name} keys must be str (librdkafka setting names), not {key!r}"
            )
    return dict(value)


def log_level(name: str, value: Any) -> Union[bool, int, str]:
    """``True``/``False``, a level number ``>= 0``, or a level name ``logging`` knows."""
    if isinstance(value, bool):
        return value
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, str) and isinstance(logging.getLevelName(value), int):
        return value
    raise ConfigurationError(
        f"{name} must be True, False, a logging level (such as logging.INFO) or its "
        f"name (such as 'INFO'), not {value!r}"
    )


def callback(name: str, value: Optional[_T]) -> Optional[_T]:
    """``None`` or something callable."""
    if value is None or callable(value):
        return value
    raise ConfigurationError(f"{name} must be None or a callable, not {value!r}")


def buffer_bounds(config: Mapping[str, Any]) -> None:
    """Refuse librdkafka settings (merged, as librdkafka gets them) that
    unbound the buffer: a zero that means "no limit" or "retry forever".

    ``queue.buffering.max.messages`` 0 means no limit on the message count
    (``.kbytes`` starts at 1). ``message.timeout.ms`` (alias
    ``delivery.timeout.ms``) 0 means an undeliverable message never fails: it
    keeps its place in the buffer for good, is never reported, and once the
    buffer is full of such messages every new one is dropped. librdkafka
    reads values its own way (``"09"`` and ``0.5`` are 0 to it, 2**32 wraps
    to 0), so these settings must be plain whole numbers.
    """
    topic_config = config.get("default.topic.config")
    nested: Mapping[str, Any] = topic_config if isinstance(topic_config, Mapping) else {}
    for where, settings in (("", config), ("default.topic.config ", nested)):
        for key, value in settings.items():
            if not isinstance(key, str):
                continue  # librdkafka refuses it, in the check that follows
            setting = key[len("topic.") :] if key.startswith("topic.") else key
            if setting not in _BOUNDS:
                continue
            number = _librdkafka_int(value)
            if number is None or not 0 <= number <= INT_MAX:
                raise ConfigurationError(
                    f"{where}{key} must be a whole number from 1 to {INT_MAX} (such as "
                    f"100000), not {value!r}"
                )
            if number == 0:
                meaning = _BOUNDS[setting]
                raise ConfigurationError(
                    f"{where}{key} must be at least 1, not {value!r}"
                    + (f" (to librdkafka 0 means {meaning})" if meaning else "")
                    + ": relayer keeps its buffer bounded"
                )


def librdkafka_accepts(config: Mapping[str, Any], log: Any) -> None:
    """Refuse settings librdkafka would refuse, now rather than at the first message.

    A throwaway handle without ``bootstrap.servers`` checks every other
    setting without connecting anywhere (about a millisecond). Its log lines
    (many, with ``debug`` set) go to ``log`` (the real producer's logger, the
    ``relayer.librdkafka`` one), never to stderr: with a ``logger``,
    librdkafka queues them, ``poll`` serves them, and the few it logs while
    it is destroyed are dropped with its queue.
    """
    probe = {
        "logger": log,
        **{k: v for k, v in config.items() if k != "bootstrap.servers"},
        "log_level": 0,
    }
    try:
        handle = confluent_kafka.Producer(probe)
    except (confluent_kafka.KafkaException, TypeError, ValueError) as exc:
        detail = exc.args[0].str() if isinstance(exc, confluent_kafka.KafkaException) else exc
        raise ConfigurationError(f"invalid producer setting: {detail}") from exc
    handle.poll(0)


def _librdkafka_int(value: Any) -> Optional[int]:
    """The integer ``value`` stands for, if it is one beyond doubt."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        match = _DECIMAL.fullmatch(value)
        return int(match.group(1)) if match else None
    return None
