"""Dynamics analysis: Lyapunov exponents against known linear flows, spectra, and `hybridseq analyze`."""
import json
import math
from dataclasses import dataclass, replace

import pytest
import torch

import hybridseq as hs
from hybridseq import Seq, assemble, build_block
from hybridseq.analysis import (
    analyze,
    compose,
    ftle,
    jacobian,
    lyapunov_exponents,
    rk4_map,
    spectra,
    token_sensitivity,
    write_report,
)
from hybridseq.analysis.lyapunov import LyapunovConvergenceWarning
from hybridseq.analysis.spectra import head_eigenvalues
from hybridseq.blocks.base import ContinuousDepth, DepthMap
from hybridseq.blocks.layers import attention_mask
from hybridseq.cli import main
from hybridseq.testing import example_input, register_plugin
from hybridseq.train.checkpoint import save_run


def _linear_system(eigen_blocks, seed):
    """A = P J P⁻¹ with J block-diagonal (real eigenvalues, or [[a, -w], [w, a]] for a ± iw)."""
    J = torch.block_diag(*[torch.tensor(b, dtype=torch.float64) for b in eigen_blocks])
    g = torch.Generator().manual_seed(seed)
    P = torch.eye(len(J), dtype=torch.float64) + 0.3 * torch.randn(len(J), len(J), generator=g, dtype=torch.float64)
    return P @ J @ torch.linalg.inv(P)


def test_lyapunov_exponents_of_a_linear_flow_are_the_real_parts_of_its_eigenvalues():
    systems = [_linear_system([[[0.5]], [[-1.0, -2.0], [2.0, -1.0]], [[-0.2]]], seed=0),   # 0.5, -0.2, -1, -1
               _linear_system([[[0.3, -1.0], [1.0, 0.3]], [[-0.5]], [[-2.0]]], seed=1)]    # 0.3, 0.3, -0.5, -2
    A = torch.stack(systems)                                                    # [2, 4, 4]: one per sample
    expected = torch.tensor([[0.5, -0.2, -1.0, -1.0], [0.3, 0.3, -0.5, -2.0]], dtype=torch.float64)
    for a, e in zip(A, expected):
        torch.testing.assert_close(torch.linalg.eigvals(a).real.sort(descending=True).values, e)
    field = lambda t, x: torch.einsum("bij,bj->bi", A, x)                      # noqa: E731
    horizon, steps = 60.0, 150
    x0 = torch.randn(2, 4, dtype=torch.float64)
    found = lyapunov_exponents(rk4_map(field, steps, 0.0, horizon), x0, steps, k=4, total_time=horizon)
    torch.testing.assert_close(found, expected, atol=0.05, rtol=0)


@pytest.mark.parametrize("method", ["dense", "subspace"])
def test_finite_time_exponents_of_a_linear_flow_are_log_singular_values_of_its_exponential(method):
    """Over T = 1 the FTLE of dx/dt = Ax are log σ_i(e^{AT}) / T, far from the eigenvalues' real parts."""
    A = torch.stack([_linear_system([[[0.5]], [[-1.0, -2.0], [2.0, -1.0]], [[-0.2]]], seed=0),
                     _linear_system([[[0.3, -1.0], [1.0, 0.3]], [[-0.5]], [[-2.0]]], seed=1)])   # [2, 4, 4]
    field = lambda t, x: torch.einsum("bij,bj->bi", A, x)                      # noqa: E731
    for horizon in (1.0, 3.0):
        exact = torch.linalg.svdvals(torch.linalg.matrix_exp(A * horizon)).log() / horizon   # [2, 4]
        flow = compose(rk4_map(field, 64, 0.0, horizon), 64)
        found = ftle(flow, torch.randn(2, 4, dtype=torch.float64), k=3, time=horizon, method=method)
        assert ((found - exact[:, :3]).abs() <= 0.02 * exact[:, :3].abs()).all(), (found, exact)
    eig = torch.linalg.eigvals(A[0]).real.max()
    assert (ftle(compose(rk4_map(field, 64), 64), torch.randn(2, 4, dtype=torch.float64), k=1)[0, 0] - eig) > 0.5


