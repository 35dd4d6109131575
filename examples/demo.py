"""relayer's demo: a real Kafka, a Flask app (its orders in SQLite, their events
through the transactional outbox) and an XML-RPC service, and what reached Kafka,
read back.

    make demo            # or: python -m examples.demo

Starts a local single-node KRaft broker (jars fetched once through Maven;
Java 17 needed), or uses ``$KAFKA_BOOTSTRAP_SERVERS`` if set (e.g. the
docker-compose one: ``KAFKA_BOOTSTRAP_SERVERS=localhost:9092 make demo``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
import uuid
import xmlrpc.client
from contextlib import ExitStack
from typing import Any, Dict, Iterator, List, Tuple
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from flask import Flask, Response, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.serving import make_server

from relayer.flask import FlaskRelayer
from relayer.outbox import Outbox

RUN = uuid.uuid4().hex[:6]
PREFIX = f"demo{RUN}."  # this run's topics: demoXXXXXX.orders, demoXXXXXX.http_logs, ...

# -- a Flask app, as the README sets one up, with its orders in a database -----------

relayer = FlaskRelayer()
db = SQLAlchemy()


class Order(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str]
    quantity: Mapped[int]


def create_app(kafka_hosts: str, database_url: str) -> Flask:
    app = Flask("shop")
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    relayer.init_app(app, "http_logs", kafka_hosts=kafka_hosts, topic_prefix=PREFIX)
    db.init_app(app)
    with app.app_context():
        db.create_all()
        # The order's event is written in the order's transaction: produced
        # once it commits, never if it rolls back.
        outbox = app.extensions["outbox"] = Outbox(app.extensions["relayer"], db.engine)

    @app.post("/orders")
    def create_order() -> Tuple[Dict[str, Any], int]:
        order = request.get_json()
        relayer.log("info", f"creating an order for {order['customer']}")
        db.session.add(Order(**order))
        outbox.emit(db.session, "orders", "created", order, partition_key=order["customer"])
        if order["quantity"] < 1:  # checked after the emit: the rollback takes the event too
            db.session.rollback()
            return {"error": "quantity must be at least 1"}, 422
        db.session.commit()
        return {"id": order["id"]}, 201

    @app.get("/orders/<int:order_id>")
    def get_order(order_id: int) -> Dict[str, Any]:
        order = db.get_or_404(Order, order_id)
        relayer.log("debug", {"looked_up": order_id})
        return {"id": order.id, "customer": order.customer, "quantity": order.quantity}

    @app.get("/report")
    def report() -> Response:
        def rows() -> Iterator[str]:
            for n in range(3):
                relayer.log("info", f"streamed row {n}")
                yield f"row {n}\n"

        return Response(rows(), mimetype="text/plain")

    @app.get("/fail")
    def fail() -> str:
        relayer.log("error", "about to divide by zero")
        return str(1 / 0)

    return app


# -- an RPC service: the decorator injects relayer= ---------------------------------


def create_rpc_service(kafka_hosts: str) -> Tuple[Any, Any]:
    from .rpc_extensions import init_relayer

    rpc_relayer = init_relayer("rpc_logs", kafka_hosts=kafka_hosts, topic_prefix=PREFIX)
    from .rpc_handler import InventoryService  # after init_relayer, as the README says

    server = SimpleXMLRPCServer(
        ("127.0.0.1", 0), requestHandler=SimpleXMLRPCRequestHandler, logRequests=False
    )
    server.register_instance(InventoryService())
    return server, rpc_relayer


# -- the run ---------------------------------------------------------------------------


def serve(server: Any) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def http(method: str, url: str, body: Any = None, request_id: str = "") -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if request_id:
        req.add_header("X-Request-ID", request_id)
    try:
        with urllib.request.urlopen(req) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def tail(bootstrap: str, names: List[str], *options: str) -> str:
    """Run ``relayer tail`` (the command a user would type) on this run's topics."""
    command = [sys.executable, "-m", "relayer", "tail", *names, "--prefix", PREFIX]
    command += ["-b", bootstrap, "--from-beginning", *options]
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout


