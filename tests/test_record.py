"""Records: which lines an oversized record gives up, set() fields, building from a unit."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relayer import (
    InvalidFieldError,
    MessageTooLargeError,
    NonJSONSerializableMessageError,
    Relayer,
)
from relayer._record import (
    FIELD_NAME_LIMIT,
    FIELD_VALUE_LIMIT,
    RecordBuilder,
    encode_record,
    encoded_field,
)
from relayer._unit import Fragment, UnitOfWork

AT = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def line(i, size=0):
    """A log line whose payload starts with its number, padded with ``size`` x's."""
    return {"log_level": "info", "payload": f"{i:05d}" + "x" * size, "timestamp": AT}


def record_of(lines, **fields):
    return {
        "source": "billing",
        "logging_topic": "logs",
        "date": AT,
        "request_id": "r" * 32,
        **fields,
        "sender": {"host": "h", "pid": 1},
        "sample_rate": 1.0,
        "lines": list(lines),
    }


def numbers(encoded):
    """The numbers of the lines an encoded record kept, in their order."""
    return [int(kept["payload"][:5]) for kept in orjson.loads(encoded)["lines"]]


def size(value):
    return len(orjson.dumps(value))


def text_of(fragment):
    return orjson.loads(orjson.dumps(fragment))


# -- 1. which lines an oversized record gives up --------------------------------


