"""State-space backbones (s4d, s4, mamba, mamba2) against plain sequential float64 references written
here: full-sequence outputs and gradients, recurrent stepping, time gaps, padding, config errors."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

import hybridseq as hs
from hybridseq.blocks.backbones.s4 import hippo_legs_nplr
from hybridseq.ops import dispatch
from hybridseq.testing import check_block

F64 = torch.float64
SMALL = {"s4d": {"d_state": 6}, "s4": {"d_state": 6}, "mamba": {"d_state": 4},
         "mamba2": {"d_state": 4, "head_dim": 4, "n_groups": 2, "chunk_size": 3}}


def make(name, **over):
    torch.manual_seed(0)
    block = hs.build_block(name, d_model=8, **{**SMALL[name], **over}).double()
    with torch.no_grad():                       # larger steps than the default init: decays visibly < 1
        for pname, p in block.named_parameters():
            if pname in ("log_dt", "dt_proj.bias", "dt_bias"):
                p.add_(2.0)
            if pname in ("h0", "d"):                # a learned initial state, D per channel: not all alike
                p.normal_()
    return block


def sample(length=7, padded=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, length, 8, dtype=F64, generator=g, requires_grad=True)
    t = torch.cumsum(0.2 + torch.rand(2, length, dtype=F64, generator=g), 1)
    mask = torch.arange(length)[None] < torch.tensor([[length], [length - 2 if padded else length]])
    return x, t, mask


def gaps_ref(t, mask, unit=1.0):
    out = torch.zeros_like(t)
    for b in range(t.shape[0]):
        prev = None
        for l in range(t.shape[1]):
            if mask[b, l]:
                out[b, l] = 1.0 if prev is None else (t[b, l] - prev) / unit
                prev = t[b, l]
    return out


def held(a1, b1, gap):
    """Exact hold over ``gap`` of the scalar system x' = αx + βu whose hold over one unit is (a1, b1):
    α = log a1, β = b1 α / (a1 - 1), then expm([[gα, gβ], [0, 0]]) = [[ā, b̄], [0, 1]] (torch's Padé expm)."""
    alpha = torch.log(a1.to(torch.complex128))
    beta = b1 * alpha / (a1 - 1)
    ga, gb = torch.broadcast_tensors(gap * alpha, gap * beta)
    zero = torch.zeros_like(ga)
    e = torch.linalg.matrix_exp(torch.stack([torch.stack([ga, gb], -1), torch.stack([zero, zero], -1)], -2))
    real = not (a1.is_complex() or b1.is_complex())
    return (e[..., 0, 0].real, e[..., 0, 1].real) if real else (e[..., 0, 0], e[..., 0, 1])


def diag_ref(block, u, gaps, c, rule="scaled"):
    """S4D: h_l = Ā_l h_{l-1} + B̄_l u_l, y = 2 Re c·h, one step at a time."""
    A, dt = block.eigenvalues(), torch.exp(block.log_dt)

    def disc(step):
        dta = step[..., None] * A
        if block.cfg.disc == "zoh":
            return torch.exp(dta), (torch.exp(dta) - 1) / A
        return (1 + dta / 2) / (1 - dta / 2), step[..., None] / (1 - dta / 2)
    h, ys = torch.zeros(u.shape[0], *A.shape, dtype=torch.complex128), []
    for l in range(u.shape[1]):
        if rule == "zoh":
            a_bar, b_bar = held(*disc(dt), gaps[:, l, None, None])
        else:
            a_bar, b_bar = disc(dt * gaps[:, l, None])
        h = a_bar * h + b_bar * u[:, l, :, None]
        ys.append(2 * (h * c).sum(-1).real)
    return torch.stack(ys, 1)


def nplr_ref(block, u, gaps, c, rule="scaled"):
    """S4: dense A = Λ - p p* on the whole state, bilinear step (or exact hold) per position, y = Re c·h."""
    lam, p, b, _ = block.params()
    full = lambda v: torch.cat([v, v.conj()], -1)
    a = torch.diag_embed(full(lam)) - full(p)[..., :, None] * full(p).conj()[..., None, :]      # [H, N, N]
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    h, ys = torch.zeros(u.shape[0], *full(lam).shape, dtype=a.dtype), []
    for l in range(u.shape[1]):
        d = (torch.exp(block.log_dt) * gaps[:, l, None]).to(a.dtype)[..., None, None]        # [B, H, 1, 1]
        if rule == "zoh":
            e = torch.linalg.matrix_exp(d * a)
            b_bar = (torch.linalg.solve(a, e - eye) @ full(b)[:, :, None])[..., 0]             # A⁻¹(e^{ΔA} - I) b
            h = (e @ h[..., None])[..., 0] + b_bar * u[:, l, :, None]
            ys.append((h * full(c)).sum(-1).real)
            continue
        back = torch.linalg.inv(eye - d / 2 * a)
        h = (((back @ (eye + d / 2 * a)) @ h[..., None])[..., 0]
             + (back @ (d[..., 0] * full(b))[..., None])[..., 0] * u[:, l, :, None])
        ys.append((h * full(c)).sum(-1).real)
    return torch.stack(ys, 1)


def lti_ref(block, x, gaps, back_gaps, mask, rule="scaled"):
    u = block.norm(x) * mask[..., None]
    run = diag_ref if block.cfg.__class__.__qualname__.startswith("S4D") else nplr_ref
    c = torch.view_as_complex(block.c)
    y = run(block, u, gaps, c[0], rule)
    if block.cfg.bidirectional:
        y = y + run(block, u.flip(1), back_gaps, c[1], rule).flip(1)
    return x + block.out(y + block.d * u)


def conv_ref(block, x):
    k = block.conv.weight.shape[-1]
    return F.conv1d(x.transpose(1, 2), block.conv.weight, block.conv.bias, padding=k - 1,
                    groups=x.shape[-1])[..., :x.shape[1]].transpose(1, 2)


def mamba_ref(block, x, gaps, back_gaps, mask, rule="scaled"):
    u = block.norm(x) * mask[..., None]
    xi, z = block.in_proj(u).chunk(2, -1)
    xi = F.silu(conv_ref(block, xi))
    dt, B, C = block.x_proj(xi).split([block.rank, block.cfg.d_state, block.cfg.d_state], -1)
    delta = F.softplus(block.dt_proj(dt))
    A = -torch.exp(block.a_log)
    h, ys = torch.zeros(x.shape[0], *A.shape, dtype=F64), []
    for l in range(x.shape[1]):
        step, g = delta[:, l, :, None], gaps[:, l, None, None]                       # [B, E, 1], [B, 1, 1]
        a_bar, b_bar = held(torch.exp(step * A), step, g) if rule == "zoh" else (torch.exp(g * step * A), g * step)
        h = a_bar * h + b_bar * xi[:, l, :, None] * B[:, l, None, :]
        ys.append((h * C[:, l, None, :]).sum(-1))
    y = (torch.stack(ys, 1) + xi * block.d) * F.silu(z)
    return x + block.out_proj(y)


def mamba2_ref(block, x, gaps, back_gaps, mask, rule="scaled"):
    u = block.norm(x) * mask[..., None]
    z, xbc, dt = block.in_proj(u).split(block.sizes, -1)
    xi, B, C = block._split(F.silu(conv_ref(block, xbc)))
    rep = block.heads // block.cfg.n_groups
    B, C = B.repeat_interleave(rep, 2), C.repeat_interleave(rep, 2)
    dt = F.softplus(dt + block.dt_bias).clamp(block.cfg.dt_limit_min, block.cfg.dt_limit_max)
    A = -torch.exp(block.a_log)
    d = block.d if block.cfg.d_has_hdim else block.d[:, None]
    h, ys = torch.zeros(x.shape[0], block.heads, block.cfg.head_dim, block.cfg.d_state, dtype=F64), []
    if block.cfg.learnable_init_state:
        h = h + block.h0
    for l in range(x.shape[1]):
        g = gaps[:, l, None]
        if rule == "zoh":
            a_bar, b_bar = held(torch.exp(dt[:, l] * A), dt[:, l], g)
        else:
            a_bar, b_bar = torch.exp(g * dt[:, l] * A), g * dt[:, l]
        h = a_bar[..., None, None] * h + (b_bar[..., None] * xi[:, l])[..., None] * B[:, l, :, None, :]
        ys.append((h * C[:, l, :, None, :]).sum(-1) + xi[:, l] * d)
    y = torch.stack(ys, 1).reshape(*x.shape[:2], -1)
    return x + block.out_proj(block.norm_out(y * F.silu(z)))


REFS = {"s4d": lti_ref, "s4": lti_ref, "mamba": mamba_ref, "mamba2": mamba2_ref}
CASES = [("s4d", {}), ("s4d", {"init": "inv", "disc": "bilinear"}), ("s4d", {"init": "real", "bidirectional": True}),
         ("s4", {}), ("s4", {"bidirectional": True}), ("s4", {"scan": "chunked"}),
         ("s4", {"scan": "chunked", "bidirectional": True}), ("mamba", {"impl": "torch"}),
         ("mamba2", {"impl": "torch"}),
         ("mamba2", {"d_has_hdim": True, "learnable_init_state": True, "dt_limit_min": 0.5, "dt_limit_max": 3.0})]


def check_against_reference(block, ref_fn, seq, gaps, back):
    out = block(seq).x
    rule = block.cfg.timed_disc if seq.t is not None else "scaled"
    ref = ref_fn(block, seq.x, gaps, back, seq.valid(), rule)
    valid = seq.valid()
    torch.testing.assert_close(out[valid], ref[valid])
    params = [seq.x, *block.parameters()]
    w = torch.randn(out[valid].shape, dtype=F64, generator=torch.Generator().manual_seed(1))
    got = torch.autograd.grad((out[valid] * w).sum(), params, allow_unused=True)
    want = torch.autograd.grad((ref[valid] * w).sum(), params, allow_unused=True)
    for g1, g2 in zip(got, want):
        if g2 is not None:
            torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("name,over", CASES)
def test_regular_grid_matches_sequential_reference(name, over):
    block = make(name, **over)
    x, _, mask = sample()
    ones = torch.ones(x.shape[:2], dtype=F64)
    check_against_reference(block, REFS[name], hs.Seq(x=x), ones, ones)


@pytest.mark.parametrize("rule", ["zoh", "scaled"])
@pytest.mark.parametrize("name,over", CASES)
def test_time_gaps_match_sequential_reference(name, over, rule):
    block = make(name, time_unit=0.5, timed_disc=rule, **over)
    x, t, mask = sample(padded=True)
    gaps = gaps_ref(t, mask, 0.5)
    back = gaps_ref(-t.flip(1), mask.flip(1), 0.5)
    check_against_reference(block, REFS[name], hs.Seq(x=x, t=t, mask=mask), gaps, back)


@pytest.mark.parametrize("name,over", [("s4d", {}), ("s4d", {"disc": "bilinear", "bidirectional": True}), ("s4", {}),
                                       ("s4", {"bidirectional": True}), ("mamba", {}), ("mamba2", {})])
def test_equal_gaps_reduce_to_regular_path(name, over):
    block = make(name, time_unit=0.25, **over)
    x, _, _ = sample(length=9)
    t = 3.0 + 0.25 * torch.arange(9, dtype=F64).expand(2, 9)
    torch.testing.assert_close(block(hs.Seq(x=x, t=t)).x, block(hs.Seq(x=x)).x)


@pytest.mark.parametrize("name,over", [("s4d", {}), ("s4", {}), ("s4", {"timed_disc": "zoh"}),
                                       ("s4", {"timed_disc": "zoh", "scan": "chunked"}), ("mamba", {}),
                                       ("mamba2", {}), ("mamba", {"timed_disc": "scaled"}),
                                       ("mamba2", {"learnable_init_state": True, "d_has_hdim": True})])
@pytest.mark.parametrize("timed", [False, True])
def test_recurrent_step_matches_full_sequence(name, over, timed):
    block = make(name, **over)
    x, t, mask = sample(length=8)
    seq = hs.Seq(x=x, t=t if timed else None)
    full = block(seq).x
    gaps = gaps_ref(t, mask) if timed else None
    state = block.allocate_state(2, dtype=F64)
    outs = []
    for l in range(x.shape[1]):
        y, state = block.step(x[:, l], state, None if gaps is None else gaps[:, l])
        outs.append(y)
    torch.testing.assert_close(torch.stack(outs, 1), full)


def test_s4d_inits_follow_the_paper():
    n, state = torch.arange(4.0), 8
    for kind, want_re, want_im in [("lin", -0.5 * torch.ones(4), math.pi * n),
                                   ("inv", -0.5 * torch.ones(4), state / math.pi * (state / (2 * n + 1) - 1)),
                                   ("real", -(n + 1), torch.zeros(4))]:
        block = hs.build_block("s4d", d_model=3, d_state=state, init=kind)
        torch.testing.assert_close(block.eigenvalues(), torch.complex(want_re, want_im).expand(3, 4))


def test_hippo_legs_nplr_is_unitarily_similar_to_legs():
    """Λ - p p* with b is HiPPO-LegS (A, B) in another orthonormal basis: equal eigenvalues and equal
    p* Ā^k b, b* Ā^k b, p* Ā^k p for the rank-one factor P_n = √(n + ½)."""
    state = 8
    lam, p, b = (torch.cat([v, v.conj()]) for v in hippo_legs_nplr(state))
    a = torch.diag(lam) - torch.outer(p, p.conj())
    n = torch.arange(state, dtype=F64)
    r = torch.sqrt(2 * n + 1)
    legs = -(torch.outer(r, r).tril(-1) + torch.diag(n + 1))
    vecs = {"B": (r, b), "P": (torch.sqrt(n + 0.5), p)}
    for k in range(state):
        for left, right in [("P", "B"), ("B", "B"), ("P", "P")]:
            want = vecs[left][0] @ torch.linalg.matrix_power(legs, k) @ vecs[right][0]
            got = vecs[left][1].conj() @ torch.linalg.matrix_power(a, k) @ vecs[right][1]
            torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-9, atol=1e-9 * abs(want))
    eig = torch.linalg.eigvals(a)
    torch.testing.assert_close(eig.real.sort().values, -(n + 1).flip(0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["s4d", "s4"])
def test_bidirectional_ignores_padding_without_times(name):
    block = make(name, bidirectional=True)
    x, _, mask = sample(padded=True)
    noisy = torch.where(mask[..., None], x, 100 * torch.randn_like(x))
    a, b = block(hs.Seq(x=x, mask=mask)).x, block(hs.Seq(x=noisy, mask=mask)).x
    torch.testing.assert_close(a[mask], b[mask])
    with pytest.raises(RuntimeError, match="no recurrent mode"):
        block.allocate_state(2)


@pytest.mark.parametrize("name,over", [("s4d", {"bidirectional": True}), ("s4", {"bidirectional": True}),
                                       ("s4d", {"disc": "bilinear", "init": "inv"}), ("s4", {"scan": "chunked"}),
                                       ("s4", {"scan": "chunked", "timed_disc": "zoh"})])
def test_variants_pass_conformance(name, over):
    check_block(name, over)
    if over.get("scan") == "chunked":
        for dtype in (torch.bfloat16, torch.float16):
            check_block(name, over, autocast=dtype)


def model_cfg(block: dict) -> dict:
    return {"d_model": 8, "input": {"kind": "irregular", "channels": 3}, "encoder": {"type": "linear"},
            "blocks": [block], "head": {"type": "classify", "classes": 2}}


@pytest.mark.parametrize("block,key,text", [
    ({"type": "s4d", "init": "legs"}, "model.blocks[0].init", "lin"),
    ({"type": "mamba", "impl": "triton"}, "model.blocks[0].impl", "torch"),
    ({"type": "mamba2", "head_dim": 5}, "model.blocks[0].head_dim", "divide"),
    ({"type": "s4", "d_state": 5}, "model.blocks[0].d_state", "even"),
    ({"type": "mamba", "dt_min": 0.5}, "model.blocks[0].dt_min", "dt_min <= dt_max"),
])
def test_config_errors_name_the_key(block, key, text):
    with pytest.raises(hs.ConfigError) as err:
        hs.validate_model(model_cfg(block))
    assert err.value.path == key and text in str(err.value)


@pytest.mark.skipif(dispatch.cuda_kernels_available(), reason="mamba-ssm kernels are available here")
@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_unavailable_cuda_impl_names_the_install_step(name):
    with pytest.raises(hs.ConfigError) as err:
        hs.validate_model(model_cfg({"type": name, "impl": "cuda", **({"head_dim": 4} if name == "mamba2" else {})}))
    assert err.value.path == "model.blocks[0].impl" and 'pip install "hybridseq[cuda]"' in str(err.value)
    with pytest.raises(RuntimeError, match="hybridseq\\[cuda\\]"):
        dispatch.impl_for("cuda", torch.zeros(1))


def test_yaml_assembly_with_encoder_and_describe(tmp_path):
    path = tmp_path / "ssm.yaml"
    path.write_text("""
model:
  d_model: 16
  input: {kind: irregular, channels: 3}
  encoder: {type: linear}
  blocks:
    - {type: s4d, d_state: 8, init: inv}
    - {type: s4, d_state: 8, bidirectional: true}
    - {type: mamba, d_state: 4, repeat: 2}
    - {type: mamba2, d_state: 8, head_dim: 8, chunk_size: 4}
  head: {type: classify, classes: 3}
""")
    cfg = hs.load_config(path, overrides=["model.blocks[2].d_conv=3"])
    model = hs.assemble(cfg.model)
    batch = hs.IrregularBatch(values=torch.randn(2, 6, 3), times=torch.cumsum(torch.rand(2, 6) + 0.1, 1),
                              mask=torch.rand(2, 6, 3) > 0.3, lengths=torch.tensor([6, 4]))
    out = model(batch)
    assert out.x.shape == (2, 3) and torch.isfinite(out.x).all()
    out.x.sum().backward()
    text = hs.describe(model)
    assert "mamba2" in text and "s4d" in text
    assert [r.split()[2] for r in text.splitlines() if " mamba " in r] == ["torch", "torch"]


cuda_only = pytest.mark.skipif(not dispatch.cuda_kernels_available(), reason="needs CUDA and mamba-ssm")


@cuda_only
@pytest.mark.parametrize("name", ["mamba", "mamba2"])
@pytest.mark.parametrize("timed", [False, True])
def test_mamba_ssm_kernels_agree_with_torch(name, timed):
    over = {"head_dim": 16, "d_state": 16} if name == "mamba2" else {}
    torch.manual_seed(0)
    fast = hs.build_block(name, d_model=32, impl="cuda", **over).cuda()
    ref = hs.build_block(name, d_model=32, impl="torch", **over).cuda()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 100, 32, device="cuda", requires_grad=True)
    t = torch.cumsum(torch.rand(2, 100, device="cuda") + 0.1, 1) if timed else None
    y1, y2 = fast(hs.Seq(x=x, t=t)).x, ref(hs.Seq(x=x, t=t)).x
    assert fast.impl == "cuda" and ref.impl == "torch"
    torch.testing.assert_close(y1, y2, atol=2e-3, rtol=2e-3)
    g1, g2 = (torch.autograd.grad(y.square().sum(), x)[0] for y in (y1, y2))
    torch.testing.assert_close(g1, g2, atol=5e-3, rtol=5e-3)


