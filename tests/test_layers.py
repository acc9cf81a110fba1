"""The shared layers: one home for what several block families and plugins use; documented."""
from pathlib import Path

import pytest
import torch

import hybridseq as hs
from hybridseq.blocks import layers
from hybridseq.blocks.backbones import ssm_common

DOC = (Path(__file__).resolve().parents[1] / "docs" / "layers.md").read_text()


@pytest.mark.parametrize("name", layers.__all__)
def test_every_layer_is_documented_and_importable(name):
    assert f"`{name}" in DOC, f"docs/layers.md does not describe {name}"
    assert getattr(layers, name) is not None


def test_ssm_helpers_are_the_backbones_own():
    assert layers.time_gaps is ssm_common.time_gaps
    assert layers.inverse_softplus is ssm_common.inverse_softplus
    with pytest.raises(AttributeError):
        getattr(layers, "not_a_layer")  # noqa: B009


def test_check_heads_names_the_key():
    layers.check_heads(8, 4, "model.blocks[0]")
    for heads in (0, 3):
        with pytest.raises(hs.ConfigError, match=rf"^model.blocks\[0\].heads: heads={heads} must be >= 1"):
            layers.check_heads(8, heads, "model.blocks[0]")


def test_masked_pool_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    valid = torch.tensor([[True, True, False]])
    got = {how: float(layers.masked_pool(x, valid, how)) for how in layers.POOLS}
    assert got == {"mean": 2.0, "max": 3.0, "last": 3.0, "first": 1.0}


def test_inverse_softplus_inverts_softplus():
    x = torch.tensor([0.01, 0.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(torch.nn.functional.softplus(layers.inverse_softplus(x)), x)


def test_heads_use_the_shared_check():
    for block in ("transformer", "ode_transformer", "neural_ode_transformer", "pde_attention", "contiformer"):
        with pytest.raises(hs.ConfigError, match="heads=3 must be >= 1 and divide d_model=8"):
            hs.build_block(block, d_model=8, heads=3, **({"d_in": 2} if block == "contiformer" else {}))
