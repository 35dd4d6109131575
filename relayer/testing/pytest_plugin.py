"""pytest plugin (loaded through the ``pytest11`` entry point): the
``relayer_patch`` fixture.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from . import RelayerPatch


@pytest.fixture
def relayer_patch() -> Iterator[RelayerPatch]:
    """An active :class:`~relayer.testing.RelayerPatch`, stopped after the test."""
    with RelayerPatch() as patch:
        yield patch
