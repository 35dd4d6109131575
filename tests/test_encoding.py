import uuid

import orjson
import pytest

from relayer import Relayer
from relayer._encoding import dumps, encode_key, topic_name
from relayer.exceptions import (
    InvalidPartitionKeyError,
    InvalidTopicError,
    NonJSONSerializableMessageError,
    RelayerError,
    UnsupportedPartitionKeyTypeError,
)

from .helpers import RaisingStr, Unprintable


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


class TestHostileObjects:
    """Objects whose own str() or repr() raise get a RelayerError, never a bare error."""

    def test_str_subclass_key_whose_str_raises_is_encoded_from_its_characters(self):
        assert encode_key(RaisingStr("k\u00e9")) == "k\u00e9".encode()

    def test_unsupported_key_whose_repr_raises(self):
        with pytest.raises(UnsupportedPartitionKeyTypeError, match="Unprintable"):
            encode_key(Unprintable())

    def test_uuid_subclass_whose_bytes_raise(self):
        class BadUUID(uuid.UUID):
            @property
            def bytes(self):
                raise ValueError("no bytes")

        with pytest.raises(InvalidPartitionKeyError, match="no bytes"):
            encode_key(BadUUID(int=1))

    def test_topic_whose_repr_raises(self):
        with pytest.raises(InvalidTopicError, match="Unprintable"):
            topic_name("", Unprintable(), "")

    @pytest.mark.parametrize("headers", [True, False])
    def test_event_subtype_whose_str_raises(self, relayer_patch, headers):
        relayer = Relayer("logs", "k:1", kafka_headers=headers)
        with pytest.raises(NonJSONSerializableMessageError):
            relayer.emit("orders", Unprintable(), {})
        relayer.emit("orders", RaisingStr("created"), {})
        [event] = relayer_patch.messages("orders")
        assert event["event_subtype"] == "created"
        if headers:
            assert relayer_patch.mocked_producer.headers("orders")[0]["event_subtype"] == "created"

    def test_partition_key_and_level_whose_str_raises(self, relayer_patch):
        relayer = Relayer("logs", "k:1")
        relayer.emit("orders", "created", {}, partition_key=RaisingStr("k"))
        assert relayer_patch.mocked_producer.keys("orders") == [b"k"]
        with pytest.raises(RelayerError):
            relayer.log(Unprintable(), "x")
        relayer.log(RaisingStr("info"), "x")
        assert relayer_patch.messages("logs")[0]["lines"][0]["log_level"] == "info"
