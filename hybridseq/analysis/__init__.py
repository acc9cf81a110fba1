"""Dynamics of continuous-depth heads: attention spectra along depth and Lyapunov exponents of the flow.

``analyze(model, batch)`` finds every continuous-depth node of a `HybridModel` (a block implementing
`hybridseq.blocks.base.ContinuousDepth`, as `ode_transformer` and `neural_ode_transformer` do) and every
`pde_attention` node, records the sequence each receives on ``batch``, and returns per node its token
sensitivity map (`sensitivity`); for `pde_attention` its learned coefficients and attention maps; for
the continuous-depth heads the eigenvalue spectra of W_Q W_Kᵀ and W_V W_O per head along depth, with the
feed-forward singular values where the head offers them (`spectra`), and the top-k Lyapunov exponents
of its depth map on that input (`lyapunov`: finite-time exponents log σ_i(∂x(1)/∂x(0)) by default, or
Benettin's asymptotic estimate with ``lyapunov="benettin"``). ``write_report`` saves them as JSON and
PNG plots. The ``hybridseq analyze`` command (`hybridseq.commands.analyze`) runs them on a saved run.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..blocks.base import ContinuousDepth
from ..blocks.heads.pde_attention import PDEAttention
from ..io import atomic_write_text, to_json
from .lyapunov import compose, ftle, jacobian, lyapunov_exponents, rk4_map
from .plots import plot_lyapunov, plot_pde, plot_sensitivity, plot_spectra
from .sensitivity import block_sensitivity, pde_summary, token_sensitivity
from .spectra import spectra

ANALYSED = (ContinuousDepth, PDEAttention)


def head_inputs(model, batch) -> dict:
    """The `Seq` each analysed node (continuous-depth heads, `pde_attention`) receives on ``batch``."""
    seen, hooks = {}, []

    def record(name):
        def hook(module, args):
            seen.setdefault(name, args[0])
        return hook

    for name, block in model.nodes.items():
        if isinstance(block, ANALYSED):
            hooks.append(block.register_forward_pre_hook(record(name)))
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def block_lyapunov(block: ContinuousDepth, seq, k: int, steps: int, method: str = "ftle") -> dict:
    """Top-k Lyapunov exponents (per unit depth, depth T = 1) of the block's depth map on input ``seq``; a
    flow is integrated with ``steps`` RK4 steps, discrete layers take one step each.

    ``method``: ``ftle`` (finite-time exponents of x(0) ↦ x(1)) or ``benettin`` (QR iteration over the
    same steps, an estimate of the asymptotic exponents)."""
    m = block.depth_map(seq)
    step, count = (rk4_map(m.field, steps), steps) if m.field is not None else (m.step, m.steps)
    if method == "ftle":
        exps = ftle(compose(step, count), m.x0, k, time=1.0, mask=m.valid)    # [B, k]
    elif method == "benettin":
        exps = lyapunov_exponents(step, m.x0, count, k, total_time=1.0, mask=m.valid)
    else:
        raise ValueError(f"lyapunov={method!r}: expected 'ftle' or 'benettin'")
    return {"per_sample": exps.tolist(), "mean": exps.mean(0).tolist(), "steps": count, "method": method}


def analyze(model, batch, *, times: int = 9, topk: int = 4, steps: int = 32, lyapunov: str = "ftle") -> dict:
    """Per analysed node ``{node: {...}}``: the token sensitivity map of its first sample; for continuous-depth
    heads the spectra and Lyapunov exponents; for `pde_attention` its coefficients (and attention maps)."""
    model.eval()
    result = {}
    for name, seq in head_inputs(model, batch).items():
        block = model.nodes[name]
        node = {"type": type(block).__name__, "sensitivity": block_sensitivity(block, seq)}
        if isinstance(block, PDEAttention):
            node["pde"] = pde_summary(block, seq)
        else:
            with torch.no_grad():
                node["spectra"] = spectra(block, times)
            node["lyapunov"] = block_lyapunov(block, seq, topk, steps, lyapunov)
        result[name] = node
    return result


def write_report(result: dict, out_dir) -> list[Path]:
    """``analysis.json`` plus per node ``<node>_sensitivity.png`` and ``<node>_spectra.png`` +
    ``<node>_lyapunov.png`` (continuous depth) or ``<node>_pde.png`` (`pde_attention`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "analysis.json"]
    atomic_write_text(written[0], to_json(result, indent=1))
    for name, node in result.items():
        title = f"{name} ({node['type']})"
        written.append(plot_sensitivity(node["sensitivity"], out / f"{name}_sensitivity.png", title))
        if "pde" in node:
            written.append(plot_pde(node["pde"], out / f"{name}_pde.png", title))
        else:
            written.append(plot_spectra(node["spectra"], out / f"{name}_spectra.png", title))
            written.append(plot_lyapunov(node["lyapunov"], out / f"{name}_lyapunov.png", f"{name}: Lyapunov exponents"))
    return written


__all__ = ["analyze", "compose", "ftle", "head_inputs", "jacobian", "lyapunov_exponents", "rk4_map", "spectra",
           "token_sensitivity", "write_report"]
