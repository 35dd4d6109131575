"""What a producer sends through: librdkafka's ``confluent_kafka.Producer``,
or a test double that takes the same calls (:mod:`relayer.testing`).
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, NamedTuple, Optional, Protocol, Tuple, Union

Headers = List[Tuple[str, Union[str, bytes, None]]]


class Message(NamedTuple):
    """An event built and checked, not produced yet: what ``emit(...,
    into=...)`` hands over, what ``event_delivery="on_success"`` holds and
    what the outbox stores.
    """

    topic: str
    value: bytes
    key: Union[str, bytes, None]
    headers: Optional[Headers]
    event_id: str


class Client(Protocol):
    """What a producer needs of its client: the part of
    ``confluent_kafka.Producer`` relayer uses, with the same signatures.
    A test double (``relayer.testing``) is one too.
    """

    def produce(
        self,
        topic: str,
        value: Optional[bytes] = None,
        key: Union[str, bytes, None] = None,
        partition: int = -1,
        callback: Any = None,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Optional[Headers] = None,
    ) -> None:
        """Queue a message; raise ``BufferError`` when the queue is full."""

    def poll(self, timeout: float = ...) -> int:
        """Serve delivery reports."""

    def flush(self, timeout: float = ...) -> int:
        """Wait for delivery; return how many messages are still queued."""

    def purge(self, in_queue: bool = ..., in_flight: bool = ..., blocking: bool = ...) -> None:
        """Give up on what is queued."""

    def __len__(self) -> int:
        """How many messages (and reports) are still queued."""


#: Makes the client of a producer from its librdkafka settings.
ClientFactory = Callable[[Mapping[str, Any]], Client]
