"""relayer.rpc.make_rpc_relayer, as the README uses it."""

import asyncio
import threading
import time

import pytest

from relayer import Relayer, ScopedRelayer
from relayer._unit import current_unit
from relayer.rpc import RPCRelayer, make_rpc_relayer


@pytest.fixture
def rpc_relayer(relayer_patch):
    return make_rpc_relayer("logging_topic", kafka_hosts="kafka:9092")


def test_readme_handler(rpc_relayer, relayer_patch):
    class RPCHandler:
        @rpc_relayer
        def service_method(self, some_argument, relayer=None):
            """Serve."""
            relayer.log("info", "serving")
            relayer.emit("entity_created", "root", {"id": some_argument})
            return some_argument * 2

    started = time.perf_counter()
    assert RPCHandler().service_method(21) == 42
    took_ms = (time.perf_counter() - started) * 1000
    assert RPCHandler.service_method.__name__ == "service_method"
    assert RPCHandler.service_method.__doc__ == "Serve."
    [record] = relayer_patch.messages("logging_topic")
    assert list(record) == [
        "source", "logging_topic", "date", "service", "service_time", "request_id", "sender",
        "sample_rate", "lines",
    ]  # fmt: skip
    assert record["service"] == "test_readme_handler.<locals>.RPCHandler.service_method"
    assert 0 < record["service_time"] <= took_ms, "milliseconds, within the call"
    assert record["lines"][0]["payload"] == "serving"
    assert record["lines"][1] == relayer_patch.messages("entity_created")[0]


def test_service_time_is_the_calls_duration_in_ms(rpc_relayer, relayer_patch):
    @rpc_relayer
    def call(relayer=None):
        time.sleep(0.01)

    started = time.perf_counter()
    call()
    took_ms = (time.perf_counter() - started) * 1000
    [record] = relayer_patch.messages("logging_topic")
    assert 10 <= record["service_time"] <= took_ms


def test_decorator_exposes_its_relayer(rpc_relayer):
    assert isinstance(rpc_relayer, RPCRelayer)
    assert isinstance(rpc_relayer.instance, Relayer)
    assert rpc_relayer.flush(0) == 0
    assert rpc_relayer.stats()["dropped"] == 0


def test_injected_relayer_is_scoped(rpc_relayer):
    seen = []

    @rpc_relayer
    def call(relayer=None):
        seen.append(relayer)

    call()
    assert isinstance(seen[0], ScopedRelayer)
    assert seen[0].instance is rpc_relayer.instance


def test_exception_propagates_unchanged_and_record_is_written(rpc_relayer, relayer_patch):
    error = KeyError("missing")

    @rpc_relayer
    def fails(relayer=None):
        relayer.log("info", "before")
        raise error

    with pytest.raises(KeyError) as info:
        fails()
    assert info.value is error
    [record] = relayer_patch.messages("logging_topic")
    assert record["error"] == "KeyError: 'missing'"
    assert record["lines"][0]["payload"] == "before"


def test_prefix_and_suffix(relayer_patch):
    decorator = make_rpc_relayer("logs", "k:1", topic_prefix="stg_", topic_suffix="_x")

    @decorator
    def call(relayer=None):
        relayer.emit("evt", "s", 1)
        relayer.emit_raw("raw", {"r": 1})

    call()
    assert set(relayer_patch.produced_messages) == {"stg_evt_x", "stg_raw_x", "stg_logs_x"}


def test_async_calls_each_have_their_own_scope(rpc_relayer, relayer_patch):
    @rpc_relayer
    async def handler(name, relayer=None):
        for i in range(3):
            relayer.log("info", f"{name}-{i}")
            await asyncio.sleep(0)
        return name

    async def main():
        return await asyncio.gather(*(handler(f"c{i}") for i in range(5)))

    assert asyncio.run(main()) == [f"c{i}" for i in range(5)]
    found = relayer_patch.messages("logging_topic")
    assert len(found) == 5
    for record in found:
        names = {line["payload"].split("-")[0] for line in record["lines"]}
        assert len(names) == 1 and len(record["lines"]) == 3
    assert asyncio.iscoroutinefunction(handler)


def test_async_exception(rpc_relayer, relayer_patch):
    @rpc_relayer
    async def fails(relayer=None):
        raise RuntimeError("x")

    with pytest.raises(RuntimeError):
        asyncio.run(fails())
    assert relayer_patch.messages("logging_topic")[0]["error"] == "RuntimeError: x"


def test_concurrent_threads_share_one_producer_not_lines(rpc_relayer, relayer_patch):
    barrier = threading.Barrier(6)

    @rpc_relayer
    def handler(name, relayer=None):
        relayer.log("info", f"{name}-a")
        barrier.wait(timeout=10)
        relayer.log("info", f"{name}-b")

    threads = [threading.Thread(target=handler, args=(f"t{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    found = relayer_patch.messages("logging_topic")
    assert len(found) == 6
    for record in found:
        a, b = (line["payload"] for line in record["lines"])
        assert a[:-2] == b[:-2]


def test_lines_from_a_thread_the_call_starts(rpc_relayer, relayer_patch):
    @rpc_relayer
    def handler(relayer=None):
        worker = threading.Thread(target=relayer.log, args=("info", "from worker"))
        worker.start()
        worker.join()

    handler()
    assert relayer_patch.messages("logging_topic")[0]["lines"][0]["payload"] == "from worker"


def test_events_from_a_thread_the_call_starts(rpc_relayer, relayer_patch):
    """The event carries the call's request id and is in its record; the worker thread
    is left without a current unit of work afterwards."""
    after = []

    def work(relayer):
        relayer.emit("jobs", "started", {"n": 1})
        after.append(current_unit())

    @rpc_relayer
    def handler(relayer=None):
        worker = threading.Thread(target=work, args=(relayer,))
        worker.start()
        worker.join()
        return relayer.request_id

    request_id = handler()
    [event] = relayer_patch.messages("jobs")
    assert event["request_id"] == request_id
    [record] = relayer_patch.messages("logging_topic")
    assert record["lines"][0]["request_id"] == request_id
    assert after == [None]
