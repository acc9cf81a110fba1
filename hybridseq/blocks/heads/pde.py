"""Pseudo-time PDE steppers along the last axis of a tensor (the sequence axis), used by `pde_attention`.

Every operator takes ``u [..., n]`` and a mask ``m`` (bool, broadcastable to ``u``) of the valid
positions; the domain is the valid positions, with zero-flux (Neumann) boundaries wherever a neighbour
is invalid, so padded values never reach valid ones. Non-causal operators are in flux form (they
conserve the sum over the valid positions); causal ones are one-sided (position i sees only i-1).

- `laplacian`:  (u_{i-1} - u_i) + (u_{i+1} - u_i); causal: u_{i-1} - u_i
- `advection`:  upwind flux form -(F_{i+1/2} - F_{i-1/2}), F_{i+1/2} = v⁺ u_i + v⁻ u_{i+1}; causal
  (v >= 0): v (u_{i-1} - u_i)
- `explicit`:   forward Euler in pseudo-time for diffusion, reaction–diffusion (`reaction`: ρ·tanh u or
  ρ·u·(1 - σ(u))) and advection–diffusion; the wave from rest by Störmer–Verlet (`wave`: symplectic
  Euler on u_tt = c² Δu with a velocity state, after a half kick)
- `diffusion_spectral`, `wave_spectral`: exact solutions (Neumann) through the DCT-II computed by FFT,
  for valid positions forming a prefix of each row; `split_reaction_diffusion`: Strang splitting of the
  exact diffusion and the reaction
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


def _shift(x: Tensor, by: int, fill) -> Tensor:
    """x moved along the last axis by ``by`` (+1: x_{i-1} at i; -1: x_{i+1} at i), ``fill`` at the end."""
    pad = torch.full_like(x[..., :1], fill)
    return torch.cat([pad, x[..., :-1]], -1) if by > 0 else torch.cat([x[..., 1:], pad], -1)


def _pairs(m: Tensor, dtype) -> tuple[Tensor, Tensor]:
    """Float masks (broadcastable to u) of the valid pairs (i-1, i) and (i, i+1)."""
    return (_shift(m, 1, False) & m).to(dtype), (_shift(m, -1, False) & m).to(dtype)


def _diffs(u: Tensor, pairs) -> tuple[Tensor, Tensor]:
    """(u_{i-1} - u_i, u_{i+1} - u_i) on valid pairs, else 0 (u must be finite: padding zeroed)."""
    return (_shift(u, 1, 0.0) - u) * pairs[0], (_shift(u, -1, 0.0) - u) * pairs[1]


def _laplacian(u: Tensor, pairs, causal: bool) -> Tensor:
    back, fwd = _diffs(u, pairs)
    return back if causal else back + fwd


def _advection(u: Tensor, pairs, v: Tensor, causal: bool) -> Tensor:
    if causal:
        return v * _diffs(u, pairs)[0]
    flux = (v.clamp(min=0) * u + v.clamp(max=0) * _shift(u, -1, 0.0)) * pairs[1]  # F_{i+1/2}
    return _shift(flux, 1, 0.0) - flux


def differences(u: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """(u_{i-1} - u_i, u_{i+1} - u_i), zero where the pair is not valid on both ends."""
    return _diffs(torch.where(m, u, 0.0), _pairs(m, u.dtype))


def laplacian(u: Tensor, m: Tensor, causal: bool = False) -> Tensor:
    return _laplacian(torch.where(m, u, 0.0), _pairs(m, u.dtype), causal)


def advection(u: Tensor, m: Tensor, v: Tensor, causal: bool = False) -> Tensor:
    """Upwind transport with velocity ``v`` (broadcastable to u; causal: v >= 0)."""
    return _advection(torch.where(m, u, 0.0), _pairs(m, u.dtype), v, causal)


def reaction(u: Tensor, rho: Tensor, kind: str) -> Tensor:
    """The reaction term: ``tanh`` ρ·tanh(u); ``logistic`` ρ·u·(1 - σ(u)) (Fisher–KPP-like)."""
    return rho * (torch.tanh(u) if kind == "tanh" else u * (1 - torch.sigmoid(u)))


def ends(m: Tensor) -> Tensor:
    """The first and last position of each valid stretch (a valid position with an invalid neighbour)."""
    return m & ~(_shift(m, 1, False) & _shift(m, -1, False))


def explicit(u: Tensor, m: Tensor, pde: str, coef: dict[str, Tensor], dt: float, steps: int,
             causal: bool = False, reaction_kind: str = "tanh", held: Tensor | None = None) -> Tensor:
    """``steps`` forward-Euler steps of size ``dt``; ``coef`` holds D, and rho (reaction) or v (advection).

    The wave starts at rest and runs Störmer–Verlet (`wave` after a half kick). Positions in ``held``
    (e.g. `ends`: Dirichlet ends kept at their initial values) and padded positions are returned
    unchanged."""
    free = 1.0 if held is None else (m & ~held).to(u.dtype)                   # 1 where a value may change
    if pde == "wave":
        half_kick = -0.5 * dt * coef["c"] ** 2 * laplacian(u, m, causal) * free  # w_{-1/2}: Verlet from rest
        return wave(u, half_kick, m, coef["c"], dt, steps, causal, free)[0]
    pairs, x = _pairs(m, u.dtype), torch.where(m, u, 0.0)
    for _ in range(steps):
        dx = coef["D"] * _laplacian(x, pairs, causal)
        if pde == "reaction_diffusion":
            dx = dx + reaction(x, coef["rho"], reaction_kind)
        elif pde == "advection_diffusion":
            dx = dx + _advection(x, pairs, coef["v"], causal)
        x = x + dt * dx if held is None else x + dt * dx * free
    return torch.where(m, x, u)


def _advection_adjoint(y: Tensor, pairs, v: Tensor) -> Tensor:
    """The transpose of `_advection` (non-causal): v⁺ (y_{i+1} - y_i) - v⁻ (y_{i-1} - y_i) on valid pairs."""
    back, fwd = _diffs(y, pairs)
    return v.clamp(min=0) * fwd - v.clamp(max=0) * back


def explicit_transpose(u: Tensor, m: Tensor, pde: str, coef: dict[str, Tensor], dt: float, steps: int) -> Tensor:
    """Eᵀ u for the linear map E of `explicit` (non-causal diffusion or advection–diffusion, nothing held):
    the same steps with the transposed operator (Δ is symmetric; advection's transpose is upwind the
    other way). Padded positions are returned unchanged."""
    pairs, x = _pairs(m, u.dtype), torch.where(m, u, 0.0)
    for _ in range(steps):
        dx = coef["D"] * _laplacian(x, pairs, False)
        if pde == "advection_diffusion":
            dx = dx + _advection_adjoint(x, pairs, coef["v"])
        x = x + dt * dx
    return torch.where(m, x, u)


def wave(u: Tensor, w: Tensor, m: Tensor, c: Tensor, dt: float, steps: int,
         causal: bool = False, free: Tensor | float = 1.0) -> tuple[Tensor, Tensor]:
    """Symplectic Euler for u_tt = c² Δu with velocity w: w += dt c² Δu, then u += dt w (stable for c·dt <= 1).

    Only positions where ``free`` is 1 accelerate. Padded positions of u are returned unchanged, those of
    w as zero."""
    pairs, x, w = _pairs(m, u.dtype), torch.where(m, u, 0.0), torch.where(m, w, 0.0)
    kick = c * c * dt * free                                                   # [.., 1 | n]
    for _ in range(steps):
        w = w + kick * _laplacian(x, pairs, causal)
        x = x + dt * w
    return torch.where(m, x, u), w


def dct2(x: Tensor) -> Tensor:
    """Unnormalised DCT-II along the last axis, X_k = Σ_j x_j cos(πk(2j+1)/2n), via an FFT of length 2n."""
    n = x.shape[-1]
    spectrum = torch.fft.rfft(torch.cat([x, x.flip(-1)], -1))[..., :n]         # [..., n] complex
    k = torch.arange(n, device=x.device, dtype=x.dtype)
    return (spectrum * torch.exp(-1j * math.pi * k / (2 * n))).real / 2


def idct2(X: Tensor) -> Tensor:
    """Inverse of `dct2` (a DCT-III), via an inverse FFT of length 2n."""
    n = X.shape[-1]
    k = torch.arange(n, device=X.device, dtype=X.dtype)
    spectrum = 2 * X * torch.exp(1j * math.pi * k / (2 * n))                   # [..., n]
    spectrum = torch.cat([spectrum, torch.zeros_like(spectrum[..., :1])], -1)  # [..., n+1], Y_n = 0
    return torch.fft.irfft(spectrum, n=2 * n)[..., :n]


def _modes(u: Tensor, m: Tensor, gain) -> Tensor:
    """u evolved mode by mode in the Neumann eigenbasis (DCT-II) of each row's valid prefix.

    ``gain(lam [n], rows [r]) -> [r, n]`` multiplies mode k of eigenvalue lam_k = 4 sin²(πk/2n) of -Δ.
    Rows are grouped by their number of valid positions; padded positions are returned unchanged."""
    shape = u.shape
    rows = u.reshape(-1, shape[-1])                                            # [R, n]
    valid = m.expand(shape).reshape(-1, shape[-1])                             # [R, n]
    lengths = valid.sum(-1)                                                    # [R]
    if not torch.equal(valid, torch.arange(shape[-1], device=u.device) < lengths[:, None]):
        raise ValueError("stepper: spectral needs the valid positions of each sequence to form a prefix "
                         "(padding at the end only); use stepper: explicit for masks with gaps")
    out = rows.clone()
    for n in lengths.unique().tolist():
        if n == 0:
            continue
        idx = (lengths == n).nonzero().squeeze(1)
        k = torch.arange(n, device=u.device, dtype=u.dtype)
        out[idx, :n] = idct2(dct2(rows[idx, :n]) * gain(4 * torch.sin(math.pi * k / (2 * n)) ** 2, idx))
    return out.reshape(shape)


def _per_row(coef: Tensor, shape) -> Tensor:
    """A coefficient broadcastable to ``shape`` (constant along the last axis) as one value per row: [R, 1]."""
    return coef.expand(shape)[..., :1].reshape(-1, 1)


def diffusion_spectral(u: Tensor, m: Tensor, D: Tensor, time: float) -> Tensor:
    """Exact solution at ``time`` of du/dt = D Δu on each row's valid prefix (Neumann ends)."""
    rates = _per_row(D, u.shape)
    return _modes(u, m, lambda lam, idx: torch.exp(-rates[idx] * lam * time))


def wave_spectral(u: Tensor, m: Tensor, c: Tensor, time: float) -> Tensor:
    """Exact solution at ``time`` of u_tt = c² Δu from rest (Neumann ends): mode k times cos(c T √lam_k)."""
    speed = _per_row(c, u.shape)
    return _modes(u, m, lambda lam, idx: torch.cos(speed[idx] * lam.sqrt() * time))


def split_reaction_diffusion(u: Tensor, m: Tensor, coef: dict[str, Tensor], time: float, steps: int,
                             reaction_kind: str = "tanh") -> Tensor:
    """Strang splitting of u_t = D Δu + r(u): half a reaction step (Heun), an exact diffusion step, half a
    reaction step, ``steps`` times; second order in time/steps, exact when r = 0."""
    dt = time / steps

    def react(x: Tensor, h: float) -> Tensor:
        k1 = reaction(x, coef["rho"], reaction_kind)
        k2 = reaction(x + h * k1, coef["rho"], reaction_kind)
        return torch.where(m, x + h / 2 * (k1 + k2), x)

    x = u
    for _ in range(steps):
        x = react(diffusion_spectral(react(x, dt / 2), m, coef["D"], dt), dt / 2)
    return x
