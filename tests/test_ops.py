"""hybridseq.ops kernels against plain sequential float64 references: values and gradients; the choice
between them and mamba-ssm's kernels."""
import subprocess
import sys
import types
from types import SimpleNamespace

import pytest
import torch

import hybridseq as hs
from hybridseq.blocks.backbones.ssm_common import causal_conv
from hybridseq.ops import (
    cauchy_sum,
    dispatch,
    fft_conv,
    linear_scan,
    nplr_dense,
    nplr_kernel,
    selective_scan,
    ssd_chunked,
    vandermonde_kernel,
)
from hybridseq.ops.scan import scan_

F64 = torch.float64


def grads(out, inputs, seed=0):
    """Gradients of a fixed random projection of ``out`` with respect to ``inputs``."""
    w = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad((out * w).real.sum(), inputs, retain_graph=True)


def assert_same(a, b, **kw):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **kw)


def seq_linear(a, b):
    h, out = torch.zeros_like(b[:, 0]), []
    for l in range(a.shape[1]):
        h = a[:, l] * h + b[:, l]
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize("length", [1, 2, 7, 16, 33])
@pytest.mark.parametrize("dtype", [F64, torch.complex128])
def test_linear_scan_matches_sequential(length, dtype):
    a = (torch.rand(2, length, 3, dtype=F64) * 0.9 + 0.1).to(dtype).requires_grad_()
    b = torch.randn(2, length, 3, dtype=dtype, requires_grad=True)
    h, ref = linear_scan(a, b), seq_linear(a, b)
    torch.testing.assert_close(h, ref)
    assert_same(grads(h, (a, b)), grads(ref, (a, b)))


@pytest.mark.parametrize("length", [5, 17])
def test_reverse_scan_with_initial_state(length):
    a, b, h0 = torch.rand(length, 2, dtype=F64), torch.randn(length, 2, dtype=F64), torch.randn(2, dtype=F64)
    h, last = scan_(a.clone(), b.clone(), h0, reverse=True)
    state, ref = h0, [None] * length
    for l in reversed(range(length)):
        state = a[l] * state + b[l]
        ref[l] = state
    torch.testing.assert_close(h, torch.stack(ref))
    torch.testing.assert_close(last, ref[0])


def seq_selective(u, delta, A, B, C):
    h, ys = torch.zeros(u.shape[0], *A.shape, dtype=u.dtype), []
    for l in range(u.shape[1]):
        h = torch.exp(delta[:, l, :, None] * A) * h + (delta[:, l] * u[:, l])[..., None] * B[:, l, None, :]
        ys.append((h * C[:, l, None, :]).sum(-1))
    return torch.stack(ys, 1)


@pytest.mark.parametrize("length,segment", [(7, None), (37, 8), (40, 16), (5, 16)])
def test_selective_scan_matches_sequential(length, segment):
    g = torch.Generator().manual_seed(length)
    b, d, n = 2, 3, 4
    args = [torch.randn(b, length, d, dtype=F64, generator=g), torch.rand(b, length, d, dtype=F64, generator=g),
            -3 * torch.rand(d, n, dtype=F64, generator=g), torch.randn(b, length, n, dtype=F64, generator=g),
            torch.randn(b, length, n, dtype=F64, generator=g)]
    args = [x.requires_grad_() for x in args]
    y, ref = selective_scan(*args, segment=segment), seq_selective(*args)
    torch.testing.assert_close(y, ref)
    assert_same(grads(y, args), grads(ref, args))


def seq_ssd(x, dt, A, B, C):
    rep = x.shape[2] // B.shape[2]
    B, C = B.repeat_interleave(rep, 2), C.repeat_interleave(rep, 2)
    h, ys = torch.zeros(*x.shape[:1], *x.shape[2:], B.shape[-1], dtype=x.dtype), []
    for l in range(x.shape[1]):
        decay = torch.exp(dt[:, l] * A)[..., None, None]
        h = decay * h + (dt[:, l, :, None] * x[:, l])[..., None] * B[:, l, :, None, :]
        ys.append((h * C[:, l, :, None, :]).sum(-1))
    return torch.stack(ys, 1)