def test_benettin_warns_when_the_horizon_is_too_short_for_it():
    A = _linear_system([[[0.5]], [[-1.0, -2.0], [2.0, -1.0]], [[-0.2]]], seed=0)
    field = lambda t, x: x @ A.T                                               # noqa: E731
    with pytest.warns(LyapunovConvergenceWarning, match="not converged"):
        lyapunov_exponents(rk4_map(field, 20), torch.ones(1, 4, dtype=torch.float64), 20, k=2)


def _tiny_head_flow(seed=0):
    torch.manual_seed(seed)
    block = build_block("neural_ode_transformer", d_model=4, heads=2, steps=4, t_embed=4, mlp_ratio=2.0).double()
    valid = torch.tensor([[True, True, True], [True, True, False]])
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    block.field.mask = attention_mask(valid, 3, False, x.device)
    block.field.keep = valid[..., None].double()
    return compose(rk4_map(block.field, 8), 8), torch.where(valid[..., None], x, 0.0), valid[..., None]


def test_subspace_iteration_matches_the_dense_jacobian_of_a_tiny_head():
    flow, x, keep = _tiny_head_flow()
    J = jacobian(flow, x, keep)                                                # [2, 12, 12]
    with torch.no_grad():
        eps = 1e-6
        probe = torch.zeros_like(x)
        probe[0, 1, 2] = eps                                                   # one column by differences
        column = ((flow(x + probe) - flow(x - probe)) / (2 * eps)).reshape(2, -1)
    torch.testing.assert_close(J[0, :, 6], column[0], atol=1e-6, rtol=1e-5)
    assert (J[1, :, 8:] == 0).all() and (J[1, 8:, :] == 0).all()              # padding is not a direction
    dense = torch.linalg.svdvals(J)[:, :4].log()
    found = ftle(flow, x, k=4, mask=keep, method="subspace", tol=1e-8, iters=200)
    torch.testing.assert_close(found, dense, atol=1e-4, rtol=0)
    torch.testing.assert_close(ftle(flow, x, k=4, mask=keep), dense)           # auto: dense at this size


def test_lyapunov_tangents_stay_on_valid_positions():
    A = torch.tensor([[0.4, 0.3, 0.0], [0.0, -0.3, 0.0], [2.0, 1.0, 1.5]], dtype=torch.float64)
    field = lambda t, x: x @ A.T                                               # noqa: E731
    mask = torch.tensor([[True, True, False]])                                 # the third entry is "padding"
    x0 = torch.ones(1, 3, dtype=torch.float64)
    short = lyapunov_exponents(rk4_map(field, 20), x0, 20, k=5, mask=mask)
    assert short.shape == (1, 2)                                               # k capped at the valid size
    torch.testing.assert_close(short.sum(), torch.tensor(0.1, dtype=torch.float64))  # Liouville: trace
    found = lyapunov_exponents(rk4_map(field, 100, 0.0, 40.0), x0, 100, k=2, total_time=40.0, mask=mask)
    torch.testing.assert_close(found, torch.tensor([[0.4, -0.3]], dtype=torch.float64), atol=0.05, rtol=0)


def test_head_eigenvalues_are_the_nonzero_spectrum_of_the_full_products():
    d, heads = 8, 2
    qkv, out = torch.randn(3 * d, d, dtype=torch.float64), torch.randn(d, d, dtype=torch.float64)
    qk, vo = head_eigenvalues(qkv, out, heads)
    wq, wk, wv = qkv.T.chunk(3, dim=1)                                        # [D, D] each, x @ W convention
    wo = out.T
    for h in range(heads):
        cols = slice(4 * h, 4 * h + 4)
        for mine, full in ((qk[h], wq[:, cols] @ wk[:, cols].T), (vo[h], wv[:, cols] @ wo[cols])):
            big = torch.linalg.eigvals(full)
            big = big[big.abs().argsort(descending=True)][:4]
            torch.testing.assert_close(mine[mine.abs().argsort(descending=True)], big, atol=1e-8, rtol=1e-8)


