import copy
import logging
import re
import uuid
from datetime import date, datetime

import confluent_kafka
import orjson
import pytest

from relayer import (
    ConfigurationError,
    InvalidLogMessageError,
    InvalidTopicError,
    MessageTooLargeError,
    NonJSONSerializableMessageError,
    Relayer,
    RelayerError,
    UnsupportedPartitionKeyTypeError,
)
from relayer.testing import RelayerPatch

from .helpers import RaisingStr, Str, Unprintable


@pytest.fixture
def relayer(relayer_patch):
    return Relayer("logs", kafka_hosts="kafka:9092", topic_prefix="dev_", topic_suffix="_v1")


def iso(value):
    return datetime.fromisoformat(value)


class TestConstruction:
    def test_kafka_hosts_required(self):
        with pytest.raises(ConfigurationError, match="kafka_hosts is required"):
            Relayer("logs")

    def test_kafka_hosts_list_or_csv(self):
        assert Relayer("logs", ["a:1", " b:2"])._producer._config["bootstrap.servers"] == "a:1,b:2"
        assert Relayer("logs", "a:1,b:2")._producer._config["bootstrap.servers"] == "a:1,b:2"

    def test_bootstrap_servers_in_producer_opts_is_enough(self):
        r = Relayer("logs", producer_opts={"bootstrap.servers": "a:1"})
        assert r._producer._config["bootstrap.servers"] == "a:1"

    @pytest.mark.parametrize("hosts", [42, ["a:1", ""], ","])
    def test_bad_kafka_hosts(self, hosts):
        with pytest.raises(ConfigurationError, match="kafka_hosts"):
            Relayer("logs", hosts)

    @pytest.mark.parametrize("topic", ["", None, 3])
    def test_bad_logging_topic(self, topic):
        with pytest.raises(ConfigurationError, match="logging_topic"):
            Relayer(topic, "a:1")

    def test_invalid_logging_topic_name(self):
        with pytest.raises(InvalidTopicError, match="bad topic"):
            Relayer("bad topic", "a:1")

    def test_source_defaults_to_full_logging_topic(self):
        r = Relayer("logs", "a:1", topic_prefix="p_", topic_suffix="_s")
        assert r.source == "p_logs_s"
        assert r.record_topic == "p_logs_s"
        assert Relayer("logs", "a:1", source="billing").source == "billing"

    def test_producer_opts_pass_through_over_defaults(self):
        opts = {"linger.ms": 50, "acks": 1, "enable.idempotence": False}
        r = Relayer("logs", "a:1", producer_opts=opts)
        assert r._producer._config["linger.ms"] == 50
        assert r._producer._config["acks"] == 1
        assert r._producer._config["compression.type"] == "lz4"

    def test_nothing_connects_before_first_message(self):
        r = Relayer("logs", "a:1")
        assert r._producer._rdk is None
        assert r.flush(0) == 0
        assert r.stats()["produced"] == 0