@pytest.mark.parametrize("chunk", [4, 5, 13, 16])
def test_ssd_matches_sequential(chunk):
    g = torch.Generator().manual_seed(chunk)
    b, length, heads, p, groups, n = 2, 13, 4, 3, 2, 5
    args = [torch.randn(b, length, heads, p, dtype=F64, generator=g),
            torch.rand(b, length, heads, dtype=F64, generator=g),
            -2 * torch.rand(heads, dtype=F64, generator=g), torch.randn(b, length, groups, n, dtype=F64, generator=g),
            torch.randn(b, length, groups, n, dtype=F64, generator=g)]
    args = [x.requires_grad_() for x in args]
    y, ref = ssd_chunked(*args, chunk=chunk), seq_ssd(*args)
    torch.testing.assert_close(y, ref)
    assert_same(grads(y, args), grads(ref, args))


def test_fft_conv_causal_and_bidirectional():
    g = torch.Generator().manual_seed(0)
    u, k, kr = (torch.randn(*s, dtype=F64, generator=g) for s in [(2, 3, 11), (3, 11), (3, 11)])
    causal, anti = torch.zeros_like(u), torch.zeros_like(u)
    for l in range(11):
        for j in range(l + 1):
            causal[..., l] += k[:, l - j] * u[..., j]
        for j in range(l, 11):
            anti[..., l] += kr[:, j - l] * u[..., j]
    torch.testing.assert_close(fft_conv(u, k), causal)
    torch.testing.assert_close(fft_conv(u, k, kr), causal + anti)


def test_vandermonde_and_cauchy_match_direct_sums():
    g = torch.Generator().manual_seed(0)
    coef = torch.randn(3, 4, dtype=torch.complex128, generator=g)
    log_z = torch.complex(-torch.rand(3, 4, dtype=F64, generator=g), torch.randn(3, 4, dtype=F64, generator=g))
    ref = torch.stack([2 * (coef * torch.exp(log_z * l)).sum(-1).real for l in range(9)], -1)
    torch.testing.assert_close(vandermonde_kernel(coef, log_z, 9), ref)
    alpha = torch.randn(9, dtype=torch.complex128, generator=g)
    beta = torch.randn(9, dtype=torch.complex128, generator=g)
    direct = (coef[..., None] / (alpha - beta * log_z[..., None])).sum(-2)
    torch.testing.assert_close(cauchy_sum(coef, log_z, alpha, beta), direct)


@pytest.mark.parametrize("length", [8, 11, 64])
def test_nplr_kernel_matches_dense_powers(length):
    """The generating-function / Woodbury kernel equals Re c Ā^l B̄ with Ā, B̄ materialised densely."""
    g = torch.Generator().manual_seed(length)
    h, m = 3, 3
    full = lambda x: torch.cat([x, x.conj()], -1)
    lam = torch.complex(-0.5 - torch.rand(h, m, dtype=F64, generator=g), torch.randn(h, m, dtype=F64, generator=g))
    p, b, c = (torch.randn(h, m, dtype=torch.complex128, generator=g) for _ in range(3))
    dt = 0.01 + 0.1 * torch.rand(h, dtype=F64, generator=g)
    params = [x.requires_grad_() for x in (lam, p, b, c, dt)]
    k = nplr_kernel(*(full(x) for x in params[:4]), dt, length)

    eye = torch.eye(2 * m, dtype=torch.complex128)
    a = torch.diag_embed(full(lam)) - full(p)[:, :, None] * full(p).conj()[:, None, :]
    back = torch.linalg.inv(eye - dt[:, None, None] / 2 * a)
    a_bar, b_bar = back @ (eye + dt[:, None, None] / 2 * a), (back @ (dt[:, None] * full(b))[..., None])[..., 0]
    state, ref = b_bar, []
    for _ in range(length):
        ref.append((full(c) * state).sum(-1).real)
        state = (a_bar @ state[..., None])[..., 0]
    ref = torch.stack(ref, -1)
    torch.testing.assert_close(k, ref)
    assert_same(grads(k, params), grads(ref, params))
    torch.testing.assert_close(nplr_dense(full(lam), full(p), full(b), dt)[0], a_bar)


