"""``relayer tail``: print the events and records relayer sent to Kafka, filtered.

Everything but :func:`kafka_messages` is pure (argument parsing, ``--where``
matching, ``-k`` picking, formatting) and is tested without a broker.
"""

from __future__ import annotations

import argparse
import operator
import os
import re
import sys
import uuid
from collections.abc import Generator, Sequence
from datetime import datetime
from typing import IO, Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

#: Seconds allowed for each metadata or offsets request before giving up.
METADATA_TIMEOUT = 5.0
#: Returned by :func:`get_field` for a field the message lacks.
MISSING: Any = object()

_OPS: Dict[str, Callable[[Any, Any], bool]] = {"=": operator.eq, "!=": operator.ne}
_OPS.update({">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le})
_WHERE = re.compile(r"([^=!<>]+)(!=|>=|<=|=|>|<)(.*)\Z", re.DOTALL)
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\Z")
_RED, _YELLOW, _GREEN = "31", "33", "32"
_STATUS_COLORS = {5: _RED, 4: _YELLOW, 2: _GREEN}
_LEVEL_COLORS = {"critical": _RED, "error": _RED, "warning": _YELLOW, "warn": _YELLOW}
_UNKNOWN = {"UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "_UNKNOWN_PARTITION"}
#: The human view shows control characters escaped: a path cannot drive the terminal.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), *range(127, 160))}
_CONTROL_BUT_NEWLINE = {**_CONTROL, 10: "\n"}
_REQUEST = {"method", "path", "status", "request_time", "lines"}
_EVENT = {"event_type", "event_subtype", "payload"}

EPILOG = """\
examples:
  relayer tail orders logs --prefix staging_ --follow
  relayer tail logs --from-beginning --where 'status>=500' --lines
  relayer tail logs --from-beginning --json > saved.jsonl
  relayer tail --stdin --where path=/orders -k date status < saved.jsonl

--where compares numbers when the field is a JSON number and VALUE a number,
else text; a message without FIELD matches only !=. Quote it: 'status>=500'.
--stdin reads one JSON message per line (as --json prints them); bad lines are
reported on stderr and skipped. Saved lines have no Kafka key: no --key there.

exit status: 0 done; 1 --stdin read lines but none was JSON; 2 usage error,
Kafka unreachable or no such topic; 130 Ctrl-C."""


class TailError(Exception):
    """A problem reported as one line on stderr, with exit status 2."""


class Message(NamedTuple):
    """A decoded JSON ``value`` with its ``topic`` and ``key`` (None from ``--stdin``)."""

    value: Any
    topic: Optional[str] = None
    key: Optional[bytes] = None


def get_field(value: Any, field: str) -> Any:
    """The value at dotted ``field`` (``payload.id``, ``lines.0``), or :data:`MISSING`."""
    for part in field.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdecimal() and int(part) < len(value):
            value = value[int(part)]
        else:
            return MISSING
    return value


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _compact(value: Any) -> str:  # for the human view
    return _json(value).translate(_CONTROL)


def _text(value: Any, newlines: bool = False) -> str:  # for the human view
    text = value if isinstance(value, str) else _json(value)
    return text.translate(_CONTROL_BUT_NEWLINE if newlines else _CONTROL)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Condition(NamedTuple):
    """One ``--where FIELD<op>VALUE`` filter."""

    field: str
    op: str
    value: str

    def matches(self, message: Any) -> bool:
        """Whether ``message`` (a decoded JSON value) passes this filter."""
        actual = get_field(message, self.field)
        if actual is MISSING:
            return self.op == "!="
        if _is_number(actual) and _NUMBER.match(self.value):
            exact = self.value.lstrip("+-").isdecimal()  # an int: no float rounding of big ids
            return _OPS[self.op](actual, int(self.value) if exact else float(self.value))
        return _OPS[self.op](actual if isinstance(actual, str) else _json(actual), self.value)


def parse_where(text: str) -> Condition:
    """Parse ``FIELD<op>VALUE``, op one of ``= != > >= < <=``; raise ValueError if it is not."""
    match = _WHERE.match(text)
    if match is None or not match[1].strip():
        raise ValueError(f"expected FIELD<op>VALUE with op one of = != > >= < <=, got {text!r}")
    return Condition(match[1].strip(), match[2], match[3].strip())


def key_variants(key: str) -> frozenset[bytes]:
    """The message keys ``--key K`` matches: K in UTF-8 and, if K is a UUID (32 hex digits,
    dashes allowed), its 16 bytes, which is how relayer sends a ``uuid.UUID`` key.
    """
    try:
        return frozenset({key.encode("utf-8", "surrogateescape"), uuid.UUID(key).bytes})
    except ValueError:
        return frozenset({key.encode("utf-8", "surrogateescape")})


def pick(value: Any, fields: Sequence[str]) -> Dict[str, Any]:
    """The ``-k`` fields that ``value`` has, by name, in the order given."""
    return {f: v for f in fields if (v := get_field(value, f)) is not MISSING}


def wanted(message: Message, where: Sequence[Condition], keys: Optional[frozenset[bytes]]) -> bool:
    """Whether ``message`` passes ``--key`` (``keys``; None: any key) and every ``--where``."""
    if keys is not None and message.key not in keys:
        return False
    return all(c.matches(message.value) for c in where)


def _paint(text: str, color: Optional[str], enabled: bool) -> str:
    return f"\x1b[{color}m{text}\x1b[0m" if enabled and color else text


def format_time(stamp: Any) -> str:
    """``HH:MM:SS.mmm`` of an ISO-8601 timestamp, as written (no zone change)."""
    try:
        moment = datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return "-" if stamp is None else _text(stamp)
    return f"{moment:%H:%M:%S}.{moment.microsecond // 1000:03d}"


def format_duration(ms: Any) -> str:
    """A duration given in milliseconds: ``4.1ms``, ``2.35s``."""
    if not _is_number(ms):
        return "-"
    return f"{ms:.1f}ms" if ms < 1000 else f"{ms / 1000:.2f}s"


def format_key(key: bytes) -> str:
    """A message key as text: UTF-8 if printable, else a UUID for 16 bytes, else hex."""
    try:
        text = key.decode("utf-8")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    return str(uuid.UUID(bytes=key)) if len(key) == 16 else key.hex()


def format_line(line: Any, color: bool = False) -> str:
    """One line of a record: ``level [logger]: payload`` or ``event: type/subtype payload``."""
    if isinstance(line, dict) and "event_type" in line:
        kind = _text(f"{line['event_type']}/{line.get('event_subtype')}")
        what = "event (discarded)" if line.get("discarded") is True else "event"
        return f"{what}: {kind} {_compact(line.get('payload'))}"
    if not isinstance(line, dict) or "log_level" not in line:
        return _compact(line)
    level, text = _text(line["log_level"]), _text(line.get("payload"), newlines=True)
    logger = f" [{_text(line['logger'])}]" if "logger" in line else ""
    if isinstance(line.get("exc_info"), str):  # a traceback captured from logging
        text += "\n" + _text(line["exc_info"], newlines=True).rstrip("\n")
    return f"{_paint(level, _LEVEL_COLORS.get(level.lower()), color)}{logger}: {text}"


def format_message(message: Message, *, lines: bool = False, color: bool = False) -> str:
    """The compact human view of a message: a request or RPC record, an event, or
    compact JSON for anything else; with ``lines``, a record's lines go under it.
    """
    v = message.value
    if isinstance(v, dict) and _REQUEST <= v.keys():
        status = v["status"]
        code = _STATUS_COLORS.get(status // 100) if _is_number(status) else None
        path = _text(v["path"]) + (f"?{_text(v['query_string'])}" if v.get("query_string") else "")
        parts = [format_time(v.get("date")), _paint(_text(status), code, color), _text(v["method"])]
        parts += [path, format_duration(v["request_time"])]
    elif isinstance(v, dict) and {"service", "service_time"} <= v.keys():
        service, took = _text(v["service"]), format_duration(v["service_time"])
        parts = [format_time(v.get("date")), service, took]
    elif isinstance(v, dict) and _EVENT <= v.keys():
        parts = [format_time(v.get("timestamp")), message.topic or "-"]
        if message.key is not None:
            parts.append(f"key={format_key(message.key)}")
        kind = _text(f"{v['event_type']}/{v['event_subtype']}")
        return "  ".join([*parts, kind, _compact(v["payload"])])
    else:
        return _compact(v)
    n = len(v["lines"]) if isinstance(v.get("lines"), list) else 0
    parts.append(f"{n} line" if n == 1 else f"{n} lines")
    if "error" in v:
        parts.append(_paint(f"error: {_text(v['error'])}", _RED, color))
    text = "  ".join(parts)
    for line in v["lines"] if lines and n else ():
        text += "\n    " + format_line(line, color).replace("\n", "\n      ")
    return text


def render(message: Message, args: argparse.Namespace, color: bool = False) -> Optional[str]:
    """The output for one message under the options ``args`` (``-k``, ``--json``,
    ``--lines``); None when ``-k`` finds none of its fields in the message.
    """
    if args.fields:
        picked = pick(message.value, args.fields)
        if not picked:
            return None
        if args.json:
            return _json(picked)
        return "  ".join(f"{k}={_text(v)}" for k, v in picked.items())
    if args.json:
        return _json(message.value)
    return format_message(message, lines=args.lines, color=color)


def stdin_messages(
    stream: IO[Any], err: IO[str], counts: Dict[str, int]
) -> Generator[Message, None, None]:
    """The messages of saved JSON lines; bad lines are reported on ``err`` and skipped.
    ``counts`` gets how many lines were ``good`` and ``bad``.
    """
    for number, line in enumerate(getattr(stream, "buffer", stream), start=1):
        if not line.strip():
            continue
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            counts["bad"] += 1
            print(f"relayer tail: stdin line {number}: not JSON ({exc}), skipped", file=err)
            continue
        counts["good"] += 1
        yield Message(value)


def kafka_messages(
    bootstrap: str, topics: Sequence[str], *, from_beginning: bool, follow: bool, err: IO[str]
) -> Generator[Message, None, None]:
    """The messages of ``topics``, from the end (or the beginning) of each partition; without
    ``follow``, up to the end offsets seen at the start. Raises :class:`TailError` when
    Kafka cannot be reached or a topic does not exist.
    """
    said: List[str] = []

    def report(error: KafkaError) -> None:  # once reading; an error repeated only once
        if ends and said[-1:] != [error.str()]:
            said.append(error.str())
            print(f"relayer tail: kafka: {error.str()}", file=err, flush=True)

    ends: Dict[Tuple[str, int], int] = {}  # end offsets at the start; filled: reading
    settings: Dict[str, Any] = {"bootstrap.servers": bootstrap, "enable.auto.commit": False}
    settings.update({"group.id": f"relayer-tail-{uuid.uuid4().hex}", "error_cb": report})
    settings.update({"enable.partition.eof": not follow, "auto.offset.reset": "earliest"})
    try:
        consumer = Consumer({**settings, "log_level": 0})  # we report problems, once
    except KafkaException as exc:
        raise TailError(f"bad Kafka settings: {exc.args[0].str()}") from None
    try:
        try:
            metadata = consumer.list_topics(timeout=METADATA_TIMEOUT)
        except KafkaException as exc:
            raise TailError(f"cannot reach Kafka at {bootstrap} ({exc.args[0].str()})") from None
        missing = [t for t in topics if t not in metadata.topics]
        if missing:
            raise TailError(f"no such topic on {bootstrap}: {', '.join(missing)}")
        pending: Set[Tuple[str, int]] = set()  # partitions not read up to their end yet
        assignment = []
        for topic in topics:
            if metadata.topics[topic].error is not None:
                raise TailError(f"topic {topic}: {metadata.topics[topic].error.str()}")
            for p in sorted(metadata.topics[topic].partitions):
                tp = TopicPartition(topic, p)
                offsets = consumer.get_watermark_offsets(tp, timeout=METADATA_TIMEOUT)
                if offsets is None:
                    raise TailError(f"timed out reading the end offsets of {topic}")
                low, ends[topic, p] = offsets
                if from_beginning and ends[topic, p] > low:
                    pending.add((topic, p))
                tp.offset = OFFSET_BEGINNING if from_beginning else ends[topic, p]
                assignment.append(tp)
        if not follow and not pending:
            return
        consumer.assign(assignment)
        if follow:
            start = "the beginning" if from_beginning else "the end"
            names = ", ".join(topics)
            print(f"relayer tail: following {names} from {start}; Ctrl-C to stop", file=err)
            err.flush()
        while follow or pending:
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            key, offset = (msg.topic() or "", msg.partition() or 0), msg.offset() or 0
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(key)
                elif error.fatal() or error.name() in _UNKNOWN:
                    raise TailError(f"kafka: {error.str()}")
                else:
                    report(error)
                continue
            if not follow and offset + 1 >= ends[key]:
                pending.discard(key)
            if not follow and offset >= ends[key]:
                continue  # produced after we started: not ours to show
            try:
                value = orjson.loads(msg.value() or b"")
            except orjson.JSONDecodeError:
                print(f"relayer tail: {key[0]} [{key[1]}] @{offset}: not JSON, skipped", file=err)
                continue
            yield Message(value, key[0], msg.key())
    except KafkaException as exc:
        raise TailError(f"kafka: {exc.args[0].str()}") from None
    finally:
        consumer.close()


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``tail`` subcommand to ``commands`` (the ``relayer`` command's
    subparsers, :func:`relayer._cli.build_parser`); return its parser.
    """
    tail = commands.add_parser(
        "tail",
        help="print relayer's events and records from Kafka (or saved lines)",
        description="Print the events and records relayer sent to Kafka: only new messages\n"
        "unless --from-beginning; exit once caught up with the end unless --follow.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    tail.set_defaults(usage_error=tail.error)
    add = tail.add_argument
    add("topics", nargs="*", metavar="TOPIC", help="topics to read, before --prefix/--suffix")
    add("-b", "--bootstrap", metavar="HOST:PORT",
        help="Kafka servers (default: $KAFKA_BOOTSTRAP_SERVERS, else localhost:9092)")  # fmt: skip
    add("--prefix", default="", help="added before each TOPIC, as relayer's topic_prefix")
    add("--suffix", default="", help="added after each TOPIC, as relayer's topic_suffix")
    add("--from-beginning", action="store_true", help="start at the oldest messages")
    add("-f", "--follow", action="store_true",
        help="keep reading new messages until Ctrl-C (default: exit once caught up)")  # fmt: skip
    add("--key", metavar="K", help="only messages with key K (UTF-8; a UUID matches its 16 bytes)")
    add("--where", action="append", default=[], type=_where_arg, metavar="FIELD<op>VALUE",
        help="only messages where FIELD (dotted: payload.id) compares to VALUE; ops: "
        "= != > >= < <=; repeat to require several")  # fmt: skip
    add("-k", "--fields", nargs="+", action="extend", default=[], metavar="FIELD",
        help="print only these fields (dotted allowed), skip messages with none of them; "
        "put TOPICs before -k")  # fmt: skip
    add("--json", action="store_true", help="print each message as one JSON line")
    add("--lines", action="store_true", help="expand each record's lines under it")
    add("--stdin", action="store_true",
        help="read saved JSON lines (as --json prints them) from stdin, not Kafka")  # fmt: skip
    tail.set_defaults(run=run)
    return tail


def _where_arg(text: str) -> Condition:
    try:
        return parse_where(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def use_color(stream: IO[str]) -> bool:
    """Whether to colour output on ``stream``: a TTY, without ``NO_COLOR`` or ``TERM=dumb``."""
    tty = getattr(stream, "isatty", lambda: False)()
    return bool(tty) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def build_parser() -> argparse.ArgumentParser:
    """The ``relayer`` command's argument parser (:func:`relayer._cli.build_parser`)."""
    from ._cli import build_parser

    return build_parser()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``relayer`` command (:func:`relayer._cli.main`); return the exit status."""
    from ._cli import main

    return main(argv)


def run(args: argparse.Namespace) -> int:
    """Run ``relayer tail`` with the parsed ``args``; return the exit status.
    Usage errors raise ``SystemExit(2)``, as argparse does.
    """
    if args.stdin and (args.topics or args.key is not None):
        args.usage_error("--stdin reads no topic and no Kafka key: drop TOPIC and --key")
    if not args.stdin and not args.topics:
        args.usage_error("give at least one TOPIC (or --stdin)")
    out, err = sys.stdout, sys.stderr
    color, counts = use_color(out), {"good": 0, "bad": 0}
    keys = None if args.key is None else key_variants(args.key)
    if args.stdin:
        messages = stdin_messages(sys.stdin, err, counts)
    else:
        bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or "localhost:9092"
        topics = list(dict.fromkeys(f"{args.prefix}{t}{args.suffix}" for t in args.topics))
        messages = kafka_messages(
            bootstrap, topics, from_beginning=args.from_beginning, follow=args.follow, err=err
        )
    try:
        for message in messages:
            text = render(message, args, color) if wanted(message, args.where, keys) else None
            if text is not None:
                out.write(text + "\n")
                if args.follow:
                    out.flush()
        out.flush()
    except TailError as exc:
        print(f"relayer tail: {exc}", file=err)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `relayer tail ... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 141
    finally:
        messages.close()
    return 1 if counts["bad"] and not counts["good"] else 0