class TestEmit:
    def test_envelope_topic_and_key(self, relayer, relayer_patch):
        key = uuid.uuid4()
        relayer.emit("user_created", "admin", {"id": 10}, partition_key=key)
        [(value, sent_key)] = relayer_patch.produced_messages["dev_user_created_v1"]
        message = orjson.loads(value)
        assert sent_key == key.bytes
        assert set(message) == {
            "event_id", "source", "event_type", "event_subtype", "payload", "timestamp",
        }  # fmt: skip
        assert re.fullmatch("[0-9a-f]{32}", message["event_id"])
        assert message["source"] == "dev_logs_v1"
        assert message["event_type"] == "user_created"
        assert message["event_subtype"] == "admin"
        assert message["payload"] == {"id": 10}
        assert iso(message["timestamp"]).utcoffset().total_seconds() == 0

    def test_str_and_bytes_keys(self, relayer, relayer_patch):
        relayer.emit("e", "s", 1, partition_key="k")
        relayer.emit("e", "s", 2, partition_key=b"\x01")
        relayer.emit("e", "s", 3)
        assert relayer_patch.mocked_producer.keys("dev_e_v1") == [b"k", b"\x01", None]

    def test_payload_never_mutated(self, relayer):
        payload = {"a": [1, {"b": 2}], "c": uuid.uuid4()}
        before = copy.deepcopy(payload)
        relayer.emit("e", "s", payload)
        assert payload == before

    def test_unserializable_payload_raises_before_producing(self, relayer, relayer_patch):
        with pytest.raises(NonJSONSerializableMessageError, match="'e'/'s'"):
            relayer.emit("e", "s", {"x": object()})
        assert relayer_patch.produced_messages == {}

    def test_bad_key_raises_before_producing(self, relayer, relayer_patch):
        with pytest.raises(UnsupportedPartitionKeyTypeError, match="int"):
            relayer.emit("e", "s", {}, partition_key=42)
        assert relayer_patch.produced_messages == {}

    @pytest.mark.parametrize("event_type", ["bad type", "", None, ["list"], "x" * 300])
    def test_bad_event_type_raises_invalid_topic(self, relayer, relayer_patch, event_type):
        with pytest.raises(InvalidTopicError):
            relayer.emit(event_type, "s", {})
        assert relayer_patch.produced_messages == {}

    def test_errors_are_relayer_errors(self, relayer):
        for call in (
            lambda: relayer.emit("e", "s", object()),
            lambda: relayer.emit("e", "s", 1, partition_key=1.5),
            lambda: relayer.emit("?", "s", 1),
        ):
            with pytest.raises(RelayerError):
                call()

    def test_emit_raw(self, relayer, relayer_patch):
        relayer.emit_raw("raw", {"any": "shape"}, partition_key="k")
        assert relayer_patch.produced_messages["dev_raw_v1"] == [(b'{"any":"shape"}', b"k")]

    def test_emit_raw_unserializable(self, relayer):
        with pytest.raises(NonJSONSerializableMessageError, match="dev_raw_v1"):
            relayer.emit_raw("raw", {1, 2})

    def test_debug_log_of_every_message(self, relayer, caplog):
        with caplog.at_level(logging.DEBUG, logger="relayer"):
            relayer.emit("e", "s", {"id": 1})
        assert any(
            "dev_e_v1" in r.getMessage() and '"id":1' in r.getMessage() for r in caplog.records
        )

    def test_topic_cache_is_bounded(self, relayer):
        for i in range(1100):
            relayer.emit(f"t{i}", "s", i)
        assert len(relayer._topics) == 1024


class TestLogAndScope:
    def test_lines_in_order(self, relayer, relayer_patch):
        with relayer.unit_of_work("job"):
            relayer.log("info", "first")
            relayer.emit("e", "s", {"n": 1})
            relayer.log("debug", {"detail": [1, 2]})
        [record] = relayer_patch.messages("dev_logs_v1")
        assert list(record) == [
            "source", "logging_topic", "date", "service", "service_time", "request_id", "sender",
            "sample_rate", "lines",
        ]  # fmt: skip
        assert record["logging_topic"] == "logs"
        lines = record["lines"]
        assert [line.get("log_level") for line in lines] == ["info", None, "debug"]
        assert lines[0]["payload"] == "first"
        assert lines[1] == relayer_patch.messages("dev_e_v1")[0]
        assert lines[2]["payload"] == {"detail": [1, 2]}
        assert iso(lines[0]["timestamp"]) <= iso(lines[2]["timestamp"])

    def test_dict_message_is_copied_when_logged(self, relayer, relayer_patch):
        message = {"n": 1}
        with relayer.unit_of_work("job"):
            relayer.log("info", message)
            message["n"] = 2
        assert relayer_patch.messages("dev_logs_v1")[0]["lines"][0]["payload"] == {"n": 1}

    def test_log_outside_unit_of_work_is_its_own_record(self, relayer, relayer_patch):
        relayer.log("warning", "at startup")
        [record] = relayer_patch.messages("dev_logs_v1")
        assert record["source"] == "dev_logs_v1"
        assert [line["payload"] for line in record["lines"]] == ["at startup"]

    @pytest.mark.parametrize("level", [1, None, b"info", "\ud800", Str("\udfff"), Unprintable()])
    def test_bad_log_level(self, relayer, relayer_patch, level):
        with pytest.raises(InvalidLogMessageError, match="log_level"):
            relayer.log(level, "x")
        assert relayer_patch.produced_messages == {}

    def test_level_that_is_a_str_subclass_is_recorded_as_a_str(self, relayer, relayer_patch):
        relayer.log(RaisingStr("warning"), "x")
        assert relayer_patch.messages("dev_logs_v1")[0]["lines"][0]["log_level"] == "warning"

    @pytest.mark.parametrize("message", [1, 2.5, ["x", {"y": None}], None, True, {}])
    def test_any_json_value_is_a_message(self, relayer, relayer_patch, message):
        with relayer.unit_of_work("job"):
            relayer.log("info", message)
        [line] = relayer_patch.messages("dev_logs_v1")[0]["lines"]
        assert line["payload"] == message

    def test_dates_and_uuids_are_encoded_as_iso_strings(self, relayer, relayer_patch):
        when, day, key = datetime(2026, 1, 2, 3, 4, 5), date(2026, 1, 2), uuid.UUID(int=1)
        relayer.emit("e", "s", {"at": when, "day": day, "id": key})
        relayer.log("info", [when, day, key])
        payload = relayer_patch.messages("dev_e_v1")[0]["payload"]
        assert payload == {"at": "2026-01-02T03:04:05", "day": "2026-01-02", "id": str(key)}
        line = relayer_patch.messages("dev_logs_v1")[0]["lines"][0]
        assert line["payload"] == ["2026-01-02T03:04:05", "2026-01-02", str(key)]

    @pytest.mark.parametrize("depth", [10_000])
    def test_too_deep_a_message_is_a_relayer_error(self, relayer, relayer_patch, depth):
        deep: dict = {}
        for _ in range(depth):
            deep = {"a": deep}
        circular: dict = {}
        circular["self"] = circular
        for message in (deep, circular, [circular]):
            with pytest.raises(NonJSONSerializableMessageError):
                relayer.log("info", message)
        assert relayer_patch.produced_messages == {}

    def test_surrogates_in_a_message_are_refused(self, relayer, relayer_patch):
        for message in ("\ud800", Str("a\udc00"), ["\ud800"]):
            with pytest.raises(NonJSONSerializableMessageError):
                relayer.log("info", message)
        assert relayer_patch.produced_messages == {}

    def test_unserializable_log_dict(self, relayer):
        with pytest.raises(NonJSONSerializableMessageError, match="log message"):
            relayer.log("info", {"x": object()})

    def test_bad_input_keeps_what_was_accepted(self, relayer, relayer_patch):
        with relayer.unit_of_work("job"):
            relayer.log("info", "kept")
            with pytest.raises(RelayerError):
                relayer.emit("e", "s", object())
        assert [line["payload"] for line in relayer_patch.messages("dev_logs_v1")[0]["lines"]] == [
            "kept"
        ]

    def test_write_record_never_raises(self, relayer, relayer_patch, caplog):
        relayer.write_record(relayer.open_unit(), {"bad": object()})
        assert "could not build the record" in caplog.text
        assert relayer_patch.produced_messages == {}
        stats = relayer.stats()
        assert (stats["produced"], stats["dropped"]) == (1, 1)


