"""ContiFormer: the continuous query and the key/value ODEs against independent references, the
closed-form linear dynamics, full stacked layers, PhysioPro's layer formula, checkpointing, adjoint."""
import math

import pytest
import torch
from torch import nn

from hybridseq.blocks.encoders.common import clean_inputs
from hybridseq.blocks.encoders.contiformer_paths import ODEDynamics, query_path
from hybridseq.testing import block_config, example_input


def _build(name, d_in=3, **over):
    cls, cfg = block_config(name, over, d_model=8, d_in=d_in)
    torch.manual_seed(0)
    return cls(cfg).eval()


def _query_at(tau, times, q, kind):
    """q(τ) [T, D] of one series, from the definitions: linear, or cubic Hermite whose slope at a knot
    is the previous interval's chord (backward differences) and at the interval's end its own chord."""
    m = (torch.searchsorted(times, tau, right=True) - 1).clamp(0, len(times) - 2)      # [T]
    h = times[m + 1] - times[m]
    sig = ((tau - times[m]) / h)[:, None]
    chord = q[m + 1] - q[m]                                                            # [T, D]
    if kind == "linear":
        return q[m] + sig * chord
    prev = torch.where((m > 0)[:, None], (q[m] - q[m - 1]) / (times[m] - times[m - 1])[:, None], chord / h[:, None])
    h00, h10 = 2 * sig**3 - 3 * sig**2 + 1, sig**3 - 2 * sig**2 + sig
    h01, h11 = -2 * sig**3 + 3 * sig**2, sig**3 - sig**2
    return h00 * q[m] + h10 * prev * h[:, None] + h01 * q[m + 1] + h11 * chord


def _per_pair_reference(att, x, times, kind, points=2001, held=False):
    """Scores [N, N, H] and value means [N, N, D] of one series, one pair at a time on a dense grid
    (``held``: the query held at q_i instead of following its path)."""
    import torchdiffeq

    q, k, v = att.q(x), att.k(x), att.v(x)
    n, d = k.shape
    heads = att.heads
    s = torch.linspace(0, 1, points, dtype=x.dtype)
    simpson = torch.ones(points, dtype=x.dtype)
    simpson[1:-1:2], simpson[2:-1:2] = 4, 2
    simpson /= 3 * (points - 1)
    scores, means = torch.zeros(n, n, heads, dtype=x.dtype), torch.zeros(n, n, d, dtype=x.dtype)
    for i in range(n):
        for j in range(n):
            span = times[i] - times[j]
            if span == 0:
                scores[i, j] = (q[i] * k[j]).view(heads, -1).sum(-1)
                means[i, j] = v[j]
                continue

            def field(u, y, j=j, span=span):
                tau = (times[j] + u * span).expand(1)
                key, value = att.dynamics.key(tau, y[None, :d])[0], att.dynamics.value(tau, y[None, d:])[0]
                return span * torch.cat([key, value])

            path = torchdiffeq.odeint(field, torch.cat([k[j], v[j]]), s, rtol=1e-10, atol=1e-10)   # [T, 2D]
            q_tau = q[i].expand(points, d) if held else _query_at(times[j] + s * span, times, q, kind)
            qk = (q_tau * path[:, :d]).view(points, heads, -1).sum(-1)
            scores[i, j], means[i, j] = simpson @ qk, simpson @ path[:, d:]
    return scores, means


