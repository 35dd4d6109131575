"""Events held until their unit of work ends: ``event_delivery="on_success"``.

An event emitted inside a unit of work is checked and encoded at once (bad
input still raises at the call), kept with its line of the record, and
produced when the unit of work ends successfully, in the order emitted. If it
failed, the events are not produced, and their lines say ``"discarded":
true``.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, List, Tuple

from ._client import Message

if TYPE_CHECKING:
    from ._producer import DeliveryProducer
    from ._unit import Line, UnitOfWork

logger = logging.getLogger("relayer")

#: Why an event that did not fit in the budget is counted as dropped.
OVER_BUDGET = "held events over the producer's buffer (event_delivery='on_success')"


class HeldEvents:
    """What the units of work of one relayer hold, within one budget of bytes
    for the whole process: the producer's buffer (``queue.buffering.max.kbytes``),
    so that holding events never takes more memory than producing them at
    once would. An event past the budget is dropped and counted (and marked
    discarded in its record), as a full buffer drops one.
    """

    def __init__(self, producer: DeliveryProducer) -> None:
        self._producer = producer
        self._lock = threading.Lock()
        #: Bytes of event values the units of work may still hold.
        self.room = int(producer.config["queue.buffering.max.kbytes"]) * 1024

    def hold(self, unit: UnitOfWork, message: Message, line: Line) -> None:
        """Keep ``message`` (whose line in the record is ``line``) until ``unit`` ends."""
        size = len(message.value)
        with self._lock:
            fits = size <= self.room
            if fits:
                self.room -= size
        if fits:
            held = unit.held
            assert held is not None, "only a unit of work that holds its events"
            held.append((message, line))
            return
        logger.warning("relayer: an event of topic %r is dropped: %s", message.topic, OVER_BUDGET)
        self._producer.lost(OVER_BUDGET)
        unit.mark_discarded([(message, line)])

    def release(self, unit: UnitOfWork, succeeded: bool) -> None:
        """``unit`` ended: produce its events if it ``succeeded``, else mark
        them discarded. Never raises.
        """
        held: List[Tuple[Message, Line]] = unit.held or []
        if not held:
            return
        unit.held = []
        with self._lock:
            self.room += sum(len(message.value) for message, _ in held)
        if succeeded:
            produce = self._producer.produce
            for message, _ in held:
                produce(message.topic, message.value, message.key, message.headers)
        else:
            unit.mark_discarded(held)
