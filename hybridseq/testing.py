"""Helpers for testing blocks and plugins (used by hybridseq's own tests and by plugin authors).

``register_plugin`` registers a plugin object for the span of a ``with`` block; ``check_block`` runs the
block conformance checks: output shape, no NaN, gradients reach every parameter, state_dict round trip, and
padding invariance (changing padded values, or values of unobserved channels, changes no valid output); a
sequence block with a step mode (``allocate_state`` / ``step``, used for generation) must give its full
pass's outputs one position at a time, on a regular grid. With ``autocast=torch.bfloat16`` (or
``torch.float16``) it checks mixed precision instead, as the trainer runs it: forward under
``torch.autocast``, backward outside it; outputs and gradients must be finite, gradients must reach every
parameter, and the output must stay within ``AUTOCAST_TOL`` (relative L2 error over valid outputs) of the
same module's float32 output.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import fields

import torch
from torch import Tensor

from . import plugins, registry
from .schema import build_config
from .seq import IrregularBatch, Seq, TokenBatch


@contextlib.contextmanager
def register_plugin(plugin, name: str | None = None):
    """Register ``plugin`` (a module, class or object with ``@hookimpl`` functions) until the block exits.

    Yields its `PluginInfo` (what it registered, any errors).
    """
    plugins.load()
    name = name or getattr(plugin, "__name__", None) or f"plugin-{id(plugin)}"
    try:
        yield plugins.add_plugin(plugin, name)
    finally:
        plugins.remove_plugin(name)


def block_config(block, overrides: dict | None = None, *, d_model: int = 8, d_in: int = 3):
    """The block class and a validated small config: injected widths, then ``example``, then overrides."""
    cls = registry.blocks.get(block, "type") if isinstance(block, str) else block
    names = {f.name for f in fields(cls.Config)}
    injected = (("d_model", d_model), ("vocab" if cls.accepts == "tokens" else "d_in", d_in))
    values = {k: v for k, v in injected if k in names}
    values.update(copy.deepcopy(cls.example))
    values.update(overrides or {})
    return cls, build_config(cls.Config, values, getattr(cls, "__name__", "block"))


def example_input(cls, cfg, *, batch: int = 3, length: int = 9, queries: int = 4, seed: int = 0):
    """A padded input for block ``cls``: an `IrregularBatch` for encoders, a `TokenBatch` (ids below
    ``cfg.vocab``) for token encoders, else a `Seq`.

    The second series is 3 steps shorter (padding), times are increasing and irregular, and about a
    third of the channel observations are missing. Query times run to 1.25× each series' last time, so a
    query head meets both interpolation and extrapolation queries.
    """
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([length, length - 3, length - 1][:batch] + [length] * max(0, batch - 3))
    valid = torch.arange(length)[None, :] < lengths[:, None]                     # [B, L]
    times = torch.cumsum(0.05 + torch.rand(batch, length, generator=g), dim=1)    # [B, L]
    query_t = torch.sort(torch.rand(batch, queries, generator=g) * 1.25 * times[:, -1:], dim=1).values
    if cls.accepts == "tokens":
        return TokenBatch(torch.randint(0, cfg.vocab, (batch, length), generator=g), lengths, times)
    if cls.accepts == "irregular":
        values = torch.randn(batch, length, cfg.d_in, generator=g)
        mask = (torch.rand(batch, length, cfg.d_in, generator=g) > 0.33) & valid[..., None]
        mask[:, 0] |= valid[:, :1]                                                # each series sees step 0
        return IrregularBatch(values, times, mask, lengths, query_times=query_t)
    return Seq(x=torch.randn(batch, length, cfg.d_model, generator=g), t=times, mask=valid, query_t=query_t)


def perturb_padding(inp, seed: int = 1):
    """A copy of ``inp`` whose padded positions (and unobserved channel values) hold other numbers."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(inp, TokenBatch):
        other = torch.randint(0, int(inp.tokens.max()) + 1, inp.tokens.shape, generator=g)
        return TokenBatch(torch.where(inp.valid, inp.tokens, other), inp.lengths, inp.times)
    if isinstance(inp, IrregularBatch):
        hidden = ~inp.mask                                                        # [B, N, C]
        noise = 10 * torch.randn(inp.values.shape, generator=g)
        return IrregularBatch(torch.where(hidden, noise, inp.values), inp.times, inp.mask, inp.lengths,
                              inp.query_times)
    pad = ~inp.valid()[..., None]                                                 # [B, L, 1]
    noise = 10 * torch.randn(inp.x.shape, generator=g)
    return Seq(x=torch.where(pad, noise, inp.x), t=inp.t, mask=inp.mask, query_t=inp.query_t)


def _valid_part(out: Seq) -> Tensor:
    if out.x.dim() == 2 or out.mask is None:
        return out.x
    return out.x[out.mask]


