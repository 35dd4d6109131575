"""``relayer tail`` without a broker: parsing, ``--where``, ``-k``, formatting, ``--stdin``."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import uuid

import orjson
import pytest

from relayer import _tail
from relayer._tail import (
    MISSING,
    Condition,
    Message,
    format_duration,
    format_key,
    format_line,
    format_message,
    format_time,
    get_field,
    key_variants,
    main,
    parse_where,
    pick,
    wanted,
)

RED, YELLOW, GREEN = "\x1b[31m", "\x1b[33m", "\x1b[32m"

REQUEST = {
    "source": "logs",
    "logging_topic": "logs",
    "date": "2026-11-22T05:49:53.403345+00:00",
    "method": "POST",
    "path": "/orders",
    "query_string": "a=1",
    "status": 201,
    "request_time": 4.091,
    "lines": [
        {
            "log_level": "info",
            "payload": "creating order 1",
            "timestamp": "2026-11-22T05:49:53.4+00:00",
        },
        {
            "source": "logs",
            "event_type": "orders",
            "event_subtype": "created",
            "payload": {"id": 1},
            "timestamp": "2026-11-22T05:49:53.403559+00:00",
        },
    ],
}
EVENT = {
    "source": "logs",
    "event_type": "orders",
    "event_subtype": "created",
    "payload": {"id": 7, "customer": {"tier": "gold"}},
    "timestamp": "2026-11-22T05:49:54.000999+00:00",
}
RPC = {
    "source": "logs",
    "logging_topic": "logs",
    "date": "2026-11-22T05:49:55.120000+00:00",
    "service": "Inventory.reserve",
    "service_time": 1234.5,
    "lines": [],
    "error": "KeyError: 'x'",
}


def request(**fields):
    return {**REQUEST, **fields}


# --- --where -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("status>=500", Condition("status", ">=", "500")),
        ("status<=499", Condition("status", "<=", "499")),
        ("status>1", Condition("status", ">", "1")),
        ("status<1", Condition("status", "<", "1")),
        ("path=/orders", Condition("path", "=", "/orders")),
        ("path!=/orders", Condition("path", "!=", "/orders")),
        ("payload.id=1", Condition("payload.id", "=", "1")),
        ("q=a=b", Condition("q", "=", "a=b")),
        (" status >= 500 ", Condition("status", ">=", "500")),
        ("error=", Condition("error", "=", "")),
    ],
)
def test_parse_where(text, expected):
    assert parse_where(text) == expected


@pytest.mark.parametrize("text", ["status", "=500", " >= 1", "", "a!b"])
def test_parse_where_rejects(text):
    with pytest.raises(ValueError, match="FIELD<op>VALUE"):
        parse_where(text)


@pytest.mark.parametrize(
    ("where", "status_500", "status_201"),
    [
        ("status=500", True, False),
        ("status!=500", False, True),
        ("status>201", True, False),
        ("status>=201", True, True),
        ("status<500", False, True),
        ("status<=500", True, True),
        ("status>=5e2", True, False),
        ("status<200.5", False, False),
        ("status=500.0", True, False),
    ],
)
def test_every_operator_on_numbers(where, status_500, status_201):
    condition = parse_where(where)
    assert condition.matches(request(status=500)) is status_500
    assert condition.matches(request(status=201)) is status_201


def test_numbers_compare_numerically_not_as_text():
    assert parse_where("request_time>10").matches(request(request_time=9.5)) is False
    assert parse_where("request_time>10").matches(request(request_time=100)) is True
    # as text, "9" > "10" and "100" < "9"
    assert parse_where("status<9").matches(request(status=100)) is False


def test_big_integers_compare_exactly():
    big = 2**60
    assert parse_where(f"payload.id={big + 1}").matches({"payload": {"id": big + 1}})
    assert not parse_where(f"payload.id={big}").matches({"payload": {"id": big + 1}})


@pytest.mark.parametrize(
    ("where", "matches"),
    [
        ("path=/orders", True),
        ("path!=/orders", False),
        ("path>/a", True),
        ("path>=/orders", True),
        ("path</orders", False),
        ("path<=/orders", True),
        ("date>=2026-11-22T05:49", True),
        ("date<2026-11-22", False),
        ("method=post", False),  # case matters
    ],
)
def test_every_operator_on_text(where, matches):
    assert parse_where(where).matches(REQUEST) is matches


def test_text_field_against_number_compares_as_text():
    message = {"code": "500", "version": "10"}
    assert parse_where("code=500").matches(message)
    assert parse_where("version<9").matches(message)  # "10" < "9" as text


def test_non_text_fields_compare_as_their_json():
    message = {"ok": True, "error": None, "tags": ["a"], "payload": {"id": 1}}
    assert parse_where("ok=true").matches(message)
    assert parse_where("error=null").matches(message)
    assert parse_where('tags=["a"]').matches(message)
    assert parse_where('payload={"id":1}').matches(message)
    assert not parse_where("ok=1").matches(message)  # a bool is not a number


def test_dotted_fields_and_list_indexes():
    assert parse_where("payload.customer.tier=gold").matches(EVENT)
    assert parse_where("payload.id>6").matches(EVENT)
    assert parse_where("lines.1.payload.id=1").matches(REQUEST)
    assert parse_where("lines.0.log_level=info").matches(REQUEST)
    assert get_field(REQUEST, "lines.5") is MISSING
    assert get_field(REQUEST, "path.x") is MISSING


@pytest.mark.parametrize("op", ["=", ">", ">=", "<", "<="])
def test_a_missing_field_matches_nothing(op):
    assert parse_where(f"payload.nope{op}1").matches(EVENT) is False
    assert parse_where(f"status{op}1").matches(EVENT) is False


def test_a_missing_field_matches_not_equal():
    assert parse_where("status!=500").matches(EVENT) is True
    assert parse_where("payload.nope!=x").matches(EVENT) is True


def test_a_non_object_message_has_no_fields():
    assert not parse_where("status=1").matches([1, 2])
    assert parse_where("status!=1").matches("text")


# --- --key, -k -----------------------------------------------------------------------------


def test_key_matches_utf8_and_uuid_bytes():
    key = uuid.UUID("12345678123456781234567812345678")
    assert key_variants("order-1") == {b"order-1"}
    assert key_variants("żółw") == {"żółw".encode()}
    assert key_variants(key.hex) == {key.hex.encode(), key.bytes}
    assert key_variants(str(key)) == {str(key).encode(), key.bytes}
    keys = key_variants(key.hex)
    assert wanted(Message(EVENT, "t", key.bytes), [], keys)
    assert wanted(Message(EVENT, "t", key.hex.encode()), [], keys)
    assert not wanted(Message(EVENT, "t", b"other"), [], keys)
    assert not wanted(Message(EVENT, "t", None), [], keys)
    assert wanted(Message(EVENT, "t", None), [], None)


def test_wanted_needs_every_where():
    where = [parse_where("status>=200"), parse_where("method=POST")]
    assert wanted(Message(REQUEST), where, None)
    assert not wanted(Message(request(method="GET")), where, None)


def test_pick_keeps_order_and_skips_missing():
    assert pick(REQUEST, ["status", "nope", "path", "lines.0.log_level"]) == {
        "status": 201,
        "path": "/orders",
        "lines.0.log_level": "info",
    }
    assert list(pick(REQUEST, ["path", "status"])) == ["path", "status"]
    assert pick(EVENT, ["payload.customer"]) == {"payload.customer": {"tier": "gold"}}
    assert pick(EVENT, ["status"]) == {}


# --- formatting ----------------------------------------------------------------------------


def test_small_formatters():
    assert format_time("2026-11-22T05:49:53.403345+00:00") == "05:49:53.403"
    assert format_time("2026-11-22T23:00:00+00:00") == "23:00:00.000"
    assert format_time("yesterday") == "yesterday"
    assert format_time(None) == "-"
    assert format_duration(4.091) == "4.1ms"
    assert format_duration(2345.0) == "2.35s"
    assert format_duration(None) == "-"
    assert format_key(b"order-1") == "order-1"
    key = uuid.UUID(int=5)
    assert format_key(key.bytes) == "00000000-0000-0000-0000-000000000005"
    assert format_key(b"\x00\x01") == "0001"


def test_request_record():
    assert format_message(Message(REQUEST, "logs")) == (
        "05:49:53.403  201  POST  /orders?a=1  4.1ms  2 lines"
    )
    assert format_message(Message(request(query_string="", lines=[{}]))) == (
        "05:49:53.403  201  POST  /orders  4.1ms  1 line"
    )


def test_rpc_record():
    assert format_message(Message(RPC)) == (
        "05:49:55.120  Inventory.reserve  1.23s  0 lines  error: KeyError: 'x'"
    )
    ok = {k: v for k, v in RPC.items() if k != "error"}
    assert format_message(Message({**ok, "service_time": 3})) == (
        "05:49:55.120  Inventory.reserve  3.0ms  0 lines"
    )


def test_event():
    key = uuid.UUID(int=5)
    assert format_message(Message(EVENT, "orders", b"order-7")) == (
        '05:49:54.000  orders  key=order-7  orders/created  {"id":7,"customer":{"tier":"gold"}}'
    )
    assert format_message(Message(EVENT, "orders", key.bytes)).split("  ")[2] == f"key={key}"
    assert format_message(Message(EVENT)).split("  ")[:3] == ["05:49:54.000", "-", "orders/created"]


def test_anything_else_is_compact_json():
    log_only = {"source": "logs", "date": "2026-11-22T05:49:53+00:00", "lines": [{"a": 1}]}
    assert format_message(Message(log_only)) == (
        '{"source":"logs","date":"2026-11-22T05:49:53+00:00","lines":[{"a":1}]}'
    )
    assert format_message(Message([1, "two"])) == '[1,"two"]'
    assert format_message(Message({"status": 500})) == '{"status":500}'


def test_lines_are_expanded_under_their_record():
    lines = [
        {"log_level": "info", "payload": "creating order 1", "timestamp": "t"},
        {"log_level": "warning", "payload": {"retry": 2}, "timestamp": "t", "logger": "shop.db"},
        {
            "log_level": "error",
            "payload": "boom",
            "logger": "shop",
            "exc_info": "Traceback:\n  x\n",
        },
        {
            "source": "logs",
            "event_type": "orders",
            "event_subtype": "created",
            "payload": {"id": 1},
        },
        {"something": "else"},
    ]
    text = format_message(Message(request(lines=lines)), lines=True)
    assert text.split("\n") == [
        "05:49:53.403  201  POST  /orders?a=1  4.1ms  5 lines",
        "    info: creating order 1",
        '    warning [shop.db]: {"retry":2}',
        "    error [shop]: boom",
        "      Traceback:",
        "        x",
        '    event: orders/created {"id":1}',
        '    {"something":"else"}',
    ]
    assert format_message(Message(request(lines=lines))).count("\n") == 0
    assert format_message(Message(EVENT), lines=True).count("\n") == 0


def test_colours_only_when_asked():
    for status, colour in [(503, RED), (404, YELLOW), (201, GREEN)]:
        coloured = format_message(Message(request(status=status)), color=True)
        assert f"{colour}{status}\x1b[0m" in coloured
        assert "\x1b" not in format_message(Message(request(status=status)))
    assert "\x1b" not in format_message(Message(request(status=302)), color=True)
    assert f"{RED}error: KeyError" in format_message(Message(RPC), color=True)
    assert (
        format_line({"log_level": "ERROR", "payload": "x"}, color=True) == f"{RED}ERROR\x1b[0m: x"
    )


def test_control_characters_cannot_reach_the_terminal():
    text = format_message(Message(request(path="/x\x1b[2J", method="GET\r")), lines=True)
    assert "\x1b" not in text and "\r" not in text
    assert "/x\\x1b[2J" in text
    event = {**EVENT, "payload": {"note": "\x9b31m", "text": "a\nb"}}
    assert format_message(Message(event)).endswith('{"note":"\\x9b31m","text":"a\\nb"}')
    assert format_message(Message(request(path="/a\nb"))).count("\n") == 0
    log = {"log_level": "info", "payload": "one\ntwo\x1b"}
    assert format_line(log) == "info: one\ntwo\\x1b"


# --- main: --stdin end to end ---------------------------------------------------------------


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def run(monkeypatch, capsys, argv, lines, stdout=None):
    """``main(argv)`` reading ``lines`` on stdin; returns (status, stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{line}\n" for line in lines)))
    if stdout is not None:
        monkeypatch.setattr(sys, "stdout", stdout)
    status = main(["tail", "--stdin", *argv])
    out, err = capsys.readouterr()
    return status, stdout.getvalue() if stdout is not None else out, err


SAVED = tuple(
    orjson.dumps(m).decode() for m in (REQUEST, EVENT, RPC, request(status=503, path="/boom"))
)


def test_stdin_human_view(monkeypatch, capsys):
    status, out, err = run(monkeypatch, capsys, [], SAVED)
    assert status == 0 and err == ""
    assert out.splitlines() == [
        "05:49:53.403  201  POST  /orders?a=1  4.1ms  2 lines",
        '05:49:54.000  -  orders/created  {"id":7,"customer":{"tier":"gold"}}',
        "05:49:55.120  Inventory.reserve  1.23s  0 lines  error: KeyError: 'x'",
        "05:49:53.403  503  POST  /boom?a=1  4.1ms  2 lines",
    ]


def test_stdin_json_where_and_fields(monkeypatch, capsys):
    status, out, _ = run(monkeypatch, capsys, ["--json"], SAVED)
    assert status == 0 and [orjson.loads(line) for line in out.splitlines()] == [
        orjson.loads(line) for line in SAVED
    ]
    status, out, _ = run(monkeypatch, capsys, ["--where", "status>=500", "--json"], SAVED)
    assert [orjson.loads(line)["path"] for line in out.splitlines()] == ["/boom"]
    argv = ["--where", "status>=200", "--where", "path=/orders", "-k", "status", "path"]
    status, out, _ = run(monkeypatch, capsys, argv, SAVED)
    assert out == "status=201  path=/orders\n"
    status, out, _ = run(monkeypatch, capsys, ["--json", "-k", "payload.id", "-k", "status"], SAVED)
    assert out.splitlines() == ['{"status":201}', '{"payload.id":7}', '{"status":503}']


def test_stdin_lines(monkeypatch, capsys):
    status, out, _ = run(monkeypatch, capsys, ["--lines", "--where", "path=/orders"], SAVED)
    assert status == 0
    assert out.splitlines()[1:] == [
        "    info: creating order 1",
        '    event: orders/created {"id":1}',
    ]


def test_bad_json_lines_are_reported_and_skipped(monkeypatch, capsys):
    lines = [SAVED[1], "{not json", "", "   ", SAVED[2], "[1, 2"]
    status, out, err = run(monkeypatch, capsys, ["--json"], lines)
    assert status == 0
    assert [orjson.loads(line) for line in out.splitlines()] == [EVENT, RPC]
    reported = err.splitlines()
    assert len(reported) == 2
    assert reported[0].startswith("relayer tail: stdin line 2: not JSON (")
    assert reported[1].startswith("relayer tail: stdin line 6: not JSON (")


def test_nothing_readable_on_stdin_exits_1(monkeypatch, capsys):
    status, out, err = run(monkeypatch, capsys, [], ["nope", "{"])
    assert (status, out, len(err.splitlines())) == (1, "", 2)
    status, out, err = run(monkeypatch, capsys, [], [])
    assert (status, out, err) == (0, "", "")


def test_no_colour_unless_a_tty(monkeypatch, capsys):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    _, out, _ = run(monkeypatch, capsys, [], SAVED)
    assert "\x1b" not in out
    _, out, _ = run(monkeypatch, capsys, [], SAVED, stdout=FakeTTY())
    assert f"{GREEN}201" in out and f"{RED}503" in out
    monkeypatch.setenv("NO_COLOR", "1")
    _, out, _ = run(monkeypatch, capsys, [], SAVED, stdout=FakeTTY())
    assert "\x1b" not in out and "503" in out


def test_ctrl_c_exits_130_quietly(monkeypatch, capsys):
    def interrupted():
        yield orjson.dumps(EVENT).decode() + "\n"
        raise KeyboardInterrupt

    monkeypatch.setattr(sys, "stdin", interrupted())
    assert main(["tail", "--stdin", "--json"]) == 130
    out, err = capsys.readouterr()
    assert orjson.loads(out) == EVENT and err == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tail"], "give at least one TOPIC"),
        (["tail", "--stdin", "logs"], "--stdin reads no topic"),
        (["tail", "--stdin", "--key", "k"], "--stdin reads no topic"),
        (["tail", "logs", "--where", "status"], "FIELD<op>VALUE"),
        (["tail", "logs", "--fol"], "unrecognized arguments"),
        ([], "COMMAND"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_parser_options():
    args = _tail.build_parser().parse_args(
        ["tail", "orders", "logs", "-b", "h:1", "--prefix", "p_", "--suffix", "_s", "-f"]
        + ["--from-beginning", "--key", "k", "--where", "a=1", "--where", "b!=2", "-k", "x", "y.z"]
    )
    assert args.topics == ["orders", "logs"] and args.bootstrap == "h:1"
    assert (args.prefix, args.suffix, args.follow, args.from_beginning) == ("p_", "_s", True, True)
    assert args.where == [Condition("a", "=", "1"), Condition("b", "!=", "2")]
    assert (args.key, args.fields, args.json, args.lines) == ("k", ["x", "y.z"], False, False)


# --- as a process --------------------------------------------------------------------------


def tail(*argv, stdin=b"", timeout=30):
    return subprocess.run(
        [sys.executable, "-m", "relayer", "tail", *argv],
        input=stdin,
        capture_output=True,
        timeout=timeout,
    )


def test_python_m_relayer_help():
    done = tail("--help")
    assert done.returncode == 0
    for option in ["--bootstrap", "--prefix", "--suffix", "--from-beginning", "--follow"]:
        assert option.encode() in done.stdout
    for option in ["--key", "--where", "-k FIELD", "--json", "--lines", "--stdin"]:
        assert option.encode() in done.stdout


def test_stdin_as_a_process_takes_bytes_and_bad_utf8():
    saved = b"\n".join([SAVED[0].encode(), b'{"bad": "\xff"}', SAVED[1].encode()]) + b"\n"
    done = tail("--stdin", "--json", stdin=saved)
    assert done.returncode == 0
    assert [orjson.loads(line) for line in done.stdout.splitlines()] == [REQUEST, EVENT]
    assert done.stderr.decode().startswith("relayer tail: stdin line 2: not JSON")


def test_a_closed_pipe_ends_quietly():
    proc = subprocess.Popen(
        [sys.executable, "-m", "relayer", "tail", "--stdin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # like `| head` that has had enough
    _, err = proc.communicate(("\n".join(SAVED) + "\n").encode() * 5000, timeout=60)
    assert proc.returncode == 141
    assert b"Traceback" not in err


def test_unreachable_broker_exits_2_quickly(capfd):
    started = time.monotonic()
    assert main(["tail", "logs", "-b", "127.0.0.1:1"]) == 2
    assert time.monotonic() - started < 15
    out, err = capfd.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "relayer tail: cannot reach Kafka at 127.0.0.1:1 "
        "(Failed to get metadata: Local: Broker transport failure)"
    ]


def test_bootstrap_comes_from_the_environment(capfd, monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setattr(_tail, "METADATA_TIMEOUT", 1.0)
    assert main(["tail", "logs"]) == 2
    assert "cannot reach Kafka at 127.0.0.1:1 " in capfd.readouterr().err


def test_a_discarded_event_says_so():
    line = {"event_type": "orders", "event_subtype": "created", "payload": {"id": 1}}
    assert format_line(line) == 'event: orders/created {"id":1}'
    assert format_line({**line, "discarded": True}) == 'event (discarded): orders/created {"id":1}'