def test_import_never_loads_gpu_kernels_or_bench_packages():
    code = ("import sys\n"
            "import traceback\n"
            "tried = []\n"
            "class Watch:\n"                          # records imports, even guarded or failing ones (not
            "    def find_spec(self, name, path=None, target=None):\n"    # importlib.util.find_spec checks)
            "        probe = any(f.name == 'find_spec' and 'util' in f.filename for f in traceback.extract_stack())\n"
            "        if name.split('.')[0] in ('mamba_ssm', 'triton', 'mambapy') and not probe:\n"
            "            tried.append(name)\n"
            "sys.meta_path.insert(0, Watch())\n"
            "import torch, hybridseq as hs\n"
            "m = hs.build_block('mamba', d_model=8); m(hs.Seq(x=torch.randn(1, 5, 8)))\n"
            "m = hs.build_block('mamba2', d_model=8, head_dim=8); m(hs.Seq(x=torch.randn(1, 5, 8)))\n"
            "bad = [k for k in sys.modules if k.split('.')[0] in ('mamba_ssm', 'triton', 'mambapy')]\n"
            "assert not bad and not tried, (bad, tried)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_auto_never_picks_cuda_for_cpu_tensors(monkeypatch):
    monkeypatch.setattr(dispatch, "cuda_kernels_available", lambda: True)     # as on a GPU machine
    block = hs.build_block("mamba", d_model=8, d_state=4)
    block(hs.Seq(x=torch.randn(1, 5, 8)))
    assert block.impl == "torch" and dispatch.impl_for("auto", torch.zeros(1), "ssd") == "torch"


def test_auto_falls_back_when_mamba_ssm_fails_to_import(monkeypatch):
    monkeypatch.setattr(dispatch, "cuda_kernels_available", lambda: True)
    monkeypatch.setattr(dispatch, "_load", lambda kernel: ImportError("undefined symbol in selective_scan_cuda"))
    on_gpu = SimpleNamespace(is_cuda=True, device="cuda:0")                   # impl_for reads only these
    with pytest.warns(RuntimeWarning, match="undefined symbol"):
        assert dispatch.impl_for("auto", on_gpu) == "torch"
    with pytest.raises(RuntimeError, match="undefined symbol.*hybridseq\\[cuda\\]"):
        dispatch.impl_for("cuda", on_gpu)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernels_run_in_float32_under_autocast_with_half_inputs(dtype):
    g = torch.Generator().manual_seed(0)
    u, delta = torch.randn(2, 9, 3, generator=g), torch.rand(2, 9, 3, generator=g)
    A, B, C = -torch.rand(3, 4, generator=g) - 0.5, torch.randn(2, 9, 4, generator=g), torch.randn(2, 9, 4, generator=g)
    x, dt, B2, C2 = torch.randn(2, 9, 2, 3, generator=g), torch.rand(2, 9, 2, generator=g), B[:, :, None], C[:, :, None]
    cases = {"selective_scan": (selective_scan, (u, delta, A, B.to(dtype), C.to(dtype))),       # mixed, as from x_proj
             "ssd": (ssd_chunked, (x.to(dtype), dt, -torch.rand(2, generator=g), B2.to(dtype), C2, 4)),
             "linear_scan": (linear_scan, (torch.rand(2, 9, 3, generator=g).to(dtype), u)),
             "fft_conv": (fft_conv, (u.transpose(1, 2).to(dtype), torch.randn(3, 9, generator=g)))}
    for name, (fn, args) in cases.items():
        with torch.autocast("cpu", dtype=dtype):
            got = fn(*args)
        want = fn(*(a.float() if torch.is_tensor(a) else a for a in args))
        assert got.dtype == torch.float32, name
        torch.testing.assert_close(got, want, msg=name)


@pytest.mark.parametrize("length,segment", [(7, None), (37, 8)])
def test_selective_scan_exact_hold_over_gaps_matches_sequential(length, segment):
    g = torch.Generator().manual_seed(length)
    b, d, n = 2, 3, 4
    args = [torch.randn(b, length, d, dtype=F64, generator=g), torch.rand(b, length, d, dtype=F64, generator=g),
            -3 * torch.rand(d, n, dtype=F64, generator=g) - 0.1, torch.randn(b, length, n, dtype=F64, generator=g),
            torch.randn(b, length, n, dtype=F64, generator=g)]
    args = [x.requires_grad_() for x in args]
    gap = 10 ** (4 * torch.rand(b, length, dtype=F64, generator=g) - 2)      # 1e-2 .. 1e2
    gap[0, 3] = 0.0                                                          # a padded position
    u, delta, A, B, C = args
    h, ys = torch.zeros(b, d, n, dtype=F64), []
    for l in range(length):
        step, k = delta[:, l, :, None] * A, gap[:, l, None, None]
        drive = (delta[:, l] * u[:, l])[..., None] * B[:, l, None, :] * torch.expm1(k * step) / torch.expm1(step)
        h = torch.exp(k * step) * h + drive
        ys.append((h * C[:, l, None, :]).sum(-1))
    ref = torch.stack(ys, 1)
    y = selective_scan(*args, segment=segment, gap=gap)
    torch.testing.assert_close(y, ref)
    assert_same(grads(y, args), grads(ref, args))
    ones = torch.ones(b, length, dtype=F64)                                  # unit gaps: the plain scan
    torch.testing.assert_close(selective_scan(*args, segment=segment, gap=ones), selective_scan(*args, segment=segment))


# -- fake mamba-ssm / causal-conv1d: what the dispatch does with a working, a missing or a broken kernel --

def fake_selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """mamba-ssm's selective_scan_fn contract (channels first: u, delta, z [B, D, L], B, C [B, N, L])."""
    assert A.dtype == torch.float32 and (D is None or D.dtype == torch.float32)
    assert len({v.dtype for v in (u, delta, B, C, z) if v is not None}) == 1, "activations share one dtype"
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    delta = torch.nn.functional.softplus(delta) if delta_softplus else delta
    y = selective_scan(*(v.transpose(1, 2) for v in (u, delta)), A, *(v.transpose(1, 2) for v in (B, C)))
    y = y.transpose(1, 2)
    y = y + (D[:, None] * u if D is not None else 0)
    return (y * torch.nn.functional.silu(z) if z is not None else y).to(u.dtype)


def fake_causal_conv1d_fn(x, weight, bias=None, seq_idx=None, activation=None):
    """causal-conv1d's contract: x [B, D, L], weight [D, W]; seq_idx [B, L] int32 only with channels-last x."""
    if seq_idx is not None:
        assert x.stride(1) == 1 and seq_idx.dtype == torch.int32, "seq_idx needs channels-last x, int32"
        conv = types.SimpleNamespace(weight=weight[:, None], bias=bias)
        y = causal_conv(x.transpose(1, 2), conv, seq_idx.long()).transpose(1, 2)
    else:
        y = torch.nn.functional.conv1d(x, weight[:, None], bias, padding=weight.shape[-1] - 1, groups=x.shape[1])
        y = y[..., :x.shape[-1]]
    return torch.nn.functional.silu(y) if activation == "silu" else y


def fake_mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight, out_proj_weight,
                        out_proj_bias, A, B=None, C=None, D=None, delta_bias=None, delta_softplus=True):
    """mamba-ssm's mamba_inner_fn contract: the whole layer from xz [B, 2E, L] to [B, L, D]."""
    x, z = xz.chunk(2, dim=1)
    x = fake_causal_conv1d_fn(x, conv1d_weight.squeeze(1), conv1d_bias, activation="silu")
    rank, n = delta_proj_weight.shape[1], A.shape[-1]
    dt, B, C = torch.nn.functional.linear(x.transpose(1, 2), x_proj_weight).split([rank, n, n], dim=-1)
    delta = (dt @ delta_proj_weight.T).transpose(1, 2)
    y = fake_selective_scan_fn(x, delta, A, B.transpose(1, 2), C.transpose(1, 2), D, z, delta_bias, delta_softplus)
    return torch.nn.functional.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


