"""relayer over TLS + SASL/SCRAM-SHA-512 against a real broker (tools/kafka_secure.py).

One broker for the module: a PLAINTEXT listener (harness, topic creation, test consumers)
and a SASL_SSL listener that relayer uses. Every test has its own uuid topics.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from flask import Flask

from relayer import ConfigurationError, Relayer
from relayer.flask import FlaskRelayer
from relayer.rpc import make_rpc_relayer
from tools.kafka_secure import SecureKafka, make_certs, make_secure_broker

START_TIMEOUT = 90.0  # seconds: a cold JVM on a busy 2-core CI machine
USER = "alice"
PASSWORD = f"good-pw-{uuid.uuid4().hex}"  # unique values: any occurrence in a log is a leak
WRONG_PASSWORD = f"wrong-pw-{uuid.uuid4().hex}"
MESSAGE_TIMEOUT_MS = 3000  # wrong-password messages fail after this (librdkafka default: 5 min)

#: librdkafka settings that hold secrets, each with a value found nowhere else.
SECRETS: dict[str, str] = {
    key: f"S3CR3T-{i}-{uuid.uuid4().hex}"
    for i, key in enumerate(
        [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.assertion.private.key.passphrase",
        ]
    )
}
PEM_SECRET = f"S3CR3TPEM{uuid.uuid4().hex}"
SECRETS["ssl.key.pem"] = f"-----BEGIN PRIVATE KEY-----\n{PEM_SECRET}\n-----END PRIVATE KEY-----\n"
SECRETS["sasl.oauthbearer.assertion.private.key.pem"] = SECRETS["ssl.key.pem"].replace(
    PEM_SECRET, PEM_SECRET[::-1]
)
#: Text that must never be logged or shown, and what it is.
SECRET_MARKERS = {
    PASSWORD: "sasl.password (good)",
    WRONG_PASSWORD: "sasl.password (wrong)",
    PEM_SECRET: "ssl.key.pem",
    PEM_SECRET[::-1]: "sasl.oauthbearer.assertion.private.key.pem",
    **{value: key for key, value in SECRETS.items()},
}


def uid() -> str:
    return uuid.uuid4().hex[:12]


def sasl_opts(ca: Path | str, password: str, **extra: Any) -> dict[str, Any]:
    """The documented producer_opts for a SASL_SSL + SCRAM-SHA-512 cluster."""
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": USER,
        "sasl.password": password,
        "ssl.ca.location": str(ca),
        **extra,
    }


class Captured(logging.Handler):
    """Every record that reaches the ``relayer`` logger (``relayer.librdkafka`` included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def lines(self, name: str | None = None, level: int = logging.NOTSET) -> list[str]:
        """Formatted records (with tracebacks) of logger ``name`` (default: all), >= ``level``."""
        return [
            self.format(r)
            for r in self.records
            if (name is None or r.name == name) and r.levelno >= level
        ]

    def assert_no_secret(self) -> None:
        text = "\n".join(self.lines())
        leaked = [name for secret, name in SECRET_MARKERS.items() if secret in text]
        assert not leaked, f"secrets in relayer's logs: {leaked}\n{text[-3000:]}"


@contextlib.contextmanager
def capture_relayer_logs() -> Iterator[Captured]:
    """Capture the ``relayer`` logger (and its children) at DEBUG."""
    handler = Captured()
    loggers = [logging.getLogger("relayer"), logging.getLogger("relayer.librdkafka")]
    levels = [lg.level for lg in loggers]
    loggers[0].addHandler(handler)
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        loggers[0].removeHandler(handler)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    """A started broker with a SCRAM-SHA-512 SASL_SSL listener; stopped after the module."""
    kafka = make_secure_broker(tmp_path_factory.mktemp("secure-kafka"), {USER: PASSWORD})
    try:
        kafka.broker.start(timeout=START_TIMEOUT)  # raises (tests fail) if it cannot start
        print(f"\nTLS + SCRAM broker started in {kafka.broker.start_seconds:.1f} s")
        yield kafka
    finally:
        kafka.broker.stop()


def test_broker_listeners(secure_kafka: SecureKafka) -> None:
    """The PLAINTEXT and SASL_SSL listeners are distinct, the CA is a PEM file."""
    assert secure_kafka.broker.running
    assert secure_kafka.sasl_bootstrap != secure_kafka.broker.bootstrap
    assert secure_kafka.certs.ca.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_round_trip_over_sasl_ssl(
    secure_kafka: SecureKafka, create_topic: Callable[..., str], consume: Callable[..., Any]
) -> None:
    """RPC calls, Flask requests and plain emits go through SASL_SSL and are consumed back."""
    plain = secure_kafka.broker.bootstrap
    events = create_topic(plain, f"sec-events-{uid()}", partitions=2)
    logs = create_topic(plain, f"sec-logs-{uid()}")
    opts = sasl_opts(secure_kafka.certs.ca, PASSWORD)

    with capture_relayer_logs() as captured:
        rpc = make_rpc_relayer(logs, secure_kafka.sasl_bootstrap, producer_opts=opts)

        class Inventory:
            @rpc
            def reserve(self, sku: str, qty: int, relayer: Any = None) -> int:
                relayer.log("info", f"reserving {qty} of {sku}")
                relayer.emit(events, "reserved", {"sku": sku, "qty": qty}, partition_key=sku)
                return qty

        assert [Inventory().reserve(f"sku-{i}", i) for i in range(3)] == [0, 1, 2]
        rpc.instance.emit(events, "restocked", {"sku": "sku-9"}, partition_key="sku-9")

        app = Flask(__name__)
        app.config["RELAYER_PRODUCER_OPTS"] = opts
        ext = FlaskRelayer(app, logs, secure_kafka.sasl_bootstrap)

        @app.post("/orders/<int:order_id>")
        def order(order_id: int) -> tuple[str, int]:
            ext.emit(events, "ordered", {"id": order_id})
            return "", 201

        assert app.test_client().post("/orders/7").status_code == 201

        assert rpc.flush(30) == 0
        assert rpc.stats() == {
            "produced": 7,
            "delivered": 7,
            "failed": 0,
            "dropped": 0,
            "pending": 0,
        }
        with app.app_context():
            assert ext.flush(30) == 0
            assert ext.stats()["delivered"] == 2
            assert ext.instance.close(10) == 0
        assert rpc.close(10) == 0

    consumed = consume(plain, [events, logs], 9)
    got = [orjson.loads(r.value) for r in consumed if r.topic == events]
    assert sorted((e["event_subtype"], orjson.dumps(e["payload"])) for e in got) == sorted(
        [("reserved", orjson.dumps({"sku": f"sku-{i}", "qty": i})) for i in range(3)]
        + [("restocked", b'{"sku":"sku-9"}'), ("ordered", b'{"id":7}')]
    )
    records = [orjson.loads(r.value) for r in consumed if r.topic == logs]
    assert len(got) == 5 and len(records) == 4
    calls = sorted((r for r in records if "service" in r), key=lambda r: r["lines"][0]["payload"])
    assert all(r["service"].endswith("<locals>.Inventory.reserve") for r in calls), calls
    assert [r["lines"][0]["payload"] for r in calls] == [
        f"reserving {i} of sku-{i}" for i in range(3)
    ]
    assert [r["path"] for r in records if "path" in r] == ["/orders/7"]

    assert any("producing to" in line for line in captured.lines("relayer", logging.DEBUG))
    assert not captured.lines("relayer", logging.WARNING), captured.lines()
    captured.assert_no_secret()


def test_wrong_password_fails_fast_and_clearly(
    secure_kafka: SecureKafka, create_topic: Callable[..., str]
) -> None:
    """A wrong password: emit neither blocks nor raises, failures are counted within
    seconds, the authentication error is logged, flush and close respect their timeouts."""
    topic = create_topic(secure_kafka.broker.bootstrap, f"sec-denied-{uid()}")
    opts = sasl_opts(
        secure_kafka.certs.ca, WRONG_PASSWORD, **{"message.timeout.ms": MESSAGE_TIMEOUT_MS}
    )
    errors: list[str] = []

    with capture_relayer_logs() as captured:
        rpc = make_rpc_relayer(
            topic,
            secure_kafka.sasl_bootstrap,
            producer_opts=opts,
            shutdown_timeout=2.0,
            on_delivery_error=lambda err, _topic, _key: errors.append(err.str()),
        )

        @rpc
        def handle(n: int, relayer: Any = None) -> int:
            relayer.emit(topic, "call", {"n": n})
            return n

        t0 = time.monotonic()
        durations = []
        for i in range(20):
            t = time.monotonic()
            rpc.instance.emit(topic, "event", {"i": i})
            durations.append(time.monotonic() - t)
        assert [handle(1), handle(2)] == [1, 2]  # each: an event and the call's record
        emitted = time.monotonic() - t0
        assert durations[0] < 2.0, durations[0]  # builds the producer (loads the CA)
        assert max(durations[1:]) < 0.25 and emitted < 3.0, (max(durations[1:]), emitted)

        t = time.monotonic()
        pending = rpc.flush(1.0)
        assert time.monotonic() - t < 1.0 + 1.5
        assert pending > 0  # nothing can be delivered: still waiting when flush gives up

        deadline = t0 + MESSAGE_TIMEOUT_MS / 1000 + 20
        while rpc.stats()["failed"] < 24 and time.monotonic() < deadline:
            time.sleep(0.05)
        counted = time.monotonic() - t0
        print(f"\nwrong password: 24 failures counted {counted:.1f} s after the first emit")
        assert rpc.stats() == {
            "produced": 24,
            "delivered": 0,
            "failed": 24,
            "dropped": 0,
            "pending": 0,
        }

        t = time.monotonic()
        assert rpc.flush(5.0) == 0
        assert rpc.close(2.0) == 0
        assert time.monotonic() - t < 2.0 + 1.5

    assert errors == ["Local: Message timed out"] * 24
    warnings = captured.lines("relayer", logging.WARNING)
    print("relayer logged:", *warnings, sep="\n  ")
    auth = [
        w
        for w in warnings
        if "24 failed" in w and "SASL authentication error" in w and "invalid credentials" in w
    ]
    assert auth, f"no delivery-problem report with the authentication error: {captured.lines()}"
    assert "SCRAM-SHA-512" in auth[0]
    assert any("Authentication failed" in line for line in captured.lines("relayer.librdkafka")), (
        captured.lines("relayer.librdkafka")
    )
    captured.assert_no_secret()


def test_untrusted_certificate_close_is_bounded(
    secure_kafka: SecureKafka, create_topic: Callable[..., str], tmp_path: Path
) -> None:
    """A CA that did not sign the broker's certificate: the TLS error is logged, and close()
    gives up after its timeout (message.timeout.ms is 5 min by default), counting the
    undelivered messages as lost; no hang."""
    topic = create_topic(secure_kafka.broker.bootstrap, f"sec-close-{uid()}")
    opts = sasl_opts(make_certs(tmp_path / "other-ca").ca, PASSWORD)
    with capture_relayer_logs() as captured:
        relayer = Relayer(topic, secure_kafka.sasl_bootstrap, producer_opts=opts)
        for i in range(10):
            relayer.emit(topic, "event", {"i": i})
        relayer.log("info", "a line outside a unit of work")
        deadline = time.monotonic() + 30
        while not any("certificate verify failed" in line for line in captured.lines()):
            assert time.monotonic() < deadline, captured.lines()
            time.sleep(0.05)
        t = time.monotonic()
        assert relayer.close(1.0) == 11
        assert time.monotonic() - t < 1.0 + 2.0
        stats = relayer.stats()
        relayer.emit(topic, "event", {"after": "close"})  # dropped and counted, no raise
    assert stats == {"produced": 11, "delivered": 0, "failed": 11, "dropped": 0, "pending": 0}
    assert relayer.stats()["dropped"] == 1
    errors = captured.lines("relayer", logging.ERROR)
    assert any("11 message(s) could not be delivered" in e for e in errors), errors
    warnings = captured.lines("relayer", logging.WARNING)
    print("\nrelayer logged:", *warnings, sep="\n  ")
    assert any("11 failed" in w and "certificate verify failed" in w for w in warnings), warnings
    captured.assert_no_secret()


@pytest.mark.parametrize(
    "setting",
    [
        {"ssl.ca.location": "/nonexistent/ca.pem"},
        {
            "ssl.keystore.location": "/nonexistent/client.p12",
            "ssl.keystore.password": SECRETS["ssl.keystore.password"],
        },
    ],
    ids=["missing-ca", "missing-keystore"],
)
def test_bad_tls_file_fails_at_construction(setting: dict[str, str], tmp_path: Path) -> None:
    """A TLS file librdkafka cannot read is a ConfigurationError when the relayer is built
    (not at the first emit), naming the setting and showing no secret."""
    opts = {**sasl_opts(make_certs(tmp_path).ca, PASSWORD), **setting}
    with pytest.raises(ConfigurationError) as excinfo:
        Relayer("logs", "127.0.0.1:9", producer_opts=opts)
    text = f"{excinfo.value} {excinfo.value.__cause__!r}"
    assert next(iter(setting)) in text, text
    leaked = [name for secret, name in SECRET_MARKERS.items() if secret in text]
    assert not leaked, text


def test_secrets_masked_in_repr_and_logs(
    secure_kafka: SecureKafka, create_topic: Callable[..., str], consume: Callable[..., Any]
) -> None:
    """No secret setting shows in repr() of any relayer object, nor in relayer's logs while
    a producer is built and used with those settings."""
    plain = secure_kafka.broker.bootstrap
    topic = create_topic(plain, f"sec-masked-{uid()}")
    # PLAINTEXT: librdkafka ignores the SASL/TLS settings, but relayer holds and logs them
    opts = {**SECRETS, "sasl.username": USER}

    with capture_relayer_logs() as captured:
        relayer = Relayer(topic, plain, producer_opts=opts)
        rpc = make_rpc_relayer(topic, plain, producer_opts=opts)
        app = Flask(__name__)
        app.config["RELAYER_PRODUCER_OPTS"] = opts
        ext = FlaskRelayer(app, topic, plain)
        with app.app_context():
            reprs = {
                "Relayer": repr(relayer),
                "FlaskRelayer": repr(ext),
                "FlaskRelayer.instance": repr(ext.instance),
                "RPCRelayer": repr(rpc),
                "RPCRelayer.instance": repr(rpc.instance),
            }
            reprs.update({f"str({k})": str(v) for k, v in [("Relayer", relayer), ("rpc", rpc)]})
            ext.emit(topic, "flask", {"n": 1})
            assert ext.instance.close(10) == 0
        relayer.emit(topic, "core", {"n": 2})
        relayer.log("info", "a line")
        rpc.instance.emit(topic, "rpc", {"n": 3})
        assert relayer.close(10) == 0 and rpc.close(10) == 0

    for name, text in reprs.items():
        leaked = [key for secret, key in SECRET_MARKERS.items() if secret in text]
        assert not leaked, f"secrets in repr of {name}: {leaked}: {text}"
    assert plain in reprs["Relayer"] and plain in reprs["RPCRelayer.instance"]
    assert len(consume(plain, topic, 4)) == 4  # the settings were really used
    assert captured.lines("relayer", logging.DEBUG)
    captured.assert_no_secret()
