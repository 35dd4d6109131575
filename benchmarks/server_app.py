"""The apps section 7 serves with gunicorn (``benchmarks/server.py``): the
same ones as section 4 (:func:`benchmarks.contenders.bare_app`,
:func:`benchmarks.contenders.relayer_app` and
:func:`benchmarks.contenders.lower_bound_app`)::

    gunicorn --preload -w 2 -k sync 'benchmarks.server_app:bare()'
    gunicorn --preload -w 2 -k sync 'benchmarks.server_app:relayed()'
    gunicorn --preload -w 2 -k sync 'benchmarks.server_app:relayed(linger_ms=100)'
    gunicorn --preload -w 2 -k sync 'benchmarks.server_app:relayed(kafka_down=True)'
    gunicorn --preload -w 2 -k sync 'benchmarks.server_app:lower_bound()'

Settings of the relayer app, from the environment:

- ``BENCH_SERVER_BOOTSTRAP``: Kafka's ``host:port``
- ``BENCH_SERVER_EVENTS_TOPIC``: the events' topic
- ``BENCH_SERVER_RECORDS_TOPIC``: the records' topic
- ``BENCH_SERVER_LOWER_EVENTS_TOPIC``, ``BENCH_SERVER_LOWER_RECORDS_TOPIC``:
  those of the lower bound
- ``BENCH_SERVER_STATS_DIR``: a folder; at exit, every process (the master
  and each worker) writes ``<pid>.json`` there: ``{"pid", "stats"}``, its
  ``relayer.stats()`` once its producer is closed.

The exit hook is registered before relayer is imported: ``atexit`` runs
hooks last-registered first, so relayer's own exit hook (which flushes and
closes every producer) runs first and the counts written are final. Should
relayer have been imported earlier, the hook closes the producer itself (as
relayer's hook would: ``close()`` with the default ``shutdown_timeout``).
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

_STATE: Dict[str, Any] = {}


def _write_stats() -> None:
    instance: Optional[Any] = _STATE.get("instance")
    folder = os.environ.get("BENCH_SERVER_STATS_DIR")
    if instance is None or not folder:
        return
    instance.close()  # a no-op when relayer's own exit hook ran first
    text = json.dumps({"pid": os.getpid(), "stats": instance.stats()}) + "\n"
    path = Path(folder) / f"{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # whole or absent: the reader never sees half a file


atexit.register(_write_stats)  # before relayer's own hook: see the docstring

from flask import Flask  # noqa: E402

from .contenders import RawProducer, bare_app, lower_bound_app, relayer_app  # noqa: E402


def bare() -> Flask:
    """Bare Flask: the view returns ``""``."""
    return bare_app()


#: An address that refuses connections: nothing listens on port 1 here.
UNREACHABLE = "127.0.0.1:1"


def relayed(linger_ms: Optional[int] = None, kafka_down: bool = False) -> Flask:
    """``FlaskRelayer``; the view does one emit and one log (each request: an event, a
    record); ``linger_ms``: librdkafka's ``linger.ms`` instead of relayer's default;
    ``kafka_down``: produce to :data:`UNREACHABLE` (nothing is shipped; at exit the
    messages are given up after half a second, counted as failed).
    """
    env = os.environ
    opts: Dict[str, Any] = {}
    if linger_ms is not None:
        opts["producer_opts"] = {"linger.ms": linger_ms}
    if kafka_down:
        opts["shutdown_timeout"] = 0.5
    app, instance = relayer_app(
        UNREACHABLE if kafka_down else env["BENCH_SERVER_BOOTSTRAP"],
        env["BENCH_SERVER_RECORDS_TOPIC"],
        env["BENCH_SERVER_EVENTS_TOPIC"],
        **opts,
    )
    _STATE["instance"] = instance
    return app


def lower_bound() -> Any:
    """The hand-written lower bound of section 4, as a WSGI app that builds it, with
    its own confluent-kafka producer, in each worker at its first request (a
    producer made before gunicorn forks would not deliver in the workers); each
    worker flushes it at exit.
    """
    env = os.environ
    built: Dict[int, Flask] = {}

    def app(environ: Any, start_response: Any) -> Any:
        flask_app = built.get(os.getpid())
        if flask_app is None:
            raw = RawProducer(env["BENCH_SERVER_BOOTSTRAP"])
            atexit.register(raw.close)
            flask_app = built[os.getpid()] = lower_bound_app(
                raw,
                env["BENCH_SERVER_LOWER_RECORDS_TOPIC"],
                env["BENCH_SERVER_LOWER_EVENTS_TOPIC"],
            )
        return flask_app(environ, start_response)

    return app
