"""ode_transformer and neural_ode_transformer: schemes, depth hypernetwork, adaptive depth, errors; CPU/GPU
agreement of every reasoning head."""
import pytest
import torch
import torchdiffeq
from torch import nn

from hybridseq import ConfigError, Seq, assemble, build_block, hookimpl, validate_model
from hybridseq.blocks.heads.ode_transformer import SCHEMES
from hybridseq.testing import register_plugin
from hybridseq.train.checkpoint import load_run, save_run

D = 8


def _x(b=2, n=5, seed=0):
    return torch.randn(b, n, D, generator=torch.Generator().manual_seed(seed))


def _model(block):
    return {"d_model": D, "input": {"kind": "sequence", "channels": D}, "blocks": [block]}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_zero_vector_field_is_identity_for_every_scheme(scheme):
    block = build_block("ode_transformer", d_model=D, heads=2, layers=2, scheme=scheme)
    for layer in block.layers:
        for lin in (layer.field.attn.out, layer.field.ff[-1]):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
    x = _x()
    torch.testing.assert_close(block(Seq(x=x)).x, x, atol=0, rtol=0)


class _LinearField(nn.Module):
    """F(x) = x Aᵀ, in place of a layer's Transformer update."""

    def __init__(self, A):
        super().__init__()
        self.A = A

    def forward(self, x, mask):
        return x @ self.A.T


