"""Every error relayer raises on purpose.

All of them derive from :class:`RelayerError`, so a caller can catch the lot
with one ``except``. Each one is raised *before* anything is produced: a call
that raises has sent nothing, and everything accepted before it is kept.
Where an error wraps one from orjson or confluent-kafka, the original is
chained as ``__cause__``.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "InvalidFieldError",
    "InvalidLogMessageError",
    "InvalidPartitionKeyError",
    "InvalidTopicError",
    "MessageTooLargeError",
    "NonJSONSerializableMessageError",
    "OutsideUnitOfWorkError",
    "RelayerError",
    "UnsupportedPartitionKeyTypeError",
]


class RelayerError(Exception):
    """Base class of every error relayer raises on purpose."""


class ConfigurationError(RelayerError, ValueError):
    """A relayer was built with missing or invalid settings.

    The message names the setting and says what a valid value looks like.
    """


class NonJSONSerializableMessageError(RelayerError, TypeError):
    """A payload or log message cannot be encoded as JSON.

    The orjson error that refused it is kept as ``__cause__``. Nothing was
    produced.
    """


class InvalidPartitionKeyError(RelayerError, ValueError):
    """A partition key cannot be turned into message-key bytes."""


class UnsupportedPartitionKeyTypeError(InvalidPartitionKeyError, TypeError):
    """A partition key is not a ``str``, ``bytes``, ``uuid.UUID`` or ``None``."""


class InvalidTopicError(RelayerError, ValueError):
    """A topic name, after prefix and suffix, is one Kafka would reject.

    Kafka accepts 1 to 249 characters from ``[a-zA-Z0-9._-]``, and neither
    ``.`` nor ``..`` alone.
    """


class MessageTooLargeError(RelayerError, ValueError):
    """A message is larger than the producer's ``message.max.bytes``.

    The message says how large it was and what the limit is; raise the limit
    with ``producer_opts={"message.max.bytes": ...}`` (and the topic's
    ``max.message.bytes`` on the broker) if such messages are expected.
    """


class InvalidLogMessageError(RelayerError, TypeError):
    """A log level is not a string, or a log message is neither a string nor a dict."""


class InvalidFieldError(RelayerError, ValueError):
    """A custom record field (``set``) or timer has a bad or reserved name."""


class OutsideUnitOfWorkError(RelayerError, RuntimeError):
    """Something that needs a unit of work (request or RPC call) ran outside one."""