def fake_chunk_scan(x, dt, A, B, C, chunk_size, D=None, initial_states=None, seq_idx=None):
    """mamba-ssm's mamba_chunk_scan_combined contract: x [B, L, H, P], dt [B, L, H], B, C [B, L, G, N],
    D [H] or [H, P], seq_idx [B, L] int32."""
    assert A.dtype == torch.float32 and x.dtype == B.dtype == C.dtype
    assert seq_idx is None or seq_idx.dtype == torch.int32
    y = ssd_chunked(x, dt, A, B, C, chunk_size, h0=initial_states, seq_idx=None if seq_idx is None else seq_idx.long())
    return y + (x * (D if D.dim() == 2 else D[:, None]) if D is not None else 0)


def fake_split_conv1d_scan(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D, chunk_size, initial_states=None,
                           seq_idx=None, dt_limit=(0.0, float("inf")), activation="silu", rmsnorm_weight=None,
                           rmsnorm_eps=1e-6, outproj_weight=None, outproj_bias=None, headdim=None, ngroups=1,
                           norm_before_gate=True):
    """mamba-ssm's mamba_split_conv1d_scan_combined contract: the Mamba-2 layer from zxbcdt [B, L, 2E + 2GN + H]
    (conv, softplus step with dt_limit, SSD, gated RMSNorm per group, out-projection) to [B, L, D]."""
    assert activation == "silu" and A.dtype == D.dtype == torch.float32
    heads, conv_width = dt_bias.shape[0], conv1d_weight.shape[0]
    e = zxbcdt.shape[-1] - conv_width - heads
    z, xbc, dt = zxbcdt.split([e, conv_width, heads], dim=-1)
    xbc = fake_causal_conv1d_fn(xbc.transpose(1, 2) if seq_idx is not None else xbc.transpose(1, 2).contiguous(),
                                conv1d_weight, conv1d_bias, seq_idx, "silu").transpose(1, 2)
    n = (conv_width - e) // (2 * ngroups)
    x, B, C = xbc.split([e, ngroups * n, ngroups * n], dim=-1)
    lead = x.shape[:2]
    dt = torch.nn.functional.softplus(dt + dt_bias).clamp(*dt_limit)
    p = headdim or D.shape[-1]
    y = fake_chunk_scan(x.reshape(*lead, heads, p), dt, A, B.reshape(*lead, ngroups, n), C.reshape(*lead, ngroups, n),
                        chunk_size, D, initial_states, seq_idx).reshape(*lead, e) * torch.nn.functional.silu(z)
    if rmsnorm_weight is not None:
        assert not norm_before_gate, "the blocks normalise y * SiLU(z)"
        g = y.float().unflatten(-1, (ngroups, -1))
        y = (g * torch.rsqrt(g.square().mean(-1, keepdim=True) + rmsnorm_eps)).flatten(-2).to(y.dtype) * rmsnorm_weight
    return y if outproj_weight is None else torch.nn.functional.linear(y, outproj_weight, outproj_bias)


