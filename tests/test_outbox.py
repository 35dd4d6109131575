"""The transactional outbox on SQLite, with Kafka swapped out (RelayerPatch).

The real-server tests (Kafka, SQLite and PostgreSQL, a SIGKILLed writer, two
relays, an outage) are in tests/integration/test_outbox_kafka.py.
"""

import threading
import time

import orjson
import pytest
from flask import Flask
from sqlalchemy import create_engine, inspect, select, update
from sqlalchemy.orm import Session

from relayer import ConfigurationError, NonJSONSerializableMessageError, Relayer
from relayer.outbox import Outbox


@pytest.fixture
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path}/outbox.db")
    yield engine
    engine.dispose()


@pytest.fixture
def outbox(engine, relayer_patch):
    outbox = Outbox(Relayer("logs", "k:1", topic_prefix="p."), engine)
    yield outbox
    outbox.close(timeout=1)


def rows(outbox):
    with outbox.engine.connect() as connection:
        return connection.execute(select(outbox.table)).all()


def age_rows(outbox, seconds=3600):
    """Make every row look ``seconds`` old (left behind by a crash)."""
    with outbox.engine.begin() as connection:
        connection.execute(update(outbox.table).values(created_at=time.time() - seconds))


class TestTable:
    def test_created_if_missing_and_reused(self, engine, relayer_patch):
        first = Outbox(Relayer("logs", "k:1"), engine)
        assert "relayer_outbox" in inspect(engine).get_table_names()
        with Session(engine) as session:
            first.emit(session, "orders", "created", {"id": 1})
            session.commit()
        second = Outbox(Relayer("logs", "k:1"), engine, table="relayer_outbox")
        assert second.table.name == "relayer_outbox"
        first.close(1)
        second.close(1)

    def test_another_table_name(self, engine, relayer_patch):
        outbox = Outbox(Relayer("logs", "k:1"), engine, table="events_out")
        assert "events_out" in inspect(engine).get_table_names()
        outbox.close(1)

    @pytest.mark.parametrize("bad", [-1, float("nan"), "30"])
    def test_a_bad_relay_after_is_refused(self, engine, relayer_patch, bad):
        with pytest.raises(ConfigurationError, match="relay_after"):
            Outbox(Relayer("logs", "k:1"), engine, relay_after=bad)


