"""The state-space kernels run in at least float32, whatever autocast does around them.

Products of many decays (exp(ΔA)^L), FFTs and complex Vandermonde powers lose all accuracy in a half
dtype: a bf16 mantissa holds 8 bits. `full_precision` wraps a kernel so that its floating inputs are
promoted to a common dtype of at least float32 (float64 stays float64, complex inputs get the matching
complex dtype) and autocast is switched off inside it; its outputs come back in that dtype, and the
projections around the kernel keep running in the autocast dtype.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor

COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """The common real dtype of ``tensors``' floating and complex entries, at least float32."""
    dtype = torch.float32
    for t in tensors:
        if isinstance(t, Tensor) and (t.is_floating_point() or t.is_complex()):
            real = t.real.dtype if t.is_complex() else t.dtype
            dtype = torch.promote_types(dtype, real)
    return dtype


def _cast(x, dtype: torch.dtype):
    if not isinstance(x, Tensor):
        return x
    if x.is_complex():
        return x.to(COMPLEX_OF[dtype])
    return x.to(dtype) if x.is_floating_point() else x


def full_precision(fn: Callable) -> Callable:
    """``fn`` with autocast off and its tensor arguments cast to their `compute_dtype`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, Tensor)]
        dtype = compute_dtype(*tensors)
        device = tensors[0].device.type if tensors else "cpu"
        with torch.autocast(device, enabled=False):
            return fn(*(_cast(a, dtype) for a in args), **{k: _cast(v, dtype) for k, v in kwargs.items()})
    return wrapper
