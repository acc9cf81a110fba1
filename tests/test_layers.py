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


def test_transformer_block_is_pytorchs_pre_norm_encoder_layer():
    """With the same weights, the `transformer` block equals nn.TransformerEncoderLayer(norm_first=True,
    gelu) in eval mode, padding mask included; in train mode `residual_dropout` drops each sub-layer's
    output (a block with only that dropout differs from its eval output), and with all dropouts 0 train
    and eval agree."""
    torch.manual_seed(0)
    block = hs.build_block("transformer", d_model=8, heads=2, mlp_ratio=2.0, dropout=0.1, residual_dropout=0.1)
    ref = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, activation="gelu", batch_first=True, norm_first=True)
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
        ref.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
        ref.self_attn.out_proj.weight.copy_(block.attn.out.weight)
        ref.self_attn.out_proj.bias.copy_(block.attn.out.bias)
        for mine, theirs in [(block.norm1, ref.norm1), (block.norm2, ref.norm2), (block.ff[0], ref.linear1),
                             (block.ff[3], ref.linear2)]:
            theirs.weight.copy_(mine.weight)
            theirs.bias.copy_(mine.bias)
    x = torch.randn(2, 5, 8)
    valid = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    block.eval(), ref.eval()
    y = block(hs.Seq(x=x, mask=valid)).x
    torch.testing.assert_close(y[valid], ref(x, src_key_padding_mask=~valid)[valid], atol=1e-5, rtol=1e-5)
    only_residual = hs.build_block("transformer", d_model=8, heads=2, residual_dropout=0.5)
    assert not torch.allclose(only_residual.train()(hs.Seq(x=x)).x, only_residual.eval()(hs.Seq(x=x)).x)
    none = hs.build_block("transformer", d_model=8, heads=2)
    torch.testing.assert_close(none.train()(hs.Seq(x=x)).x, none.eval()(hs.Seq(x=x)).x)
