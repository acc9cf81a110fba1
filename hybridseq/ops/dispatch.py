"""Choosing between our PyTorch kernels and mamba-ssm's fused CUDA kernels.

mamba-ssm (and the triton it pulls in) is imported only here, inside the functions that return its
kernels, and only once a block has decided to run them: importing hybridseq never imports it.
"""
from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from ..errors import ConfigError

IMPLS = ("auto", "cuda", "torch")
INSTALL = ('pip install "hybridseq[cuda]" on a machine with an NVIDIA GPU and the CUDA toolkit '
           '(mamba-ssm compiles against it; add --no-build-isolation if the build cannot find torch)')


def cuda_kernels_available() -> bool:
    """True when a CUDA device is present and mamba-ssm is installed (checked without importing it)."""
    return torch.cuda.is_available() and importlib.util.find_spec("mamba_ssm") is not None


def check_impl(impl: str, path: str) -> None:
    """Raise a `ConfigError` at ``path`` when ``impl: cuda`` cannot run here."""
    if impl == "cuda" and not cuda_kernels_available():
        why = "no CUDA device" if not torch.cuda.is_available() else "mamba-ssm is not installed"
        raise ConfigError(path, f"impl 'cuda' needs mamba-ssm's kernels ({why}); install with: {INSTALL}",
                          choices=IMPLS, got=impl)


def planned_impl(impl: str) -> str:
    """The implementation a block expects to run before it has seen a tensor."""
    return "cuda" if impl == "cuda" or (impl == "auto" and cuda_kernels_available()) else "torch"


def impl_for(impl: str, x: Tensor) -> str:
    """The implementation that runs on tensor ``x``: "cuda" or "torch"."""
    if impl == "torch":
        return "torch"
    if x.is_cuda and cuda_kernels_available():
        return "cuda"
    if impl == "cuda":
        raise RuntimeError(f"impl 'cuda' runs on CUDA tensors with mamba-ssm installed, got a tensor on "
                           f"{x.device}; move the model to the GPU, set impl: torch, or install: {INSTALL}")
    return "torch"


def selective_scan_cuda():
    """mamba-ssm's fused selective scan ``selective_scan_fn``."""
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    return selective_scan_fn


def ssd_cuda():
    """mamba-ssm's chunked SSD kernel ``mamba_chunk_scan_combined`` (triton)."""
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    return mamba_chunk_scan_combined
