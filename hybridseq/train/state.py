"""Resumable training state: the last-epoch checkpoint (model, optimizer, scheduler, counters, RNG states).

The state file (``last.pt``, named by `RunDir`) is rewritten atomically at the end of every epoch, so a
kill at any moment leaves the previous epoch's state or the new one. It holds plain tensors and
containers only and loads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import io
import random
import resource
import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..io import atomic_write_bytes


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors and plain containers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": list(random.getstate()[1]) + [random.getstate()[2]],
             "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((3, tuple(py[:-1]), py[-1]))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path, state: dict) -> Path:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_state(path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:          # truncated, tampered or not a torch file at all
        raise ConfigError(str(path), f"cannot load the saved training state ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else 'unreadable'}); remove it to start "
                          "the run again, or choose another --out") from None


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory in MiB and what it measures: CUDA ``max_memory_allocated`` since the last reset on a
    GPU; on CPU the process's peak resident set size (``getrusage``, monotone over the process life)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_peak_rss"
