"""relayer._facades: Relayer.unit_of_work (CallUnit) and ScopedRelayer."""

import asyncio
import threading

import pytest

import relayer as relayer_module
from relayer import CallUnit, Relayer, ScopedRelayer

from .helpers import HEX32, UnprintableError


@pytest.fixture
def relayer(relayer_patch):
    return Relayer("jobs", "k:1")


def only_record(relayer_patch, topic="jobs"):
    [record] = relayer_patch.messages(topic)
    return record


class TestAsAContextManager:
    def test_yields_a_scoped_relayer_and_writes_a_call_record(self, relayer, relayer_patch):
        with relayer.unit_of_work("nightly-export") as unit:
            assert isinstance(unit, ScopedRelayer)
            unit.emit("exports", "started", {"n": 1})
            unit.log("info", "exporting")
            unit.set("rows", 3)
            with unit.timer("query"):
                pass
            assert relayer_module.current().request_id == unit.request_id
            relayer.log("info", "through the relayer itself")
        record = only_record(relayer_patch)
        assert record["service"] == "nightly-export"
        assert record["service_time"] > 0
        assert record["request_id"] == unit.request_id and HEX32.fullmatch(unit.request_id)
        assert record["rows"] == 3 and record["timings"]["query"]["count"] == 1
        assert [line.get("payload") for line in record["lines"]] == [
            {"n": 1},
            "exporting",
            "through the relayer itself",
        ]
        assert "error" not in record
        with pytest.raises(relayer_module.OutsideUnitOfWorkError):
            relayer_module.current()

    def test_an_error_is_recorded_and_raised_unchanged(self, relayer, relayer_patch):
        error = KeyError("order 7")
        with pytest.raises(KeyError) as raised:
            with relayer.unit_of_work("charge"):
                raise error
        assert raised.value is error
        assert only_record(relayer_patch)["error"] == "KeyError: 'order 7'"

    def test_an_unprintable_error_is_still_recorded(self, relayer, relayer_patch):
        with pytest.raises(UnprintableError):
            with relayer.unit_of_work("charge"):
                raise UnprintableError()
        assert only_record(relayer_patch)["error"] == "UnprintableError"

    def test_the_given_request_id_and_traceparent(self, relayer, relayer_patch):
        trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        with relayer.unit_of_work("consume", request_id="msg-42", traceparent=trace) as unit:
            assert unit.request_id == "msg-42"
        record = only_record(relayer_patch)
        assert record["request_id"] == "msg-42"
        assert record["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"

    def test_an_unusable_request_id_is_replaced(self, relayer, relayer_patch):
        with relayer.unit_of_work("consume", request_id="has spaces") as unit:
            pass
        assert HEX32.fullmatch(unit.request_id)

    def test_nested_units_are_separate_records(self, relayer, relayer_patch):
        with relayer.unit_of_work("outer") as outer:
            outer.log("info", "o")
            with relayer.unit_of_work("inner") as inner:
                inner.log("info", "i")
            relayer.log("info", "o again")
        inner_record, outer_record = relayer_patch.messages("jobs")
        assert inner_record["service"] == "inner"
        assert [line["payload"] for line in inner_record["lines"]] == ["i"]
        assert [line["payload"] for line in outer_record["lines"]] == ["o", "o again"]

    def test_async_with(self, relayer, relayer_patch):
        async def job():
            async with relayer.unit_of_work("async-job") as unit:
                unit.log("info", "awaited")
                await asyncio.sleep(0)

        asyncio.run(job())
        assert only_record(relayer_patch)["lines"][0]["payload"] == "awaited"

    def test_a_scoped_relayer_from_a_thread_the_unit_starts(self, relayer, relayer_patch):
        with relayer.unit_of_work("fan-out") as unit:
            thread = threading.Thread(target=lambda: unit.emit("parts", "done", {"part": 1}))
            thread.start()
            thread.join()
        [event] = relayer_patch.messages("parts")
        assert event["request_id"] == unit.request_id
        assert only_record(relayer_patch)["lines"] == [event]


class TestAsADecorator:
    def test_each_call_is_its_own_unit_of_work(self, relayer, relayer_patch):
        @relayer.unit_of_work("resize")
        def resize(n):
            """Resize."""
            relayer.log("info", f"resizing {n}")
            return n * 2

        assert resize(1) == 2 and resize(2) == 4
        assert resize.__name__ == "resize" and resize.__doc__ == "Resize."
        first, second = relayer_patch.messages("jobs")
        assert first["request_id"] != second["request_id"]
        assert [r["lines"][0]["payload"] for r in (first, second)] == ["resizing 1", "resizing 2"]

    def test_async_functions(self, relayer, relayer_patch):
        @relayer.unit_of_work("fetch")
        async def fetch(n):
            await asyncio.sleep(0)
            relayer.log("info", f"fetched {n}")
            if n == 2:
                raise ValueError("bad")
            return n

        async def both():
            return await asyncio.gather(fetch(1), fetch(2), return_exceptions=True)

        one, two = asyncio.run(both())
        assert one == 1 and isinstance(two, ValueError)
        records = {r["lines"][0]["payload"]: r for r in relayer_patch.messages("jobs")}
        assert set(records) == {"fetched 1", "fetched 2"}
        assert "error" not in records["fetched 1"]
        assert records["fetched 2"]["error"] == "ValueError: bad"

    def test_the_call_unit_is_public(self, relayer):
        unit = relayer.unit_of_work("x")
        assert isinstance(unit, CallUnit)
        assert "x" in repr(unit)


def test_rpc_decorator_is_built_on_unit_of_work(relayer_patch):
    from relayer.rpc import make_rpc_relayer

    rpc = make_rpc_relayer("calls", "k:1")

    @rpc
    def handler(relayer=None):
        return relayer

    scoped = handler()
    assert isinstance(scoped, ScopedRelayer)
    record = only_record(relayer_patch, "calls")
    assert record["service"].endswith("handler")
    assert record["request_id"] == scoped.request_id
