"""The RPC decorator: one record per call of a decorated function or method.

.. code-block:: python

    rpc_relayer = make_rpc_relayer("logging_topic", kafka_hosts="kafka:9092")

    class RPCHandler:
        @rpc_relayer
        def service_method(self, some_argument, relayer=None):
            relayer.emit("entity_created", "root", {"id": 10})

Each call is a unit of work of its own (per thread, per asyncio task), made
with :meth:`Relayer.unit_of_work <relayer.Relayer.unit_of_work>`, and is
handed its :class:`~relayer.ScopedRelayer` as ``relayer=``; all calls share
one thread-safe producer.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, Iterable, Optional, TypeVar, Union, cast

from .._facades import CallUnit, ScopedRelayer
from .._relayer import Relayer
from .._unit import current_unit

__all__ = ["RPCRelayer", "make_rpc_relayer"]

F = TypeVar("F", bound=Callable[..., Any])


class RPCRelayer:
    """The decorator :func:`make_rpc_relayer` returns.

    ``instance`` is the underlying :class:`~relayer.Relayer`.
    """

    def __init__(self, instance: Relayer) -> None:
        self.instance = instance

    def __call__(self, func: F) -> F:
        """Decorate ``func``: each call is a unit of work and gets ``relayer=``.

        Works for functions, ``async def`` functions, methods (bound or not),
        ``staticmethod``/``classmethod`` objects and callable objects.
        """
        if isinstance(func, (staticmethod, classmethod)):
            return type(func)(self(func.__func__))
        instance = self.instance
        service = getattr(func, "__qualname__", None) or type(func).__qualname__

        if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__):

            @functools.wraps(func)
            async def async_call(*args: Any, **kwargs: Any) -> Any:
                with _unit_of_work(instance, service, kwargs):
                    return await func(*args, **kwargs)

            return cast(F, async_call)

        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            with _unit_of_work(instance, service, kwargs):
                return func(*args, **kwargs)

        return cast(F, call)

    def flush(self, timeout: float = 10.0) -> int:
        """:meth:`relayer.Relayer.flush`."""
        return self.instance.flush(timeout)

    def close(self, timeout: Optional[float] = None) -> int:
        """:meth:`relayer.Relayer.close`."""
        return self.instance.close(timeout)

    def stats(self) -> Dict[str, int]:
        """:meth:`relayer.Relayer.stats`."""
        return self.instance.stats()

    def __repr__(self) -> str:
        return f"<RPCRelayer {self.instance!r}>"


def _unit_of_work(instance: Relayer, service: str, kwargs: Dict[str, Any]) -> CallUnit:
    """The unit of work of one call (:meth:`Relayer.unit_of_work`), and its
    relayer injected as ``relayer=`` on entry.

    The request id is the caller's ``relayer_request_id=`` keyword (taken out
    of the call), else that of the unit of work the call is made in, else a
    fresh one.
    """
    request_id = kwargs.pop("relayer_request_id", None)
    if not request_id:
        outer = current_unit()
        request_id = outer.request_id if outer is not None else None
    return _InjectingUnit(instance, service, request_id, kwargs)


class _InjectingUnit(CallUnit):
    """A :class:`CallUnit` that hands its relayer to the call as ``relayer=``."""

    def __init__(
        self, instance: Relayer, service: str, request_id: Optional[str], kwargs: Dict[str, Any]
    ) -> None:
        super().__init__(instance, service, request_id)
        self._kwargs = kwargs

    def __enter__(self) -> ScopedRelayer:
        scoped = super().__enter__()
        self._kwargs["relayer"] = scoped
        return scoped


def make_rpc_relayer(
    logging_topic: str,
    kafka_hosts: Union[str, Iterable[str], None] = None,
    **kwargs: Any,
) -> RPCRelayer:
    """Build a :class:`~relayer.Relayer` and return a decorator that uses it.

    ``kwargs`` are any other :class:`~relayer.Relayer` keywords
    (``topic_prefix``, ``topic_suffix``, ``source``, ``producer_opts``…).
    """
    return RPCRelayer(Relayer(logging_topic, kafka_hosts, **kwargs))
