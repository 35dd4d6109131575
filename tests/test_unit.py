import asyncio
import threading
import time
from datetime import datetime

import orjson

from relayer import Relayer
from relayer._unit import UnitOfWork, current_unit, enter, leave, log_line_dict


def make_scope():
    return UnitOfWork(Relayer("logs", "a:1"))


def test_no_scope_by_default():
    assert current_unit() is None


def test_enter_and_leave_restore_the_previous_scope():
    outer, inner = make_scope(), make_scope()
    t1 = enter(outer)
    t2 = enter(inner)
    assert current_unit() is inner
    leave(t2)
    assert current_unit() is outer
    leave(t1)
    assert current_unit() is None


def test_threads_do_not_share_scopes():
    scope = make_scope()
    seen = []
    token = enter(scope)
    try:
        thread = threading.Thread(target=lambda: seen.append(current_unit()))
        thread.start()
        thread.join()
    finally:
        leave(token)
    assert seen == [None]


def test_asyncio_tasks_have_their_own_scope():
    async def unit(name):
        scope = make_scope()
        token = enter(scope)
        try:
            for i in range(5):
                current_unit().lines.append(("info", f"{name}-{i}", 0.0))
                await asyncio.sleep(0)  # the other task runs, in its own scope
                assert current_unit() is scope
            return [line[1] for line in scope.lines]
        finally:
            leave(token)

    async def main():
        return await asyncio.gather(unit("a"), unit("b"))

    a, b = asyncio.run(main())
    assert a == [f"a-{i}" for i in range(5)]
    assert b == [f"b-{i}" for i in range(5)]


def test_rendered_lines_keep_order_and_emitted_bytes():
    scope = make_scope()
    scope.lines.append(("info", "one", 0.0))
    scope.lines.append(orjson.Fragment(b'{"event_type":"e"}'))
    rendered = orjson.loads(orjson.dumps(scope.rendered_lines()))
    assert rendered[0]["payload"] == "one"
    assert rendered[1] == {"event_type": "e"}


def test_log_line_dict_has_utc_timestamp():
    line = log_line_dict(("warn", "x", 0.0))
    assert line == {
        "log_level": "warn",
        "payload": "x",
        "timestamp": datetime.fromisoformat("1970-01-01T00:00:00+00:00"),
    }


def test_elapsed_ms_is_milliseconds_since_the_scope_started():
    started = time.perf_counter()
    scope = make_scope()
    time.sleep(0.01)
    first = scope.elapsed_ms()
    time.sleep(0.01)
    second = scope.elapsed_ms()
    took_ms = (time.perf_counter() - started) * 1000
    assert first >= 10 and round(second - first, 3) >= 10, (first, second)
    assert second <= took_ms, "not counted from before the scope started"
