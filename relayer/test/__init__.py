"""The original relayer's name for :mod:`relayer.testing`, kept so that its
users' tests import it unchanged: ``from relayer.test import RelayerPatch``.
"""

from ..testing import MockedProducer, RelayerPatch

__all__ = ["MockedProducer", "RelayerPatch"]