def broken(*args, **kwargs):
    raise RuntimeError("selective_scan_cuda was not built (MAMBA_KEEP_CUDA_BUILD)")


def install_fakes(monkeypatch, scan=fake_selective_scan_fn, conv=fake_causal_conv1d_fn, inner=fake_mamba_inner_fn):
    """Fake packages in sys.modules; returns the list of kernels called after their probe."""
    calls = []

    def recorded(kernel, fn):
        def call(*args, **kwargs):
            out = fn(*args, **kwargs)
            calls.append(kernel)
            return out
        return call if fn is not None else None
    names = {"mamba_ssm": {}, "mamba_ssm.ops": {}, "mamba_ssm.ops.triton": {},
             "mamba_ssm.ops.selective_scan_interface": {"selective_scan_fn": recorded("selective_scan", scan),
                                                        "mamba_inner_fn": recorded("mamba_inner", inner)},
             "mamba_ssm.ops.triton.ssd_combined": {"mamba_chunk_scan_combined": recorded("ssd", fake_chunk_scan),
                                                   "mamba_split_conv1d_scan_combined":
                                                       recorded("ssd_fused", fake_split_conv1d_scan)},
             "causal_conv1d": {"causal_conv1d_fn": recorded("causal_conv1d", conv)}}
    for name, attrs in names.items():
        module = types.ModuleType(name)
        for key, value in attrs.items():
            if value is not None:
                setattr(module, key, value)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(dispatch, "cuda_kernels_available", lambda: True)
    monkeypatch.setattr(dispatch, "on_cuda", lambda x: True)         # CPU tensors stand in for CUDA ones
    for fn in (dispatch._load, dispatch._ready):
        fn.cache_clear()
    for kernel in dispatch.KERNELS:                                  # run the probes now, then count calls
        dispatch._ready(kernel, "cpu")
    calls.clear()
    return calls


