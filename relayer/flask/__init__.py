"""The Flask extension: one record per request, ``emit``/``log`` from any view.

.. code-block:: python

    relayer = FlaskRelayer()                      # extensions.py
    relayer.init_app(app, "logging_topic", kafka_hosts="kafka:9092")

    @app.post("/")
    def create():
        relayer.emit("entity_created", "root", {"id": 10})

``init_app`` wraps ``app.wsgi_app`` in :class:`relayer.wsgi.RelayerMiddleware`
and keeps the app's :class:`~relayer.Relayer` in ``app.extensions["relayer"]``;
the extension object remembers its apps only weakly (an app can be garbage
collected), so one object serves any number of apps (the application-factory
pattern). Outside a request and outside an app context it acts on the
relayer of its one live app, as the original did (``relayer.flush()`` at
shutdown, ``emit`` from a script); with several, use ``app.app_context()``.

Settings not passed to ``init_app`` are read once from ``app.config``:
``KAFKA_HOSTS`` (as in the original README) or ``RELAYER_KAFKA_HOSTS``,
``RELAYER_LOGGING_TOPIC``, ``RELAYER_TOPIC_PREFIX``, ``RELAYER_TOPIC_SUFFIX``,
``RELAYER_SOURCE``, ``RELAYER_PRODUCER_OPTS``, ``RELAYER_SHUTDOWN_TIMEOUT``,
``RELAYER_BUFFER_MAX_MESSAGES``, ``RELAYER_BUFFER_MAX_KBYTES``,
``RELAYER_WHEN_FULL``, ``RELAYER_BLOCK_TIMEOUT``, ``RELAYER_REDACT_KEYS``,
``RELAYER_CAPTURE_LOGGING``, ``RELAYER_REQUEST_ID_HEADER``, ``RELAYER_SAMPLE_RATE``,
``RELAYER_SLOW_THRESHOLD_MS``, ``RELAYER_SERVICE_NAME``, ``RELAYER_SERVICE_VERSION``
and ``RELAYER_KAFKA_HEADERS``.
"""

from __future__ import annotations

import weakref
from typing import Any, Iterable, Optional, Tuple, Union

from flask import Flask, current_app, has_app_context

from .._record import encoded_field
from .._relayer import LogMessage, Relayer, RelayerFacade, _fast_log
from .._scope import Scope, Timer, current_scope
from ..exceptions import ConfigurationError, OutsideUnitOfWorkError
from ..wsgi import RelayerMiddleware

__all__ = ["FlaskRelayer"]

EXTENSION_KEY = "relayer"

_CONFIG_KEYS = {
    "topic_prefix": "RELAYER_TOPIC_PREFIX",
    "topic_suffix": "RELAYER_TOPIC_SUFFIX",
    "source": "RELAYER_SOURCE",
    "producer_opts": "RELAYER_PRODUCER_OPTS",
    "shutdown_timeout": "RELAYER_SHUTDOWN_TIMEOUT",
    "buffer_max_messages": "RELAYER_BUFFER_MAX_MESSAGES",
    "buffer_max_kbytes": "RELAYER_BUFFER_MAX_KBYTES",
    "when_full": "RELAYER_WHEN_FULL",
    "block_timeout": "RELAYER_BLOCK_TIMEOUT",
    "redact_keys": "RELAYER_REDACT_KEYS",
    "capture_logging": "RELAYER_CAPTURE_LOGGING",
    "request_id_header": "RELAYER_REQUEST_ID_HEADER",
    "sample_rate": "RELAYER_SAMPLE_RATE",
    "slow_threshold_ms": "RELAYER_SLOW_THRESHOLD_MS",
    "service_name": "RELAYER_SERVICE_NAME",
    "service_version": "RELAYER_SERVICE_VERSION",
    "kafka_headers": "RELAYER_KAFKA_HEADERS",
}