@pytest.mark.parametrize("query", ["hermite", "linear"])
def test_contiformer_equals_a_per_pair_reference_with_a_continuous_query(query):
    block = _build("contiformer", query=query, solver={"method": "dopri5", "rtol": 1e-10, "atol": 1e-10}).double()
    att = block.layers[0].attention
    times = torch.tensor([[0.1, 0.35, 0.5, 0.9, 1.3]], dtype=torch.float64)
    x = torch.randn(1, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        scores, means = att.integrals(x, times, torch.ones(1, 5, dtype=torch.bool), block.solver)
        ref_scores, ref_means = _per_pair_reference(att, x[0], times[0], query)
        held = _per_pair_reference(att, x[0], times[0], query, points=201, held=True)[0]
    # dense Simpson sums: a linear query has kinks at the knots, hence the tolerance
    torch.testing.assert_close(scores[0], ref_scores, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(means[0], ref_means, rtol=1e-6, atol=1e-7)
    assert (held - ref_scores).abs().max() > 1e-2                     # a held query scores differently


class _Method(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, t, y):
        return self.fn(t, y)


@pytest.mark.parametrize("causal,query", [(False, "hermite"), (False, "linear"), (True, "hermite")])
def test_contiformer_linear_dynamics_closed_form_equals_the_solved_odes(causal, query):
    block = _build("contiformer", dynamics="linear", causal=causal, query=query,
                   solver={"method": "dopri5", "rtol": 1e-10, "atol": 1e-10}).double()
    batch = example_input(type(block), block.cfg, batch=3, length=6).to(dtype=torch.float64)
    _, _, times, valid = clean_inputs(batch)
    att = block.layers[0].attention
    x = torch.randn(3, 6, 8, dtype=torch.float64)
    with torch.no_grad():
        scores, means = att.integrals(x, times, valid, block.solver)
        assert block.solver.nfe == 0                                   # closed form: no solver call
        q, k, v = att.q(x), att.k(x), att.v(x)
        solved = ODEDynamics(_Method(att.dynamics.key), _Method(att.dynamics.value))
        ref = solved.integrals(block.solver, query_path(q, times, valid, query), q, k, v, times, 2, causal)
    pairs = valid[:, :, None] & valid[:, None, :]
    if causal:
        pairs &= torch.ones(6, 6, dtype=torch.bool).tril()
    torch.testing.assert_close(scores[pairs], ref[0][pairs], rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(means[pairs], ref[1][pairs], rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("rates", ["default", "zero_init", "mixed"])
def test_linear_dynamics_mixes_values_without_the_pairwise_means(rates):
    """`LinearDynamics.mix` (separable, or m's Taylor series where |μ| is small) equals Σ_j a_ij v̄_ij over
    the materialised value means, with repeated time stamps, in value and gradient."""
    block = _build("contiformer", dynamics="linear", zero_init=rates == "zero_init").double()
    dyn = block.layers[0].attention.dynamics
    if rates == "mixed":                # pair 0 near the series radius (|μ| · span 0.07), pair 1 fast
        with torch.no_grad():
            dyn.value_freq[:, 0] = 0.0
            dyn.value_decay[:, 0] = math.log(math.expm1(0.05))
            dyn.value_freq[:, 1] = 40.0
    g = torch.Generator().manual_seed(1)
    times = torch.tensor([[0.0, 0.1, 0.1, 0.35, 0.9, 1.4], [0.2, 0.2, 0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    v = torch.randn(2, 6, 8, dtype=torch.float64, generator=g, requires_grad=True)
    attn = torch.softmax(torch.randn(2, 6, 6, 2, dtype=torch.float64, generator=g), 2).requires_grad_()
    _, means = dyn.integrals(None, torch.zeros(2, 5, 8, 4, dtype=torch.float64), v, v, v, times, 2, False)
    ref = torch.einsum("bijh,bijhe->bihe", attn, means.view(2, 6, 6, 2, 4)).reshape(2, 6, 8)
    out = dyn.mix(attn, v, times)
    torch.testing.assert_close(out, ref, rtol=1e-7, atol=1e-8)       # `mean_exp`'s own series: < 1e-8
    w = torch.randn(2, 6, 8, dtype=torch.float64, generator=g)
    grads = [torch.autograd.grad((y * w).sum(), (v, attn)) for y in (out, ref)]
    for mine, theirs in zip(*grads):
        torch.testing.assert_close(mine, theirs, rtol=1e-7, atol=1e-8)


def test_contiformer_keys_and_values_have_separate_odes():
    block = _build("contiformer").double()
    att = block.layers[0].attention
    batch = example_input(type(block), block.cfg, batch=2, length=5).to(dtype=torch.float64)
    _, _, times, valid = clean_inputs(batch)
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        base = att.integrals(x, times, valid, block.solver)
        att.dynamics.value.outer.bias.add_(0.5)                        # change the value field only
        moved_v = att.integrals(x, times, valid, block.solver)
        att.dynamics.key.outer.bias.add_(0.5)                          # then the key field
        moved_k = att.integrals(x, times, valid, block.solver)
    torch.testing.assert_close(moved_v[0], base[0])                    # scores untouched by the value ODE
    assert (moved_v[1] - base[1]).abs().max() > 1e-3
    torch.testing.assert_close(moved_k[1], moved_v[1])                 # values untouched by the key ODE
    assert (moved_k[0] - moved_v[0]).abs().max() > 1e-3


def test_contiformer_stacks_full_layers_and_zero_init_starts_constant():
    one, two = _build("contiformer", layers=1), _build("contiformer", layers=2, norm_first=True)
    assert len(one.layers) == 1 and len(two.layers) == 2
    layer = two.layers[1]
    assert isinstance(layer.norm1, nn.LayerNorm) and layer.ff[0].out_features == 32       # mlp_ratio 4
    batch = example_input(type(one), one.cfg, batch=2, length=5)
    assert two(batch).x.shape == one(batch).x.shape == (2, 5, 8)
    flat = _build("contiformer", zero_init=True).double()
    att = flat.layers[0].attention
    _, _, times, valid = clean_inputs(batch.to(dtype=torch.float64))
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        _, means = att.integrals(x, times, valid, flat.solver)
    torch.testing.assert_close(means, att.v(x)[:, None].expand(-1, 5, -1, -1))     # v_j(τ) = v_j throughout


def test_contiformer_layer_equals_physiopro_formula_on_a_tiny_case():
    """PhysioPro's EncoderLayer (post-norm, linear_type 'before', Gauss nodes with nlinspace 2, linear
    query interpolation), written out for two observations with a field whose trajectories are
    quadratic, so two Gauss nodes are exact. PhysioPro multiplies both q and k by the quadrature weights
    (1/2 each with two nodes), so its scores are half the interval mean: equal with our scale halved."""
    torch.manual_seed(0)
    block = _build("contiformer", d_in=2, d_model=4, heads=2, query="linear", mlp_ratio=2.0).double()
    layer = block.layers[0]
    a, c = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    drift = _Method(lambda tau, y: a * tau[..., None] + c + 0 * y)                  # dk/dτ = a τ + c
    layer.attention.dynamics = ODEDynamics(drift, drift)
    for norm in (layer.norm1, layer.norm2):
        norm.eps = 1e-6                                                              # PhysioPro's LayerNorm eps
    t = torch.tensor([0.2, 0.9], dtype=torch.float64)
    x = torch.randn(1, 2, 4, dtype=torch.float64)
    att = layer.attention
    q, k, v = att.q(x[0]), att.k(x[0]), att.v(x[0])
    nodes = (torch.tensor([-1.0, 1.0], dtype=torch.float64) / 3**0.5 + 1) / 2               # on [0, 1]
    out = torch.zeros(2, 4, dtype=torch.float64)
    for i in range(2):
        logits, vals = [], []
        for j in range(2):
            tau = t[j] + nodes * (t[i] - t[j])                                              # [2]
            k_tau = k[j] + a * (tau[:, None] ** 2 - t[j] ** 2) / 2 + c * (tau[:, None] - t[j])
            v_tau = v[j] + a * (tau[:, None] ** 2 - t[j] ** 2) / 2 + c * (tau[:, None] - t[j])
            q_tau = q[0] + (tau[:, None] - t[0]) / (t[1] - t[0]) * (q[1] - q[0])
            logits.append(((0.5 * q_tau) * (0.5 * k_tau)).view(2, 2, 2).sum((0, 2)) / 2**0.5)   # [H]
            vals.append((0.5 * v_tau).sum(0))
        attn = torch.softmax(torch.stack(logits), 0)                                          # [J, H]
        out[i] = (attn.repeat_interleave(2, 1) * torch.stack(vals)).sum(0)
    h = nn.functional.layer_norm(att.out(out) + x[0], (4,), layer.norm1.weight, layer.norm1.bias, 1e-6)
    ff = layer.ff[3](nn.functional.gelu(layer.ff[0](h)))
    physiopro = nn.functional.layer_norm(ff + h, (4,), layer.norm2.weight, layer.norm2.bias, 1e-6)
    att.scale /= 2
    ours = layer(x, t[None], torch.ones(1, 2, dtype=torch.bool), block.solver)[0]
    torch.testing.assert_close(ours, physiopro, rtol=1e-6, atol=1e-7)


def test_contiformer_checkpointed_intervals_give_the_same_outputs_and_gradients():
    grads, outs = [], []
    for checkpoint in (False, True):
        block = _build("contiformer", checkpoint=checkpoint).double()
        batch = example_input(type(block), block.cfg, batch=2, length=5).to(dtype=torch.float64)
        out = block(batch).x[batch.valid]
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in block.parameters()]))
    torch.testing.assert_close(outs[1], outs[0])
    torch.testing.assert_close(grads[1], grads[0])


def test_contiformer_adjoint_gradients_equal_direct_backprop():
    grads = []
    for adjoint in (False, True):
        block = _build("contiformer", d_in=2, field_width=8, solver={"method": "dopri5", "rtol": 1e-9, "atol": 1e-9,
                                                                   "adjoint": adjoint}).double()
        batch = example_input(type(block), block.cfg, batch=1, length=3).to(dtype=torch.float64)
        block(batch).x[batch.valid].square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in block.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)


def _saved_bytes(run) -> int:
    """Bytes of the tensors autograd saves while ``run`` builds its graph (each save counted)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return total[0]


@pytest.mark.parametrize("causal", [False, True])
def test_contiformer_streamed_attention_equals_the_full_one_in_memory_linear_in_t(causal):
    results = []
    for stream in (False, True):
        block = _build("contiformer", stream=stream, causal=causal).double()
        batch = example_input(type(block), block.cfg, batch=2, length=6).to(dtype=torch.float64)
        batch.times[:, 3] = batch.times[:, 2]                               # a repeated stamp
        out = block(batch).x[batch.valid]
        (out.square().sum() + out.sum()).backward()
        results.append((out.detach(), torch.cat([p.grad.flatten() for p in block.parameters()])))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-7, atol=1e-9)   # up to the reconstruction

    def saved(stream, n):
        block = _build("contiformer", stream=stream, d_model=16, heads=2)
        att, x = block.layers[0].attention, torch.randn(2, n, 16)
        times, valid = torch.sort(torch.rand(2, n), 1).values, torch.ones(2, n, dtype=torch.bool)
        return _saved_bytes(lambda: att(x, times, valid, block.solver))

    assert saved(True, 32) / saved(True, 16) < 2.2                         # linear in T
    assert saved(False, 32) / saved(False, 16) > 3.2                       # the full attention: quadratic
    assert saved(True, 32) < saved(False, 32) / 8


def test_contiformer_stream_is_refused_with_linear_dynamics_or_checkpoint():
    from hybridseq import ConfigError
    for over in ({"dynamics": "linear"}, {"checkpoint": True}):
        with pytest.raises(ConfigError, match="stream"):
            block_config("contiformer", {"stream": True, **over})


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_contiformer_streamed_attention_trains_under_autocast(dtype):
    block = _build("contiformer", stream=True).train()
    batch = example_input(type(block), block.cfg, batch=2, length=5)
    with torch.autocast("cpu", dtype=dtype):
        out = block(batch).x[batch.valid]
    out.float().square().sum().backward()                                  # backward outside, as the trainer
    grads = [p.grad for p in block.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert block.layers[0].attention.dynamics.key.inner.weight.grad.abs().sum() > 0


def test_contiformer_bench_quick_run_prints_every_method_and_the_pair_check():
    import re
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).parents[1] / "bench" / "contiformer.py"
    out = subprocess.run([sys.executable, str(bench), "--quick"], capture_output=True, text=True, check=True).stdout
    rows = {line.split("|")[2].strip() for line in out.splitlines() if line.startswith("| 8 |")}
    assert rows == {"ours mlp", "ours mlp checkpoint", "ours mlp stream", "ours mlp stream midpoint",
                    "ours mlp adjoint", "ours linear", "physiopro", "per-pair loop"}
    gap = float(re.search(r"max \|difference\| ([0-9.e+-]+)", out).group(1))
    assert gap < 1e-5                                                      # the loop agrees with the sweeps


def test_contiformer_streamed_attention_with_the_adjoint_solver_gives_the_same_gradients():
    grads = []
    for over in ({}, {"stream": True, "solver": {"method": "rk4", "adjoint": True}}):
        block = _build("contiformer", **over).double()
        batch = example_input(type(block), block.cfg, batch=2, length=5).to(dtype=torch.float64)
        block(batch).x[batch.valid].square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in block.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-8)