class TestCommitAndRollback:
    def test_nothing_before_the_commit_then_produced_and_deleted(self, outbox, relayer_patch):
        with Session(outbox.engine) as session:
            event_id = outbox.emit(session, "orders", "created", {"id": 1}, partition_key="o-1")
            assert relayer_patch.messages("p.orders") == []
            session.commit()
        [event] = relayer_patch.messages("p.orders")
        assert event["event_id"] == event_id
        assert event["payload"] == {"id": 1}
        assert relayer_patch.mocked_producer.keys("p.orders") == [b"o-1"]
        outbox.flush(1)
        assert rows(outbox) == []
        assert outbox.pending() == 0

    def test_the_row_holds_the_message_until_delivered(self, outbox, relayer_patch):
        with Session(outbox.engine) as session:
            event_id = outbox.emit(session, "orders", "created", {"id": 1}, partition_key=b"k")
            [row] = session.execute(select(outbox.table)).all()
            session.rollback()
        assert row.event_id == event_id
        assert row.topic == "p.orders"
        assert row.message_key == b"k"
        assert orjson.loads(row.value)["event_id"] == event_id
        assert row.headers is None
        assert abs(row.created_at - time.time()) < 60

    def test_rollback_produces_nothing_and_leaves_no_row(self, outbox, relayer_patch):
        with Session(outbox.engine) as session:
            outbox.emit(session, "orders", "created", {"id": 1})
            session.rollback()
            outbox.emit(session, "orders", "created", {"id": 2})
            session.commit()
        assert [e["payload"] for e in relayer_patch.messages("p.orders")] == [{"id": 2}]

    def test_closing_without_commit_produces_nothing(self, outbox, relayer_patch):
        session = Session(outbox.engine)
        outbox.emit(session, "orders", "created", {"id": 1})
        session.close()
        with Session(outbox.engine) as later:
            later.commit()
        assert relayer_patch.messages("p.orders") == []
        assert rows(outbox) == []

    def test_savepoints(self, outbox, relayer_patch):
        with Session(outbox.engine) as session:
            outbox.emit(session, "orders", "created", {"id": 1})
            savepoint = session.begin_nested()
            outbox.emit(session, "orders", "created", {"id": 2})
            savepoint.rollback()
            with session.begin_nested():
                outbox.emit(session, "orders", "created", {"id": 3})
            assert relayer_patch.messages("p.orders") == []  # a released savepoint is no commit
            session.commit()
        assert [e["payload"] for e in relayer_patch.messages("p.orders")] == [{"id": 1}, {"id": 3}]
        outbox.flush(1)
        assert rows(outbox) == []

    def test_sessions_do_not_share_pending_events(self, outbox, relayer_patch):
        with Session(outbox.engine) as one, Session(outbox.engine) as two:
            outbox.emit(one, "orders", "created", {"id": 1})
            one.commit()
            outbox.emit(two, "orders", "created", {"id": 2})
            two.rollback()
        assert [e["payload"] for e in relayer_patch.messages("p.orders")] == [{"id": 1}]

    def test_headers_are_kept_with_the_row(self, engine, relayer_patch):
        outbox = Outbox(Relayer("logs", "k:1", kafka_headers=True), engine, relay_after=0)
        with Session(engine) as session:
            event_id = outbox.emit(session, "orders", "created", {"id": 1})
            [row] = session.execute(select(outbox.table)).all()
            session.commit()
        [headers] = relayer_patch.mocked_producer.headers("orders")
        assert headers["event_id"] == event_id
        assert dict(orjson.loads(row.headers))["event_id"] == event_id
        outbox.close(1)


class TestBadInput:
    def test_raises_before_anything_is_written(self, outbox, relayer_patch):
        with Session(outbox.engine) as session:
            with pytest.raises(NonJSONSerializableMessageError):
                outbox.emit(session, "orders", "created", {"x": object()})
            with pytest.raises(Exception, match="topic"):
                outbox.emit(session, "no spaces allowed", "created", {})
            assert session.execute(select(outbox.table)).all() == []
            session.commit()
        assert relayer_patch.produced_messages == {}


class TestRelay:
    def test_relays_old_rows_only_and_deletes_them(self, outbox, relayer_patch):
        with Session(outbox.engine) as session:
            for i in range(3):
                outbox.emit(session, "orders", "created", {"id": i})
            session.flush()
            # as if the process had died before producing: the rows stay
            session.info.clear()
            session.commit()
        assert relayer_patch.messages("p.orders") == []
        assert outbox.relay_once() == 0  # younger than relay_after
        age_rows(outbox)
        assert outbox.relay_once() == 3
        assert [e["payload"]["id"] for e in relayer_patch.messages("p.orders")] == [0, 1, 2]
        assert rows(outbox) == []
        stats = outbox.stats()
        assert stats["relayed"] == 3 and stats["pending"] == 0 and stats["failed"] == 0

    def test_a_relay_of_many_batches(self, outbox, relayer_patch, monkeypatch):
        monkeypatch.setattr("relayer.outbox.BATCH", 7)
        with Session(outbox.engine) as session:
            for i in range(30):
                outbox.emit(session, "orders", "created", {"id": i})
            session.info.clear()
            session.commit()
        age_rows(outbox)
        assert outbox.relay_once() == 30
        assert len({e["event_id"] for e in relayer_patch.messages("p.orders")}) == 30
        assert outbox.pending() == 0

    def test_start_and_stop(self, outbox, relayer_patch):
        with Session(outbox.engine) as session:
            outbox.emit(session, "orders", "created", {"id": 1})
            session.info.clear()
            session.commit()
        age_rows(outbox)
        outbox.start(interval=0.05)
        deadline = time.monotonic() + 10
        while outbox.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        outbox.stop()
        assert outbox.pending() == 0
        assert len(relayer_patch.messages("p.orders")) == 1
        assert not any(t.name == "relayer-outbox" and t.is_alive() for t in threading.enumerate())


