"""Helpers shared by the unit tests: hostile values that user code can pass."""

from __future__ import annotations

import re


class Str(str):
    """A ``str`` subclass with nothing overridden."""


class RaisingStr(str):
    """A ``str`` subclass whose ``str()`` and ``repr()`` raise."""

    def __str__(self) -> str:
        raise ValueError("RaisingStr.__str__")

    def __repr__(self) -> str:
        raise ValueError("RaisingStr.__repr__")


class Unprintable:
    """An object whose ``str()`` and ``repr()`` raise."""

    def __str__(self) -> str:
        raise ValueError("Unprintable.__str__")

    def __repr__(self) -> str:
        raise ValueError("Unprintable.__repr__")


class UnprintableError(Exception):
    """An exception whose message cannot be rendered: its ``str()`` raises."""

    def __str__(self) -> str:
        raise ValueError("UnprintableError.__str__")


#: A request id relayer made: 32 lowercase hex digits.
HEX32 = re.compile("[0-9a-f]{32}")
