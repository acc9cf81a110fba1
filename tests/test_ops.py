"""hybridseq.ops kernels against plain sequential float64 references: values and gradients; the choice
between them and mamba-ssm's kernels."""
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

import hybridseq as hs
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
