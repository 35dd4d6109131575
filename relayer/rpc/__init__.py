"""The RPC decorator: one record per call of a decorated function or method.

.. code-block:: python

    rpc_relayer = make_rpc_relayer("logging_topic", kafka_hosts="kafka:9092")

    class RPCHandler:
        @rpc_relayer
        def service_method(self, some_argument, relayer=None):
            relayer.emit("entity_created", "root", {"id": 10})

Each call gets its own scope (per thread, per asyncio task) and is handed a
:class:`~relayer.ScopedRelayer` as ``relayer=``; all calls share one
thread-safe producer.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, TypeVar, Union, cast

from .._encoding import error_text
from .._ids import incoming_request_id
from .._relayer import Relayer, ScopedRelayer
from .._scope import current_scope, enter, leave

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


@contextlib.contextmanager
def _unit_of_work(instance: Relayer, service: str, kwargs: Dict[str, Any]) -> Iterator[None]:
    """Make one call a unit of work: inject ``relayer=``, write the record in ``finally``.

    The request id is the caller's ``relayer_request_id=`` keyword (taken out
    of the call), else that of the unit of work the call is made in, else a
    fresh one.
    """
    request_id = kwargs.pop("relayer_request_id", None)
    if not request_id:
        outer = current_scope()
        request_id = outer.request_id if outer is not None else ""
    scope = instance.open_scope(incoming_request_id(request_id))
    kwargs["relayer"] = ScopedRelayer(instance, scope)
    token = enter(scope)
    error: Optional[BaseException] = None
    try:
        yield
    except BaseException as exc:
        error = exc
        raise
    finally:
        leave(token)
        fields: Dict[str, Any] = {"service": service, "service_time": scope.elapsed_ms()}
        if error is not None:
            fields["error"] = error_text(error)
        instance.write_record(scope, fields, failed=error is not None)


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