class TestTruncation:
    def test_a_record_that_fits_is_left_alone(self):
        record = record_of([line(i) for i in range(3)], truncated_lines=4)
        assert encode_record(dict(record), 10_000) == orjson.dumps(record)

    def test_one_huge_line_first_costs_only_itself(self):
        lines = [line(0, 1_100_000)] + [line(i) for i in range(1, 1001)]
        value = encode_record(record_of(lines), 1_000_000)
        assert len(value) <= 1_000_000
        assert numbers(value) == list(range(1, 1001))
        assert orjson.loads(value)["truncated_lines"] == 1

    def test_one_huge_line_last_costs_only_itself(self):
        lines = [line(i) for i in range(1000)] + [line(1000, 1_100_000)]
        value = encode_record(record_of(lines), 1_000_000)
        assert numbers(value) == list(range(1000))
        assert orjson.loads(value)["truncated_lines"] == 1

    def test_the_biggest_lines_go_first_and_the_rest_keep_their_order(self):
        sizes = [10, 500, 20, 400, 30, 300, 40]
        lines = [line(i, n) for i, n in enumerate(sizes)]
        kept = [0, 2, 4, 5, 6]  # without 500 and 400, the rest fits exactly
        expected = record_of([lines[i] for i in kept])
        expected["truncated_lines"] = 2
        max_bytes = size(expected)
        assert encode_record(record_of(lines), max_bytes) == orjson.dumps(expected)
        # one byte less and the next biggest (300) goes too
        assert numbers(encode_record(record_of(lines), max_bytes - 1)) == [0, 2, 4, 6]

    @pytest.mark.parametrize(
        ("count", "room_for", "kept"),
        [
            (10, 6, [0, 1, 2, 7, 8, 9]),
            (10, 7, [0, 1, 2, 3, 7, 8, 9]),
            (9, 5, [0, 1, 2, 7, 8]),
            (9, 1, [0]),
            (2, 1, [0]),
        ],
    )
    def test_equal_lines_go_from_the_middle_out_later_first(self, count, room_for, kept):
        lines = [line(i, 50) for i in range(count)]
        expected = record_of([lines[i] for i in kept])
        expected["truncated_lines"] = count - room_for
        assert len(kept) == room_for
        value = encode_record(record_of(lines), size(expected))
        assert value == orjson.dumps(expected)

    def test_adds_to_the_lines_the_scope_already_dropped(self):
        lines = [line(0, 5000)] + [line(i) for i in range(1, 10)]
        value = encode_record(record_of(lines, truncated_lines=7), 2000)
        assert orjson.loads(value)["truncated_lines"] == 8
        assert numbers(value) == list(range(1, 10))

    def test_the_count_keeps_its_place(self):
        record = record_of([line(0, 5000)], truncated_lines=7)
        keys = list(record)
        assert list(orjson.loads(encode_record(record, 2000))) == keys

    def test_the_count_is_added_after_the_lines(self):
        keys = list(orjson.loads(encode_record(record_of([line(0, 5000)]), 2000)))
        assert keys[-2:] == ["lines", "truncated_lines"]

    def test_the_digits_of_the_count_are_counted_exactly(self):
        # 10 lines dropped of 10 takes two digits, 9 takes one: the room of one
        # more digit is the room of a short line
        lines = [line(0, 5000)] + [1] * 9 + [line(10, 5000)]
        expected = record_of([1] * 9)
        expected["truncated_lines"] = 2
        value = encode_record(record_of(lines), size(expected))
        assert value == orjson.dumps(expected)

    def test_emitted_messages_are_lines_too(self):
        lines = [Fragment(orjson.dumps({"event_type": "e", "n": "y" * 4000}))] + [
            line(i) for i in range(1, 5)
        ]
        value = encode_record(record_of(lines), 1500)
        assert numbers(value) == [1, 2, 3, 4]

    def test_a_line_json_cannot_carry_is_dropped_not_the_record(self):
        # a line captured from logging under a logger named with a lone surrogate
        bad = {**line(1), "logger": "caf\udce9"}
        value = encode_record(record_of([line(0), bad, line(2)]), 100_000)
        assert numbers(value) == [0, 2]
        assert orjson.loads(value)["truncated_lines"] == 1

    def test_lines_with_non_str_keys_are_kept(self):
        value = encode_record(record_of([{1: "a"}, line(1, 5000)]), 2000)
        assert orjson.loads(value)["lines"] == [{"1": "a"}]

    def test_huge_custom_fields_are_clipped_rather_than_the_record_lost(self):
        big = Fragment(orjson.dumps({"blob": "z" * 2_000_000}))
        record = record_of([line(0, 10)], small=Fragment(b"1"), big=big)
        value = encode_record(record, 100_000)
        assert len(value) <= 100_000
        got = orjson.loads(value)
        assert got["small"] == 1
        assert got["big"].startswith('{"blob":"zzz') and got["big"].endswith(
            f"...[{2_000_011} characters, clipped]"
        )
        assert numbers(value) == [0], "the lines get the room the field gave up"

    def test_many_fields_the_biggest_are_clipped_first(self):
        fields = {f"f{i:03d}": Fragment(orjson.dumps("v" * (100 + i))) for i in range(300)}
        record = record_of([line(0)], **fields)
        full = size(record)
        value = encode_record(record, full - 2000)
        assert full - 2000 - 300 < len(value) <= full - 2000
        got = orjson.loads(value)
        clipped = [name for name in fields if got[name].endswith("clipped]")]
        assert clipped == list(fields)[-len(clipped) :], "the biggest ones"
        assert 0 < len(clipped) < 30

    def test_a_huge_error_message_is_clipped(self):
        record = record_of([line(0)], service="billing", error="E: " + "e" * 500_000)
        value = encode_record(record, 50_000)
        got = orjson.loads(value)
        assert got["error"].startswith("E: eee") and got["error"].endswith("clipped]")
        assert got["service"] == "billing" and numbers(value) == [0]

    def test_custom_fields_go_when_even_clipped_they_are_too_many(self):
        fields = {f"field_{i:05d}": Fragment(b"1") for i in range(2000)}
        fields["big"] = Fragment(orjson.dumps("b" * 100))
        value = encode_record(record_of([line(0)], status=200, **fields), 5000)
        got = orjson.loads(value)
        assert 5000 - 20 < len(value) <= 5000
        kept = [name for name in fields if name in got]
        assert kept == list(fields)[: len(kept)], "the biggest, then the later ones go"
        assert 100 < len(kept) < 300
        assert got["status"] == 200 and got["request_id"] == "r" * 32
        assert got["truncated_lines"] == 1

    def test_too_small_even_for_the_record_alone(self):
        with pytest.raises(MessageTooLargeError, match="cannot fit in 100 bytes"):
            encode_record(record_of([line(0)], extra=Fragment(b"1")), 100)

    def test_a_field_that_is_not_json_is_still_an_error(self):
        with pytest.raises(NonJSONSerializableMessageError):
            encode_record(record_of([line(0)], bad=object()), 100_000)

    @pytest.mark.parametrize("max_bytes", [700, 1000, 1001, 4096, 65536, 1_000_000])
    def test_never_over_max_bytes(self, max_bytes):
        lines = [line(i, (i * 7919) % 3000) for i in range(500)]
        fields = {f"f{i}": Fragment(orjson.dumps("w" * (i * 1000))) for i in range(40)}
        value = encode_record(record_of(lines, error="x" * 100_000, **fields), max_bytes)
        assert len(value) <= max_bytes
        assert orjson.loads(value)["request_id"] == "r" * 32

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        sizes=st.lists(st.integers(0, 3000), max_size=60),
        field_sizes=st.lists(st.integers(0, 20_000), max_size=4),
        prior=st.one_of(st.none(), st.integers(1, 10_000)),
        max_bytes=st.integers(600, 60_000),
    )
    def test_fewest_lines_lost_in_order_and_never_over(self, sizes, field_sizes, prior, max_bytes):
        lines = [line(i, n) for i, n in enumerate(sizes)]
        fields = {f"f{i}": Fragment(orjson.dumps("v" * n)) for i, n in enumerate(field_sizes)}
        if prior is not None:
            fields["truncated_lines"] = prior
        record = record_of(lines, **fields)
        fits = size(record) <= max_bytes
        value = encode_record(record, max_bytes)
        assert len(value) <= max_bytes
        got = orjson.loads(value)
        kept = numbers(value)
        assert kept == sorted(kept)
        if fits:
            assert len(kept) == len(lines)
            assert got.get("truncated_lines") == prior
            return
        lost = (prior or 0) + len(lines) - len(kept)
        assert got.get("truncated_lines") == (lost or None)
        dropped = [size(lines[i]) for i in range(len(lines)) if i not in set(kept)]
        untouched = all(got.get(f"f{i}") == "v" * n for i, n in enumerate(field_sizes))
        if dropped and untouched:
            assert min(dropped) >= max((size(lines[i]) for i in kept), default=0)
            # the smallest line dropped would not have fit: it costs its bytes
            # and a comma, less a digit of the count if one fewer has fewer
            extra = min(dropped) + (1 if kept else 0) - (len(str(lost)) - len(str(lost - 1)))
            assert len(value) + extra > max_bytes

    def test_time_is_about_that_of_encoding_the_record(self):
        lines = [line(i, 15) for i in range(20_000)]
        assert size(lines[0]) == 100
        full = record_of(lines)
        max_bytes = size(full) - 1_000_000

        def best(run, copies):
            times = []
            for record in copies:
                started = time.perf_counter()
                run(record)
                times.append(time.perf_counter() - started)
            return min(times)

        encode_once = best(orjson.dumps, [full] * 5)
        truncate = best(
            lambda record: encode_record(record, max_bytes),
            [record_of(lines) for _ in range(5)],
        )
        value = encode_record(record_of(lines), max_bytes)
        assert max_bytes - 101 < len(value) <= max_bytes
        assert truncate < 5 * encode_once + 0.005, (truncate, encode_once)