class FlaskRelayer(RelayerFacade):
    """Flask extension that relays events and one record per request to Kafka.

    :param app: initialise it for this app at once (else call :meth:`init_app`).
    :param logging_topic: see :meth:`init_app`.
    :param kafka_hosts: see :meth:`init_app`.
    :param kwargs: any other :class:`~relayer.Relayer` keyword.

    ``emit``, ``emit_raw``, ``log``, ``flush``, ``stats`` and ``instance``
    act on the relayer of the app of the current request (or app context);
    outside both, on that of the one live app it was initialised on.
    ``set`` and ``timer`` act on the current request's record; outside a
    request there is none, and they do nothing.

    :raises OutsideUnitOfWorkError: outside a request and outside an app
        context, when the extension serves no live app or several.
    """

    def __init__(
        self,
        app: Optional[Flask] = None,
        logging_topic: Optional[str] = None,
        kafka_hosts: Union[str, Iterable[str], None] = None,
        **kwargs: Any,
    ) -> None:
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        if app is not None:
            self.init_app(app, logging_topic, kafka_hosts, **kwargs)

    def init_app(
        self,
        app: Flask,
        logging_topic: Optional[str] = None,
        kafka_hosts: Union[str, Iterable[str], None] = None,
        **kwargs: Any,
    ) -> None:
        """Build the app's :class:`~relayer.Relayer` and make each request a unit of work.

        :param logging_topic: topic of the per-request records (default:
            ``app.config["RELAYER_LOGGING_TOPIC"]``).
        :param kafka_hosts: ``"host:port"`` or a list of them (default:
            ``app.config["KAFKA_HOSTS"]``, then ``RELAYER_KAFKA_HOSTS``).
        :raises ConfigurationError: the app was already initialised, or a
            setting is missing or invalid.
        """
        if EXTENSION_KEY in app.extensions:
            raise ConfigurationError(
                f"relayer is already initialised on app {app.name!r}: call "
                "init_app once per app (create the FlaskRelayer in extensions.py "
                "and call init_app from your app factory)"
            )
        config = app.config
        if logging_topic is None:
            logging_topic = config.get("RELAYER_LOGGING_TOPIC")
        if kafka_hosts is None:
            kafka_hosts = config.get("KAFKA_HOSTS") or config.get("RELAYER_KAFKA_HOSTS")
        for argument, key in _CONFIG_KEYS.items():
            if argument not in kwargs and key in config:
                kwargs[argument] = config[key]
        if logging_topic is None:
            raise ConfigurationError(
                "logging_topic is required: init_app(app, 'logging_topic', ...) "
                "or app.config['RELAYER_LOGGING_TOPIC']"
            )

        relayer = Relayer(logging_topic, kafka_hosts, **kwargs)
        app.wsgi_app = RelayerMiddleware(app.wsgi_app, relayer=relayer)  # type: ignore[method-assign]
        app.extensions[EXTENSION_KEY] = relayer
        self._apps.add(app)

    def set(self, key: str, value: Any) -> None:
        """:meth:`relayer.Relayer.set` (outside a request: checked, then nothing)."""
        scope = current_scope()
        if scope is None:
            encoded_field(key, value)  # raises as Relayer.set does
        else:
            scope.relayer._set(scope, key, value)

    def timer(self, name: str) -> Timer:
        """:meth:`relayer.Relayer.timer` (outside a request it measures nothing)."""
        return Timer(name, current_scope)

    def log(self, log_level: str, message: LogMessage) -> None:
        """:meth:`relayer.Relayer.log` on the current app's relayer."""
        scope = current_scope()
        if scope is None:
            self._app_relayer()._log(None, log_level, message)
        elif not _fast_log(scope, log_level, message):
            scope.relayer._log(scope, log_level, message)

    def _bound(self) -> Tuple[Relayer, Optional[Scope]]:
        scope = current_scope()
        return (scope.relayer if scope is not None else self._app_relayer()), scope

    def _app_relayer(self) -> Relayer:
        if has_app_context():
            app: Flask = current_app
        else:
            apps = sorted(self._apps, key=lambda a: a.name)
            outside = "FlaskRelayer was used outside a request and outside an app context"
            if not apps:
                raise OutsideUnitOfWorkError(
                    f"{outside}, and no live app was initialised with it: call "
                    "relayer.init_app(app, ...) first"
                )
            if len(apps) > 1:
                names = ", ".join(repr(a.name) for a in apps)
                raise OutsideUnitOfWorkError(
                    f"{outside}, and it serves {len(apps)} apps ({names}): say which "
                    "with 'with app.app_context():'"
                )
            app = apps[0]
        try:
            return app.extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
        except KeyError:
            raise ConfigurationError(
                f"relayer is not initialised on app {app.name!r}: "
                "call relayer.init_app(app, ...) first"
            ) from None
