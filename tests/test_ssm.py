"""State-space backbones (s4d, s4, mamba, mamba2) against plain sequential float64 references written
here: full-sequence outputs and gradients, recurrent stepping, time gaps, padding, config errors."""
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


def diag_ref(block, u, gaps, c):
    """S4D: h_l = Ā_l h_{l-1} + B̄_l u_l, y = 2 Re c·h, one step at a time."""
    A, dt = block.eigenvalues(), torch.exp(block.log_dt)
    h, ys = torch.zeros(u.shape[0], *A.shape, dtype=torch.complex128), []
    for l in range(u.shape[1]):
        dta = (dt * gaps[:, l, None])[..., None] * A
        if block.cfg.disc == "zoh":
            a_bar, b_bar = torch.exp(dta), (torch.exp(dta) - 1) / A
        else:
            a_bar, b_bar = (1 + dta / 2) / (1 - dta / 2), (dt * gaps[:, l, None])[..., None] / (1 - dta / 2)
        h = a_bar * h + b_bar * u[:, l, :, None]
        ys.append(2 * (h * c).sum(-1).real)
    return torch.stack(ys, 1)


def nplr_ref(block, u, gaps, c):
    """S4: dense A = Λ - p p* on the whole state, bilinear step per position, y = Re c·h."""
    lam, p, b, _ = block.params()
    full = lambda v: torch.cat([v, v.conj()], -1)
    a = torch.diag_embed(full(lam)) - full(p)[..., :, None] * full(p).conj()[..., None, :]      # [H, N, N]
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    h, ys = torch.zeros(u.shape[0], *full(lam).shape, dtype=a.dtype), []
    for l in range(u.shape[1]):
        d = (torch.exp(block.log_dt) * gaps[:, l, None]).to(a.dtype)[..., None, None]        # [B, H, 1, 1]
        back = torch.linalg.inv(eye - d / 2 * a)
        h = (((back @ (eye + d / 2 * a)) @ h[..., None])[..., 0]
             + (back @ (d[..., 0] * full(b))[..., None])[..., 0] * u[:, l, :, None])
        ys.append((h * full(c)).sum(-1).real)
    return torch.stack(ys, 1)


def lti_ref(block, x, gaps, back_gaps, mask):
    u = block.norm(x) * mask[..., None]
    run = diag_ref if block.cfg.__class__.__qualname__.startswith("S4D") else nplr_ref
    c = torch.view_as_complex(block.c)
    y = run(block, u, gaps, c[0])
    if block.cfg.bidirectional:
        y = y + run(block, u.flip(1), back_gaps, c[1]).flip(1)
    return x + block.out(y + block.d * u)


def conv_ref(block, x):
    k = block.conv.weight.shape[-1]
    return F.conv1d(x.transpose(1, 2), block.conv.weight, block.conv.bias, padding=k - 1,
                    groups=x.shape[-1])[..., :x.shape[1]].transpose(1, 2)


def mamba_ref(block, x, gaps, back_gaps, mask):
    u = block.norm(x) * mask[..., None]
    xi, z = block.in_proj(u).chunk(2, -1)
    xi = F.silu(conv_ref(block, xi))
    dt, B, C = block.x_proj(xi).split([block.rank, block.cfg.d_state, block.cfg.d_state], -1)
    delta = F.softplus(block.dt_proj(dt)) * gaps[..., None]
    A = -torch.exp(block.a_log)
    h, ys = torch.zeros(x.shape[0], *A.shape, dtype=F64), []
    for l in range(x.shape[1]):
        h = torch.exp(delta[:, l, :, None] * A) * h + (delta[:, l] * xi[:, l])[..., None] * B[:, l, None, :]
        ys.append((h * C[:, l, None, :]).sum(-1))
    y = (torch.stack(ys, 1) + xi * block.d) * F.silu(z)
    return x + block.out_proj(y)


def mamba2_ref(block, x, gaps, back_gaps, mask):
    u = block.norm(x) * mask[..., None]
    z, xbc, dt = block.in_proj(u).split(block.sizes, -1)
    xi, B, C = block._split(F.silu(conv_ref(block, xbc)))
    rep = block.heads // block.cfg.n_groups
    B, C = B.repeat_interleave(rep, 2), C.repeat_interleave(rep, 2)
    dt = F.softplus(dt + block.dt_bias) * gaps[..., None]
    A = -torch.exp(block.a_log)
    h, ys = torch.zeros(x.shape[0], block.heads, block.cfg.head_dim, block.cfg.d_state, dtype=F64), []
    for l in range(x.shape[1]):
        h = (torch.exp(dt[:, l] * A)[..., None, None] * h
             + (dt[:, l, :, None] * xi[:, l])[..., None] * B[:, l, :, None, :])
        ys.append((h * C[:, l, :, None, :]).sum(-1) + xi[:, l] * block.d[:, None])
    y = torch.stack(ys, 1).reshape(*x.shape[:2], -1)
    return x + block.out_proj(block.norm_out(y * F.silu(z)))


REFS = {"s4d": lti_ref, "s4": lti_ref, "mamba": mamba_ref, "mamba2": mamba2_ref}
CASES = [("s4d", {}), ("s4d", {"init": "inv", "disc": "bilinear"}), ("s4d", {"init": "real", "bidirectional": True}),
         ("s4", {}), ("s4", {"bidirectional": True}), ("mamba", {"impl": "torch"}), ("mamba2", {"impl": "torch"})]


def check_against_reference(block, ref_fn, seq, gaps, back):
    out = block(seq).x
    ref = ref_fn(block, seq.x, gaps, back, seq.valid())
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


@pytest.mark.parametrize("name,over", CASES)
def test_time_gaps_match_sequential_reference(name, over):
    block = make(name, time_unit=0.5, **over)
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


@pytest.mark.parametrize("name", ["s4d", "s4", "mamba", "mamba2"])
@pytest.mark.parametrize("timed", [False, True])
def test_recurrent_step_matches_full_sequence(name, timed):
    block = make(name)
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
                                       ("s4d", {"disc": "bilinear", "init": "inv"})])
def test_variants_pass_conformance(name, over):
    check_block(name, over)


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
