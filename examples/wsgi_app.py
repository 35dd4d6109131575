"""A Flask app for a pre-forking server, e.g.
``gunicorn --preload -w 2 -b 127.0.0.1:8000 examples.wsgi_app:app``.

With ``--preload`` the relayer is built here, at import, in gunicorn's master process. Each
worker builds its own producer the first time it produces, and delivers what is left when it
exits (SIGTERM to the master stops the workers gracefully; relayer's exit hook flushes).

``GET /hit?id=<id>`` logs a line and emits an event ``{"id": id, "pid": <worker pid>}``;
``&sleep=<seconds>`` (at most 1) keeps the worker busy that long. Settings, from the
environment:

- ``RELAYER_DEMO_BOOTSTRAP``: Kafka's ``host:port`` (default ``localhost:9092``)
- ``RELAYER_DEMO_EVENTS_TOPIC``: the events' topic (default ``wsgi_events``)
- ``RELAYER_DEMO_LOGS_TOPIC``: the records' topic (default ``wsgi_logs``)
- ``RELAYER_DEMO_SHUTDOWN_TIMEOUT``: seconds a worker's exit waits for delivery (default 5)
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, Dict

from flask import Flask, request

from relayer.flask import FlaskRelayer

BOOTSTRAP = os.environ.get("RELAYER_DEMO_BOOTSTRAP", "localhost:9092")
EVENTS_TOPIC = os.environ.get("RELAYER_DEMO_EVENTS_TOPIC", "wsgi_events")
LOGS_TOPIC = os.environ.get("RELAYER_DEMO_LOGS_TOPIC", "wsgi_logs")
SHUTDOWN_TIMEOUT = float(os.environ.get("RELAYER_DEMO_SHUTDOWN_TIMEOUT", "5"))

app = Flask("wsgi_app")
relayer = FlaskRelayer(app, LOGS_TOPIC, kafka_hosts=BOOTSTRAP, shutdown_timeout=SHUTDOWN_TIMEOUT)


@app.get("/hit")
def hit() -> Dict[str, Any]:
    hit_id = request.args.get("id") or uuid.uuid4().hex
    relayer.log("info", f"hit {hit_id}")
    relayer.emit(EVENTS_TOPIC, "hit", {"id": hit_id, "pid": os.getpid()}, partition_key=hit_id)
    delay = min(float(request.args.get("sleep", 0)), 1.0)
    if delay > 0:
        time.sleep(delay)
    return {"id": hit_id, "pid": os.getpid()}
