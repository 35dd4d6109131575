"""relayer: emit business events to Kafka and relay one aggregated log
record per request or RPC call.

The core here knows no web framework; see :mod:`relayer.flask`,
:mod:`relayer.rpc`, :mod:`relayer.wsgi` and, for users' own tests,
:mod:`relayer.test`.
"""

from ._producer import DEFAULT_PRODUCER_CONFIG
from ._redact import DEFAULT_REDACT_KEYS
from ._relayer import Relayer, ScopedRelayer
from .exceptions import (
    ConfigurationError,
    InvalidLogMessageError,
    InvalidPartitionKeyError,
    InvalidTopicError,
    MessageTooLargeError,
    NonJSONSerializableMessageError,
    OutsideUnitOfWorkError,
    RelayerError,
    UnsupportedPartitionKeyTypeError,
)

__version__ = "2.0.0"

__all__ = [
    "DEFAULT_PRODUCER_CONFIG",
    "DEFAULT_REDACT_KEYS",
    "ConfigurationError",
    "InvalidLogMessageError",
    "InvalidPartitionKeyError",
    "InvalidTopicError",
    "MessageTooLargeError",
    "NonJSONSerializableMessageError",
    "OutsideUnitOfWorkError",
    "Relayer",
    "RelayerError",
    "ScopedRelayer",
    "UnsupportedPartitionKeyTypeError",
    "__version__",
]
