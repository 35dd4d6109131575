"""Fixtures of the unit tests: no broker; librdkafka's mock cluster or RelayerPatch."""

from __future__ import annotations

from typing import Any, Callable, Iterator, List

import pytest

from relayer import Relayer

from .helpers import MOCK_CLUSTER


@pytest.fixture
def make_relayer() -> Iterator[Callable[..., Relayer]]:
    """Build relayers on librdkafka's mock cluster; close them after the test."""
    made: List[Relayer] = []

    def make(logging_topic: str = "logs", **kwargs: Any) -> Relayer:
        kwargs.setdefault("kafka_hosts", "mock:9092")
        kwargs["producer_opts"] = {**MOCK_CLUSTER, **kwargs.get("producer_opts", {})}
        relayer = Relayer(logging_topic, **kwargs)
        made.append(relayer)
        return relayer

    yield make
    for relayer in made:
        relayer.close(timeout=5)


@pytest.fixture
def schema_checked(relayer_patch: Any) -> Iterator[None]:
    """After the test, check every message the patch recorded against relayer's
    JSON Schemas (use it where nothing but events and records is produced)."""
    from .schemas import validate

    yield
    for topic in relayer_patch.produced_messages:
        for message in relayer_patch.messages(topic):
            validate(message)