def test_repr_names_topic_and_servers():
    text = repr(Relayer("logs", "a:1"))
    assert "logs" in text and "a:1" in text


class TestBuffer:
    def test_buffer_settings_reach_librdkafka(self):
        r = Relayer("logs", "a:1", buffer_max_messages=10, buffer_max_kbytes=64)
        assert r._producer._config["queue.buffering.max.messages"] == 10
        assert r._producer._config["queue.buffering.max.kbytes"] == 64

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"buffer_max_messages": 0},
            {"buffer_max_kbytes": -1},
            {"buffer_max_messages": "10"},
            {"when_full": "wait"},
            {"block_timeout": -1},
            {"shutdown_timeout": -1},
        ],
    )
    def test_invalid_settings(self, kwargs):
        with pytest.raises(ConfigurationError):
            Relayer("logs", "a:1", **kwargs)

    def test_librdkafka_refusals_surface_at_construction(self):
        with pytest.raises(ConfigurationError, match="no.such.setting"):
            Relayer("logs", "a:1", producer_opts={"no.such.setting": 1})
        with pytest.raises(ConfigurationError, match="compression"):
            Relayer("logs", "a:1", producer_opts={"compression.type": "zip"})

    @pytest.mark.parametrize("reserved", ["on_delivery", "delivery.report.only.error"])
    def test_reserved_settings(self, reserved):
        with pytest.raises(ConfigurationError, match="on_delivery_error"):
            Relayer("logs", "a:1", producer_opts={reserved: True})


