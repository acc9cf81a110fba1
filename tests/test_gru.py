"""The gru backbone: equals a GRU cell run over each series' valid prefix, Δt input, padding, errors."""
import pytest
import torch
from torch import nn

from hybridseq import Seq, build_block


def _by_hand(block, seq):
    """x + GRUCell-loop(LayerNorm(x) [, Δt]) over the valid steps of each series (one layer)."""
    rnn = block.rnn
    cell = nn.GRUCell(rnn.input_size, rnn.hidden_size).double()
    cell.weight_ih.data, cell.weight_hh.data = rnn.weight_ih_l0.data, rnn.weight_hh_l0.data
    cell.bias_ih.data, cell.bias_hh.data = rnn.bias_ih_l0.data, rnn.bias_hh_l0.data
    out = seq.x.clone()
    for b in range(seq.x.shape[0]):
        h = seq.x.new_zeros(1, rnn.hidden_size)
        for i in range(int(seq.valid()[b].sum())):
            inp = block.norm(seq.x[b, i])
            if block.cfg.delta_t:
                gap = seq.t[b, i] - seq.t[b, i - 1] if i > 0 else seq.t.new_zeros(())
                inp = torch.cat([inp, gap[None]])
            h = cell(inp[None], h)
            out[b, i] = seq.x[b, i] + h[0]
    return out


@pytest.mark.parametrize("delta_t", [False, True])
def test_gru_equals_a_cell_loop_over_the_valid_prefix(delta_t):
    torch.manual_seed(0)
    block = build_block("gru", d_model=6, delta_t=delta_t).double()
    t = torch.cumsum(torch.rand(3, 7, dtype=torch.float64), 1)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 4, 1])[:, None]
    seq = Seq(x=torch.randn(3, 7, 6, dtype=torch.float64), t=t, mask=mask)
    with torch.no_grad():
        torch.testing.assert_close(block(seq).x, _by_hand(block, seq))


def test_gru_reads_the_time_gaps_only_when_asked():
    torch.manual_seed(0)
    plain, timed = build_block("gru", d_model=4), build_block("gru", d_model=4, delta_t=True)
    x = torch.randn(2, 5, 4)
    a, b = Seq(x=x, t=torch.arange(5.0).expand(2, 5)), Seq(x=x, t=(torch.arange(5.0) ** 2).expand(2, 5))
    with torch.no_grad():
        torch.testing.assert_close(plain(a).x, plain(b).x)
        assert (timed(a).x - timed(b).x).abs().max() > 1e-4
        assert torch.isfinite(timed(Seq(x=x)).x).all()                   # no times: one unit per step


def test_gru_rejects_padding_that_is_not_at_the_end():
    block = build_block("gru", d_model=4)
    mask = torch.tensor([[True, False, True]])
    with pytest.raises(ValueError, match="prefix"):
        block(Seq(x=torch.randn(1, 3, 4), mask=mask))


def test_gru_config_errors_name_the_key():
    from hybridseq import ConfigError

    with pytest.raises(ConfigError) as err:
        build_block("gru", d_model=4, layers=0)
    assert err.value.path.endswith("layers")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gru_trains_under_autocast(dtype):
    block = build_block("gru", d_model=4, delta_t=True)
    seq = Seq(x=torch.randn(2, 5, 4), t=torch.cumsum(torch.rand(2, 5), 1), mask=torch.ones(2, 5, dtype=torch.bool))
    with torch.autocast("cpu", dtype=dtype):
        out = block(seq).x
    out.float().square().mean().backward()
    assert torch.isfinite(out.float()).all() and block.rnn.weight_hh_l0.grad.abs().sum() > 0


@pytest.mark.parametrize("delta_t", [False, True])
def test_step_matches_the_full_pass(delta_t):
    """One step at a time (generation) gives the packed full pass's outputs, on a regular grid and with
    observation times (the gap fed to each step is the time since the previous one)."""
    torch.manual_seed(0)
    block = build_block("gru", d_model=6, layers=2, delta_t=delta_t).double().eval()
    x = torch.randn(2, 7, 6, dtype=torch.float64)
    t = torch.cumsum(torch.rand(2, 7, dtype=torch.float64) + 0.1, dim=1)
    for seq, gaps in ((Seq(x=x), None), (Seq(x=x, t=t), torch.diff(t, dim=1, prepend=t[:, :1]))):
        state, outs = block.allocate_state(2), []
        for k in range(7):
            y, state = block.step(x[:, k], state, None if gaps is None else gaps[:, k])
            outs.append(y)
        torch.testing.assert_close(torch.stack(outs, 1), block(seq).x)
