"""Capture of the standard library's ``logging`` into the current record.

:class:`RelayerLogHandler` appends each record logged during a unit of work
to its ``lines``: ``{log_level, payload, timestamp, logger}`` plus
``exc_info`` (the formatted traceback) when there is one. Outside a unit of
work it does nothing. Records of relayer's own loggers (``relayer`` and
``relayer.*``) are never captured, so relayer cannot feed on itself.

``capture_logging=True`` (on ``Relayer``, ``FlaskRelayer``/``init_app``,
``make_rpc_relayer`` and the middlewares) installs one handler on the root
logger, once per process. What reaches it follows your logging levels: with
the root logger at ``WARNING`` (Python's default), ``INFO`` lines are not
captured unless you lower it.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Union

from ._encoding import LINE_LIMIT, clip, valid_text
from ._unit import LINE_OVERHEAD, current_unit

__all__ = ["RelayerLogHandler", "capture_logging"]


class RelayerLogHandler(logging.Handler):
    """A ``logging.Handler`` that adds records to the current unit of work."""

    _formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        """Append ``record`` to the current unit of work's lines, if there is one."""
        unit = current_unit()
        if unit is None:
            return
        name = record.name
        if name == "relayer" or name.startswith("relayer."):
            return
        try:
            message = _json_safe(record.getMessage())
            level = _json_safe(record.levelname.lower())
            extra: Dict[str, Any] = {"logger": _json_safe(name)}
            size = len(message) + len(level) + len(name) + LINE_OVERHEAD
            if record.exc_info:
                extra["exc_info"] = _json_safe(self._formatter.formatException(record.exc_info))
                size += len(extra["exc_info"])
            unit.add((level, message, record.created, extra), size)
        except Exception:
            self.handleError(record)


def _json_safe(text: str) -> str:
    """``text``, with what JSON cannot carry (lone surrogates) escaped, and
    clipped to :data:`~relayer._encoding.LINE_LIMIT` characters.
    """
    if not valid_text(text):
        text = text.encode("utf-8", "backslashreplace").decode()
    return clip(text, LINE_LIMIT)


_handler = RelayerLogHandler()


def capture_logging(level: Union[int, str] = logging.NOTSET) -> RelayerLogHandler:
    """Install the capturing handler on the root logger (once per process).

    ``level`` is the handler's own level (e.g. ``"INFO"``); calling again
    with another level changes it. Returns the handler.
    """
    _handler.setLevel(level)
    root = logging.getLogger()
    if _handler not in root.handlers:
        root.addHandler(_handler)
    return _handler