# -- 2. set() fields ------------------------------------------------------------


class TestEncodedField:
    def test_small_values_as_they_are(self):
        assert orjson.dumps(encoded_field("user", {"id": 3, "tags": ["a"]})) == (
            b'{"id":3,"tags":["a"]}'
        )

    def test_an_oversized_value_becomes_a_clipped_string(self):
        value = text_of(encoded_field("big", {"blob": "x" * 2_000_000}))
        assert isinstance(value, str)
        text = '{"blob":"' + "x" * (FIELD_VALUE_LIMIT - 9)
        assert value == f"{text}...[{2_000_011} characters, clipped]"

    def test_the_limit_counts_characters_of_the_json(self):
        at_limit = "x" * (FIELD_VALUE_LIMIT - 2)  # with its quotes: the limit
        assert text_of(encoded_field("a", at_limit)) == at_limit
        over = text_of(encoded_field("a", at_limit + "x"))
        assert over.endswith(f"...[{FIELD_VALUE_LIMIT + 1} characters, clipped]")
        assert over.startswith('"xxx')
        wide = "é" * (FIELD_VALUE_LIMIT - 2)  # twice as many bytes, as many characters
        assert text_of(encoded_field("a", wide)) == wide

    def test_a_2mb_value_no_longer_costs_the_record(self, relayer_patch):
        relayer = Relayer("logs", "a:1")
        with relayer.unit_of_work("job"):
            relayer.set("big", "b" * 2_000_000)
            relayer.log("info", "still here")
        [record] = relayer_patch.messages("logs")
        assert record["big"].endswith("characters, clipped]")
        assert record["lines"][0]["payload"] == "still here"

    @pytest.mark.parametrize(
        "name", ["\ud800", "a\udcffb", "x" * (FIELD_NAME_LIMIT + 1), "", None, 3, b"name"]
    )
    def test_bad_names_are_refused_at_the_call(self, name):
        with pytest.raises(InvalidFieldError):
            encoded_field(name, 1)

    def test_a_name_of_the_longest_length(self):
        assert orjson.dumps(encoded_field("x" * FIELD_NAME_LIMIT, 1)) == b"1"

    def test_a_str_subclass_that_cannot_be_encoded(self):
        class Broken(str):
            def encode(self, *args, **kwargs):
                raise UnicodeEncodeError("utf-8", "", 0, 1, "no")

        with pytest.raises(InvalidFieldError):
            encoded_field(Broken("name"), 1)
        with pytest.raises(InvalidFieldError):
            encoded_field(type("Sub", (str,), {})("\ud800"), 1)

    def test_a_str_subclass_cannot_hide_a_reserved_name(self):
        class Sneaky(str):
            __hash__ = object.__hash__

            def __eq__(self, other):
                return False

            def __len__(self):
                return 1

        with pytest.raises(InvalidFieldError, match="relayer writes itself"):
            encoded_field(Sneaky("lines"), 1)
        with pytest.raises(InvalidFieldError):
            encoded_field(Sneaky("x" * (FIELD_NAME_LIMIT + 1)), 1)

    def test_a_lone_surrogate_name_no_longer_loses_the_record(self, relayer_patch):
        relayer = Relayer("logs", "a:1")
        with relayer.unit_of_work("job"):
            with pytest.raises(InvalidFieldError):
                relayer.set("\ud800", 1)
            relayer.set("fine", 2)
        assert relayer_patch.messages("logs")[0]["fine"] == 2

    def test_reserved_names_and_bad_values_still_refused(self):
        with pytest.raises(InvalidFieldError):
            encoded_field("status", 1)
        with pytest.raises(NonJSONSerializableMessageError):
            encoded_field("x", object())


