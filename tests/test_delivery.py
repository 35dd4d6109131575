"""Event ids, and ``event_delivery="on_success"``: events only for work that succeeded."""

import os
import re

import pytest
from flask import Flask, redirect

from relayer import ConfigurationError, Relayer
from relayer._ids import new_event_id
from relayer.flask import FlaskRelayer
from relayer.rpc import make_rpc_relayer

EVENT_ID = re.compile("[0-9a-f]{32}")


class TestEventIds:
    def test_every_event_has_a_unique_id(self, relayer_patch, schema_checked):
        relayer = Relayer("logs", "k:1")
        for i in range(10_000):
            relayer.emit("orders", "created", {"id": i})
        ids = [message["event_id"] for message in relayer_patch.messages("orders")]
        assert all(EVENT_ID.fullmatch(event_id) for event_id in ids)
        assert len(set(ids)) == 10_000

    def test_the_line_in_the_record_is_the_event(self, relayer_patch, schema_checked):
        relayer = Relayer("logs", "k:1")
        with relayer.unit_of_work("job") as unit:
            unit.emit("orders", "created", {"id": 1})
        [event] = relayer_patch.messages("orders")
        [record] = relayer_patch.messages("logs")
        assert record["lines"] == [event]
        assert EVENT_ID.fullmatch(event["event_id"])

    def test_in_a_header_with_kafka_headers(self, relayer_patch):
        relayer = Relayer("logs", "k:1", kafka_headers=True)
        relayer.emit("orders", "created", {"id": 1})
        [headers] = relayer_patch.mocked_producer.headers("orders")
        assert headers["event_id"] == relayer_patch.messages("orders")[0]["event_id"]

    def test_a_forked_child_makes_ids_of_its_own(self):
        parent = [new_event_id() for _ in range(3)]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its ids, then out without cleanup
            os.write(write, " ".join(new_event_id() for _ in range(3)).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            child = pipe.read().split()
        os.waitpid(pid, 0)
        after = new_event_id()
        assert len(child) == 3
        assert {event_id[:20] for event_id in child} != {parent[0][:20]}
        assert after[:20] == parent[0][:20]  # the parent keeps its prefix
        assert not set(child) & {*parent, after}


def make_app(**config):
    app = Flask(__name__)
    app.config.update(RELAYER_EVENT_DELIVERY="on_success", **config)
    ext = FlaskRelayer(app, "logs", "k:1")

    def order(status):
        ext.emit("orders", "created", {"id": 1})
        ext.emit("orders", "paid", {"id": 1})
        return "", status

    app.add_url_rule("/ok", "ok", lambda: order(200))
    app.add_url_rule("/created", "created", lambda: order(201))
    app.add_url_rule("/missing", "missing", lambda: order(404))
    app.add_url_rule("/broken", "broken", lambda: order(503))

    @app.post("/orders")
    def post_order():
        ext.emit("orders", "created", {"id": 2})
        return redirect("/orders/2", 303)

    @app.get("/raise")
    def boom():
        ext.emit("orders", "created", {"id": 3})
        raise RuntimeError("x")

    return app, ext


class TestOnSuccess:
    @pytest.mark.parametrize("path", ["/ok", "/created"])
    def test_a_successful_request_produces_its_events_in_order(self, relayer_patch, path):
        app, _ = make_app()
        app.test_client().get(path)
        events = relayer_patch.messages("orders")
        assert [event["event_subtype"] for event in events] == ["created", "paid"]
        [record] = relayer_patch.messages("logs")
        assert record["lines"] == events  # no "discarded"

    def test_a_303_after_a_post_is_a_success(self, relayer_patch):
        app, _ = make_app()
        assert app.test_client().post("/orders").status_code == 303
        assert [event["payload"] for event in relayer_patch.messages("orders")] == [{"id": 2}]

    @pytest.mark.parametrize("path", ["/missing", "/broken", "/raise"])
    def test_a_failed_request_produces_none_and_its_record_says_so(
        self, relayer_patch, schema_checked, path
    ):
        app, _ = make_app()
        app.test_client().get(path)
        assert relayer_patch.messages("orders") == []
        [record] = relayer_patch.messages("logs")
        events = [line for line in record["lines"] if "event_type" in line]
        assert events and all(event["discarded"] is True for event in events)
        assert all(EVENT_ID.fullmatch(event["event_id"]) for event in events)

    def test_nothing_is_produced_before_the_unit_of_work_ends(self, relayer_patch):
        relayer = Relayer("logs", "k:1", event_delivery="on_success")
        with relayer.unit_of_work("job") as unit:
            unit.emit("orders", "created", {"id": 1})
            relayer.emit("orders", "paid", {"id": 1})
            assert relayer_patch.messages("orders") == []
        assert [e["event_subtype"] for e in relayer_patch.messages("orders")] == ["created", "paid"]

    def test_an_rpc_call_that_raises_produces_none(self, relayer_patch):
        rpc = make_rpc_relayer("logs", "k:1", event_delivery="on_success")

        @rpc
        def call(relayer):
            relayer.emit("orders", "created", {"id": 1})
            relayer.emit_raw("raw", [1, 2])
            raise ValueError("no")

        with pytest.raises(ValueError):
            call()
        assert relayer_patch.messages("orders") == []
        assert relayer_patch.messages("raw") == []
        [record] = relayer_patch.messages("logs")
        assert [line.get("discarded") for line in record["lines"]] == [True, True]
        assert record["lines"][1] == {"discarded": True, "message": [1, 2]}

    def test_emit_raw_is_held_too(self, relayer_patch):
        relayer = Relayer("logs", "k:1", event_delivery="on_success")
        with relayer.unit_of_work("job") as unit:
            unit.emit_raw("raw", {"a": 1})
            assert relayer_patch.messages("raw") == []
        assert relayer_patch.messages("raw") == [{"a": 1}]

    def test_outside_a_unit_of_work_events_go_at_once(self, relayer_patch):
        relayer = Relayer("logs", "k:1", event_delivery="on_success")
        relayer.emit("orders", "created", {"id": 1})
        assert len(relayer_patch.messages("orders")) == 1

    def test_the_default_is_immediate(self, relayer_patch):
        relayer = Relayer("logs", "k:1")
        assert relayer.settings.event_delivery == "immediate"
        with relayer.unit_of_work("job") as unit:
            unit.emit("orders", "created", {"id": 1})
            assert len(relayer_patch.messages("orders")) == 1

    def test_bad_input_still_raises_at_the_call(self, relayer_patch):
        relayer = Relayer("logs", "k:1", event_delivery="on_success")
        with relayer.unit_of_work("job") as unit:
            with pytest.raises(Exception, match="not JSON serializable"):
                unit.emit("orders", "created", {"x": object()})
            unit.emit("orders", "created", {"id": 1})
        assert len(relayer_patch.messages("orders")) == 1

    def test_held_events_are_bounded_by_the_producer_buffer(self, relayer_patch):
        relayer = Relayer("logs", "k:1", event_delivery="on_success", buffer_max_kbytes=64)
        big = "x" * 20_000
        with relayer.unit_of_work("job") as unit:
            for i in range(5):  # about 100 kB: the last two do not fit in 64 kB
                unit.emit("orders", "created", {"id": i, "text": big})
        produced = [event["payload"]["id"] for event in relayer_patch.messages("orders")]
        assert produced == [0, 1, 2]
        assert relayer.stats()["dropped"] == 2
        [record] = relayer_patch.messages("logs")
        assert [line.get("discarded", False) for line in record["lines"]] == [
            False, False, False, True, True,
        ]  # fmt: skip
        assert relayer._held.room == 64 * 1024  # all given back

    def test_a_bad_setting_is_refused(self):
        with pytest.raises(ConfigurationError, match="event_delivery must be 'immediate' or"):
            Relayer("logs", "k:1", event_delivery="later")