@pytest.fixture(autouse=True)
def fresh_dispatch_caches():
    yield
    for fn in (dispatch._load, dispatch._ready):
        fn.cache_clear()


def pair(name, monkeypatch, **over):
    torch.manual_seed(0)
    over = {"d_state": 4, **({"head_dim": 4} if name == "mamba2" else {}), **over}
    ref = hs.build_block(name, d_model=8, impl="torch", **over)
    return ref, over


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
@pytest.mark.parametrize("case", ["plain", "masked", "autocast"])
def test_cuda_path_through_working_fake_kernels_matches_torch(name, case, monkeypatch):
    calls = install_fakes(monkeypatch)
    ref, over = pair(name, monkeypatch)
    fast = hs.build_block(name, d_model=8, impl="cuda", **over)
    fast.load_state_dict(ref.state_dict())
    mask = torch.tensor([[True] * 7, [True] * 5 + [False] * 2]) if case == "masked" else None
    seq = hs.Seq(x=torch.randn(2, 7, 8), t=None, mask=mask)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=case == "autocast"):
        got, want = fast(seq).x, ref(seq).x
    assert fast.impl == "cuda" and ref.impl == "torch"
    tol = {"atol": 3e-2, "rtol": 3e-2} if case == "autocast" else {}
    torch.testing.assert_close(got.float(), want.float(), **tol)
    expected = {("mamba", "plain"): ["mamba_inner"], ("mamba", "autocast"): ["mamba_inner"],
                ("mamba", "masked"): ["causal_conv1d", "selective_scan"],
                ("mamba2", "masked"): ["causal_conv1d", "ssd"]}.get((name, case), ["ssd_fused"])
    assert calls == expected


@pytest.mark.parametrize("over,mask", [({}, False), ({"d_has_hdim": True, "dt_limit_min": 0.05, "dt_limit_max": 0.5},
                                                      False), ({}, True)])
def test_mamba2_cuda_path_passes_packing_and_options_to_the_fake_kernels(over, mask, monkeypatch):
    calls = install_fakes(monkeypatch)
    ref, over = pair("mamba2", monkeypatch, chunk_size=4, **over)
    fast = hs.build_block("mamba2", d_model=8, impl="cuda", **over)
    fast.load_state_dict(ref.state_dict())
    seq_idx = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2, 2], [0, 0, 0, 0, 0, 1, 1, 1, 1]])
    seq = hs.Seq(x=torch.randn(2, 9, 8), mask=torch.arange(9)[None] < torch.tensor([[9], [7]]) if mask else None)
    got, want = fast(seq, seq_idx=seq_idx).x, ref(seq, seq_idx=seq_idx).x
    valid = seq.valid()
    torch.testing.assert_close(got[valid], want[valid])
    assert calls == (["causal_conv1d", "ssd"] if mask else ["ssd_fused"])

