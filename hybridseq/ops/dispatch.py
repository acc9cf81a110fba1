"""Choosing between our PyTorch kernels and mamba-ssm's fused CUDA kernels.

mamba-ssm (and the triton it pulls in) is imported only here, inside the functions that return its
kernels, and only once a block has decided to run them: importing hybridseq never imports it.
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
INSTALL = ('pip install "hybridseq[cuda]" on a machine with an NVIDIA GPU and the CUDA toolkit '
           '(mamba-ssm compiles against it; add --no-build-isolation if the build cannot find torch)')
KERNELS = {"selective_scan": ("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),   # CUDA
           "ssd": ("mamba_ssm.ops.triton.ssd_combined", "mamba_chunk_scan_combined")}         # triton


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
def _load(kernel: str) -> Callable | ImportError:
    """mamba-ssm's ``kernel`` (a key of KERNELS), or the error that stopped its import (imported once)."""
    module, name = KERNELS[kernel]
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as err:
        return err


def impl_for(impl: str, x, kernel: str = "selective_scan") -> str:
    """The implementation that runs ``kernel`` on tensor ``x``: "cuda" or "torch".

    ``auto`` takes mamba-ssm's kernel only for a CUDA tensor and only if it imports (a broken install
    warns and falls back to ours); ``cuda`` raises where it cannot run, naming the install step.
    """
    if impl == "torch":
        return "torch"
    if not x.is_cuda:
        why = f"the input is on {x.device}"
    elif not cuda_kernels_available():
        why = "mamba-ssm is not installed"
    elif isinstance(err := _load(kernel), ImportError):
        why = f"importing mamba-ssm failed ({err})"
        if impl == "auto":
            warnings.warn(f"impl 'auto': {why}; running the PyTorch kernels. Reinstall with: {INSTALL}",
                          RuntimeWarning, stacklevel=3)
    else:
        return "cuda"
    if impl == "cuda":
        raise RuntimeError(f"impl 'cuda' runs mamba-ssm's kernels on CUDA tensors, but {why}; move the model "
                           f"to the GPU, set impl: torch, or install: {INSTALL}")
    return "torch"


def cuda_kernel(kernel: str) -> Callable:
    """mamba-ssm's ``kernel`` ("selective_scan" or "ssd"), once `impl_for` has chosen "cuda"."""
    return _load(kernel)