def test_spectra_along_depth():
    node = build_block("neural_ode_transformer", d_model=8, heads=2)
    varying = spectra(node, times=5)
    assert len(varying["t"]) == 5 and len(varying["qk"][0]) == 2 and len(varying["qk"][0][0]) == 4
    assert varying["qk_radius"][0] != varying["qk_radius"][-1]
    p = node.weights_at(0.5)
    exact = torch.linalg.svdvals((p["fc2_weight"] @ p["fc1_weight"]).double())
    torch.testing.assert_close(torch.tensor(varying["ff_singular"][2], dtype=torch.float64), exact)
    with torch.no_grad():
        for gen in node.field.hyper.generators():
            gen.weight.zero_()
    still = spectra(node, times=3)
    assert still["vo_radius"][0] == still["vo_radius"][-1]
    layered = spectra(build_block("ode_transformer", d_model=8, heads=2, layers=3))
    assert layered["t"] == [0.0, 1 / 3, 2 / 3]


def test_token_sensitivity_is_the_norm_of_each_token_block_of_the_jacobian():
    torch.manual_seed(0)
    block = build_block("ode_transformer", d_model=4, heads=2, causal=True).double()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    fn = lambda y: block(Seq(x=y)).x                                           # noqa: E731
    S = token_sensitivity(fn, x)                                               # [2, 5, 5]
    J = torch.autograd.functional.jacobian(lambda y: fn(y[None])[0], x[1])   # [5, 4, 5, 4]
    torch.testing.assert_close(S[1], J.square().sum(dim=(1, 3)).sqrt())
    assert (S.triu(1) == 0).all() and (S.diagonal(dim1=1, dim2=2) > 0).all()   # causal: no later token


MODEL = {"d_model": 8, "input": {"kind": "irregular", "channels": 2}, "encoder": {"type": "linear"},
         "blocks": [{"type": "ode_transformer", "heads": 2, "layers": 2, "name": "ode"},
                    {"type": "neural_ode_transformer", "heads": 2, "steps": 2, "name": "node"}],
         "head": {"type": "classify", "classes": 2}}


def test_analyze_a_model_directly():
    model = assemble(MODEL)
    batch = torch.randn(2, 6, 2)
    result = analyze(model, batch, times=3, topk=3, steps=4)
    assert set(result) == {"ode", "node"}
    for node in result.values():
        assert len(node["lyapunov"]["mean"]) == 3 and len(node["lyapunov"]["per_sample"]) == 2
        assert all(torch.isfinite(torch.tensor(node["lyapunov"]["mean"])))
        assert node["lyapunov"]["method"] == "ftle"
        assert torch.tensor(node["sensitivity"]).shape == (6, 6)
    with pytest.warns(LyapunovConvergenceWarning):                           # one unit of depth is short
        benettin = analyze(model, batch, times=3, topk=3, steps=4, lyapunov="benettin")
    assert benettin["node"]["lyapunov"]["mean"] != result["node"]["lyapunov"]["mean"]


@pytest.mark.parametrize("target", ["states", "weights"])
def test_analyze_reports_what_a_pde_attention_layer_learned(tmp_path, target):
    model = assemble(dict(MODEL, blocks=[{"type": "pde_attention", "heads": 2, "target": target, "name": "pde"}]))
    batch = torch.randn(2, 6, 2)
    result = analyze(model, batch)
    node = result["pde"]
    assert set(node) == {"type", "sensitivity", "pde"}
    widths = {"states": 8, "weights": 2}
    assert len(node["pde"]["coefficients"]["D"]) == widths[target]
    if target == "weights":
        before, after = torch.tensor(node["pde"]["attention_before"]), torch.tensor(node["pde"]["attention_after"])
        torch.testing.assert_close(after.sum(-1), torch.ones(6))
        assert before.shape == (6, 6) and (after - before).abs().max() > 1e-4
    names = {p.name for p in write_report(result, tmp_path)}
    assert names == {"analysis.json", "pde_sensitivity.png", "pde_pde.png"}


