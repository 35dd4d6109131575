"""A test double for users' own tests: Kafka swapped out, messages recorded.

.. code-block:: python

    from relayer.test import RelayerPatch

    with RelayerPatch() as patch:
        client.post("/")
        assert patch.messages("entity_created")[0]["payload"] == {"id": 10}

While a patch is active no relayer connects to Kafka, whether it was built
before or after the patch started; ``patch.mocked_producer.produced_messages``
maps each topic to the ``(message, partition_key)`` tuples that would have
been produced, as JSON bytes and key bytes (a ``defaultdict(list)``, as in
the original: a topic nothing went to reads as ``[]``), and
``mocked_producer.flushed`` turns ``True`` once a relayer flushed.
``stats()`` counts the messages as produced and delivered. Each ``start()``
begins a new record. With pytest, the ``relayer_patch`` fixture gives an
active patch.
"""

from __future__ import annotations

from collections import defaultdict
from types import TracebackType
from typing import Any, DefaultDict, Dict, List, Optional, Tuple, Type, Union
from unittest import mock

import orjson

from .._producer import DeliveryProducer, Headers, live_producers

__all__ = ["MockedProducer", "RelayerPatch"]

Produced = Tuple[bytes, Optional[bytes]]


class MockedProducer:
    """Records what would have been produced, by topic, in order."""

    def __init__(self) -> None:
        #: topic → list of ``(message, partition_key)``: the JSON bytes and
        #: the key bytes (``None`` when there is no key); ``[]`` for a topic
        #: nothing was produced to.
        self.produced_messages: DefaultDict[str, List[Produced]] = defaultdict(list)
        #: topic → the Kafka headers of each message, in the same order.
        self.produced_headers: DefaultDict[str, List[Dict[str, str]]] = defaultdict(list)
        #: Whether a relayer flushed while the patch was active.
        self.flushed = False

    def produce(
        self,
        topic: str,
        value: bytes,
        key: Union[str, bytes, None] = None,
        headers: Optional[Headers] = None,
    ) -> None:
        """Record one message instead of producing it (a ``str`` key as its UTF-8 bytes)."""
        encoded = key.encode() if isinstance(key, str) else key
        self.produced_messages[topic].append((value, encoded))
        self.produced_headers[topic].append(
            {name: v.decode() if isinstance(v, bytes) else str(v) for name, v in headers or ()}
        )

    def flush(self, timeout: Optional[float] = None) -> int:
        """Note that a relayer flushed (:attr:`flushed`); return 0, as nothing is pending."""
        self.flushed = True
        return 0

    def messages(self, topic: str) -> List[Any]:
        """The decoded JSON messages of ``topic`` (full name, with prefix and
        suffix), oldest first; ``[]`` if none.
        """
        return [orjson.loads(value) for value, _ in self.produced_messages.get(topic, ())]

    def headers(self, topic: str) -> List[Dict[str, str]]:
        """The Kafka headers of ``topic``'s messages, each as a dict."""
        return list(self.produced_headers.get(topic, ()))

    def keys(self, topic: str) -> List[Optional[bytes]]:
        """The partition keys (bytes or ``None``) of ``topic``'s messages."""
        return [key for _, key in self.produced_messages.get(topic, ())]

    def clear(self) -> None:
        """Forget every recorded message, and that a relayer flushed."""
        self.produced_messages.clear()
        self.produced_headers.clear()
        self.flushed = False


class RelayerPatch:
    """Swap Kafka out for a :class:`MockedProducer`.

    Use ``start()``/``stop()``, or ``with RelayerPatch() as patch:``, or the
    ``relayer_patch`` pytest fixture. ``stop()`` always restores the real
    producer, and a patch can be started again after it: each ``start()``
    gives it a new, empty :attr:`mocked_producer` (as the original did).
    """

    def __init__(self) -> None:
        #: What the patch recorded since it last started.
        self.mocked_producer = MockedProducer()
        self._patches: List[Any] = []  # started mock patchers

    def start(self) -> RelayerPatch:
        """Start recording, in a new :attr:`mocked_producer`, instead of
        producing; return ``self`` (a patch already active is left as it is).
        """
        if self._patches:
            return self
        recorder = self.mocked_producer = MockedProducer()

        def send(
            _producer: DeliveryProducer,
            topic: str,
            value: bytes,
            key: Union[str, bytes, None],
            _partition: int,
            _callback: None,
            _on_delivery: None,
            _timestamp: int,
            headers: Optional[Headers],
        ) -> None:
            recorder.produce(topic, value, key, headers)

        def flush(_producer: DeliveryProducer, timeout: Optional[float] = None) -> int:
            return recorder.flush(timeout)

        def nothing_pending(_producer: DeliveryProducer, *args: Any) -> int:
            return 0

        # Producers send through ``send``: until they have a librdkafka handle
        # it is their ``_send_first``, which the patch replaces. Those that
        # have one go back to ``_send_first`` on start and on stop.
        patches: List[Any] = [
            mock.patch.object(DeliveryProducer, "_send_first", send),
            mock.patch.object(DeliveryProducer, "flush", flush),
            mock.patch.object(DeliveryProducer, "pending", nothing_pending),
        ]
        try:
            for patch in patches:
                patch.start()
                self._patches.append(patch)
        except BaseException:
            self.stop()
            raise
        _resend_all()
        return self

    def stop(self) -> None:
        """Restore the real producer (safe to call more than once)."""
        if self._patches:
            while self._patches:
                self._patches.pop().stop()
            _resend_all()

    def __enter__(self) -> RelayerPatch:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    @property
    def produced_messages(self) -> DefaultDict[str, List[Produced]]:
        """Shortcut for ``mocked_producer.produced_messages``."""
        return self.mocked_producer.produced_messages

    def messages(self, topic: str) -> List[Any]:
        """Shortcut for :meth:`MockedProducer.messages`."""
        return self.mocked_producer.messages(topic)


def _resend_all() -> None:
    """Make every live producer send through ``_send_first`` again (patched or not)."""
    for producer in live_producers():
        producer.send = producer._send_first
