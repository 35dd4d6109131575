import uuid

import orjson
import pytest

from relayer._encoding import dumps, encode_key, topic_name
from relayer.exceptions import (
    InvalidPartitionKeyError,
    InvalidTopicError,
    NonJSONSerializableMessageError,
    RelayerError,
    UnsupportedPartitionKeyTypeError,
)


class TestEncodeKey:
    def test_str_is_utf8(self):
        assert encode_key("clé") == "clé".encode()

    def test_bytes_as_is(self):
        assert encode_key(b"\x00\xff") == b"\x00\xff"

    def test_uuid_is_its_16_raw_bytes(self):
        key = uuid.uuid4()
        assert encode_key(key) == key.bytes
        assert len(encode_key(key)) == 16

    def test_none_means_no_key(self):
        assert encode_key(None) is None

    def test_str_and_bytes_subclasses(self):
        class S(str):
            pass

        class B(bytes):
            pass

        assert encode_key(S("k")) == b"k"
        assert type(encode_key(B(b"k"))) is bytes

    @pytest.mark.parametrize("key", [1, 1.5, ["a"], {"a": 1}, object(), bytearray(b"x")])
    def test_other_types_are_refused_with_the_type_named(self, key):
        with pytest.raises(UnsupportedPartitionKeyTypeError, match=type(key).__name__) as info:
            encode_key(key)
        assert isinstance(info.value, RelayerError)
        assert isinstance(info.value, TypeError)

    def test_lone_surrogate_is_an_invalid_key(self):
        with pytest.raises(InvalidPartitionKeyError, match="UTF-8"):
            encode_key("\ud800")


class TestDumps:
    def test_compact_json(self):
        assert dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()

    def test_non_str_keys_accepted_like_json_module(self):
        assert orjson.loads(dumps({1: "a", None: "b"})) == {"1": "a", "null": "b"}

    def test_refusal_names_what_and_keeps_cause(self):
        with pytest.raises(NonJSONSerializableMessageError, match="the payload") as info:
            dumps({"x": object()}, "payload")
        assert isinstance(info.value.__cause__, TypeError)

    def test_integer_over_64_bits_refused(self):
        with pytest.raises(NonJSONSerializableMessageError):
            dumps({"x": 2**70})


class TestTopicName:
    def test_prefix_and_suffix(self):
        assert topic_name("dev_", "orders", ".v1") == "dev_orders.v1"

    @pytest.mark.parametrize("name", ["", "a b", "é", "x" * 250, ".", "..", "a/b"])
    def test_invalid_names_are_refused_and_named(self, name):
        with pytest.raises(InvalidTopicError) as info:
            topic_name("", name, "")
        assert repr(name)[:40] in str(info.value)

    def test_longest_valid_name(self):
        assert topic_name("", "x" * 249, "") == "x" * 249

    def test_prefix_counts_towards_the_limit(self):
        with pytest.raises(InvalidTopicError, match="249"):
            topic_name("p" * 200, "x" * 49, "s")

    @pytest.mark.parametrize("name", [None, 1, b"bytes", ("a",)])
    def test_non_str_refused(self, name):
        with pytest.raises(InvalidTopicError, match="must be a non-empty str"):
            topic_name("", name, "")
