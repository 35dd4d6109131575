"""``relayer outbox relay`` without a broker: a SQLite file, Kafka replaced by RelayerPatch
(``relayer_patch``), or a client whose every delivery fails. The real-Kafka runs are in
tests/integration/test_outbox_kafka.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import confluent_kafka
import orjson
import pytest
from sqlalchemy import create_engine, func, insert, select

from relayer import Relayer, _cli, _producer, _tail
from relayer.outbox import outbox_table
from relayer.testing import MockedProducer

REPO_ROOT = Path(__file__).resolve().parents[1]
OLD = 100.0  # seconds: older than the default --relay-after (30)


@pytest.fixture
def db(tmp_path):
    """``(url, engine)`` of a new SQLite file with the outbox table."""
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    engine = create_engine(url)
    outbox_table().create(engine)
    yield url, engine
    engine.dispose()


def add_row(engine, age, payload, key=None):
    """Write an outbox row as ``Outbox.emit`` does, ``age`` seconds old; return its event id."""
    relayer = Relayer("logs", kafka_hosts="kafka:9092", kafka_headers=True)
    built = []
    relayer.emit("orders", "created", payload, key, into=built)
    [(message, _)] = built
    with engine.begin() as connection:
        connection.execute(
            insert(outbox_table()).values(
                event_id=message.event_id,
                topic=message.topic,
                message_key=message.key.encode() if message.key else None,
                value=message.value,
                headers=orjson.dumps(message.headers),
                created_at=time.time() - age,
                attempts=0,
            )
        )
    return message.event_id


def rows(engine):
    table = outbox_table()
    with engine.connect() as connection:
        return list(connection.execute(select(table.c.event_id).order_by(table.c.id)).scalars())


def relay(url, *options):
    return _cli.main(["outbox", "relay", "--db", url, "-b", "kafka:9092", *options])


# --- --once ---------------------------------------------------------------------------------


def test_once_relays_an_old_row_and_deletes_it(db, relayer_patch, capsys):
    url, engine = db
    old = add_row(engine, OLD, {"id": 1}, key="k1")
    young = add_row(engine, 0, {"id": 2})
    assert relay(url, "--once") == 0
    assert capsys.readouterr().out == (
        "relayer outbox relay: 1 delivered, 0 not delivered, 1 pending\n"
    )
    assert rows(engine) == [young]  # the old row deleted; the young one is not the relay's yet
    [event] = relayer_patch.messages("orders")
    assert event["event_id"] == old and event["payload"] == {"id": 1}
    assert relayer_patch.mocked_producer.keys("orders") == [b"k1"]
    assert relayer_patch.mocked_producer.headers("orders")[0]["event_id"] == old

    assert relay(url, "--once", "--relay-after", "0") == 0  # now every row
    assert "1 delivered, 0 not delivered, 0 pending" in capsys.readouterr().out
    assert rows(engine) == []
    assert [e["event_id"] for e in relayer_patch.messages("orders")] == [old, young]


def test_once_in_batches(db, relayer_patch, capsys):
    url, engine = db
    ids = [add_row(engine, OLD, {"id": i}) for i in range(7)]
    assert relay(url, "--once", "--batch", "3") == 0
    assert "7 delivered, 0 not delivered, 0 pending" in capsys.readouterr().out
    assert [e["event_id"] for e in relayer_patch.messages("orders")] == ids


class FailingClient(MockedProducer):
    """Every delivery fails (as after message.timeout.ms with the broker down)."""

    def produce(self, topic, value=None, key=None, partition=-1, callback=None, *rest):
        callback(confluent_kafka.KafkaError(confluent_kafka.KafkaError._MSG_TIMED_OUT), None)


def test_once_exits_1_when_rows_are_not_delivered(db, capsys):
    url, engine = db
    row = add_row(engine, OLD, {"id": 1})
    previous = _producer.set_client_factory(lambda config: FailingClient())
    try:
        assert relay(url, "--once") == 1
    finally:
        _producer.set_client_factory(previous)
    assert "0 delivered, 1 not delivered, 1 pending" in capsys.readouterr().out
    assert rows(engine) == [row]  # it stays for the next run


def test_bootstrap_comes_from_the_environment(db, relayer_patch, monkeypatch, capsys):
    url, engine = db
    add_row(engine, OLD, {"id": 1})
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9092")
    assert _cli.main(["outbox", "relay", "--db", url, "--once"]) == 0
    assert "1 delivered" in capsys.readouterr().out


# --- without --once: until SIGTERM ------------------------------------------------------------


def test_without_once_it_relays_every_interval_until_sigterm(db, relayer_patch, capsys):
    url, engine = db
    added, errors = [], []
    handler_before = signal.getsignal(signal.SIGTERM)

    def feed():  # runs while main() relays on this process's main thread
        try:
            for i in range(2):
                added.append(add_row(engine, OLD, {"id": i}))
                deadline = time.monotonic() + 10
                while rows(engine) and time.monotonic() < deadline:
                    time.sleep(0.02)
        except Exception as exc:
            errors.append(exc)
        finally:
            if signal.getsignal(signal.SIGTERM) is not handler_before:  # main()'s is set
                os.kill(os.getpid(), signal.SIGTERM)

    feeder = threading.Thread(target=feed)
    timer = threading.Timer(0.3, feeder.start)
    timer.start()
    assert relay(url, "--interval", "0.05") == 0
    feeder.join()
    assert not errors and rows(engine) == []
    assert [e["event_id"] for e in relayer_patch.messages("orders")] == added
    out, err = capsys.readouterr()
    assert out.count("1 delivered, 0 not delivered, 0 pending") == 2
    assert "relaying relayer_outbox every 0.05 s" in err
    assert signal.getsignal(signal.SIGTERM) is handler_before  # put back


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_relay_process_stops_cleanly_on_a_signal(db, signum):
    url, _ = db
    proc = subprocess.Popen(
        [sys.executable, "-m", "relayer", "outbox", "relay", "--db", url, "-b", "127.0.0.1:1"]
        + ["--interval", "0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert proc.stderr.readline().startswith(b"relayer outbox relay: relaying")
        time.sleep(0.3)  # a few runs
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == b"" and b"Traceback" not in err


# --- bad arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "--db: Could not parse SQLAlchemy URL"),
        ("nosuchdb://host/x", "--db: Can't load plugin: sqlalchemy.dialects:nosuchdb"),
    ],
)
def test_a_bad_url_is_a_usage_error(url, message, capsys):
    with pytest.raises(SystemExit) as exc:
        relay(url, "--once")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: relayer outbox relay") and message in err


def test_a_database_that_cannot_be_opened_exits_2(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    assert relay(url, "--once") == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"relayer outbox relay: cannot use the outbox in {url}: (sqlite3.OperationalError) "
        "unable to open database file\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["outbox"], "ACTION"),
        (["outbox", "relay", "-b", "kafka:9092"], "--db"),
        (["outbox", "relay", "--db", "sqlite://"], "give -b HOST:PORT"),
        (["outbox", "relay", "--db", "sqlite://", "-b", "no port"], "kafka_hosts must be"),
        (["outbox", "relay", "--db", "sqlite://", "-b", "k:1", "--relay-after", "-1"], "seconds"),
        (["outbox", "relay", "--db", "sqlite://", "-b", "k:1", "--relay-after", "nan"], "seconds"),
        (["outbox", "relay", "--db", "sqlite://", "-b", "k:1", "--interval", "0"], "more than 0"),
        (["outbox", "relay", "--db", "sqlite://", "-b", "k:1", "--batch", "0"], "whole number"),
        (["outbox", "relay", "--db", "sqlite://", "-b", "k:1", "--onc"], "unrecognized"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys, monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(SystemExit) as exc:
        _cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# --- help, and the command's shape ------------------------------------------------------------


def test_help(capsys):
    with pytest.raises(SystemExit) as exc:
        _cli.main(["outbox", "relay", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ["--db URL", "-b HOST:PORT", "--prefix", "--suffix", "--relay-after SECONDS"]:
        assert option in out
    for option in ["--once", "--interval SECONDS", "--batch N", "--table", "exit status:"]:
        assert option in out


def test_python_m_relayer_lists_both_commands():
    done = subprocess.run(
        [sys.executable, "-m", "relayer", "--help"],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=30,
    )
    assert done.returncode == 0
    assert b"tail" in done.stdout and b"outbox" in done.stdout


def test_the_old_names_in_relayer_tail_run_the_whole_command(capsys):
    # relayer._tail:main was the console script (an installed one may still call it).
    assert _tail.build_parser().parse_args(["outbox", "relay", "--db", "u"]).db == "u"
    with pytest.raises(SystemExit) as exc:
        _tail.main(["outbox", "relay", "--help"])
    assert exc.value.code == 0 and "--relay-after" in capsys.readouterr().out


def test_outbox_rows_left_by_the_relay_are_counted(db, relayer_patch, capsys):
    url, engine = db
    for i in range(3):
        add_row(engine, 0, {"id": i})
    assert relay(url, "--once") == 0  # all too young
    assert "0 delivered, 0 not delivered, 3 pending" in capsys.readouterr().out
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(outbox_table())).scalar() == 3
