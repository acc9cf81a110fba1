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


@pytest.mark.parametrize("scheme, order", [("euler", 1), ("rk2", 2), ("rk3", 3), ("rk4", 4)])
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
        else:
            assert block.layers[0].coef.tolist() == [1.0, 1.0]      # Li et al. start both at 1
            nn.init.constant_(block.layers[0].coef, 0.5)
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


@pytest.mark.parametrize("gate, width", [("scalar", 1), ("channel", D)])
def test_gated_rk2_gate_is_one_number_per_position_by_default(gate, width):
    block = build_block("ode_transformer", d_model=D, heads=2, scheme="gated_rk2", gate=gate).double()
    layer = block.layers[0]
    assert layer.gate.weight.shape == (width, 2 * D)
    A = 0.3 * torch.randn(D, D, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    layer.field = _LinearField(A)
    x = _x().double()
    f1 = x @ A.T
    f2 = (x + f1) @ A.T
    gamma = torch.sigmoid(torch.cat([f1, f2], -1) @ layer.gate.weight.T + layer.gate.bias)   # [B, L, width]
    torch.testing.assert_close(block(Seq(x=x)).x, x + gamma * f1 + (1 - gamma) * f2)


@pytest.mark.parametrize("scheme", ["rk2", "rk4", "learned_rk2"])
def test_rk_norm_normalises_each_stage_in_the_final_combination(scheme):
    block = build_block("ode_transformer", d_model=D, heads=2, scheme=scheme, rk_norm=True).double()
    layer = block.layers[0]
    A = 0.3 * torch.randn(D, D, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    layer.field = _LinearField(A)
    with torch.no_grad():
        for i, norm in enumerate(layer.stage_norms):
            norm.weight.fill_(1 + 0.1 * i)
    x = _x().double()
    norms = layer.stage_norms
    ln = lambda i, f: nn.functional.layer_norm(f, (D,), norms[i].weight, norms[i].bias)  # noqa: E731
    f1 = x @ A.T
    if scheme == "rk4":
        f2 = (x + f1 / 2) @ A.T
        f3 = (x + f2 / 2) @ A.T
        f4 = (x + f3) @ A.T
        expected = x + (ln(0, f1) + 2 * ln(1, f2) + 2 * ln(2, f3) + ln(3, f4)) / 6
    else:
        f2 = (x + f1) @ A.T
        a = (0.5, 0.5) if scheme == "rk2" else layer.coef
        expected = x + a[0] * ln(0, f1) + a[1] * ln(1, f2)
    torch.testing.assert_close(block(Seq(x=x)).x, expected)
    assert sum(p.numel() for p in layer.stage_norms.parameters()) == 2 * D * layer.tableau.stages


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
    block = build_block("neural_ode_transformer", d_model=D, heads=2, hyper=hyper, steps=3, solver={"method": "rk4"})
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
    """With a smooth t-embedding (hyper: lowrank) refining the grid converges to the learned flow."""
    torch.manual_seed(0)
    trained = build_block("neural_ode_transformer", d_model=D, heads=2, steps=2, t_embed=4, hyper="lowrank",
                          solver={"method": "euler"})
    with torch.no_grad():
        for gen in trained.field.hyper.generators():
            gen.weight.mul_(5)                                      # a clearly depth-dependent field
    x = _x()

    def run(steps, method="euler"):
        block = build_block("neural_ode_transformer", d_model=D, heads=2, steps=steps, t_embed=4, hyper="lowrank",
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


def _hand_written_qkvflow(block, x, steps):
    """The qkvflow field written out matrix by matrix, integrated by Euler with t_i = i/N, then the final LN."""
    hyper, k = block.field.hyper, block.cfg.t_embed

    def features(t):
        freqs = torch.tensor([10_000.0 ** (-j / k) for j in range(k)], dtype=torch.float64)
        return torch.cat([torch.tensor([t], dtype=torch.float64), torch.sin(1000 * t * freqs),
                          torch.cos(1000 * t * freqs)])

    def h(mlp, t):                                                 # each layer's own time MLP
        lin1, lin2 = mlp[0], mlp[2]
        z = lin1.weight @ features(t) + lin1.bias
        return lin2.weight @ (z * torch.sigmoid(z)) + lin2.bias

    def linear(name, t, y):
        gen = hyper.linears[name]
        hv = h(gen.mlp, t)
        W = (gen.weight_gen.weight @ hv).view(gen.shape) + gen.base             # the whole matrix from h(t)
        return y @ W.T + gen.bias_gen.weight @ hv

    def norm(name, t, y):
        gen = hyper.norms[name]
        hv = h(gen.mlp, t)
        z = (y - y.mean(-1, keepdim=True)) / torch.sqrt(y.var(-1, unbiased=False, keepdim=True) + 1e-5)
        return z * (1 + gen.weight_gen.weight @ hv) + gen.bias_gen.weight @ hv

    heads, (b, n, d) = block.cfg.heads, x.shape
    for i in range(steps):
        t = i / steps
        q, kk, v = linear("qkv", t, norm("norm1", t, x)).split(d, -1)
        split = lambda z: z.view(b, n, heads, d // heads).transpose(1, 2)          # noqa: E731
        att = torch.softmax(split(q) @ split(kk).transpose(-1, -2) / (d // heads) ** 0.5, -1) @ split(v)
        a = linear("out", t, att.transpose(1, 2).reshape(b, n, d))
        m = linear("fc2", t, nn.functional.gelu(linear("fc1", t, norm("norm2", t, x))))
        x = x + (a + m) / steps
    return block.final_norm(x)


def test_qkvflow_parameterisation_reproduces_a_hand_written_per_matrix_generator():
    torch.manual_seed(0)
    block = build_block("neural_ode_transformer", d_model=D, heads=2, steps=3, t_embed=4, hyper_hidden=5).double()
    assert block.cfg.hyper == "qkvflow" and block.cfg.solver.method == "euler" and block.final_norm is not None
    with torch.no_grad():
        for gen in block.field.hyper.generators():
            nn.init.normal_(gen.weight, std=0.3)                   # LN generators start at 0: make them matter
        x = _x().double()
        torch.testing.assert_close(block(Seq(x=x)).x, _hand_written_qkvflow(block, x, 3))
        w0, w1 = block.weights_at(0.0)["fc1_weight"], block.weights_at(1.0)["fc1_weight"]
    assert torch.linalg.matrix_rank(w1 - w0) > 4                   # a whole matrix per t, not a low-rank update


def test_qkvflow_norms_start_as_plain_layer_norms_and_parameters_scale_with_the_time_mlp():
    block = build_block("neural_ode_transformer", d_model=D, heads=2)
    p = block.weights_at(0.37)
    assert torch.equal(p["norm1_weight"], torch.ones(D)) and torch.equal(p["norm2_bias"], torch.zeros(D))
    count = lambda m: sum(q.numel() for q in m.parameters())       # noqa: E731
    layer = count(build_block("transformer", d_model=D, heads=2))
    wide = build_block("neural_ode_transformer", d_model=D, heads=2, hyper_hidden=40)
    assert count(block) > 20 * layer and count(wide) > 1.8 * count(block)


@pytest.mark.parametrize("block, path", [
    ({"type": "ode_transformer", "scheme": "rk5"}, "model.blocks[0].scheme"),
    ({"type": "ode_transformer", "gate": "vector"}, "model.blocks[0].gate"),
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
    ("pde_attention", {"stepper": "spectral", "target": "weights"}),
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


@pytest.mark.parametrize("hyper", ["qkvflow", "lowrank"])
def test_exported_discrete_stack_matches_the_continuous_head_at_the_same_steps(hyper):
    from hybridseq.blocks.heads.discrete import export_discrete

    torch.manual_seed(0)
    head = build_block("neural_ode_transformer", d_model=D, heads=2, steps=3, hyper=hyper, causal=True)
    seq = Seq(x=_x(n=6), mask=torch.tensor([[True] * 6, [True] * 4 + [False] * 2]))
    stack = export_discrete(head, 3)
    with torch.no_grad():
        torch.testing.assert_close(stack(seq).x[seq.mask], head(seq).x[seq.mask], atol=1e-6, rtol=1e-5)
        finer = export_discrete(head, 6)(seq).x
    assert (finer - stack(seq).x)[seq.mask].abs().max() > 1e-4               # N is a real choice
    stack(seq).x.square().sum().backward()
    assert all(p.grad is not None for p in stack.parameters())               # full fine-tuning


def test_lora_fine_tuning_trains_low_rank_updates_only():
    from hybridseq.blocks.heads.discrete import export_discrete

    torch.manual_seed(0)
    head = build_block("neural_ode_transformer", d_model=D, heads=2, steps=2)
    seq = Seq(x=_x())
    stack = export_discrete(head, 2, lora_rank=2)
    trainable = [n for n, p in stack.named_parameters() if p.requires_grad]
    assert trainable and all(".lora." in n for n in trainable)
    with torch.no_grad():
        torch.testing.assert_close(stack(seq).x, head(seq).x, atol=1e-6, rtol=1e-5)   # starts as the export
    before = {n: p.clone() for n, p in stack.named_parameters() if not p.requires_grad}
    opt = torch.optim.SGD([p for p in stack.parameters() if p.requires_grad], lr=0.1)
    (stack(seq).x * _x(seed=5)).sum().backward()                    # after the final LN: not a squared norm
    opt.step()
    assert all(torch.equal(before[n], p) for n, p in stack.named_parameters() if n in before)
    with torch.no_grad():
        assert (stack(seq).x - head(seq).x).abs().max() > 1e-4


@pytest.mark.parametrize("name, options", [
    ("neural_ode_transformer", {}), ("neural_ode_transformer", {"hyper": "lowrank"}),
    ("ode_transformer", {"scheme": "rk3", "rk_norm": True}), ("ode_transformer", {"scheme": "gated_rk2"}),
    ("pde_attention", {"pde": "wave", "boundary": "fixed"}),
    ("pde_attention", {"pde": "reaction_diffusion", "reaction": "logistic", "placement": "after"}),
])
def test_reasoning_heads_train_under_bf16_autocast(name, options):
    torch.manual_seed(0)
    block = build_block(name, d_model=D, heads=2, **options)
    seq = Seq(x=_x(n=7), mask=torch.tensor([[True] * 7, [True] * 4 + [False] * 3]))
    reference = block(seq).x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(seq).x
    (out.float() * _x(n=7, seed=4)).sum().backward()
    grads = [p.grad for p in block.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert (out.float() - reference)[seq.mask].abs().max() < 0.15
