"""relayer: emit business events to Kafka and relay one aggregated log
record per request or RPC call.

The core here knows no web framework; see :mod:`relayer.flask`,
:mod:`relayer.rpc`, :mod:`relayer.wsgi` and, for users' own tests,
:mod:`relayer.testing`.
"""

from ._facades import CallUnit, ScopedRelayer
from ._headers import SCHEMA_VERSION
from ._logging import RelayerLogHandler, capture_logging
from ._redact import DEFAULT_REDACT_KEYS
from ._relayer import Relayer
from ._settings import DEFAULT_PRODUCER_CONFIG, Settings
from ._unit import current_unit as _current_unit
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
    unit = _current_unit()
    if unit is None:
        raise OutsideUnitOfWorkError(
            "relayer.current() was called outside a unit of work: call it during a "
            "request (behind FlaskRelayer or a relayer middleware), an RPC call, or "
            "a relayer.unit_of_work(...) block"
        )
    return ScopedRelayer(unit.relayer, unit)


__all__ = [
    "DEFAULT_PRODUCER_CONFIG",
    "DEFAULT_REDACT_KEYS",
    "SCHEMA_VERSION",
    "CallUnit",
    "ConfigurationError",
    "InvalidFieldError",
    "InvalidLogMessageError",
    "InvalidPartitionKeyError",
    "InvalidTopicError",
    "MessageTooLargeError",
    "NonJSONSerializableMessageError",
    "OutsideUnitOfWorkError",
    "Relayer",
    "RelayerError",
    "RelayerLogHandler",
    "ScopedRelayer",
    "Settings",
    "UnsupportedPartitionKeyTypeError",
    "__version__",
    "capture_logging",
    "current",
]
