"""Choosing between our PyTorch kernels and the optional fused GPU kernels of mamba-ssm and causal-conv1d.

These packages (and the triton they pull in) are imported only here, inside the functions that return
their kernels, and only once a block has decided to run them: importing hybridseq never imports them.
A kernel counts as available only after it has run once on a tiny input on the device (`_ready`): a
package whose compiled extension is missing or broken (mamba-ssm builds ``selective_scan_cuda`` only
with ``MAMBA_KEEP_CUDA_BUILD=TRUE``; the import then succeeds and the first call fails) makes ``auto``
fall back with a warning, and ``cuda`` fail with the install step.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import warnings
from typing import Callable

import torch

from ..errors import ConfigError

IMPLS = ("auto", "cuda", "torch")
INSTALL = ('MAMBA_KEEP_CUDA_BUILD=TRUE pip install "hybridseq[cuda]" --no-build-isolation on a machine with an '
           'NVIDIA GPU and the CUDA toolkit (mamba-ssm and causal-conv1d compile their extensions against it)')
KERNELS = {"selective_scan": ("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),   # CUDA
           "mamba_inner": ("mamba_ssm.ops.selective_scan_interface", "mamba_inner_fn"),        # CUDA, fused layer
           "ssd": ("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined"),          # triton
           "ssd_fused": ("mamba_ssm.ops.triton.ssd_combined", "mamba_split_conv1d_scan_combined"),  # fused layer
           "causal_conv1d": ("causal_conv1d", "causal_conv1d_fn")}                             # CUDA
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _probe_selective_scan(fn, dev):
    u = torch.zeros(1, 1, 2, device=dev)                                # [B, D, L]
    fn(u, u, -torch.ones(1, 1, device=dev), u, u, delta_softplus=False)


def _probe_mamba_inner(fn, dev):
    d, r, n, length = 8, 1, 1, 2
    z = lambda *s: torch.zeros(*s, device=dev)                          # noqa: E731
    fn(z(1, 2 * d, length), z(d, 1, 4), z(d), z(r + 2 * n, d), z(d, r), z(4, d), None, -torch.ones(d, n, device=dev),
       D=z(d), delta_bias=z(d), delta_softplus=True)


def _probe_ssd(fn, dev):
    x = torch.zeros(1, 16, 1, 16, device=dev)                            # [B, L, H, P], B and C [B, L, G, N]
    fn(x, torch.ones(1, 16, 1, device=dev), -torch.ones(1, device=dev), x, x, chunk_size=16)


def _probe_ssd_fused(fn, dev):
    heads, p, n, length = 1, 16, 16, 16                                   # zxbcdt [B, L, 2E + 2N + H], E = H P
    e = heads * p
    fn(torch.zeros(1, length, 2 * e + 2 * n + heads, device=dev), torch.zeros(e + 2 * n, 4, device=dev), None,
       torch.zeros(heads, device=dev), -torch.ones(heads, device=dev), torch.zeros(heads, device=dev), length,
       headdim=p, ngroups=1)


def _probe_conv(fn, dev):
    fn(torch.zeros(1, 8, 4, device=dev), torch.zeros(8, 4, device=dev), None, activation="silu")


PROBES = {"selective_scan": _probe_selective_scan, "mamba_inner": _probe_mamba_inner, "ssd": _probe_ssd,
          "ssd_fused": _probe_ssd_fused, "causal_conv1d": _probe_conv}


def cuda_kernels_available() -> bool:
    """True when a CUDA device is present and mamba-ssm is installed (checked without importing it)."""
    return torch.cuda.is_available() and importlib.util.find_spec("mamba_ssm") is not None


def check_impl(impl: str, path: str) -> None:
    """Raise a `ConfigError` at ``path`` when ``impl: cuda`` cannot run here."""
    if impl == "cuda" and not cuda_kernels_available():
        why = "no CUDA device" if not torch.cuda.is_available() else "mamba-ssm is not installed"
        raise ConfigError(path, f"impl 'cuda' needs mamba-ssm's kernels ({why}); install with: {INSTALL}",
                          choices=("auto", "torch"), got=impl)


def planned_impl(impl: str) -> str:
    """The implementation a block expects to run before it has seen a tensor."""
    return "cuda" if impl == "cuda" or (impl == "auto" and cuda_kernels_available()) else "torch"


@functools.cache
def _load(kernel: str) -> Callable | Exception:
    """The package's ``kernel`` (a key of KERNELS), or the error that stopped its import (imported once)."""
    module, name = KERNELS[kernel]
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        return err


@functools.cache
def _ready(kernel: str, device: str) -> Callable | Exception:
    """``kernel`` after one call on a tiny input on ``device`` succeeded, or the error it raised."""
    fn = _load(kernel)
    if isinstance(fn, Exception):
        return fn
    try:
        PROBES[kernel](fn, torch.device(device))
    except Exception as err:                                            # noqa: BLE001 - any failure means unusable
        return err
    return fn


def on_cuda(x) -> bool:
    return x.is_cuda


def unavailable(kernel: str, x) -> tuple[str, bool] | None:
    """Why ``kernel`` cannot run on tensor ``x`` here and whether an installed package is broken, or None."""
    if not on_cuda(x):
        return f"the input is on {x.device}", False
    if getattr(x, "dtype", torch.float32) not in KERNEL_DTYPES:
        return f"the kernels take float32, float16 or bfloat16, not {x.dtype}", False
    if kernel != "causal_conv1d" and not cuda_kernels_available():
        return "mamba-ssm is not installed", False
    err = _ready(kernel, str(x.device))
    if isinstance(err, Exception):
        package = KERNELS[kernel][0].split(".")[0]
        return f"{package} cannot run its kernel ({type(err).__name__}: {err})", True
    return None


class KernelUnavailable(ConfigError, RuntimeError):
    """``impl: cuda`` asked for a fused kernel that cannot run on this input."""


def impl_for(impl: str, x, kernel: str = "selective_scan", path: str = "impl") -> str:
    """The implementation that runs ``kernel`` on tensor ``x``: "cuda" or "torch".

    ``auto`` takes the fused kernel only for a CUDA tensor of a dtype it supports, and only if it imports
    and runs (a broken install warns and falls back to ours); ``cuda`` raises `KernelUnavailable` (a
    ConfigError at ``path``) where it cannot run, naming the install step.
    """
    if impl == "torch":
        return "torch"
    reason = unavailable(kernel, x)
    if reason is None:
        return "cuda"
    why, broken = reason
    if impl == "cuda":
        raise KernelUnavailable(path, f"impl 'cuda' runs fused kernels on CUDA tensors, but {why}; move the "
                                f"model to the GPU, set impl: torch, or install: {INSTALL}",
                                choices=("auto", "torch"), got=impl)
    if broken:
        warnings.warn(f"impl 'auto': {why}; running the PyTorch kernels. Reinstall with: {INSTALL}",
                      RuntimeWarning, stacklevel=3)
    return "torch"


def fast_path(x, *kernels: str) -> bool:
    """Whether all of the optional ``kernels`` can run on ``x`` (used without warning, as an extra speed-up)."""
    return all(unavailable(k, x) is None for k in kernels)


def cuda_kernel(kernel: str) -> Callable:
    """The fused ``kernel`` (a key of KERNELS), once `impl_for` or `fast_path` has found it usable."""
    return _load(kernel)


def kernel_dtype(x) -> torch.dtype:
    """The dtype the fused kernels get their activations in: autocast's on ``x``'s device, else x's own."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