class TestInAUnitOfWork:
    def test_the_event_is_in_the_record(self, outbox, relayer_patch):
        with outbox.relayer.unit_of_work("job", request_id="r-1"):
            with Session(outbox.engine) as session:
                outbox.emit(session, "orders", "created", {"id": 1})
                session.commit()
        [event] = relayer_patch.messages("p.orders")
        assert event["request_id"] == "r-1"
        [record] = relayer_patch.messages("p.logs")
        assert record["lines"] == [event]

    def test_a_rolled_back_event_is_discarded_in_the_record(self, outbox, relayer_patch):
        with outbox.relayer.unit_of_work("job"):
            with Session(outbox.engine) as session:
                outbox.emit(session, "orders", "created", {"id": 1})
                savepoint = session.begin_nested()
                outbox.emit(session, "orders", "created", {"id": 2})
                savepoint.rollback()
                session.commit()
                outbox.emit(session, "orders", "created", {"id": 3})
                session.rollback()
        [record] = relayer_patch.messages("p.logs")
        assert [(line["payload"]["id"], line.get("discarded", False)) for line in record["lines"]] == [
            (1, False), (2, True), (3, True),
        ]  # fmt: skip
        assert [e["payload"] for e in relayer_patch.messages("p.orders")] == [{"id": 1}]

    def test_flask_sqlalchemy(self, tmp_path, relayer_patch):
        from flask_sqlalchemy import SQLAlchemy

        from relayer.flask import FlaskRelayer

        app = Flask(__name__)
        app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path}/app.db"
        db = SQLAlchemy(app)
        ext = FlaskRelayer(app, "logs", "k:1")

        class Order(db.Model):
            id = db.Column(db.Integer, primary_key=True)

        with app.app_context():
            db.create_all()
            outbox = Outbox(ext.instance, db.engine)

        @app.post("/orders/<int:order_id>")
        def create(order_id):
            db.session.add(Order(id=order_id))
            outbox.emit(db.session, "orders", "created", {"id": order_id})
            if order_id == 13:
                db.session.rollback()
                return "unlucky", 409
            db.session.commit()
            return "", 201

        client = app.test_client()
        assert client.post("/orders/1").status_code == 201
        assert client.post("/orders/13").status_code == 409
        assert [e["payload"] for e in relayer_patch.messages("orders")] == [{"id": 1}]
        records = relayer_patch.messages("logs")
        # each request's event, as usual; the rolled-back one says it was discarded
        assert [[line.get("discarded", False) for line in r["lines"]] for r in records] == [
            [False],
            [True],
        ]
        outbox.flush(1)
        assert outbox.pending() == 0
        outbox.close(1)


class TestNoRelayOfWhatIsInFlight:
    """The outbox's producer gives up on a message before the relay may take
    its row: an outage never has both the commit's produce and the relay's in
    flight for one row (which would double every event of the outage).
    """

    @pytest.mark.parametrize(
        ("relay_after", "opts", "timeout_ms"),
        [
            (30.0, {}, 15_000),
            (600.0, {}, 300_000),
            (30.0, {"message.timeout.ms": 5_000}, 5_000),
            (30.0, {"delivery.timeout.ms": 60_000}, 15_000),
            (1.0, {}, 300_000),  # too short to halve: librdkafka's own timeout
        ],
    )
    def test_message_timeout_is_at_most_half_of_relay_after(
        self, engine, relayer_patch, relay_after, opts, timeout_ms
    ):
        relayer = Relayer("logs", "k:1", producer_opts=opts)
        outbox = Outbox(relayer, engine, relay_after=relay_after)
        config = outbox._producer.config
        default = config.get("delivery.timeout.ms", 300_000)
        assert int(config.get("message.timeout.ms", default)) == timeout_ms
        assert "delivery.timeout.ms" not in config or "message.timeout.ms" not in config
        outbox.close(1)