@pytest.mark.parametrize("failure", ["raises at first call", "extension missing at import"])
def test_broken_kernel_falls_back_under_auto_and_is_a_config_error_under_cuda(failure, monkeypatch):
    scan = broken if failure == "raises at first call" else None     # None: the module lacks the function
    install_fakes(monkeypatch, scan=scan, inner=broken if scan else None)
    ref, over = pair("mamba", monkeypatch)
    auto = hs.build_block("mamba", d_model=8, impl="auto", **over)
    auto.load_state_dict(ref.state_dict())
    seq = hs.Seq(x=torch.randn(2, 7, 8))
    with pytest.warns(RuntimeWarning, match="mamba_ssm cannot run its kernel"):
        got = auto(seq).x
    assert auto.impl == "torch"
    torch.testing.assert_close(got, ref(seq).x)
    explicit = hs.build_block("mamba", d_model=8, impl="cuda", **over)
    with pytest.raises(hs.ConfigError, match="MAMBA_KEEP_CUDA_BUILD=TRUE pip install") as err:
        explicit(seq)
    assert err.value.path == "mamba.impl" and "selective_scan" in str(err.value)


def test_float64_and_timed_inputs_take_the_torch_kernels(monkeypatch):
    calls = install_fakes(monkeypatch)
    block = hs.build_block("mamba", d_model=8, d_state=4, impl="auto")
    block(hs.Seq(x=torch.randn(1, 5, 8)))
    assert block.impl == "cuda"
    block.double()(hs.Seq(x=torch.randn(1, 5, 8, dtype=F64)))
    assert block.impl == "torch"                                    # the kernels have no float64
    block.float()(hs.Seq(x=torch.randn(1, 5, 8), t=torch.arange(5.0)[None]))
    assert block.impl == "torch" and calls == ["mamba_inner"]       # exact hold: a per-state input weight


def dplr_loop(a, s, x, q, r, h0):
    h, out = h0, []
    for l in range(a.shape[1]):
        sigma = 2 * (q[:, l] * h).sum(-1).real + r[:, l]
        h = a[:, l] * h + s[:, l] * sigma.unsqueeze(-1) + x[:, l]
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dplr_scan_matches_its_recurrence_with_vanishing_and_zero_decays(dtype):
    """Chunks of 8 over L = 29 (a partial last chunk), decays of modulus 0.3..1 with some exactly 0 and some
    1e-30 (below the floor: what they multiply is negligible), a start state; values and gradients."""
    from hybridseq.ops.chunkscan import dplr_scan
    g = torch.Generator().manual_seed(0)
    cd = torch.complex128 if dtype == torch.float64 else torch.complex64
    shape = (2, 29, 3, 4)
    rand = lambda *s: torch.randn(*s, generator=g, dtype=cd)                 # noqa: E731
    a = torch.polar(0.3 + 0.7 * torch.rand(shape, generator=g, dtype=dtype), 6 * torch.rand(shape, generator=g,
                                                                                           dtype=dtype))
    a[:, 5, 0], a[:, 17, 1], a[0, 9] = 0, 1e-30, 1e-30
    s, x, q = 0.2 * rand(*shape), rand(*shape), 0.2 * rand(*shape)
    r = torch.randn(shape[:3], generator=g, dtype=dtype)
    h0 = rand(2, 3, 4)
    inputs = [v.requires_grad_() for v in (s, x, q, r, h0)]
    got, want = dplr_scan(a, s, x, q, r, h0), dplr_loop(a, s, x, q, r, h0)
    tol = {} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(got, want, **tol)
    w = rand(*got.shape)
    grads = [torch.autograd.grad((v * w).real.sum(), inputs) for v in (got, want)]
    for d1, d2 in zip(*grads):
        torch.testing.assert_close(d1, d2, **({} if dtype == torch.float64 else {"rtol": 1e-3, "atol": 1e-4}))
