"""The lru block: conformance, agreement with a step-by-step reference, initialisation, config errors."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import hybridseq as hs
from hybridseq.blocks.layers import linear_scan
from hybridseq.testing import check_block, example_input
from hybridseq_lru import LRU

EXAMPLE = Path(__file__).parents[1] / "examples" / "lru_model.yaml"


@pytest.mark.parametrize("overrides", [{}, {"time_gaps": False}, {"d_state": 3, "dropout": 0.1}])
def test_conformance(overrides):
    check_block("lru", overrides)


def test_linear_scan_matches_loop():
    a = 0.9 * torch.randn(2, 37, 5, dtype=torch.complex128)
    b = torch.randn(2, 37, 5, dtype=torch.complex128)
    h, expected = torch.zeros(2, 5, dtype=torch.complex128), []
    for k in range(37):
        h = a[:, k] * h + b[:, k]
        expected.append(h)
    torch.testing.assert_close(linear_scan(a, b), torch.stack(expected, dim=1))


def unit(block: LRU, seq: hs.Seq, i: int) -> float:
    """The configured time unit, or the mean gap between series i's valid observation times."""
    if block.cfg.time_unit is not None:
        return block.cfg.time_unit
    times = seq.t[i][seq.valid()[i]]
    return (times[-1] - times[0]) / (len(times) - 1)


def reference(block: LRU, seq: hs.Seq) -> torch.Tensor:
    """One series and one step at a time, straight from the paper's equations (padding skipped)."""
    log_lam = block.log_lambda()
    gamma_b = torch.complex(block.B_re, block.B_im) * block.gamma_log.exp()[:, None]   # [N, H]
    c = torch.complex(block.C_re, block.C_im)                                          # [H, N]
    u = block.norm(seq.x)
    out = torch.zeros_like(seq.x)
    for i in range(seq.x.shape[0]):
        h, last = torch.zeros(block.cfg.d_state, dtype=gamma_b.dtype), None
        for k in range(seq.x.shape[1]):
            if not seq.valid()[i, k]:
                continue
            use_t = block.cfg.time_gaps and seq.t is not None
            step = (seq.t[i, k] - last) / unit(block, seq, i) if use_t and last is not None else 1.0
            h = torch.exp(step * log_lam) * h + gamma_b @ u[i, k].to(gamma_b.dtype)
            y = (c @ h).real + block.D * u[i, k]
            out[i, k] = seq.x[i, k] + F.glu(block.glu(F.gelu(y)), dim=-1)
            last = seq.t[i, k] if seq.t is not None else None
    return out


@pytest.mark.parametrize("time_gaps,time_unit", [(False, None), (True, None), (True, 0.5)])
def test_matches_sequential_reference(time_gaps, time_unit):
    block = hs.build_block("lru", d_model=6, d_state=5, r_min=0.3, time_gaps=time_gaps, time_unit=time_unit).double()
    seq = example_input(LRU, block.cfg).to(dtype=torch.float64)      # padded, irregular times
    valid = seq.valid()
    torch.testing.assert_close(block(seq).x[valid], reference(block, seq)[valid])


def test_time_gaps_change_the_output_only_when_enabled():
    seq = example_input(LRU, hs.build_block("lru", d_model=8).cfg)
    stretched = hs.Seq(x=seq.x, t=3 * seq.t, mask=seq.mask)
    warped = hs.Seq(x=seq.x, t=seq.t ** 2, mask=seq.mask)
    for options, same_stretched, same_warped in (({"time_gaps": False}, True, True),
                                                 ({"time_gaps": True, "time_unit": 1.0}, False, False),
                                                 ({"time_gaps": True}, True, False)):   # unit: mean gap
        torch.manual_seed(0)
        block = hs.build_block("lru", d_model=8, d_state=4, **options)
        assert torch.allclose(block(seq).x, block(stretched).x, atol=1e-6) == same_stretched
        assert torch.allclose(block(seq).x, block(warped).x, atol=1e-6) == same_warped


def test_initialisation_on_the_ring():
    torch.manual_seed(0)
    block = hs.build_block("lru", d_model=4, d_state=2000, r_min=0.4, r_max=0.8, max_phase=1.0)
    radius = torch.exp(-block.nu_log.exp())
    phase = block.theta_log.exp()
    assert radius.min() >= 0.4 - 1e-6 and radius.max() <= 0.8 + 1e-6
    assert phase.min() >= 0 and phase.max() <= 1.0
    torch.testing.assert_close(block.gamma_log.exp(), torch.sqrt(1 - radius ** 2))
    # |λ|² is uniform on [r_min², r_max²]: its mean is the midpoint
    assert abs((radius ** 2).mean().item() - (0.16 + 0.64) / 2) < 0.02
    assert block.stats()["max_radius"] <= 0.8


@pytest.mark.parametrize("options,message", [
    ({"r_min": 0.9, "r_max": 0.5}, r"model\.blocks\[0\]\.r_max: need 0 <= r_min < r_max <= 1"),
    ({"d_state": 0}, r"model\.blocks\[0\]\.d_state: must be > 0, got 0"),
    ({"time_unit": -1.0}, r"model\.blocks\[0\]\.time_unit: must be > 0, got -1.0"),
])
def test_bad_values_name_the_key(options, message):
    with pytest.raises(hs.ConfigError, match=message):
        hs.assemble({"d_model": 8, "input": {"kind": "sequence", "channels": 8},
                     "blocks": [{"type": "lru", **options}]})


def test_example_config_assembles_and_runs():
    cfg = hs.load_config(str(EXAMPLE))
    model = hs.assemble(cfg.model)
    assert [n.type for n in model.spec.nodes] == ["linear", "lru", "lru", "classify"]
    batch = example_input(model.spec.nodes[0].cls, model.spec.nodes[0].cfg)
    out = model(batch)
    assert out.x.shape == (3, 4) and torch.isfinite(out.x).all()
    assert "max_radius" in hs.describe(model)
    assert math.isfinite(model.stats()["b0_0"]["max_radius"])


def test_step_matches_the_full_pass_with_and_without_gaps():
    """One position at a time (generation) gives the outputs of the parallel scan, regular and with a
    configured time unit (gaps in steps)."""
    torch.manual_seed(0)
    block = hs.build_block("lru", d_model=6, d_state=5, time_gaps=True, time_unit=0.5).double().eval()
    x = torch.randn(2, 9, 6, dtype=torch.float64)
    t = torch.cumsum(torch.rand(2, 9, dtype=torch.float64) + 0.1, dim=1)
    gaps = hs.blocks.layers.time_gaps(t, torch.ones(2, 9, dtype=torch.bool), 0.5)
    for seq, gap in ((hs.Seq(x=x), None), (hs.Seq(x=x, t=t), gaps)):
        state, outs = block.allocate_state(2), []
        for k in range(9):
            y, state = block.step(x[:, k], state, None if gap is None else gap[:, k])
            outs.append(y)
        torch.testing.assert_close(torch.stack(outs, 1), block(seq).x)
