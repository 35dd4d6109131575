"""Keeping secrets out of records, logs and ``repr()``.

Two kinds of secrets pass through relayer:

- librdkafka settings (``sasl.password``, ``ssl.key.password``…): masked
  wherever relayer shows its configuration (:func:`redacted_config`);
- values in what a service records: query-string parameters and keys of
  logged dicts whose names look secret (:class:`Redactor`).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Tuple
from urllib.parse import unquote_plus

MASK = "***"

#: Names that look secret, matched case-insensitively as substrings of a
#: query-string parameter name or a logged dict key (``user_password``,
#: ``X-Api-Key`` and ``refresh_token`` all match).
DEFAULT_REDACT_KEYS: Tuple[str, ...] = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "authorization",
    "cookie",
)

#: Parts of librdkafka setting names whose values are secret.
_SECRET_SETTINGS = (
    "password",
    "passphrase",
    "secret",
    "private",
    "jaas",
    ".pem",
    "oauthbearer.config",
    "token",
)

_CACHE_SIZE = 1024


def redacted_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """A copy of librdkafka settings with secret values masked, for logs and ``repr``."""
    return {
        key: MASK if any(part in key.lower() for part in _SECRET_SETTINGS) else value
        for key, value in config.items()
    }


class Redactor:
    """Masks the values of secret-looking names in query strings and log dicts.

    :param keys: substrings that make a name secret (case-insensitive); an
        empty iterable turns redaction off.
    """

    __slots__ = ("_cache", "keys")

    def __init__(self, keys: Iterable[str] = DEFAULT_REDACT_KEYS) -> None:
        if isinstance(keys, str):
            keys = (keys,)
        self.keys = tuple(key.lower() for key in keys if key)
        self._cache: Dict[str, bool] = {}

    def is_secret(self, name: str) -> bool:
        """Whether values under ``name`` are masked."""
        try:
            return self._cache[name]
        except KeyError:
            lowered = name.lower()
            secret = any(key in lowered for key in self.keys)
            if len(self._cache) < _CACHE_SIZE:
                self._cache[name] = secret
            return secret

    def query_string(self, query: str) -> str:
        """``query`` with the values of secret-looking parameters masked."""
        if not query or not self.keys:
            return query
        parts = query.split("&")
        changed = False
        for i, part in enumerate(parts):
            name, sep, value = part.partition("=")
            if sep and value and self.is_secret(unquote_plus(name)):
                parts[i] = f"{name}={MASK}"
                changed = True
        return "&".join(parts) if changed else query

    def payload(self, value: Any) -> Any:
        """A copy of ``value`` whose dicts, at any depth, have secret keys masked.

        Containers without anything to mask are returned as they are.
        """
        if not self.keys:
            return value
        if isinstance(value, Mapping):
            masked = {
                key: MASK if isinstance(key, str) and self.is_secret(key) else self.payload(item)
                for key, item in value.items()
            }
            if all(masked[key] is item for key, item in value.items()):
                return value
            return masked
        if isinstance(value, (list, tuple)):
            items = [self.payload(item) for item in value]
            if all(new is old for new, old in zip(items, value)):
                return value
            return items
        return value