class TestSizes:
    def test_event_over_message_max_bytes_raises_before_producing(self, relayer, relayer_patch):
        with pytest.raises(MessageTooLargeError, match="dev_e_v1.*message.max.bytes of 1000000"):
            relayer.emit("e", "s", "x" * 1_000_000)
        with pytest.raises(MessageTooLargeError):
            relayer.emit_raw("raw", "x" * 1_000_000)
        assert relayer_patch.produced_messages == {}

    def test_limit_follows_librdkafkas(self, make_relayer, monkeypatch):
        """What emit accepts librdkafka accepts, and emit refuses no more than a
        few bytes (its estimate of the headers' size) that librdkafka would take."""
        relayer = make_relayer(producer_opts={"message.max.bytes": 2000})

        def accepted(size):
            try:
                relayer.emit("e", "s", "x" * size, partition_key=b"k")
                return True
            except MessageTooLargeError:
                return False

        low, high = 0, 2000
        while high - low > 1:  # the largest payload emit accepts
            mid = (low + high) // 2
            low, high = (mid, high) if accepted(mid) else (low, mid)
        assert relayer.flush(10) == 0
        assert relayer.stats()["failed"] == relayer.stats()["dropped"] == 0

        with RelayerPatch() as patch:
            relayer.emit("e", "s", "x" * low, partition_key=b"k")
        [(value, key)] = patch.produced_messages["e"]
        headers = list(patch.mocked_producer.headers("e")[0].items())
        raw = confluent_kafka.Producer({"message.max.bytes": 2000, "bootstrap.servers": "x:1"})
        raw.produce("e", value, key, headers=headers)  # librdkafka takes what emit took
        slack = 0
        while slack < 200:
            slack += 1
            try:
                raw.produce("e", value + b" " * slack, key, headers=headers)
            except confluent_kafka.KafkaException:
                break
        assert slack <= 64, f"emit refused {slack} bytes that librdkafka would have taken"
        raw.purge()

    def test_oversized_record_keeps_first_and_last_lines(self, relayer_patch):
        relayer = Relayer("logs", "a:1", producer_opts={"message.max.bytes": 5000})
        unit = relayer.open_unit()
        for i in range(200):
            relayer._log(unit, "info", f"line {i:03d} " + "x" * 50)
        relayer.write_record(unit, {"status": 200})
        [(value, _)] = relayer_patch.produced_messages["logs"]
        assert len(value) + 36 <= 5000
        record = orjson.loads(value)
        kept = [line["payload"][:8] for line in record["lines"]]
        assert kept[0] == "line 000" and kept[-1] == "line 199"
        assert record["truncated_lines"] == 200 - len(kept) > 0
        numbers = [int(k[5:]) for k in kept]
        assert numbers == sorted(numbers), "order kept"
        assert record["status"] == 200

    def test_a_huge_log_line_outside_a_unit_of_work_still_sends_a_record(self, relayer_patch):
        relayer = Relayer("logs", "a:1", producer_opts={"message.max.bytes": 2000})
        relayer.log("info", "x" * 5000)
        [record] = relayer_patch.messages("logs")
        assert record["lines"] == [] and record["truncated_lines"] == 1


class TestSecrets:
    def test_log_dicts_are_redacted(self, relayer, relayer_patch):
        relayer.log("info", {"user": "ada", "password": "hunter2", "nested": {"api_key": "k"}})
        [line] = relayer_patch.messages("dev_logs_v1")[0]["lines"]
        assert line["payload"] == {"user": "ada", "password": "***", "nested": {"api_key": "***"}}

    def test_redact_keys_configurable(self, relayer_patch):
        relayer = Relayer("logs", "a:1", redact_keys=["ssn"])
        relayer.log("info", {"ssn": "1", "password": "p"})
        assert relayer_patch.messages("logs")[0]["lines"][0]["payload"] == {
            "ssn": "***",
            "password": "p",
        }

    def test_emitted_payloads_are_business_data_and_untouched(self, relayer, relayer_patch):
        relayer.emit("e", "s", {"token": "t"})
        assert relayer_patch.messages("dev_e_v1")[0]["payload"] == {"token": "t"}

    def test_no_secret_in_repr_or_logs(self, make_relayer, caplog):
        opts = {
            "sasl.username": "alice",
            "sasl.password": "PASSWORD-VALUE",
            "ssl.key.password": "KEY-PASSWORD-VALUE",
        }
        with caplog.at_level(logging.DEBUG, logger="relayer"):
            relayer = make_relayer(producer_opts=opts)
            relayer.emit("e", "s", 1)
            relayer.flush(10)
        assert "starting a producer" in caplog.text and "alice" in caplog.text
        for text in (repr(relayer), repr(relayer._producer), caplog.text):
            assert "PASSWORD-VALUE" not in text


def test_emit_counts_a_message_once_librdkafka_has_it(make_relayer, monkeypatch):
    relayer = make_relayer()
    relayer.emit("e", "s", 1)
    assert relayer.flush(10) == 0
    seen = []
    client = relayer._producer._client
    produce = client.produce

    class Watched:  # the librdkafka client, watched at the moment it is handed a message
        def produce(self, *args):
            seen.append(relayer.stats()["delivered"])  # not queued yet: not delivered either
            produce(*args)

        def __getattr__(self, name):
            return getattr(client, name)

        def __len__(self):
            return len(client)

    monkeypatch.setattr(relayer._producer, "_client", Watched())
    relayer.emit("e", "s", 2)
    assert relayer.flush(10) == 0
    assert seen == [1]
    assert relayer.stats()["delivered"] == relayer.stats()["produced"] == 2