@pytest.mark.parametrize("source", ["data", "random", "file"])
def test_analyze_command_end_to_end(tmp_path, capsys, source):
    cfg = {"model": MODEL, "data": {"name": "spirals", "n_train": 16, "n_test": 8, "points": 12}}
    run = tmp_path / "run"
    save_run(run, cfg, assemble(MODEL))
    if source == "file":
        source = str(tmp_path / "x.pt")
        torch.save(torch.randn(3, 7, 2), source)
    assert main(["analyze", str(run), "--input", source, "--times", "3", "--topk", "2", "--steps", "4"]) == 0
    out = run / "analysis"
    names = {p.name for p in out.iterdir()}
    assert {"analysis.json", "ode_spectra.png", "ode_lyapunov.png", "node_spectra.png", "node_lyapunov.png",
            "ode_sensitivity.png", "node_sensitivity.png"} <= names
    assert all((out / n).read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for n in names if n.endswith(".png"))
    report = json.loads((out / "analysis.json").read_text())
    assert len(report["node"]["spectra"]["t"]) == 3 and len(report["ode"]["lyapunov"]["mean"]) == 2
    assert len(report["node"]["spectra"]["vo"][0]) == 2                        # per head at each t
    assert "top Lyapunov exponents" in capsys.readouterr().out


def test_analyze_command_reports_missing_run_and_models_without_heads(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope")]) == 2
    plain = dict(MODEL, blocks=[{"type": "transformer", "heads": 2}])
    save_run(tmp_path / "plain", {"model": plain}, assemble(plain))
    assert main(["analyze", str(tmp_path / "plain" / "best.safetensors"), "--input", "random"]) == 1
    assert "no continuous-depth head" in capsys.readouterr().out


class LinearFlow(hs.Block):
    """dx/dt = a·x over depth, with a one-head attention whose weights are fixed: a plugin head that
    implements the analysis protocol."""

    @dataclass
    class Config:
        d_model: int = 0
        rate: float = -0.5

    def __init__(self, cfg):
        super().__init__(cfg)
        self.qkv, self.out = torch.nn.Linear(cfg.d_model, 3 * cfg.d_model), torch.nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, seq):
        return replace(seq, x=seq.x * math.exp(self.cfg.rate))

    def attention_along_depth(self, times):
        return 1, [(0.0, self.qkv.weight, self.out.weight)]

    def depth_map(self, seq):
        return DepthMap(seq.x.detach(), seq.valid()[..., None], field=lambda t, x: self.cfg.rate * x)


class FlowPlugin:
    @hs.hookimpl
    def hybridseq_register_blocks(self, register):
        register("linear_flow", LinearFlow)


def test_analysis_reads_any_head_through_the_protocol():
    with register_plugin(FlowPlugin(), "test-flow"):
        model = assemble({**MODEL, "blocks": [{"type": "linear_flow", "rate": -0.5}, {"type": "mlp"}]})
        assert isinstance(model.nodes["b0"], ContinuousDepth) and not isinstance(model.nodes["b1"], ContinuousDepth)
        result = analyze(model, example_input(model.spec.nodes[0].cls, model.spec.nodes[0].cfg), topk=2, steps=8)
        assert list(result) == ["b0"] and result["b0"]["spectra"]["t"] == [0.0]
        torch.testing.assert_close(torch.tensor(result["b0"]["lyapunov"]["mean"]), torch.tensor([-0.5, -0.5]),
                                   atol=1e-4, rtol=0)
