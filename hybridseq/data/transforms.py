"""Transforms on one series sample (a dict of tensors): the irregular-sampling protocols and rescaling.

The drop protocols of the irregular UEA benchmarks remove a fraction f of the time points of every series
at random, with the counting of the authors' code (``floor`` of the float product, as Python's ``int``):
- `drop_points` (ContiFormer, Chen et al. 2023): a series of N points loses ⌊N·f⌋ of its own points;
- `drop_grid_points` (Neural CDE, Kidger et al. 2020): every series is seen on the grid of the longest
  one, L points, and loses ⌊L·f⌋ grid positions drawn by ``randperm(L)``; a shorter series keeps its
  points at the positions not drawn, so its count varies.
``drop_channels`` further hides single (time, channel) entries. All draw from a ``torch.Generator`` the
caller seeds, so the same seed gives the same data.
"""
from __future__ import annotations

import torch
from torch import Tensor

QUERY_KEYS = ("query_times", "query_values", "query_mask")


def sample(values: Tensor, times: Tensor, **targets) -> dict:
    """A sample from values [N, C] with NaN where missing and times [N]; rows with nothing observed go."""
    mask = ~torch.isnan(values)                                   # [N, C]
    keep = mask.any(1)
    out = {"values": torch.nan_to_num(values, nan=0.0)[keep].float(), "times": times[keep].float(),
           "mask": mask[keep]}
    out.update(targets)
    return out


def _select(s: dict, rows: Tensor) -> dict:
    out = dict(s)
    for key in ("values", "times", "mask"):
        out[key] = s[key][rows]
    return out


def dropped_count(n: int, fraction: float) -> int:
    """⌊n·f⌋ computed as the authors' code does (``int`` of the float product)."""
    return int(n * fraction)


def drop_points(s: dict, fraction: float, generator: torch.Generator) -> dict:
    """Remove ⌊N·f⌋ of the N time points, chosen at random (at least one point stays); order is kept."""
    n = s["times"].shape[0]
    keep = max(1, n - dropped_count(n, fraction))
    rows = torch.randperm(n, generator=generator)[:keep].sort().values
    return _select(s, rows)


def drop_grid_points(s: dict, fraction: float, grid: int, generator: torch.Generator) -> dict:
    """Remove the positions ``randperm(grid)[:⌊grid·f⌋]`` from a series of N ≤ ``grid`` points.

    Positions ≥ N (the padded tail of the authors' arrays) remove nothing. A series that would lose every
    point keeps its last one (the value the padded tail carries)."""
    n = s["times"].shape[0]
    removed = torch.randperm(grid, generator=generator)[:dropped_count(grid, fraction)]
    keep = torch.ones(grid, dtype=torch.bool)
    keep[removed] = False
    rows = keep[:n].nonzero().squeeze(1)
    return _select(s, rows if rows.numel() else torch.tensor([n - 1]))


def drop_channels(s: dict, fraction: float, generator: torch.Generator) -> dict:
    """Hide each observed (time, channel) entry with probability ``fraction``; drop emptied time points.

    At least one entry stays observed."""
    mask = s["mask"]
    hide = torch.rand(mask.shape, generator=generator) < fraction
    new = mask & ~hide
    if not new.any():
        first = mask.flatten().nonzero()[0]
        new.view(-1)[first] = True
    out = dict(s, mask=new, values=torch.where(new, s["values"], torch.zeros_like(s["values"])))
    return _select(out, new.any(1).nonzero().squeeze(1))


def rescale_times(s: dict, offset: float, scale: float) -> dict:
    """Map observation and query times t -> (t - offset) / scale."""
    out = dict(s, times=(s["times"] - offset) / scale)
    if "query_times" in s:
        out["query_times"] = (s["query_times"] - offset) / scale
    return out


def standardise(s: dict, mean: Tensor, std: Tensor) -> dict:
    """Standardise observed values (and query values) per channel; unobserved entries stay 0."""
    out = dict(s, values=torch.where(s["mask"], (s["values"] - mean) / std, torch.zeros_like(s["values"])))
    if "query_values" in s:
        q = s["query_values"]
        out["query_values"] = torch.where(s["query_mask"], (q - mean) / std, torch.zeros_like(q))
    return out


def channel_stats(samples: list[dict]) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std [C] over the observed entries of ``samples`` (std 1 where degenerate).

    Computed in float64: squares of float32 values above ~1e19 overflow float32, which would zero the
    whole channel after standardisation."""
    values = torch.cat([s["values"] for s in samples]).double()  # [sum N, C]
    mask = torch.cat([s["mask"] for s in samples]).double()
    count = mask.sum(0).clamp_min(1.0)
    mean = (values * mask).sum(0) / count
    var = (((values - mean) * mask) ** 2).sum(0) / count
    std = var.sqrt()
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    return mean.float(), std.float()
