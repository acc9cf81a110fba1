"""Dynamics of continuous-depth heads: attention spectra along depth and Lyapunov exponents of the flow.

``analyze(model, batch)`` finds every continuous-depth node of a `HybridModel` (a block implementing
`hybridseq.blocks.base.ContinuousDepth`, as `ode_transformer` and `neural_ode_transformer` do), records
the sequence each receives on ``batch``, and returns per node the eigenvalue spectra of W_Q W_Kᵀ and
W_V W_O per head along depth (`spectra`) and the top-k Lyapunov exponents of its depth map on that input
(`lyapunov`). ``write_report`` saves them as JSON and PNG plots. The ``hybridseq analyze`` command
(`hybridseq.commands.analyze`) runs both on a saved run.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..blocks.base import ContinuousDepth
from ..io import atomic_write_text, to_json
from .lyapunov import lyapunov_exponents, rk4_map
from .plots import plot_lyapunov, plot_spectra
from .spectra import spectra


def head_inputs(model, batch) -> dict:
    """The `Seq` each continuous-depth node of ``model`` receives when it runs on ``batch``."""
    seen, hooks = {}, []

    def record(name):
        def hook(module, args):
            seen.setdefault(name, args[0])
        return hook

    for name, block in model.nodes.items():
        if isinstance(block, ContinuousDepth):
            hooks.append(block.register_forward_pre_hook(record(name)))
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def block_lyapunov(block: ContinuousDepth, seq, k: int, steps: int) -> dict:
    """Top-k Lyapunov exponents (per unit depth) of the block's depth map on input ``seq``; a flow is
    integrated with ``steps`` RK4 steps, discrete layers take one step each."""
    m = block.depth_map(seq)
    step, count = (rk4_map(m.field, steps), steps) if m.field is not None else (m.step, m.steps)
    exps = lyapunov_exponents(step, m.x0, count, k, total_time=1.0, mask=m.valid)  # [B, k]
    return {"per_sample": exps.tolist(), "mean": exps.mean(0).tolist(), "steps": count}


def analyze(model, batch, *, times: int = 9, topk: int = 4, steps: int = 32) -> dict:
    """Spectra and Lyapunov exponents of every continuous-depth node: ``{node: {...}}``."""
    model.eval()
    result = {}
    for name, seq in head_inputs(model, batch).items():
        block = model.nodes[name]
        with torch.no_grad():
            spec = spectra(block, times)
        result[name] = {"type": type(block).__name__, "spectra": spec,
                        "lyapunov": block_lyapunov(block, seq, topk, steps)}
    return result


def write_report(result: dict, out_dir) -> list[Path]:
    """``analysis.json`` plus ``<node>_spectra.png`` and ``<node>_lyapunov.png`` per node."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "analysis.json"]
    atomic_write_text(written[0], to_json(result, indent=1))
    for name, node in result.items():
        written.append(plot_spectra(node["spectra"], out / f"{name}_spectra.png", f"{name} ({node['type']})"))
        written.append(plot_lyapunov(node["lyapunov"], out / f"{name}_lyapunov.png", f"{name}: Lyapunov exponents"))
    return written


__all__ = ["analyze", "head_inputs", "lyapunov_exponents", "rk4_map", "spectra", "write_report"]
