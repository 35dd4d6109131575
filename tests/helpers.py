"""Helpers shared by the unit tests: settings, record fields, a Flask app, and
hostile values that user code can pass.

Test modules import from here, never from each other (nor from conftest.py).
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any, Mapping, Optional

from flask import Flask, Response, stream_with_context

from relayer.flask import FlaskRelayer

#: librdkafka settings for an in-process mock cluster (unit tests only; the
#: real-broker tests live in tests/integration/).
MOCK_CLUSTER: Mapping[str, Any] = MappingProxyType({"test.mock.num.brokers": 1})

#: A generated request id.
HEX32 = re.compile("[0-9a-f]{32}")

#: The fields of a request's record, in their order (Flask, WSGI and ASGI alike).
#: A list, to compare with ``list(record)``; never change it.
RECORD_FIELDS = [
    "source", "logging_topic", "date", "user_agent", "method", "path", "query_string",
    "remote_addr", "x_forwarded_for", "request_id", "status", "content_length",
    "request_time", "sender", "sample_rate", "lines",
]  # fmt: skip


def configure_django() -> None:
    """Configure Django once per process (the integration tests share it).

    Whoever serves requests sets its own ``ROOT_URLCONF`` with
    ``django.test.override_settings``.
    """
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            SECRET_KEY="tests-only",
            ALLOWED_HOSTS=["*"],
            ROOT_URLCONF=__name__,
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
            DATABASES={},
            LOGGING_CONFIG=None,
            USE_TZ=True,
        )
        django.setup()


def create_flask_app(relayer: Optional[FlaskRelayer] = None, **config: Any) -> Flask:
    """The README's Flask app: ``relayer`` (a ``FlaskRelayer()``, as in its
    extensions.py; a new one if not given) initialised on a new app with ``config``.
    """
    relayer = FlaskRelayer() if relayer is None else relayer
    app = Flask(__name__)
    app.config.update(config)
    relayer.init_app(app, "logging_topic", kafka_hosts="kafka:9092")

    @app.get("/")
    def get_root() -> str:
        relayer.log("info", "Getting root")
        return "root"

    @app.post("/")
    def create_root() -> Any:
        relayer.emit("entity_created", "root", {"id": 10}, partition_key="10")
        return "", 201

    @app.get("/fail")
    def fail() -> str:
        relayer.log("error", "about to fail")
        raise ValueError("boom")

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Any:
            for i in range(3):
                relayer.log("info", f"chunk {i}")
                yield f"{i}\n"

        return Response(chunks(), mimetype="text/plain")

    @app.get("/stream-with-context")
    def stream_ctx() -> Response:
        def chunks() -> Any:
            relayer.log("info", "inside")
            yield "x"

        return Response(stream_with_context(chunks()))

    @app.route("/empty", methods=["GET", "HEAD"])
    def empty() -> Any:
        return "", 204

    return app


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


class WatchedClient:
    """A producer's client that calls ``before()`` each time it is handed a message."""

    def __init__(self, client: Any, before: Any) -> None:
        self._client = client
        self._before = before

    def produce(self, *args: Any) -> None:
        self._before()
        self._client.produce(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __len__(self) -> int:
        return len(self._client)
