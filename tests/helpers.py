"""Helpers shared by the unit tests: hostile values that user code can pass."""

from __future__ import annotations


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
