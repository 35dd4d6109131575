"""relayer.test: RelayerPatch and MockedProducer, as users' tests use them."""

import unittest

import pytest

from relayer import Relayer, _producer
from relayer.testing import MockedProducer, RelayerPatch


class ReadmeStyle(unittest.TestCase):
    """The README's own example: start() in setUp, stop() in tearDown."""

    def setUp(self):
        self.relayer_patch = RelayerPatch()
        self.relayer_patch.start()

    def tearDown(self):
        self.relayer_patch.stop()

    def test_messages_recorded_as_bytes_and_key(self):
        relayer = Relayer("logs", "kafka:9092")
        relayer.emit("created", "thing", {"id": 1}, partition_key="k")
        produced = self.relayer_patch.mocked_producer.produced_messages
        self.assertEqual(list(produced), ["created"])
        [(message, key)] = produced["created"]
        self.assertIsInstance(message, bytes)
        self.assertEqual(key, b"k")
        self.assertEqual(self.relayer_patch.messages("created")[0]["payload"], {"id": 1})


def test_nothing_connects_and_nothing_pending():
    with RelayerPatch() as patch:
        relayer = Relayer("logs", "kafka:9092")
        relayer.emit("e", "s", 1)
        assert relayer._producer._rdk is None
        assert relayer.flush(0) == 0
    assert patch.messages("e")[0]["payload"] == 1


def test_relayer_built_before_the_patch_is_patched_too(relayer_patch):
    relayer_patch.stop()
    relayer = Relayer("logs", "mock:9092", producer_opts={"test.mock.num.brokers": 1})
    relayer_patch.start()
    relayer.emit("e", "s", 1)
    assert relayer._producer._rdk is None
    assert relayer_patch.messages("e")


def test_stop_restores_the_real_producer():
    relayer = Relayer("logs", "mock:9092", producer_opts={"test.mock.num.brokers": 1})
    patch = RelayerPatch().start()
    relayer.emit("e", "s", "patched")
    patch.stop()
    patch.stop()
    relayer.emit("e", "s", "real")
    assert [m["payload"] for m in patch.messages("e")] == ["patched"]
    assert relayer._producer._rdk is not None  # librdkafka took the second one
    assert relayer.flush(10) == 0
    relayer.close(5)


def test_context_manager_restores_on_error():
    with pytest.raises(ZeroDivisionError):
        with RelayerPatch():
            raise ZeroDivisionError
    assert _producer._factory is None


def test_fixture_is_active(relayer_patch):
    Relayer("logs", "kafka:9092").emit("e", "s", 1)
    assert relayer_patch.produced_messages["e"]


def test_mocked_producer_helpers():
    producer = MockedProducer()
    producer.produce("t", b'{"a":1}', b"k")
    producer.produce("t", b"[2]")
    assert producer.messages("t") == [{"a": 1}, [2]]
    assert producer.keys("t") == [b"k", None]
    assert producer.messages("missing") == []
    producer.clear()
    assert producer.produced_messages == {}


def test_topic_with_nothing_produced_reads_as_empty():
    with RelayerPatch() as patch:
        Relayer("logs", "kafka:9092").emit("e", "s", 1)
        assert patch.mocked_producer.produced_messages["nothing"] == []
        assert patch.mocked_producer.produced_headers["nothing"] == []
        assert len(patch.mocked_producer.produced_headers["e"]) == 1


def test_each_start_begins_with_an_empty_record():
    relayer = Relayer("logs", "kafka:9092")
    patch = RelayerPatch()
    patch.start()
    relayer.emit("e", "s", "first")
    relayer.flush(0)
    patch.stop()
    patch.start()
    try:
        assert patch.produced_messages == {}
        assert patch.mocked_producer.produced_headers == {}
        assert patch.mocked_producer.flushed is False
        relayer.emit("e", "s", "second")
        assert [m["payload"] for m in patch.messages("e")] == ["second"]
    finally:
        patch.stop()


def test_flushed_once_a_relayer_flushed():
    with RelayerPatch() as patch:
        relayer = Relayer("logs", "kafka:9092")
        relayer.emit("e", "s", 1)
        assert patch.mocked_producer.flushed is False
        assert relayer.flush(0) == 0
        assert patch.mocked_producer.flushed is True
    patch.mocked_producer.clear()
    assert patch.mocked_producer.flushed is False
    relayer.flush(0)  # after stop() the patch's record no longer changes
    assert patch.mocked_producer.flushed is False


class TestTheSeam:
    """RelayerPatch plugs into the producer's seam for test doubles."""

    def test_a_client_factory_gets_every_message_and_is_put_back(self):
        from relayer._producer import set_client_factory
        from relayer.testing import MockedProducer

        relayer = Relayer("logs", "k:1")
        client = MockedProducer()
        configs = []

        def factory(config):
            configs.append(config)
            return client

        previous = set_client_factory(factory)
        try:
            relayer.emit("e", "s", 1)
            relayer.emit("e", "s", 2)
        finally:
            assert set_client_factory(previous) is factory
        assert [m["payload"] for m in client.messages("e")] == [1, 2]
        assert configs[0]["bootstrap.servers"] == "k:1"  # one client per producer
        assert len(configs) == 1
        assert relayer.stats()["produced"] == 2

    def test_nested_patches_each_record_and_unwind(self):
        relayer = Relayer("logs", "kafka:9092")
        with RelayerPatch() as outer:
            with RelayerPatch() as inner:
                relayer.emit("e", "s", "inner")
            relayer.emit("e", "s", "outer")
        assert [m["payload"] for m in inner.messages("e")] == ["inner"]
        assert [m["payload"] for m in outer.messages("e")] == ["outer"]
        assert _producer._factory is None
