"""The two apps section 7 serves with gunicorn (``benchmarks/server.py``):
the same ones as section 4 (:func:`benchmarks.contenders.bare_app` and
:func:`benchmarks.contenders.relayer_app`)::

    gunicorn --preload -w 2 -k sync 'benchmarks.server_app:bare()'
    gunicorn --preload -w 2 -k sync 'benchmarks.server_app:relayed()'
    gunicorn --preload -w 2 -k sync 'benchmarks.server_app:relayed(linger_ms=100)'

Settings of the relayer app, from the environment:

- ``BENCH_SERVER_BOOTSTRAP``: Kafka's ``host:port``
- ``BENCH_SERVER_EVENTS_TOPIC``: the events' topic
- ``BENCH_SERVER_RECORDS_TOPIC``: the records' topic
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

from .contenders import bare_app, relayer_app  # noqa: E402


def bare() -> Flask:
    """Bare Flask: the view returns ``""``."""
    return bare_app()


def relayed(linger_ms: Optional[int] = None) -> Flask:
    """``FlaskRelayer``; the view does one emit and one log (each request: an event, a
    record); ``linger_ms``: librdkafka's ``linger.ms`` instead of relayer's default.
    """
    env = os.environ
    opts = {} if linger_ms is None else {"producer_opts": {"linger.ms": linger_ms}}
    app, instance = relayer_app(
        env["BENCH_SERVER_BOOTSTRAP"],
        env["BENCH_SERVER_RECORDS_TOPIC"],
        env["BENCH_SERVER_EVENTS_TOPIC"],
        **opts,
    )
    _STATE["instance"] = instance
    return app
