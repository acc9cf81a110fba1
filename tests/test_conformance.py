"""Every registered block, built-in or from an installed plugin, passes the conformance checks."""
import pytest

from hybridseq import registry
from hybridseq.testing import check_block


@pytest.mark.parametrize("name", registry.blocks.names())
def test_block_conformance(name):
    check_block(name)
