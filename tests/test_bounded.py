"""A unit of work is bounded, and always yields its record or a counted drop."""

import orjson
import pytest

from relayer import InvalidFieldError, Relayer
from relayer._unit import MAX_TIMERS
from relayer.rpc import make_rpc_relayer

from .helpers import RaisingStr, UnprintableError

LIMIT = 1_000_000  # librdkafka's default message.max.bytes


@pytest.fixture
def rpc(relayer_patch):
    return make_rpc_relayer("logs", kafka_hosts="kafka:9092")


def only_record(relayer_patch):
    [(value, _)] = relayer_patch.produced_messages["logs"]
    assert len(value) <= LIMIT
    return orjson.loads(value)


class TestFlood:
    def test_many_lines_keep_the_first_and_last_ones_within_the_limit(self, rpc, relayer_patch):
        lines = 200_000

        @rpc
        def call(relayer=None):
            for i in range(lines):
                relayer.log("info", f"line {i:06d}")
            scope = relayer.unit
            kept = len(scope.lines) + len(scope._tail or ())
            assert kept < 20_000  # held in memory, not 200,000
            return kept

        kept = call()
        record = only_record(relayer_patch)
        payloads = [line["payload"] for line in record["lines"]]
        assert payloads[0] == "line 000000" and payloads[-1] == f"line {lines - 1:06d}"
        assert len(payloads) + record["truncated_lines"] == lines
        assert len(payloads) <= kept
        assert payloads == sorted(payloads)  # in order, head then tail

    def test_events_count_too(self, rpc, relayer_patch):
        @rpc
        def call(relayer=None):
            for i in range(30_000):
                relayer.emit("orders", "created", {"n": i, "pad": "x" * 40})

        call()
        assert len(relayer_patch.produced_messages["orders"]) == 30_000
        record = only_record(relayer_patch)
        assert record["truncated_lines"] > 0
        assert record["lines"][-1]["payload"]["n"] == 29_999

    def test_a_huge_line_is_clipped_and_the_small_ones_after_it_are_kept(self, rpc, relayer_patch):
        @rpc
        def call(relayer=None):
            relayer.log("info", "x" * 1_100_000)
            relayer.log("info", {"big": "y" * 1_100_000})
            for i in range(1000):
                relayer.log("info", f"small {i}")

        call()
        record = only_record(relayer_patch)
        lines = record["lines"]
        assert len(lines) == 1002 and "truncated_lines" not in record
        assert lines[0]["payload"].endswith("...[1100000 characters, clipped]")
        assert lines[1]["payload"].startswith('{"big":"yyy')
        assert lines[1]["payload"].endswith("characters, clipped]")
        assert lines[-1]["payload"] == "small 999"

    def test_custom_fields_are_bounded(self, rpc, relayer_patch, caplog):
        @rpc
        def call(relayer=None):
            for i in range(5_000):
                relayer.set(f"field_{i}", "v" * 100)

        call()
        record = only_record(relayer_patch)
        kept = [name for name in record if name.startswith("field_")]
        assert 100 < len(kept) < 5_000
        assert "custom fields are full" in caplog.text

    def test_timer_names_are_bounded(self, rpc, relayer_patch):
        @rpc
        def call(relayer=None):
            for i in range(MAX_TIMERS + 10):
                with relayer.timer(f"t{i}"):
                    pass

        call()
        assert len(only_record(relayer_patch)["timings"]) == MAX_TIMERS


class TestRefusedAtTheCall:
    @pytest.mark.parametrize("name", ["\ud800", "t" * 257, 5, ""])
    def test_bad_timer_names(self, name):
        relayer = Relayer("logs", "k:1")
        with pytest.raises(InvalidFieldError):
            relayer.timer(name)

    def test_timer_name_that_is_a_str_subclass(self, rpc, relayer_patch):
        @rpc
        def call(relayer=None):
            with relayer.timer(RaisingStr("db")):
                pass

        call()
        assert list(only_record(relayer_patch)["timings"]) == ["db"]


class TestErrors:
    @pytest.mark.parametrize(
        "error, text",
        [
            (UnprintableError(), "UnprintableError"),
            (ValueError("bad \ud800 value"), "ValueError: bad \\ud800 value"),
            (ValueError("e" * 2_000_000), None),
        ],
    )
    def test_the_service_exception_is_raised_and_recorded(self, rpc, relayer_patch, error, text):
        @rpc
        def call(relayer=None):
            relayer.log("info", "before")
            raise error

        with pytest.raises(type(error)) as raised:
            call()
        assert raised.value is error
        record = only_record(relayer_patch)
        if text is not None:
            assert record["error"] == text
        else:
            assert record["error"].startswith("ValueError: eee")
            assert record["error"].endswith("characters, clipped]")
        assert record["lines"][0]["payload"] == "before"

    def test_a_record_that_cannot_be_built_is_a_counted_drop(self, relayer_patch, caplog):
        relayer = Relayer("logs", "k:1")
        unit = relayer.open_unit()
        relayer._log(unit, "info", "x")
        relayer.write_record(unit, {"bad": object()})  # fields no middleware would give
        assert relayer_patch.produced_messages["logs"] == []
        stats = relayer.stats()
        assert stats["produced"] == stats["dropped"] == 1
        assert "could not build the record" in caplog.text
