"""relayer: emit business events to Kafka and relay one aggregated log
record per request or RPC call.

The core here knows no web framework; see :mod:`relayer.flask`,
:mod:`relayer.rpc`, :mod:`relayer.wsgi` and, for users' own tests,
:mod:`relayer.test`.
"""

from ._logging import RelayerLogHandler, capture_logging
from ._producer import DEFAULT_PRODUCER_CONFIG
from ._redact import DEFAULT_REDACT_KEYS
from ._relayer import SCHEMA_VERSION, Relayer, ScopedRelayer
from ._scope import current_scope as _current_scope
from .exceptions import (
    ConfigurationError,
    InvalidFieldError,
    InvalidLogMessageError,
    InvalidPartitionKeyError,
    InvalidTopicError,
    MessageTooLargeError,
    NonJSONSerializableMessageError,
    OutsideUnitOfWorkError,
    RelayerError,
    UnsupportedPartitionKeyTypeError,
)

__version__ = "3.0.0.dev0"


def current() -> ScopedRelayer:
    """The relayer of the current unit of work (request or RPC call).

    Code deep in a call stack, or a view behind a middleware, can emit, log,
    ``set`` and ``timer`` without being handed a relayer.

    :raises OutsideUnitOfWorkError: no unit of work is running here.
    """
    scope = _current_scope()
    if scope is None:
        raise OutsideUnitOfWorkError(
            "relayer.current() was called outside a unit of work: call it during a "
            "request (behind FlaskRelayer or a relayer middleware) or an RPC call"
        )
    return ScopedRelayer(scope.relayer, scope)


__all__ = [
    "DEFAULT_PRODUCER_CONFIG",
    "DEFAULT_REDACT_KEYS",
    "SCHEMA_VERSION",
    "ConfigurationError",
    "InvalidLogMessageError",
    "InvalidPartitionKeyError",
    "InvalidFieldError",
    "InvalidTopicError",
    "MessageTooLargeError",
    "NonJSONSerializableMessageError",
    "OutsideUnitOfWorkError",
    "Relayer",
    "RelayerError",
    "RelayerLogHandler",
    "ScopedRelayer",
    "UnsupportedPartitionKeyTypeError",
    "__version__",
    "capture_logging",
    "current",
]
