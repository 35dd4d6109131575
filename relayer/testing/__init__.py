"""A test double for users' own tests: Kafka swapped out, messages recorded.

.. code-block:: python

    from relayer.testing import RelayerPatch

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
from typing import Any, DefaultDict, Dict, List, Mapping, Optional, Tuple, Type, Union

import orjson

from .._client import ClientFactory, Headers
from .._producer import set_client_factory

__all__ = ["MockedProducer", "RelayerPatch"]

Produced = Tuple[bytes, Optional[bytes]]


class MockedProducer:
    """Records what would have been produced, by topic, in order.

    It is a client of relayer's producers (``relayer._producer.Client``): it
    takes ``confluent_kafka.Producer``'s ``produce``, ``poll``, ``flush``,
    ``purge`` and ``len()``, and delivers everything at once.
    """

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
        value: Optional[bytes] = None,
        key: Union[str, bytes, None] = None,
        partition: int = -1,
        callback: Any = None,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Optional[Headers] = None,
    ) -> None:
        """Record one message instead of producing it (a ``str`` key as its
        UTF-8 bytes); the arguments are ``confluent_kafka.Producer.produce``'s.
        A message's own delivery callback (``on_delivery``) is told at once
        that it was delivered, as librdkafka would tell it later.
        """
        encoded = key.encode() if isinstance(key, str) else key
        self.produced_messages[topic].append((value or b"", encoded))
        self.produced_headers[topic].append(
            {name: v.decode() if isinstance(v, bytes) else str(v) for name, v in headers or ()}
        )
        report = on_delivery or callback
        if report is not None:
            report(None, None)

    def flush(self, timeout: Optional[float] = None) -> int:
        """Note that a relayer flushed (:attr:`flushed`); return 0, as nothing is pending."""
        self.flushed = True
        return 0

    def poll(self, timeout: Optional[float] = None) -> int:
        """Nothing to serve: return 0."""
        return 0

    def purge(self, *args: Any, **kwargs: Any) -> None:
        """Nothing is queued: do nothing."""

    def __len__(self) -> int:
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
    ``relayer_patch`` pytest fixture. It plugs the mocked producer into
    relayer's seam for test doubles (``relayer._producer.set_client_factory``,
    as sentry-sdk's tests give it a transport): nothing is patched. ``stop()``
    always puts back what was there before (librdkafka, or an enclosing patch),
    and a patch can be started again after it: each ``start()`` gives it a
    new, empty :attr:`mocked_producer` (as the original did).
    """

    def __init__(self) -> None:
        #: What the patch recorded since it last started.
        self.mocked_producer = MockedProducer()
        self._active = False
        self._previous: Optional[ClientFactory] = None

    def start(self) -> RelayerPatch:
        """Start recording, in a new :attr:`mocked_producer`, instead of
        producing; return ``self`` (a patch already active is left as it is).
        """
        if not self._active:
            recorder = self.mocked_producer = MockedProducer()

            def client(config: Mapping[str, Any]) -> MockedProducer:
                return recorder

            self._previous = set_client_factory(client)
            self._active = True
        return self

    def stop(self) -> None:
        """Put back what producers sent through before (safe to call more than once)."""
        if self._active:
            self._active = False
            set_client_factory(self._previous)
            self._previous = None

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
