"""relayer._logging: the standard library's logging captured into records."""

import logging

import pytest

from relayer import Relayer, RelayerLogHandler, capture_logging


@pytest.fixture
def capture():
    handler = capture_logging()
    root = logging.getLogger()
    previous = root.level
    root.setLevel(logging.DEBUG)
    yield handler
    root.setLevel(previous)
    root.removeHandler(handler)


def run_unit(relayer, body):
    with relayer.unit_of_work("job"):
        body()


def test_lines_from_logging(capture, relayer_patch):
    relayer = Relayer("logs", "k:1")

    def body():
        logging.getLogger("app.db").info("query took %d ms", 12)
        relayer.log("info", "own line")
        try:
            raise ValueError("bad")
        except ValueError:
            logging.getLogger("app").exception("failed")

    run_unit(relayer, body)
    lines = relayer_patch.messages("logs")[0]["lines"]
    assert lines[0]["log_level"] == "info"
    assert lines[0]["payload"] == "query took 12 ms"
    assert lines[0]["logger"] == "app.db"
    assert lines[1]["payload"] == "own line"
    assert lines[2]["log_level"] == "error"
    assert "ValueError: bad" in lines[2]["exc_info"]


def test_nothing_outside_a_unit_of_work(capture, relayer_patch):
    Relayer("logs", "k:1")
    logging.getLogger("app").warning("no unit of work here")
    assert relayer_patch.produced_messages == {}


def test_relayers_own_loggers_are_never_captured(capture, relayer_patch):
    relayer = Relayer("logs", "k:1")

    def body():
        logging.getLogger("relayer").warning("internal")
        logging.getLogger("relayer.librdkafka").warning("internal too")

    run_unit(relayer, body)
    assert relayer_patch.messages("logs")[0]["lines"] == []


def test_capture_logging_option_installs_one_handler(relayer_patch):
    root = logging.getLogger()
    try:
        Relayer("a", "k:1", capture_logging=True)
        Relayer("b", "k:1", capture_logging="INFO")
        handlers = [h for h in root.handlers if isinstance(h, RelayerLogHandler)]
        assert len(handlers) == 1 and handlers[0].level == logging.INFO
    finally:
        for handler in [h for h in root.handlers if isinstance(h, RelayerLogHandler)]:
            root.removeHandler(handler)


def test_surrogates_are_escaped_not_fatal(capture, relayer_patch):
    relayer = Relayer("logs", "k:1")
    run_unit(relayer, lambda: logging.getLogger("app").warning("bad \ud800 text"))
    [line] = relayer_patch.messages("logs")[0]["lines"]
    assert line["payload"] == "bad \\ud800 text"


@pytest.mark.parametrize("lines", [5_000, 50_000])
def test_captured_lines_are_clipped_and_bounded(capture, relayer_patch, lines):
    relayer = Relayer("logs", "k:1")
    with relayer.unit_of_work("job") as unit:
        log = logging.getLogger("app")
        log.warning("w" * 2_000_000)
        for i in range(lines):
            log.info("captured %d", i)
        held = len(unit.unit.lines) + len(unit.unit._tail or ())
    record = relayer_patch.messages("logs")[0]
    assert record["lines"][-1]["payload"] == f"captured {lines - 1}"
    if lines == 5_000:  # everything fits: the huge line is kept, clipped
        assert held == len(record["lines"]) == lines + 1
        assert record["lines"][0]["payload"].endswith("...[2000000 characters, clipped]")
    else:  # a flood: held in memory within the record's room, the rest counted
        assert held < 15_000
        assert len(record["lines"]) + record["truncated_lines"] == lines + 1
