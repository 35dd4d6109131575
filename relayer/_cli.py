"""The ``relayer`` command (``python -m relayer``): ``relayer tail`` and ``relayer outbox relay``.

``relayer tail`` lives in :mod:`relayer._tail`. ``relayer outbox relay`` sends
the outbox rows that a crash or a long outage left behind
(:meth:`relayer.outbox.Outbox.relay_once`): once with ``--once``, else every
``--interval`` seconds until SIGTERM or SIGINT. It needs the extra
``relayer[sqlalchemy]``, imported only when it runs, so that ``relayer tail``
works without it.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from . import _tail

if TYPE_CHECKING:
    from .outbox import Outbox

logger = logging.getLogger("relayer")

PROG = "relayer outbox relay"

RELAY_EPILOG = """\
examples:
  relayer outbox relay --db postgresql+psycopg://app@db/app -b kafka:9092
  relayer outbox relay --db sqlite:///app.db -b localhost:9092 --relay-after 0 --once

Rows hold their full topic names (the application's prefix and suffix in them):
--prefix and --suffix change nothing that is relayed; they only name the relay's
own logging topic, relayer_outbox, to which it writes nothing.
Several relays may run on one database: none sends a row another is sending.

exit status: 0 done (--once: every row sent was delivered; else stopped by
SIGTERM or SIGINT); 1 --once: some rows were not delivered (they stay for the
next run), or the database failed; 2 usage error, or the database cannot be
used."""


def build_parser() -> argparse.ArgumentParser:
    """The ``relayer`` command's argument parser: ``tail`` and ``outbox relay``."""
    parser = argparse.ArgumentParser(prog="relayer", description="relayer's console tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _tail.add_parser(commands)
    outbox = commands.add_parser(
        "outbox",
        help="relay the transactional outbox's rows to Kafka",
        description="The transactional outbox (relayer.outbox) of a database.",
        allow_abbrev=False,
    )
    actions = outbox.add_subparsers(dest="action", required=True, metavar="ACTION")
    relay = actions.add_parser(
        "relay",
        help="produce the rows older than --relay-after seconds; delete each once delivered",
        description="Produce every outbox row older than --relay-after seconds (rows whose\n"
        "produce after commit was lost to a crash or an outage), and delete each once Kafka\n"
        "confirms it: once (--once), or every --interval seconds until SIGTERM or SIGINT.",
        epilog=RELAY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    relay.set_defaults(run=_relay, usage_error=relay.error)
    add = relay.add_argument
    add("--db", required=True, metavar="URL",
        help="SQLAlchemy URL of the outbox's database (postgresql+psycopg://..., sqlite:///...)")  # fmt: skip
    add("-b", "--bootstrap", metavar="HOST:PORT",
        help="Kafka servers (default: $KAFKA_BOOTSTRAP_SERVERS; one of them is required)")  # fmt: skip
    add("--prefix", default="", help="the relay's topic_prefix (see below)")
    add("--suffix", default="", help="the relay's topic_suffix (see below)")
    add("--table", default="relayer_outbox", help="the outbox table (default: %(default)s)")
    add("--relay-after", type=_seconds, metavar="SECONDS",
        help="relay rows older than this (default: 30, the Outbox's default); 0: every row")  # fmt: skip
    add("--once", action="store_true", help="relay once, print the counts, and exit")
    add("--interval", type=_interval, default=5.0, metavar="SECONDS",
        help="seconds between two runs without --once (default: %(default)g)")  # fmt: skip
    add("--batch", type=_batch, metavar="N",
        help="rows taken (and locked) at a time (default: relayer.outbox.BATCH, 500)")  # fmt: skip
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _interval(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected more than 0 seconds, got 0")
    return value


def _batch(text: str) -> int:
    if not text.strip().isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``relayer`` command with ``argv`` (default: ``sys.argv[1:]``); return the
    exit status. Usage errors raise ``SystemExit(2)``, as argparse does.
    """
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


def _relay(args: argparse.Namespace) -> int:
    """``relayer outbox relay``: open the outbox, relay, close it; return the exit status."""
    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        args.usage_error("give -b HOST:PORT (or set $KAFKA_BOOTSTRAP_SERVERS)")
    try:
        from sqlalchemy import create_engine
        from sqlalchemy.exc import ArgumentError, SQLAlchemyError

        from .outbox import Outbox
    except ImportError as exc:
        print(
            f"{PROG}: needs SQLAlchemy: pip install 'relayer[sqlalchemy]' ({exc})", file=sys.stderr
        )
        return 2
    from ._relayer import Relayer
    from .exceptions import RelayerError

    try:
        engine = create_engine(args.db)
    except ArgumentError as exc:  # not a URL, or an unknown dialect
        args.usage_error(f"--db: {exc}")
    except ImportError as exc:  # the URL's driver is not installed
        args.usage_error(f"--db: its database driver is not installed ({exc})")
    try:
        relayer = Relayer(
            "relayer_outbox",
            kafka_hosts=bootstrap,
            topic_prefix=args.prefix,
            topic_suffix=args.suffix,
        )
    except RelayerError as exc:
        args.usage_error(str(exc))
    where = engine.url.render_as_string(hide_password=True)
    options: Dict[str, Any] = {"table": args.table}
    if args.relay_after is not None:
        options["relay_after"] = args.relay_after
    try:
        try:
            outbox = Outbox(relayer, engine, **options)
        except SQLAlchemyError as exc:
            print(f"{PROG}: cannot use the outbox in {where}: {_first_line(exc)}", file=sys.stderr)
            return 2
        try:
            if args.once:
                return _once(outbox, args.batch)
            return _forever(outbox, args.interval, args.batch)
        finally:
            outbox.close()
    finally:
        relayer.close()
        engine.dispose()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _run(outbox: Outbox, batch: Optional[int], stop: Optional[threading.Event]) -> List[int]:
    """One run: ``[delivered, not delivered]``; raises what the database raised."""
    failed = outbox.counts["failed"]
    delivered = outbox.relay_once(batch=batch, stop=stop)
    return [delivered, outbox.counts["failed"] - failed]


def _once(outbox: Outbox, batch: Optional[int]) -> int:
    try:
        delivered, failed = _run(outbox, batch, None)
        pending = outbox.pending()
    except Exception as exc:
        print(f"{PROG}: the relay failed: {_first_line(exc)}", file=sys.stderr)
        return 1
    print(f"{PROG}: {delivered} delivered, {failed} not delivered, {pending} pending")
    return 1 if failed else 0


def _forever(outbox: Outbox, interval: float, batch: Optional[int]) -> int:
    """Relay every ``interval`` seconds, on a thread, until SIGTERM or SIGINT;
    the batch under way is finished first (a second signal acts as usual).
    """
    received: List[int] = []  # the handler only appends: no lock taken in a handler

    def handler(signum: int, frame: Optional[FrameType]) -> None:
        received.append(signum)

    stop = threading.Event()
    relay = threading.Thread(
        target=_relay_forever, args=(outbox, interval, batch, stop), name="relayer-outbox-relay"
    )
    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        print(
            f"{PROG}: relaying {outbox.table.name} every {interval:g} s; SIGTERM or Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        relay.start()
        while relay.is_alive() and not received:
            relay.join(0.2)
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)
        stop.set()
    try:
        relay.join()
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for the batch
        return 130
    return 0


def _relay_forever(
    outbox: Outbox, interval: float, batch: Optional[int], stop: threading.Event
) -> None:
    while not stop.is_set():
        try:
            delivered, failed = _run(outbox, batch, stop)
            if delivered or failed:
                pending = outbox.pending()
                text = f"{delivered} delivered, {failed} not delivered, {pending} pending"
                print(f"{PROG}: {text}", flush=True)
        except Exception:
            logger.exception("%s: the relay failed; it tries again in %g s", PROG, interval)
        stop.wait(interval)