@pytest.mark.parametrize("scheme, order", [("euler", 1), ("rk2", 2), ("rk4", 4)])
def test_each_scheme_is_its_runge_kutta_step_on_a_linear_field(scheme, order):
    """On F(x) = Ax one step is x ↦ Σ_{k<=order} A^k x / k! (the scheme's stability polynomial)."""
    block = build_block("ode_transformer", d_model=D, heads=2, scheme=scheme).double()
    A = 0.3 * torch.randn(D, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    block.layers[0].field = _LinearField(A)
    x = _x().double()
    expected, term = x.clone(), x
    for k in range(1, order + 1):
        term = term @ A.T / k
        expected = expected + term
    torch.testing.assert_close(block(Seq(x=x)).x, expected)


@pytest.mark.parametrize("method, atol", [("euler", 0), ("midpoint", 0), ("rk4", 0),
                                          ("dopri5", 1e-5)])      # dense output: rounding of y0 combinations
def test_zero_vector_field_is_identity_for_the_neural_ode_transformer(method, atol):
    block = build_block("neural_ode_transformer", d_model=D, heads=2, hyper="full", solver={"method": method})
    with torch.no_grad():
        for name in ("out_weight", "out_bias", "fc2_weight", "fc2_bias"):
            param = block.field.hyper.params[name]
            param.base.zero_()
            param.gen.weight.zero_()
        x = _x()
        torch.testing.assert_close(block(Seq(x=x)).x, x, atol=atol, rtol=0)


def test_euler_layer_is_the_residual_transformer_layer():
    block = build_block("ode_transformer", d_model=D, heads=2, scheme="euler")
    ref = build_block("transformer", d_model=D, heads=2)
    ref.load_state_dict(block.layers[0].field.state_dict())
    seq = Seq(x=_x(), mask=torch.tensor([[True] * 5, [True] * 3 + [False] * 2]))
    torch.testing.assert_close(block(seq).x, ref(seq).x)


def test_rk2_variants_agree_at_their_neutral_setting_and_share_stage_parameters():
    x = _x()
    heun = build_block("ode_transformer", d_model=D, heads=2, scheme="rk2")
    outs = {}
    for scheme in ("gated_rk2", "learned_rk2"):
        block = build_block("ode_transformer", d_model=D, heads=2, scheme=scheme)
        block.load_state_dict(heun.state_dict(), strict=False)
        if scheme == "gated_rk2":                                   # σ(0) = 1/2: Heun's weights
            nn.init.zeros_(block.layers[0].gate.weight)
            nn.init.zeros_(block.layers[0].gate.bias)
        outs[scheme] = block(Seq(x=x)).x
    expected = heun(Seq(x=x)).x
    for out in outs.values():
        torch.testing.assert_close(out, expected)
    count = lambda m: sum(p.numel() for p in m.parameters())        # noqa: E731
    euler, rk4 = (build_block("ode_transformer", d_model=D, heads=2, scheme=s) for s in ("euler", "rk4"))
    assert count(euler) == count(rk4) == count(heun)
    three = build_block("ode_transformer", d_model=D, heads=2, scheme="rk4", layers=3)
    assert count(three) == 3 * count(rk4)
    assert not torch.allclose(heun(Seq(x=x)).x, rk4(Seq(x=x)).x)


def _fixed_weight_reference(block, x, steps):
    """The same ODE written with stock modules and fixed weights θ0, integrated by torchdiffeq."""
    base = {k: p.base.detach() for k, p in block.field.hyper.params.items()}
    norm = nn.LayerNorm(D)
    attn = nn.MultiheadAttention(D, block.cfg.heads, batch_first=True)
    mlp = nn.Sequential(nn.Linear(D, base["fc1_weight"].shape[0]), nn.GELU(), nn.Linear(base["fc1_weight"].shape[0], D))
    with torch.no_grad():
        norm.weight.copy_(base["norm_weight"]), norm.bias.copy_(base["norm_bias"])
        attn.in_proj_weight.copy_(base["qkv_weight"]), attn.in_proj_bias.copy_(base["qkv_bias"])
        attn.out_proj.weight.copy_(base["out_weight"]), attn.out_proj.bias.copy_(base["out_bias"])
        mlp[0].weight.copy_(base["fc1_weight"]), mlp[0].bias.copy_(base["fc1_bias"])
        mlp[2].weight.copy_(base["fc2_weight"]), mlp[2].bias.copy_(base["fc2_bias"])

    def f(t, y):
        h = norm(y)
        return attn(h, h, h, need_weights=False)[0] + mlp(h)

    return torchdiffeq.odeint(f, x, torch.linspace(0, 1, steps + 1), method="rk4")[-1]


@pytest.mark.parametrize("hyper", ["full", "lowrank"])
def test_time_independent_hypernetwork_is_a_weight_shared_ode(hyper):
    block = build_block("neural_ode_transformer", d_model=D, heads=2, hyper=hyper, steps=3)
    x = _x()
    with torch.no_grad():
        varying = block(Seq(x=x)).x
        for gen in block.field.hyper.generators():
            gen.weight.zero_()
        shared = block(Seq(x=x)).x
        reference = _fixed_weight_reference(block, x, steps=3)
    torch.testing.assert_close(shared, reference, atol=1e-5, rtol=1e-5)
    assert (varying - shared).abs().max() > 1e-4                    # the hypernetwork does depend on t


def test_adaptive_depth_by_config_override_converges():
    torch.manual_seed(0)
    trained = build_block("neural_ode_transformer", d_model=D, heads=2, steps=2, t_embed=4, solver={"method": "euler"})
    with torch.no_grad():
        for gen in trained.field.hyper.generators():
            gen.weight.mul_(5)                                      # a clearly depth-dependent field
    x = _x()

    def run(steps, method="euler"):
        block = build_block("neural_ode_transformer", d_model=D, heads=2, steps=steps, t_embed=4,
                            solver={"method": method})
        block.load_state_dict(trained.state_dict())                # same weights, new step count
        with torch.no_grad():
            out = block(Seq(x=x)).x
        return out, block.stats()["nfe"]

    fine, _ = run(16, "rk4")                                       # a fine reference
    errors = []
    for steps in (2, 4, 8):
        out, nfe = run(steps)
        assert nfe == steps
        errors.append((out - fine).norm().item())
    assert errors[1] < 0.75 * errors[0] and errors[2] < 0.75 * errors[1], errors


def test_adaptive_depth_of_a_saved_run_by_a_config_override_alone(tmp_path):
    torch.manual_seed(0)
    block = {"type": "neural_ode_transformer", "heads": 2, "steps": 2, "t_embed": 4, "solver": {"method": "euler"}}
    model = assemble(_model(block))
    save_run(tmp_path, {"model": _model(block)}, model)
    x, outs = _x(), {}
    for steps in (2, 4, 32):
        cfg, loaded = load_run(tmp_path, overrides=[f"model.blocks[0].steps={steps}"])
        assert cfg.model.blocks[0].steps == steps
        assert loaded.state_dict().keys() == model.state_dict().keys()
        outs[steps] = loaded(x).x
        assert list(loaded.stats().values()) == [{"nfe": steps}]
    outs[32].square().mean().backward()                            # fine-tunes at the new depth
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in loaded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(outs[2], model(x).x)            # the saved model itself at N = 2
        assert (outs[4] - outs[32]).norm() < 0.75 * (outs[2] - outs[32]).norm()


def test_adjoint_gradients_match_direct_backprop_and_nfe_is_reported():
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(0)
        block = build_block("neural_ode_transformer", d_model=D, heads=2, steps=4,
                            solver={"method": "rk4", "adjoint": adjoint})
        block.solver.reset()
        block(Seq(x=_x())).x.square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in block.parameters()]))
        assert block.stats()["nfe"] == (16 if not adjoint else 16 + 16)  # forward (+ adjoint backward)
    assert (grads[0] - grads[1]).norm() < 0.01 * grads[0].norm()     # discretise-then-optimise gap


def test_lowrank_hypernetwork_is_smaller_than_full():
    count = lambda m: sum(p.numel() for p in m.parameters())        # noqa: E731
    full, low = (build_block("neural_ode_transformer", d_model=16, hyper=h) for h in ("full", "lowrank"))
    assert count(low) < count(full) / 4