def main() -> int:
    with ExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if bootstrap:
            print(f"Using the Kafka cluster at {bootstrap}")
        else:
            from tools.kafka_local import KAFKA_VERSION, KafkaBroker, ensure_jars

            print(f"Starting a local Kafka {KAFKA_VERSION} broker (KRaft) ...", flush=True)
            ensure_jars()
            broker = stack.enter_context(KafkaBroker())
            bootstrap = broker.bootstrap
            print(f"Kafka is up at {bootstrap} (started in {broker.start_seconds:.1f} s)")

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log
        logging.getLogger("relayer.librdkafka").setLevel(logging.ERROR)
        database = stack.enter_context(tempfile.TemporaryDirectory(prefix="relayer-demo-"))
        app = create_app(bootstrap, f"sqlite:///{database}/shop.db")
        app.logger.setLevel(logging.CRITICAL)  # /fail fails on purpose: no traceback
        web = make_server("127.0.0.1", 0, app, threaded=True)
        serve(web)
        stack.callback(web.shutdown)
        rpc_server, rpc_relayer = create_rpc_service(bootstrap)
        serve(rpc_server)
        stack.callback(rpc_server.shutdown)
        base = f"http://127.0.0.1:{web.server_port}"
        rpc = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{rpc_server.server_address[1]}")

        print(f"\nServing the Flask app at {base} and the RPC service; making requests:")
        calls = [
            ("POST", "/orders", {"id": 1, "customer": "ada", "quantity": 2}),
            ("POST", "/orders", {"id": 2, "customer": "grace", "quantity": 1}),
            ("POST", "/orders", {"id": 3, "customer": "ada", "quantity": 5}),
            ("POST", "/orders", {"id": 4, "customer": "grace", "quantity": 0}),
            ("GET", "/orders/2", None),
            ("GET", "/report", None),
            ("GET", "/fail", None),
        ]
        for n, (method, path, body) in enumerate(calls):
            shown = f"{method} {path}" + ("" if body is None else f" {json.dumps(body)}")
            print(f"  {shown} -> {http(method, base + path, body, f'req-{n}')}")
        for sku, quantity in (("book", 2), ("pen", 10)):
            print(f"  rpc reserve({sku!r}, {quantity}) -> {rpc.reserve(sku, quantity)}")

        flask_relayer, outbox = app.extensions["relayer"], app.extensions["outbox"]
        # Closed before the broker stops (ExitStack unwinds last-in first-out).
        stack.callback(flask_relayer.close)
        stack.callback(rpc_relayer.close)
        stack.callback(outbox.close)
        for instance in (outbox, flask_relayer, rpc_relayer.instance):
            instance.flush(30)  # the outbox deletes the rows of the events delivered
        from_outbox = outbox.stats()["producer_delivered"]
        expected = from_outbox + sum(r.stats()["delivered"] for r in (flask_relayer, rpc_relayer))
        left = outbox.pending()  # its rows not confirmed delivered
        print(
            f"\nDelivered {expected} messages, {from_outbox} through the outbox ({left} rows left)."
        )
        print("Reading them back from Kafka with:")
        names = ["orders", "inventory", "http_logs", "rpc_logs"]
        print(f"  relayer tail {' '.join(names)} --prefix {PREFIX} --from-beginning --lines\n")
        print(tail(bootstrap, names, "--lines"), end="")
        print("\nThe orders with their event_id (consumers dedupe on it):")
        print(f"  relayer tail orders --prefix {PREFIX} --from-beginning -k event_id payload\n")
        print(tail(bootstrap, ["orders"], "-k", "event_id", "payload"), end="")
        read = len(tail(bootstrap, names, "--json").splitlines())
        print(f"\nRead back {read} of {expected} messages.")
        return 0 if read == expected else 1


if __name__ == "__main__":
    sys.exit(main())
