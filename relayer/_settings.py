"""Checks of a relayer's settings, made before anything is built.

One function per kind of value. Each returns the value to use and raises
:class:`~relayer.ConfigurationError` with a message that names the setting,
shows the bad value and says what a valid one looks like.
"""

from __future__ import annotations

import logging
import math
import numbers
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, TypeVar, Union

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