@pytest.mark.parametrize("block, path", [
    ({"type": "ode_transformer", "scheme": "rk3"}, "model.blocks[0].scheme"),
    ({"type": "ode_transformer", "layers": 0}, "model.blocks[0].layers"),
    ({"type": "ode_transformer", "heads": 3}, "model.blocks[0].heads"),
    ({"type": "neural_ode_transformer", "hyper": "tiny"}, "model.blocks[0].hyper"),
    ({"type": "neural_ode_transformer", "steps": 0}, "model.blocks[0].steps"),
    ({"type": "neural_ode_transformer", "t_embed": 5}, "model.blocks[0].t_embed"),
    ({"type": "neural_ode_transformer", "solver": {"method": "rk5"}}, "model.blocks[0].solver.method"),
    ({"type": "neural_ode_transformer", "solver": {"method": "euler", "step_size": 0.1}}, "model.blocks[0].steps"),
])
def test_config_mistakes_name_the_key_path(block, path):
    with pytest.raises(ConfigError) as err:
        validate_model(_model(block))
    assert err.value.path == path


class _EulerPlugin:
    """A third-party fixed-grid solver that knows step_size but no grid option."""

    @staticmethod
    @hookimpl
    def hybridseq_register_solvers(register):
        def euler(func, y0, t, *, rtol=None, atol=None, step_size=None, **options):
            if options:
                raise TypeError(f"unknown options {sorted(options)}")
            ys, y = [y0], y0
            for t0, t1 in zip(t[:-1], t[1:]):
                y = y + (t1 - t0) * func(t0, y)
                ys.append(y)
            return torch.stack(ys)

        register("plain_euler", euler, fixed_grid=True, options=["step_size"])


def test_any_registered_fixed_grid_solver_takes_exactly_steps_steps():
    x = _x()
    with register_plugin(_EulerPlugin, "plain-euler"):
        mine = build_block("neural_ode_transformer", d_model=D, heads=2, steps=5, solver={"method": "plain_euler"})
        builtin = build_block("neural_ode_transformer", d_model=D, heads=2, steps=5, solver={"method": "euler"})
        builtin.load_state_dict(mine.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(mine(Seq(x=x)).x, builtin(Seq(x=x)).x)
        assert mine.stats()["nfe"] == builtin.stats()["nfe"] == 5


@pytest.mark.parametrize("name, options", [("ode_transformer", {"scheme": "rk4", "layers": 2}),
                                           ("neural_ode_transformer", {"hyper": "full"})])
def test_causal_heads_never_let_a_later_token_reach_an_earlier_one(name, options):
    block = build_block(name, d_model=D, heads=2, causal=True, **options)
    x = _x(n=7)
    moved = x.clone()
    moved[:, 4] += 3.0
    with torch.no_grad():
        a, b = block(Seq(x=x)).x, block(Seq(x=moved)).x
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=1e-6, rtol=0)
    assert (a[:, 4:] - b[:, 4:]).abs().max() > 1e-3


def test_adaptive_solver_error_control_ignores_padding():
    block = build_block("neural_ode_transformer", d_model=D, heads=2, solver={"method": "dopri5", "rtol": 1e-4})
    x, mask = _x(n=6), torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    junk = torch.where(mask[..., None], x, 1e3 * torch.randn_like(x))
    with torch.no_grad():
        clean, noisy = block(Seq(x=x, mask=mask)), block(Seq(x=junk, mask=mask))
    torch.testing.assert_close(clean.x[mask], noisy.x[mask], atol=1e-6, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name, options", [
    ("ode_transformer", {"scheme": "gated_rk2", "layers": 2}),
    ("neural_ode_transformer", {"hyper": "full", "solver": {"method": "rk4", "adjoint": True}}),
    ("neural_ode_transformer", {"solver": {"method": "dopri5"}}),
    ("pde_attention", {"pde": "wave", "causal": True}),
    ("pde_attention", {"solver": "spectral", "target": "weights"}),
    ("pde_attention", {"pde": "advection_diffusion", "target": "weights"}),
])
def test_heads_agree_on_cpu_and_gpu(name, options):
    torch.manual_seed(0)
    block = build_block(name, d_model=D, heads=2, **options)
    valid = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    seq = Seq(x=_x(n=7), mask=valid)
    cpu = block(seq).x[valid]
    cpu.square().sum().backward()
    grads = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    gpu = block.cuda()(seq.to("cuda")).x[valid.cuda()]
    gpu.square().sum().backward()
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
    for g, p in zip(grads, block.parameters()):
        torch.testing.assert_close(p.grad.cpu(), g, atol=1e-4, rtol=1e-3)