# -- 3. building a record from a unit -------------------------------------------


class TestUnitRecord:
    def builder(self, **kwargs):
        options = {
            "service_name": "billing",
            "service_version": "1.0",
            "sample_rate": 1.0,
            "slow_threshold_ms": None,
        }
        return RecordBuilder("src", "logs", **{**options, **kwargs})

    def test_every_kind_of_line_field_and_timing(self, relayer_patch):
        unit = UnitOfWork(Relayer("logs", "a:1"), "req-1", "a" * 32, "b" * 16)
        unit.lines.append(Fragment(b'{"event_type":"e"}'))
        unit.lines.append(("info", "plain", 1_700_000_000.5))
        unit.lines.append(("debug", Fragment(b'{"k":1}'), 1_700_000_001.0))
        unit.lines.append(("error", "boom", 1_700_000_002.0, {"logger": "app", "exc_info": "tb"}))
        unit.fields["custom"] = encoded_field("custom", [1, 2])
        unit.add_timing("db", 1.23456)
        unit.add_timing("db", 1.0)
        built = self.builder().unit_record(unit, {"status": 201})
        record = orjson.loads(encode_record(built, 10_000))
        assert list(record) == [
            "source", "logging_topic", "date", "status", "request_id", "trace_id",
            "span_id", "custom", "timings", "sender", "sample_rate", "lines",
        ]  # fmt: skip
        assert record["custom"] == [1, 2] and record["status"] == 201
        assert record["timings"] == {"db": {"count": 2, "total_ms": 2.235}}
        assert record["sender"]["service"] == "billing"
        levels = [line.get("log_level") for line in record["lines"]]
        assert levels == [None, "info", "debug", "error"]
        assert record["lines"][2]["payload"] == {"k": 1}
        assert record["lines"][3]["logger"] == "app"

    def test_a_line_json_cannot_carry_costs_only_itself(self, relayer_patch):
        # e.g. one captured from logging under a logger named with a lone surrogate
        relayer = Relayer("logs", "a:1")
        unit = UnitOfWork(relayer)
        unit.lines.append(("info", "hi", 1_700_000_000.0, {"logger": "caf\udce9"}))
        unit.lines.append(("info", "after", 1_700_000_001.0))
        relayer.write_record(unit, {"status": 200})
        [record] = relayer_patch.messages("logs")
        assert [line["payload"] for line in record["lines"]] == ["after"]
        assert record["truncated_lines"] == 1
