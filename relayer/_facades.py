"""Objects that stand for a :class:`~relayer.Relayer` in a unit of work.

- :class:`ScopedRelayer`: bound to one unit of work, the object
  ``unit_of_work`` yields, the RPC decorator injects and
  :func:`relayer.current` returns;
- :class:`CallUnit`: what :meth:`Relayer.unit_of_work` returns, a context
  manager and a decorator that makes a call, a job or a task a unit of work;
- :class:`RelayerFacade`: what they share with the Flask extension.

Each call goes to the relayer's one path (``emit``/``emit_raw`` with
``unit=``, ``fast_log``/``_log``, ``_set``) with the unit of work it stands for.
"""

from __future__ import annotations

import functools
import inspect
from types import TracebackType
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, TypeVar, cast

from ._encoding import PartitionKey, error_text
from ._ids import incoming_request_id
from ._relayer import LogMessage, Relayer
from ._unit import Timer, UnitOfWork, enter, fast_log, leave

F = TypeVar("F", bound=Callable[..., Any])


class RelayerFacade:
    """``emit``, ``emit_raw``, ``set``, ``timer``, ``flush``, ``stats`` and
    ``instance`` for objects that stand for a :class:`Relayer`: subclasses say
    which relayer and which unit of work a call goes to (and how ``log`` does).
    """

    __slots__ = ()

    def _bound(self) -> Tuple[Relayer, Optional[UnitOfWork]]:
        raise NotImplementedError

    @property
    def instance(self) -> Relayer:
        """The underlying :class:`Relayer`."""
        return self._bound()[0]

    def emit(
        self,
        event_type: str,
        event_subtype: Any,
        payload: Any,
        partition_key: PartitionKey = None,
    ) -> None:
        """:meth:`Relayer.emit` (see there)."""
        relayer, unit = self._bound()
        relayer.emit(event_type, event_subtype, payload, partition_key, unit=unit)

    def emit_raw(self, topic: str, message: Any, partition_key: PartitionKey = None) -> None:
        """:meth:`Relayer.emit_raw` (see there)."""
        relayer, unit = self._bound()
        relayer.emit_raw(topic, message, partition_key, unit=unit)

    def set(self, key: str, value: Any) -> None:
        """:meth:`Relayer.set` (see there)."""
        relayer, unit = self._bound()
        relayer._set(unit, key, value)

    def timer(self, name: str) -> Timer:
        """:meth:`Relayer.timer` (see there)."""
        return Timer(name, lambda: self._bound()[1])

    def flush(self, timeout: float = 10.0) -> int:
        """:meth:`Relayer.flush` (see there)."""
        return self.instance.flush(timeout)

    def stats(self) -> Dict[str, int]:
        """:meth:`Relayer.stats` (see there)."""
        return self.instance.stats()


class ScopedRelayer(RelayerFacade):
    """A relayer bound to one unit of work.

    Its lines go to that unit of work even from threads the unit of work
    starts, where the context variable is not set.
    """

    __slots__ = ("_relayer", "unit")

    def __init__(self, instance: Relayer, unit: UnitOfWork) -> None:
        self._relayer = instance
        #: The unit of work it is bound to.
        self.unit = unit

    def _bound(self) -> Tuple[Relayer, Optional[UnitOfWork]]:
        return self._relayer, self.unit

    @property
    def request_id(self) -> str:
        """The request id of this unit of work."""
        return self.unit.request_id

    def log(self, log_level: str, message: LogMessage) -> None:
        """:meth:`Relayer.log` (see there), in this unit of work."""
        unit = self.unit
        if not fast_log(unit, log_level, message):
            self._relayer._log(unit, log_level, message)

    def __repr__(self) -> str:
        return f"<ScopedRelayer of {self._relayer!r}>"


class CallUnit:
    """A unit of work for a call, a job or a task (:meth:`Relayer.unit_of_work`).

    ``with relayer.unit_of_work("nightly-export") as unit:`` (or ``async
    with``) runs the block as a unit of work and yields its
    :class:`ScopedRelayer`; ``@relayer.unit_of_work("charge")`` makes each call
    of a function (or of an ``async def`` function) one. When it ends, the call
    record is written: ``service``, ``service_time``, and ``error`` when it
    raised; the exception goes on unchanged.

    One object is one unit of work at a time: each ``with`` block should use
    a fresh one (as ``with relayer.unit_of_work(...)`` does); a decorated
    function makes a fresh one per call.
    """

    def __init__(
        self,
        relayer: Relayer,
        name: str,
        request_id: Optional[str] = None,
        traceparent: Optional[str] = None,
    ) -> None:
        self.relayer = relayer
        self.name = name
        self.request_id = request_id
        self.traceparent = traceparent
        self._open: List[Tuple[UnitOfWork, Any]] = []  # (unit, token) of each open block

    # -- as a context manager ----------------------------------------------------

    def __enter__(self) -> ScopedRelayer:
        unit = self.relayer.open_unit(incoming_request_id(self.request_id), self.traceparent)
        self._open.append((unit, enter(unit)))
        return ScopedRelayer(self.relayer, unit)

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        unit, token = self._open.pop()
        leave(token)
        fields: Dict[str, Any] = {"service": self.name, "service_time": unit.elapsed_ms()}
        if exc is not None:
            fields["error"] = error_text(exc)
        self.relayer.write_record(unit, fields, failed=exc is not None)

    async def __aenter__(self) -> ScopedRelayer:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- as a decorator ------------------------------------------------------------

    def _fresh(self) -> CallUnit:
        return CallUnit(self.relayer, self.name, self.request_id, self.traceparent)

    def __call__(self, func: F) -> F:
        """Make each call of ``func`` (sync or ``async def``) a unit of work."""
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_call(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await func(*args, **kwargs)

            return cast(F, async_call)

        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return func(*args, **kwargs)

        return cast(F, call)

    def __repr__(self) -> str:
        return f"<CallUnit {self.name!r} of {self.relayer!r}>"
