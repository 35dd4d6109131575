"""The Flask extension: one record per request, ``emit``/``log`` from any view.

.. code-block:: python

    relayer = FlaskRelayer()                      # extensions.py
    relayer.init_app(app, "logging_topic", kafka_hosts="kafka:9092")

    @app.post("/")
    def create():
        relayer.emit("entity_created", "root", {"id": 10})

``init_app`` wraps ``app.wsgi_app`` in :class:`relayer.wsgi.WSGIMiddleware`
and keeps the app's :class:`~relayer.Relayer` in ``app.extensions["relayer"]``;
the extension object remembers its apps only weakly (an app can be garbage
collected), so one object serves any number of apps (the application-factory
pattern). Outside a request and outside an app context it acts on the
relayer of its one live app, as the original did (``relayer.flush()`` at
shutdown, ``emit`` from a script); with several, use ``app.app_context()``.

Settings not passed to ``init_app`` are read once from ``app.config``: each
setting of :class:`relayer.Settings` under ``RELAYER_`` + its name upper-cased
(``RELAYER_LOGGING_TOPIC``, ``RELAYER_TOPIC_PREFIX``, ``RELAYER_SAMPLE_RATE``…),
and the original README's ``KAFKA_HOSTS`` before ``RELAYER_KAFKA_HOSTS``.
"""

from __future__ import annotations

import weakref
from typing import Any, Iterable, Optional, Tuple, Union

from flask import Flask, current_app, has_app_context

from .._facades import RelayerFacade
from .._record import encoded_field
from .._relayer import LogMessage, Relayer
from .._settings import flask_key, names_of_settings
from .._unit import Timer, UnitOfWork, current_unit, fast_log
from ..exceptions import ConfigurationError, OutsideUnitOfWorkError
from ..wsgi import WSGIMiddleware

__all__ = ["FlaskRelayer"]

EXTENSION_KEY = "relayer"


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
        if kafka_hosts is None:
            kafka_hosts = config.get("KAFKA_HOSTS")  # the original README's key
        given = {"logging_topic": logging_topic, "kafka_hosts": kafka_hosts, **kwargs}
        for name in names_of_settings():
            if given.get(name) is None and flask_key(name) in config:
                given[name] = config[flask_key(name)]
        logging_topic = given.pop("logging_topic")
        if logging_topic is None:
            raise ConfigurationError(
                "logging_topic is required: init_app(app, 'logging_topic', ...) "
                "or app.config['RELAYER_LOGGING_TOPIC']"
            )

        relayer = Relayer(logging_topic, **given)
        app.wsgi_app = WSGIMiddleware(app.wsgi_app, relayer=relayer)  # type: ignore[method-assign]
        app.extensions[EXTENSION_KEY] = relayer
        self._apps.add(app)

    def set(self, key: str, value: Any) -> None:
        """:meth:`relayer.Relayer.set` (outside a request: checked, then nothing)."""
        unit = current_unit()
        if unit is None:
            encoded_field(key, value)  # raises as Relayer.set does
        else:
            unit.relayer._set(unit, key, value)

    def timer(self, name: str) -> Timer:
        """:meth:`relayer.Relayer.timer` (outside a request it measures nothing)."""
        return Timer(name, current_unit)

    def log(self, log_level: str, message: LogMessage) -> None:
        """:meth:`relayer.Relayer.log` on the current app's relayer."""
        unit = current_unit()
        if unit is None:
            self._app_relayer()._log(None, log_level, message)
        elif not fast_log(unit, log_level, message):
            unit.relayer._log(unit, log_level, message)

    def _bound(self) -> Tuple[Relayer, Optional[UnitOfWork]]:
        unit = current_unit()
        return (unit.relayer if unit is not None else self._app_relayer()), unit

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