def check_block(block, overrides: dict | None = None, *, d_model: int = 8, d_in: int = 3, seed: int = 0,
                atol: float = 1e-5, rtol: float = 1e-4, autocast: torch.dtype | None = None,
                device: str = "cpu") -> Seq:
    """Run the conformance checks on ``block`` (a registered name or a `Block` class); raise on failure.

    ``autocast``: a half dtype to run the mixed-precision checks on ``device`` instead (module docstring).
    Returns the output of the first forward pass for further checks by the caller.
    """
    cls, cfg = block_config(block, overrides, d_model=d_model, d_in=d_in)
    name = getattr(cls, "__name__", str(block))
    torch.manual_seed(seed)
    module = cls.build(cfg)
    inp = example_input(cls, cfg, seed=seed)
    if autocast is not None:
        return _check_autocast(name, module.to(device), inp.to(device), autocast, seed)
    batch = inp.x.shape[0] if isinstance(inp, Seq) else inp.lengths.shape[0]

    out = module(inp)
    assert isinstance(out, Seq), f"{name}.forward must return a Seq, got {type(out).__name__}"
    width = cls.out_width(cfg)
    assert out.x.shape[0] == batch and out.x.shape[-1] == width, (
        f"{name}: output shape {tuple(out.x.shape)}, expected batch {batch} and width {width}")
    if cls.produces == "pooled":
        assert out.x.dim() == 2, f"{name} produces 'pooled' so x must be [B, D], got {tuple(out.x.shape)}"
    else:
        assert out.x.dim() == 3, f"{name} produces 'sequence' so x must be [B, L, D], got {tuple(out.x.shape)}"
    assert torch.isfinite(_valid_part(out)).all(), f"{name}: non-finite values in valid outputs"

    weights = torch.randn(_valid_part(out).shape, generator=torch.Generator().manual_seed(seed))
    (_valid_part(out) * weights).sum().backward()
    params = dict(module.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient reached parameters {missing}"
    bad = [n for n, p in params.items() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients in {bad}"

    module.eval()
    with torch.no_grad():
        reference = module(inp)
        torch.manual_seed(seed + 1)
        twin = cls.build(cfg).eval()
        twin.load_state_dict(module.state_dict())
        torch.testing.assert_close(twin(inp).x, reference.x, atol=atol, rtol=rtol,
                                   msg=lambda m: f"{name}: state_dict round trip changed outputs\n{m}")
        moved = module(perturb_padding(inp, seed + 1))
        torch.testing.assert_close(_valid_part(moved), _valid_part(reference), atol=atol, rtol=rtol,
                                   msg=lambda m: f"{name}: padded or unobserved values changed valid outputs\n{m}")
        if cls.accepts == cls.produces == "sequence" and callable(getattr(module, "step", None)):
            _check_step(name, module, inp.x, atol, rtol)
    return out


def _check_step(name: str, module, x: Tensor, atol: float, rtol: float) -> None:
    """Stepping through x [B, L, D] gives the full pass on a regular grid without padding (a setting that
    has no step mode, e.g. bidirectional, raises RuntimeError from ``allocate_state`` and is skipped)."""
    try:
        state = module.allocate_state(x.shape[0])
    except RuntimeError:
        return
    outs = []
    for i in range(x.shape[1]):
        y, state = module.step(x[:, i], state)
        outs.append(y)
    torch.testing.assert_close(torch.stack(outs, 1), module(Seq(x=x)).x, atol=atol, rtol=rtol,
                               msg=lambda m: f"{name}: step-by-step outputs differ from the full pass\n{m}")


AUTOCAST_TOL = {torch.bfloat16: 0.05, torch.float16: 0.01}   # relative L2 error vs float32 (8 / 11 bit mantissas)


def _grads_ok(name: str, module, where: str) -> None:
    params = dict(module.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient reached parameters {missing}{where}"
    bad = [n for n, p in params.items() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients in {bad}{where}"


def _check_autocast(name: str, module, inp, dtype: torch.dtype, seed: int) -> Seq:
    """Forward under autocast (backward outside it) against the float32 forward of the same module."""
    where = f" under {dtype} autocast"
    module.eval()                                                  # same dropout-free function both times
    with torch.no_grad():
        reference = _valid_part(module(inp)).float()
    device = reference.device.type
    with torch.autocast(device, dtype=dtype):
        out = module(inp)
    got = _valid_part(out)
    assert torch.isfinite(got).all(), f"{name}: non-finite values in valid outputs{where}"
    err = float((got.float() - reference).norm() / reference.norm().clamp_min(1e-12))
    assert err <= AUTOCAST_TOL[dtype], (f"{name}: output differs from float32 by {err:.3g} (relative L2){where}, "
                                        f"more than {AUTOCAST_TOL[dtype]}")
    weights = torch.randn(got.shape, generator=torch.Generator().manual_seed(seed)).to(got.device)
    (got.float() * weights).sum().backward()
    _grads_ok(name, module, where)
    return out


__all__ = ["AUTOCAST_TOL", "block_config", "check_block", "example_input", "perturb_padding", "register_plugin"]
