"""A transactional outbox (SQLAlchemy 2): events that survive crashes and long outages.

``outbox.emit(session, ...)`` writes the event to a table in the session's
current transaction: it exists exactly when the business data does. After the
commit it is produced at once, and its row is deleted once Kafka confirms
delivery; after a rollback nothing is produced. A row left behind (the
process died, or Kafka was unreachable longer than ``message.timeout.ms``) is
produced again by :meth:`Outbox.relay_once` (or the thread of
:meth:`Outbox.start`, or ``relayer outbox relay``) once it is older than
``relay_after`` seconds. Delivery is at least once: after a crash an event
may arrive twice, with the same ``event_id``, on which consumers dedupe.

Needs the extra ``relayer[sqlalchemy]``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import orjson
from sqlalchemy import (
    Engine,
    bindparam,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction, scoped_session

from ._client import Message
from ._encoding import PartitionKey
from ._outbox_rows import DeliveryBatch, Pending, outbox_table, within
from ._producer import DeliveryProducer
from ._relayer import Relayer
from ._settings import seconds
from ._unit import Line, current_unit
from .exceptions import ConfigurationError

__all__ = ["Outbox", "outbox_table"]

logger = logging.getLogger("relayer")

#: Rows a relay takes (and locks) at a time.
BATCH = 500
#: Seconds between two runs of the relay thread (:meth:`Outbox.start`).
RELAY_INTERVAL = 5.0
#: Delivered rows waiting to be deleted, at most; past it the oldest are
#: left in the table (the relay sends them again: a counted duplicate risk,
#: never a loss).
MAX_UNDELETED = 100_000


class Outbox:
    """The outbox of ``relayer``'s events in ``engine``'s database.

    Creates ``table`` if it is missing. Rows older than ``relay_after``
    seconds are the relay's (:meth:`relay_once`); younger ones are being
    produced right after their commit.

    :raises ConfigurationError: ``relay_after`` is not a number of seconds.
    """

    def __init__(
        self,
        relayer: Relayer,
        engine: Engine,
        *,
        table: str = "relayer_outbox",
        relay_after: float = 30.0,
    ) -> None:
        self.relayer = relayer
        self.engine = engine
        self.relay_after = seconds("relay_after", relay_after)
        self.table = outbox_table(table)
        try:
            self.table.create(engine, checkfirst=True)
        except DBAPIError:  # another process created it meanwhile (PostgreSQL: a race)
            if not inspect(engine).has_table(table):
                raise
        s = relayer.settings
        # Its own producer: it reports every delivery (the row is deleted
        # then), which relayer's producer does not do for its events.
        self._producer = DeliveryProducer(
            _within_relay_after(s.producer_config(), self.relay_after),
            shutdown_timeout=s.shutdown_timeout,
            on_delivery_error=s.on_delivery_error,
            report_deliveries=True,
        )
        self._key = ("relayer.outbox", id(self))
        self._lock = threading.Lock()
        self._deleting = threading.Lock()
        self._delivered: List[str] = []  # event ids to delete
        self._wake = threading.Event()
        self._deleter: Optional[threading.Thread] = None
        self._relay: Optional[threading.Thread] = None
        self._stop = threading.Event()  # the relay thread's
        self._closed = threading.Event()  # the deleter's
        self._pid = os.getpid()
        #: Counters: rows relayed, rows whose produce or delete failed.
        self.counts: Dict[str, int] = {"relayed": 0, "failed": 0, "not_deleted": 0}
        _live.add(self)

    # -- writing ------------------------------------------------------------------------

    def emit(
        self,
        session: Union[Session, scoped_session[Any]],
        event_type: str,
        event_subtype: Any,
        payload: Any,
        partition_key: PartitionKey = None,
    ) -> str:
        """Write an event to the outbox in ``session``'s current transaction;
        return its ``event_id``. It is produced after the commit (nothing
        after a rollback). Inside a unit of work it is in the record's lines.

        Raises what :meth:`Relayer.emit <relayer.Relayer.emit>` raises on bad
        input, before anything is written.
        """
        # A scoped_session (Flask-SQLAlchemy's db.session): the session it is now.
        current: Session = session if isinstance(session, Session) else session()
        unit = current_unit()
        built: List[Tuple[Message, Optional[Line]]] = []
        self.relayer.emit(event_type, event_subtype, payload, partition_key, unit=unit, into=built)
        [(message, line)] = built
        key = message.key.encode() if isinstance(message.key, str) else message.key
        headers = None if message.headers is None else orjson.dumps(message.headers)
        current.execute(
            insert(self.table).values(
                event_id=message.event_id,
                topic=message.topic,
                message_key=key,
                value=message.value,
                headers=headers,
                created_at=time.time(),
                attempts=0,
            )
        )
        transaction = current.get_nested_transaction() or current.get_transaction()
        assert transaction is not None, "the insert began one"
        self._pending(current).append(Pending(transaction, message, unit, line))
        return message.event_id

    def _pending(self, session: Session) -> List[Pending]:
        """The events ``session`` wrote and has not committed yet (listening
        to its transactions the first time).
        """
        pending: Optional[List[Pending]] = session.info.get(self._key)
        if pending is None:
            pending = session.info[self._key] = []
            event.listen(session, "after_commit", self._after_commit)
            event.listen(session, "after_soft_rollback", self._after_soft_rollback)
            event.listen(session, "after_transaction_end", self._after_transaction_end)
        return pending

    def _after_commit(self, session: Session) -> None:
        if session.get_nested_transaction() is not None:
            return  # a savepoint was released: its events wait for the real commit
        pending: List[Pending] = session.info.get(self._key, [])
        messages = [entry.message for entry in pending]
        pending.clear()
        produce = self._producer.produce
        for m in messages:
            produce(m.topic, m.value, m.key, m.headers, self._on_delivered(m.event_id))

    def _after_soft_rollback(self, session: Session, previous: SessionTransaction) -> None:
        pending: List[Pending] = session.info.get(self._key, [])
        kept = []
        for entry in pending:
            if within(entry.transaction, previous):
                entry.discard()  # rolled back
            else:
                kept.append(entry)
        pending[:] = kept

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:  # the session's transaction is over: none is pending
            pending: List[Pending] = session.info.get(self._key, [])
            for entry in pending:
                entry.discard()  # not committed
            pending.clear()

    # -- producing and deleting ---------------------------------------------------------

    def _on_delivered(self, event_id: str) -> Callable[[bool], None]:
        def on_report(delivered: bool) -> None:
            if delivered:
                self._forget(event_id)

        return on_report

    def _forget(self, event_id: str) -> None:
        """Queue the row of a delivered event for deletion (by the deleter thread)."""
        with self._lock:
            if len(self._delivered) >= MAX_UNDELETED:
                self.counts["not_deleted"] += 1
                return
            self._delivered.append(event_id)
            self._start_deleter()
        self._wake.set()

    def _start_deleter(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's threads are not here
            self._pid, self._deleter, self._relay = os.getpid(), None, None
        if self._deleter is None or not self._deleter.is_alive():
            self._deleter = threading.Thread(
                target=self._delete_forever, name="relayer-outbox-deleter", daemon=True
            )
            self._deleter.start()

    def _delete_forever(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            self.delete_delivered()

    def delete_delivered(self) -> int:
        """Delete the rows of the events delivered so far; return how many.
        The deleter thread does it as reports come; :meth:`flush` too.
        """
        with self._deleting:  # one at a time: flush() returns once the rows are gone
            return self._delete_delivered()

    def _delete_delivered(self) -> int:
        with self._lock:
            ids, self._delivered = self._delivered, []
        deleted = 0
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            try:
                with self.engine.begin() as connection:
                    connection.execute(delete(self.table).where(self.table.c.event_id.in_(chunk)))
                deleted += len(chunk)
            except Exception:
                # Tried again at the next wake; past MAX_UNDELETED the rows stay,
                # and the relay sends them again (a duplicate, never a loss).
                logger.exception("relayer: could not delete %d delivered outbox rows", len(chunk))
                with self._lock:
                    room = MAX_UNDELETED - len(self._delivered)
                    self._delivered.extend(chunk[:room])
                    self.counts["not_deleted"] += max(0, len(chunk) - room)
        return deleted

    # -- relaying -----------------------------------------------------------------------

    def relay_once(
        self,
        timeout: Optional[float] = None,
        *,
        batch: Optional[int] = None,
        stop: Optional[threading.Event] = None,
    ) -> int:
        """Produce every row older than ``relay_after`` seconds, ``batch`` rows
        (default :data:`BATCH`) at a time, waiting up to ``timeout`` seconds
        (default: ``message.timeout.ms``, plus 5) for each batch's delivery;
        delete the delivered rows and return how many. The others stay for
        the next run. Once ``stop`` is set no batch begins. Relays never send
        a row at the same time: PostgreSQL locks a batch's rows until it is
        done (``FOR UPDATE SKIP LOCKED``); SQLite leases them in a short
        transaction (``created_at`` moved past the wait, then back), so that
        writers never wait for Kafka.
        """
        wait = self._batch_wait() if timeout is None else seconds("timeout", timeout)
        size = BATCH if batch is None else batch
        if type(size) is not int or size < 1:
            raise ConfigurationError(f"batch must be an int >= 1, not {batch!r}")
        total = 0
        while stop is None or not stop.is_set():
            sent, full = self._relay_batch(wait, size)
            total += sent
            if not full or not sent:
                break
        return total

    def _relay_batch(self, wait: float, size: int) -> Tuple[int, bool]:
        """One batch: return (rows delivered, whether the batch was full)."""
        t = self.table
        old = t.c.created_at <= time.time() - self.relay_after
        query = select(t.c.event_id, t.c.topic, t.c.message_key, t.c.value, t.c.headers)
        query = query.add_columns(t.c.created_at).where(old).order_by(t.c.id).limit(size)
        sqlite = self.engine.dialect.name == "sqlite"
        with self.engine.begin() as connection:
            if sqlite:  # a write first takes the write lock: no other relay takes these rows
                taken = select(t.c.id).where(old).order_by(t.c.id).limit(size)
                bump = update(t).where(t.c.id.in_(taken.scalar_subquery()))
                connection.execute(bump.values(attempts=t.c.attempts + 1))
            rows = connection.execute(query.with_for_update(skip_locked=True)).all()
            if not rows:
                return 0, False
            claim = update(t).where(t.c.event_id.in_([row.event_id for row in rows]))
            lease = {"created_at": time.time() + wait} if sqlite else {"attempts": t.c.attempts + 1}
            connection.execute(claim.values(lease))
            if not sqlite:  # the rows stay locked until the batch is done
                delivered = self._produce_rows(rows, wait)
                self._settle(connection, rows, delivered)
        if sqlite:  # leased: the write lock is free while Kafka is waited for
            delivered = self._produce_rows(rows, wait)
            with self.engine.begin() as connection:
                self._settle(connection, rows, delivered)
        with self._lock:
            self.counts["relayed"] += len(delivered)
            self.counts["failed"] += len(rows) - len(delivered)
        if len(delivered) < len(rows):
            message = "relayer: the outbox relay delivered %d of %d rows; the rest stay"
            logger.warning(message, len(delivered), len(rows))
        return len(delivered), len(rows) == size

    def _produce_rows(self, rows: Sequence[Any], wait: float) -> List[str]:
        """Produce ``rows``; return the event ids delivered within ``wait`` seconds."""
        batch = DeliveryBatch(len(rows), self._forget)
        for row in rows:
            headers = None if row.headers is None else [tuple(h) for h in orjson.loads(row.headers)]
            self._producer.produce(
                row.topic, row.value, row.message_key, headers, batch.reporter(row.event_id)
            )
        return batch.wait(wait)

    def _settle(self, connection: Connection, rows: Sequence[Any], delivered: List[str]) -> None:
        """Delete the delivered rows; SQLite: the others get their time back (not leased)."""
        t = self.table
        if delivered:
            connection.execute(delete(t).where(t.c.event_id.in_(delivered)))
        done = set(delivered)
        back = [{"b_id": r.event_id, "b_at": r.created_at} for r in rows if r.event_id not in done]
        if back and self.engine.dialect.name == "sqlite":
            again = update(t).where(t.c.event_id == bindparam("b_id"))
            connection.execute(again.values(created_at=bindparam("b_at")), back)

    def _batch_wait(self) -> float:
        config = self._producer.config
        timeout_ms = config.get("message.timeout.ms", config.get("delivery.timeout.ms", 300_000))
        return int(timeout_ms) / 1000 + 5.0

    def start(self, interval: float = RELAY_INTERVAL) -> None:
        """Run :meth:`relay_once` every ``interval`` seconds on a daemon thread."""
        interval = seconds("interval", interval)
        if interval <= 0:
            raise ConfigurationError("interval must be more than 0 seconds")
        with self._lock:
            if self._relay is not None and self._relay.is_alive():
                return
            self._stop.clear()
            self._relay = threading.Thread(
                target=self._relay_forever, args=(interval,), name="relayer-outbox", daemon=True
            )
            self._relay.start()

    def _relay_forever(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.relay_once(stop=self._stop)
            except Exception:
                logger.exception("relayer: the outbox relay failed; it tries again")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread of :meth:`start` (waiting up to ``timeout`` seconds)."""
        self._stop.set()
        relay = self._relay
        if relay is not None:
            relay.join(seconds("timeout", timeout))

    # -- the rest -----------------------------------------------------------------------

    def pending(self) -> int:
        """How many events are in the outbox, not yet confirmed delivered."""
        with self.engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(self.table)).scalar_one()
            )

    def stats(self) -> Dict[str, int]:
        """``pending`` rows, and counts: ``relayed`` rows, ``failed`` relays
        (produce not confirmed: the row stays), ``not_deleted`` rows (delivered,
        left for the relay), with the outbox producer's own counts
        (``produced``, ``delivered``…, see :meth:`Relayer.stats
        <relayer.Relayer.stats>`) under ``producer_*``.
        """
        with self._lock:
            counts = dict(self.counts)
        counts.update({f"producer_{k}": v for k, v in self._producer.stats().items()})
        counts["pending"] = self.pending()
        return counts

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` seconds for the events produced so far, and
        delete their rows; return how many are still not confirmed.
        """
        left = self._producer.flush(seconds("timeout", timeout))
        self.delete_delivered()
        return left

    def close(self, timeout: Optional[float] = None) -> int:
        """Stop the relay, flush (for at most ``timeout`` seconds, default the
        relayer's ``shutdown_timeout``), delete what was delivered, and close
        the producer. Rows left are sent by the next relay.
        """
        _live.discard(self)
        self.stop()
        left = self._producer.close(timeout)
        self.delete_delivered()
        self._closed.set()
        self._wake.set()
        return left

    def __repr__(self) -> str:
        return f"<Outbox table={self.table.name!r} relay_after={self.relay_after}>"


def _within_relay_after(config: Dict[str, Any], relay_after: float) -> Dict[str, Any]:
    """``config`` with ``message.timeout.ms`` at most half of ``relay_after``
    (when that leaves at least a second): a produce after a commit has given
    up before the relay may take the row, so that an outage does not send
    each of its events twice (once when the broker is back, once relayed).
    """
    if relay_after < 2.0:
        return config
    default = config.pop("delivery.timeout.ms", 300_000)  # librdkafka's alias
    timeout = int(config.get("message.timeout.ms", default))
    return {**config, "message.timeout.ms": min(timeout, int(relay_after * 500))}


#: Outboxes not closed yet, closed at exit (after their producer's flush,
#: so that delivered rows are deleted).
_live: weakref.WeakSet[Outbox] = weakref.WeakSet()


@atexit.register
def _close_outboxes() -> None:
    for outbox in list(_live):
        try:
            outbox.close()
        except Exception:
            logger.exception("relayer: could not close %r at exit", outbox)
