"""The original relayer 1.0.0's side of the benchmarks: a worker that runs
inside its own venv (kafka-python, Flask, ``relayer==1.0.0``), never in the
dev venv.

It is started as ``<venv>/bin/python -I benchmarks/original.py`` (``-I``:
neither the working directory nor this folder is on ``sys.path``, so
``import relayer`` is the original). It reads one JSON command per line on
stdin and answers one JSON line on stdout; timings are taken here, around
the calls only, with ``time.perf_counter_ns``, exactly as in the dev venv:

- ``setup``: build an RPC relayer (its ``instance`` emits and logs as the
  original always did, appending every message to the call's lines) and two
  Flask apps: bare, and with the original ``FlaskRelayer``;
- ``emit`` / ``log``: ``n`` calls inside one unit of work (the original has
  no other kind of emit: its handler always keeps a copy);
- ``flask``: ``n`` requests through the test client (``bare`` or ``relayer``);
- ``flush``: wait until kafka-python has delivered everything;
- ``quit``.

Flask 3 no longer has ``flask._app_ctx_stack``, which the original's Flask
handler imports: :func:`shim_flask` puts back the one thing it uses
(``.top``, the current app context).
"""

from __future__ import annotations

import gc
import itertools
import json
import platform
import sys
import time
import traceback
from importlib.metadata import version
from typing import Any, Callable, Dict

PAYLOAD = {"id": 10, "name": "widget", "price": 9.99, "tags": ["a", "b"]}
KEY = "customer-7"
MESSAGE = "processing order 10"
EXPECTED_VERSION = "1.0.0"


def shim_flask() -> None:
    """Give Flask 3 back the ``_app_ctx_stack`` the original imports."""
    import flask

    if hasattr(flask, "_app_ctx_stack"):
        return
    from flask.globals import _cv_app

    class _AppCtxStack:
        @property
        def top(self) -> Any:
            return _cv_app.get(None)

    flask._app_ctx_stack = _AppCtxStack()  # type: ignore[attr-defined]


class Worker:
    """The original relayer's contenders, driven by the benchmark process."""

    def setup(
        self,
        bootstrap: str,
        emit_topic: str,
        rpc_records: str,
        flask_events: str,
        flask_records: str,
    ) -> Dict[str, Any]:
        shim_flask()
        from flask import Flask

        import relayer
        from relayer.flask import FlaskRelayer
        from relayer.rpc import make_rpc_relayer

        if relayer.__version__ != EXPECTED_VERSION:
            raise RuntimeError(f"expected relayer {EXPECTED_VERSION}, got {relayer.__version__}")
        self.emit_topic = emit_topic
        self.rpc = make_rpc_relayer(rpc_records, kafka_hosts=bootstrap)
        self.instance = self.rpc.instance

        bare = Flask("bare")

        @bare.route("/")
        def bare_view() -> str:
            return ""

        with_relayer = Flask("original")
        self.flask_relayer = FlaskRelayer(with_relayer, flask_records, kafka_hosts=bootstrap)
        flask_relayer = self.flask_relayer

        @with_relayer.route("/")
        def relayer_view() -> str:
            flask_relayer.emit(flask_events, "created", PAYLOAD)
            flask_relayer.log("info", MESSAGE)
            return ""

        self.clients = {"bare": bare.test_client(), "relayer": with_relayer.test_client()}
        return {
            "relayer": relayer.__version__,
            "kafka-python": version("kafka-python"),
            "flask": version("flask"),
            "python": platform.python_version(),
        }

    def emit(self, n: int) -> Dict[str, Any]:
        instance, topic = self.instance, self.emit_topic
        emit = instance.emit
        instance.context.start_request()  # one unit of work; its copies are dropped after
        t0 = time.perf_counter_ns()
        for _ in itertools.repeat(None, n):
            emit(topic, "created", PAYLOAD, KEY)
        ns = time.perf_counter_ns() - t0
        instance.context.start_request()
        return {"ns": ns}

    def log(self, n: int) -> Dict[str, Any]:
        instance = self.instance
        log = instance.log
        instance.context.start_request()
        t0 = time.perf_counter_ns()
        for _ in itertools.repeat(None, n):
            log("info", MESSAGE)
        ns = time.perf_counter_ns() - t0
        instance.context.start_request()
        return {"ns": ns}

    def flask(self, variant: str, n: int) -> Dict[str, Any]:
        get = self.clients[variant].get
        t0 = time.perf_counter_ns()
        for _ in itertools.repeat(None, n):
            get("/")
        return {"ns": time.perf_counter_ns() - t0}

    def flush(self) -> Dict[str, Any]:
        self.instance._producer.flush(timeout=60)
        self.flask_relayer.event_relayer._producer.flush(timeout=60)
        return {}

    def quit(self) -> Dict[str, Any]:
        self.instance._producer.close(timeout=10)
        self.flask_relayer.event_relayer._producer.close(timeout=10)
        return {}


def main() -> int:
    worker = Worker()
    ops: Dict[str, Callable[..., Dict[str, Any]]] = {
        "setup": worker.setup,
        "emit": worker.emit,
        "log": worker.log,
        "flask": worker.flask,
        "flush": worker.flush,
        "quit": worker.quit,
    }
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op not in ("setup", "quit", "flush"):
            gc.collect()
        try:
            answer = {"ok": True, **ops[op](**command)}
        except Exception:
            answer = {"ok": False, "error": traceback.format_exc()}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if op == "quit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
