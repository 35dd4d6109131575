"""The outbox's table, and what it keeps of its events: those a session has
not committed yet, and the delivery reports of a relay's batch.
"""

from __future__ import annotations

import threading
from typing import Callable, List, NamedTuple, Optional

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)
from sqlalchemy.orm import SessionTransaction

from ._client import Message
from ._unit import Line, UnitOfWork


def outbox_table(name: str = "relayer_outbox", metadata: Optional[MetaData] = None) -> Table:
    """The outbox's table, for ``metadata`` (Alembic's autogenerate sees it
    when given the application's ``MetaData``). The README gives its DDL.
    """
    return Table(
        name,
        MetaData() if metadata is None else metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("event_id", String(32), nullable=False, unique=True),
        Column("topic", String(249), nullable=False),
        Column("message_key", LargeBinary, nullable=True),
        Column("value", LargeBinary, nullable=False),
        Column("headers", LargeBinary, nullable=True),
        Column("created_at", Double, nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        Index(f"ix_{name}_created_at", "created_at"),
    )


class Pending(NamedTuple):
    """An event written in a transaction not committed yet, with its line in
    the record of the unit of work it was written in (if any), which says
    ``"discarded": true`` should the transaction roll back.
    """

    transaction: SessionTransaction
    message: Message
    unit: Optional[UnitOfWork]
    line: Optional[Line]

    def discard(self) -> None:
        """Mark the event discarded in its record (once it will not be produced)."""
        if self.unit is not None and self.line is not None:
            self.unit.mark_discarded([(self.message, self.line)])


def within(transaction: SessionTransaction, ancestor: SessionTransaction) -> bool:
    """Whether ``transaction`` is ``ancestor`` or one nested in it."""
    current: Optional[SessionTransaction] = transaction
    while current is not None:
        if current is ancestor:
            return True
        current = current.parent
    return False


class DeliveryBatch:
    """The delivery reports of one relay batch. A delivery reported after
    :meth:`wait` gave up goes to ``late`` (the deleter's queue).
    """

    def __init__(self, size: int, late: Callable[[str], None]) -> None:
        self._left = size
        self._late = late
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._over = False
        self.delivered: List[str] = []

    def reporter(self, event_id: str) -> Callable[[bool], None]:
        def on_report(delivered: bool) -> None:
            with self._lock:
                over = self._over
                if delivered and not over:
                    self.delivered.append(event_id)
                self._left -= 1
                if self._left == 0:
                    self._done.set()
            if delivered and over:
                self._late(event_id)

        return on_report

    def wait(self, timeout: float) -> List[str]:
        """The event ids delivered once all are reported, or after ``timeout`` seconds."""
        self._done.wait(timeout)
        with self._lock:
            self._over = True
            return list(self.delivered)