def test_one_epoch_cli_training_of_a_mamba_model_under_cpu_bf16_autocast(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from hybridseq import cli
    from hybridseq.blocks.backbones.mamba import Mamba
    seen = []
    plain_mix = Mamba.mix

    def watched_mix(self, u, seq):
        seen.append((torch.is_autocast_enabled("cpu"), self.in_proj(u).dtype))
        return plain_mix(self, u, seq)

    monkeypatch.setattr(Mamba, "mix", watched_mix)
    cfg = {"data": {"name": "spirals", "n_train": 32, "n_test": 8, "points": 12, "val_fraction": 0.25,
                    "batch_size": 16, "irregular": {"drop": 0.3}},
           "model": {"d_model": 8, "encoder": {"type": "linear"},
                     "blocks": [{"type": "mamba", "d_state": 4, "repeat": 2}], "head": {"type": "classify"}},
           "train": {"epochs": 1, "lr": 3e-3, "progress": False}}
    path, out = tmp_path / "mamba.yaml", tmp_path / "run"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    assert cli.main(["train", str(path), "train.bf16_cpu=true", "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["epochs"] == 1 and math.isfinite(results["curves"]["train_loss"][0])
    assert seen and all(on and dtype == torch.bfloat16 for on, dtype in seen)


@pytest.mark.parametrize("name", ["s4d", "s4", "mamba", "mamba2"])
def test_bf16_streams_keep_every_time_gap(name):
    """Times near 40 with gaps of 0.05-0.15: in bf16 most gaps would round to 0 (dropping observations)."""
    g = torch.Generator().manual_seed(0)
    t = 40 + torch.cumsum(0.05 + 0.1 * torch.rand(2, 20, generator=g), 1)       # float32 times
    block = hs.build_block(name, d_model=8, **SMALL[name])
    for x in (torch.randn(2, 20, 8).bfloat16(), torch.randn(2, 20, 8)):
        gaps = block.gaps(hs.Seq(x=x, t=t))
        assert gaps.dtype == torch.float32 and (gaps > 0).all()
        torch.testing.assert_close(gaps[:, 1:], t.diff(dim=1))
    wide = 1e6 + t.double()                                                       # float64 times keep float64
    assert block.gaps(hs.Seq(x=torch.randn(2, 20, 8), t=wide)).dtype == F64
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(hs.Seq(x=torch.randn(2, 20, 8).bfloat16(), t=t)).x
    assert torch.isfinite(y).all()


HELD = [("s4d", {}), ("s4d", {"disc": "bilinear", "bidirectional": True}), ("s4", {"timed_disc": "zoh"}),
        ("s4", {"timed_disc": "zoh", "scan": "chunked"}), ("mamba", {}), ("mamba2", {})]


@pytest.mark.parametrize("name,over", HELD)
def test_exact_hold_matches_expm_reference_at_gaps_from_a_thousandth_to_ten_thousand(name, over):
    block = make(name, **over)
    gaps = torch.tensor([1.0, 1e-3, 1e4, 0.3, 1e2, 1e-2, 3e3, 1.0, 10.0])
    x = torch.randn(2, 9, 8, dtype=F64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    t = torch.cumsum(torch.stack([gaps, gaps.flip(0)]).double(), 1)
    mask = torch.ones(2, 9, dtype=torch.bool)
    check_against_reference(block, REFS[name], hs.Seq(x=x, t=t), gaps_ref(t, mask), gaps_ref(-t.flip(1), mask.flip(1)))


@pytest.mark.parametrize("name,over", [c for c in HELD if not c[1].get("bidirectional")])
def test_a_long_silence_forgets_under_the_exact_hold(name, over):
    """The last output's sensitivity to the first input falls as the silence before the last observation
    grows (the last input's convolution window no longer holds the first input, so only the state carries
    it; the input held over the silence is the last one, which the first does not touch)."""
    block = make(name, **over)
    x = torch.randn(1, 6, 8, dtype=F64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    influence, last = [], []
    for silence in (1.0, 1e2, 1e4, 1e5):
        t = torch.tensor([[0.0, 1, 2, 3, 4, 4 + silence]], dtype=F64)
        y = block(hs.Seq(x=x, t=t)).x[0, -1]
        influence.append(float(torch.autograd.grad(y.square().sum(), x)[0][0, 0].norm()))
        last.append(y.detach())
    assert influence[0] > influence[1] > influence[2] and influence[2] < 1e-3 * influence[0], influence
    torch.testing.assert_close(last[2], last[3])       # past the memory, the held last input has saturated


NO_DECAY = {"mamba": {"a_log", "d", "dt_proj.bias"}, "mamba2": {"a_log", "d", "dt_bias"},
            "s4d": {"log_dt", "a_log_re", "a_im"}, "s4": {"log_dt", "lam_log_re", "lam_im", "p", "b"}}


@pytest.mark.parametrize("name", sorted(NO_DECAY))
def test_reference_no_decay_parameters_are_marked(name):
    block = hs.build_block(name, d_model=8, **SMALL[name], **({"ssm_lr": 5e-4} if name.startswith("s4") else {}))
    block = block.double()                      # the marks live on the Parameter objects, kept by .to()
    marked = {n for n, p in block.named_parameters() if getattr(p, "_no_weight_decay", False)}
    assert marked == NO_DECAY[name]
    tuned = {n: p._optim for n, p in block.named_parameters() if hasattr(p, "_optim")}
    if name.startswith("s4"):                   # state-spaces/s4: own lr, no decay for Λ, (P, B), log Δ
        assert set(tuned) == NO_DECAY[name] and all(o == {"lr": 5e-4, "weight_decay": 0.0} for o in tuned.values())
    else:
        assert not tuned
    from hybridseq.train.optim import configure_optimizer
    opt = configure_optimizer(block, lr=3e-3, weight_decay=0.1)
    group_of = {id(p): g for g in opt.param_groups for p in g["params"]}
    for pname, p in block.named_parameters():
        group = group_of[id(p)]
        if pname in NO_DECAY[name]:
            assert group["weight_decay"] == 0.0 and group["lr"] == (5e-4 if name.startswith("s4") else 3e-3)
        else:
            assert group["weight_decay"] == (0.1 if p.ndim >= 2 else 0.0) and group["lr"] == 3e-3


TIMED_PAD = [("s4d", {}), ("s4", {}), ("mamba", {}), ("mamba2", {}), ("s4d", {"bidirectional": True}),
             ("mamba", {"timed_disc": "scaled"})]


@pytest.mark.parametrize("name,over,timed", [(n, o, True) for n, o in TIMED_PAD]
                         + [("mamba", {}, False), ("mamba2", {}, False)])   # untimed s4d/s4: an empty time step
def test_a_padded_slot_mid_sequence_changes_nothing_versus_removing_it(name, over, timed):
    block = make(name, **over)
    x, t, _ = sample(length=8)
    keep = torch.tensor([0, 1, 2, 4, 5, 6, 7])                                 # slot 3 is padding
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 3] = False
    holed = block(hs.Seq(x=x, t=t if timed else None, mask=mask)).x
    removed = block(hs.Seq(x=x[:, keep], t=t[:, keep] if timed else None)).x
    torch.testing.assert_close(holed[:, keep], removed)


def test_block_structure_follows_the_references():
    mamba = hs.build_block("mamba", d_model=8, d_state=4)
    assert isinstance(mamba.norm, torch.nn.RMSNorm) and mamba.norm.eps == 1e-5
    assert isinstance(hs.build_block("s4d", d_model=8, d_state=4).norm, torch.nn.LayerNorm)
    torch.manual_seed(0)
    one = hs.build_block("mamba2", d_model=8, d_state=4, head_dim=4).out_proj.weight
    torch.manual_seed(0)
    four = hs.build_block("mamba2", d_model=8, d_state=4, head_dim=4, n_layer=4).out_proj.weight
    torch.testing.assert_close(four, one / 2)                              # 1/√n_layer
    norm = hs.build_block("mamba2", d_model=8, d_state=4, head_dim=4, n_groups=2).norm_out
    y = torch.randn(3, 16)
    with torch.no_grad():
        norm.weight.uniform_()
    halves = [h / h.square().mean(-1, keepdim=True).add(1e-5).sqrt() for h in y.chunk(2, -1)]
    torch.testing.assert_close(norm(y), torch.cat(halves, -1) * norm.weight)   # RMS per group of E/G
    drop = hs.build_block("s4d", d_model=8, d_state=4, dropout=0.5).out[1].train()
    kept = drop(torch.ones(4, 50, 8)) != 0                                 # one mask per (batch, channel)
    assert (kept == kept[:, :1]).all() and 0 < kept.float().mean() < 1


@pytest.mark.parametrize("name", ["s4d", "mamba"])
def test_timed_scan_in_segments_matches_one_segment(name, monkeypatch):
    from hybridseq.ops import scan
    block = make(name)
    x, t, mask = sample(length=40, padded=True)
    seq = hs.Seq(x=x, t=t, mask=mask)
    whole = block(seq).x
    g_whole = torch.autograd.grad(whole[mask].sum(), [x, *block.parameters()])
    monkeypatch.setitem(scan.SEGMENT_ELEMENTS, "cpu", 1)                     # 16-step segments: 3 of them
    parts = block(seq).x
    torch.testing.assert_close(parts, whole)
    for a, b in zip(torch.autograd.grad(parts[mask].sum(), [x, *block.parameters()]), g_whole):
        torch.testing.assert_close(a, b)


LONG_GAPS = torch.tensor([1.0, 1e-3, 1e4, 0.3, 1e2, 1e-2, 3e3, 1.0, 10.0, 2e-3, 5e3, 0.7])


@pytest.mark.parametrize("over", [{}, {"bidirectional": True}])
def test_chunked_s4_scan_matches_the_dense_reference_at_gaps_from_a_thousandth_to_ten_thousand(over):
    """Several chunks (L = 36 > 4 chunks of 8), a padded row, gaps 1e-3..1e4: values and gradients equal
    the dense float64 bilinear recurrence of `nplr_ref`."""
    block = make("s4", scan="chunked", **over)
    g = LONG_GAPS.repeat(3).double()
    x = torch.randn(2, 36, 8, dtype=F64, generator=torch.Generator().manual_seed(4), requires_grad=True)
    t = torch.cumsum(torch.stack([g, g.flip(0)]), 1)
    mask = torch.ones(2, 36, dtype=torch.bool)
    mask[1, 5], mask[1, 30:] = False, False                              # a hole and trailing padding
    check_against_reference(block, REFS["s4"], hs.Seq(x=x, t=t, mask=mask), gaps_ref(t, mask),
                            gaps_ref(-t.flip(1), mask.flip(1)))


def test_chunked_s4_scan_equals_the_loop_in_float32_and_under_autocast():
    torch.manual_seed(0)
    loop = hs.build_block("s4", d_model=8, d_state=8, scan="loop")
    chunked = hs.build_block("s4", d_model=8, d_state=8, scan="chunked")
    chunked.load_state_dict(loop.state_dict())
    x = torch.randn(2, 45, 8, requires_grad=True)
    t = torch.cumsum(LONG_GAPS.repeat(4)[:45].expand(2, 45) * torch.rand(2, 45).add(0.5), 1)
    ys = [m(hs.Seq(x=x, t=t)).x for m in (loop, chunked)]
    torch.testing.assert_close(ys[1], ys[0], rtol=1e-4, atol=1e-5)
    g_loop, g_chunk = (torch.autograd.grad(y.square().sum(), [x, *m.parameters()]) for y, m in zip(ys, (loop, chunked)))
    for a, b in zip(g_chunk, g_loop):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = chunked(hs.Seq(x=x, t=t)).x
    low.float().square().sum().backward()
    assert torch.isfinite(low).all() and all(torch.isfinite(p.grad).all() for p in chunked.parameters())
    assert (low.float() - ys[0]).norm() < 0.05 * ys[0].norm()


def test_chunked_s4_scan_runs_in_segments_as_in_one(monkeypatch):
    from hybridseq.ops import scan
    block = make("s4", scan="chunked")
    x, t, mask = sample(length=40, padded=True)
    seq = hs.Seq(x=x, t=t, mask=mask)
    whole = block(seq).x
    monkeypatch.setitem(scan.SEGMENT_ELEMENTS, "cpu", 1)                     # 16-step segments: 3 of them
    torch.testing.assert_close(block(seq).x, whole)


@pytest.mark.parametrize("timed", [False, True])
@pytest.mark.parametrize("over", [{}, {"d_has_hdim": True, "dt_limit_min": 0.3, "dt_limit_max": 2.0}])
def test_mamba2_packed_row_equals_its_sequences_run_separately(timed, over):
    """seq_idx (mamba_ssm's packing): state, convolution window and time gaps restart at each boundary;
    chunk_size 3 puts boundaries inside chunks and on chunk edges."""
    block = make("mamba2", **over)
    x, t, _ = sample(length=11)
    lengths = [(0, 4), (4, 6), (6, 11)]                                      # three sequences per row
    seq_idx = torch.cat([torch.full((b - a,), k) for k, (a, b) in enumerate(lengths)]).expand(2, 11)
    packed = block(hs.Seq(x=x, t=t if timed else None), seq_idx=seq_idx).x
    parts = [block(hs.Seq(x=x[:, a:b], t=t[:, a:b] if timed else None)).x for a, b in lengths]
    torch.testing.assert_close(packed, torch.cat(parts, 1))
    w = torch.randn(packed.shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    got = torch.autograd.grad((packed * w).sum(), [x, *block.parameters()])
    want = torch.autograd.grad((torch.cat(parts, 1) * w).sum(), [x, *block.parameters()])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_mamba2_packing_with_padding_and_bad_seq_idx():
    block = make("mamba2")
    x, t, _ = sample(length=9)
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[:, 2] = False                                                       # a hole in the first sequence
    seq_idx = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1]).expand(2, 9)
    packed = block(hs.Seq(x=x, t=t, mask=mask), seq_idx=seq_idx).x
    first = block(hs.Seq(x=x[:, [0, 1, 3]], t=t[:, [0, 1, 3]])).x
    second = block(hs.Seq(x=x[:, 4:], t=t[:, 4:])).x
    torch.testing.assert_close(packed[:, [0, 1, 3]], first)
    torch.testing.assert_close(packed[:, 4:], second)
    for bad, text in [(seq_idx.flip(1), "non-decreasing"), (seq_idx.double(), "integer"), (seq_idx[:, :5], "shape")]:
        with pytest.raises(ValueError, match=text):
            block(hs.Seq(x=x), seq_idx=bad)
    with pytest.raises(ValueError, match="learnable_init_state"):
        make("mamba2", learnable_init_state=True)(hs.Seq(x=x), seq_idx=seq_idx)
    with pytest.raises(TypeError):
        make("mamba")(hs.Seq(x=x), seq_idx=seq_idx)                       # only mamba2 takes packed rows


@cuda_only
@pytest.mark.parametrize("over", [{}, {"d_has_hdim": True, "dt_limit_min": 0.01, "dt_limit_max": 0.5}])
def test_mamba2_cuda_kernels_take_packed_rows_and_options(over):
    torch.manual_seed(0)
    fast = hs.build_block("mamba2", d_model=32, head_dim=16, d_state=16, impl="cuda", **over).cuda()
    ref = hs.build_block("mamba2", d_model=32, head_dim=16, d_state=16, impl="torch", **over).cuda()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 100, 32, device="cuda")
    seq_idx = (torch.arange(100, device="cuda") >= 37).int().expand(2, 100).contiguous()
    torch.testing.assert_close(fast(hs.Seq(x=x), seq_idx=seq_idx).x, ref(hs.Seq(x=x), seq_idx=seq_idx).x,
                               atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("scan", ["chunked", "loop"])
def test_s4_exact_hold_in_blocks_of_positions_matches_one_block(scan, monkeypatch):
    from hybridseq.blocks.backbones import s4
    block = make("s4", timed_disc="zoh", scan=scan)
    x, t, mask = sample(length=13, padded=True)
    seq = hs.Seq(x=x, t=t, mask=mask)
    whole = block(seq).x
    monkeypatch.setattr(s4, "EXPM_ELEMENTS", 2 * 8 * 7 ** 2 * 5)             # 5 positions per block
    torch.testing.assert_close(block(seq).x, whole)


def test_mamba2_packed_rows_train_under_bf16_autocast():
    torch.manual_seed(0)
    block = hs.build_block("mamba2", d_model=8, **SMALL["mamba2"])
    x = torch.randn(2, 12, 8)
    t = torch.cumsum(torch.rand(2, 12) + 0.1, 1)
    seq_idx = (torch.arange(12) >= 5).long().expand(2, 12)
    want = block(hs.Seq(x=x, t=t), seq_idx=seq_idx).x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = block(hs.Seq(x=x, t=t), seq_idx=seq_idx).x
    got.float().square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in block.parameters())
    assert (got.float() - want).norm() < 0.05 * want.norm()
