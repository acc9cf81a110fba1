"""ContiFormer attention side by side: ours (one trajectory per key; closed-form linear dynamics) against
PhysioPro's formulation (every pair (i, j) its own trajectory) and a per-pair loop.

One attention layer, forward + backward, B series of T irregular times in [0, 1], d_model 32, 4 heads:

- ``ours mlp``: hybridseq's ``contiformer`` attention, neural key/value fields, rk4 one step per
  observation interval (the default), forward and backward sweeps; ``ours mlp checkpoint``: the same
  with ``checkpoint: true`` (each interval solved again in backward); ``ours mlp stream``: with
  ``stream: true`` (attention read out during the sweeps, backward re-solves: memory linear in T), and
  also with ``solver.method: midpoint`` (two field evaluations per interval instead of four: less
  accurate than rk4, still far more than PhysioPro's two-end rule); ``ours mlp adjoint``: with
  ``solver.adjoint: true``; ``ours linear``: ``dynamics: linear``, closed form, no solver.
- ``physiopro``: PhysioPro's ContiFormer attention at its shipped UEA settings, written independently
  here from its equations: the N² pair trajectories of keys and of values each solved over s ∈ [-1, 1]
  by rk4 with step 0.1 (20 steps) through torchdiffeq's adjoint, read at both ends ("bilinear": the
  score is a quarter of q_j·k_j(t_j) + q_i·k_j(t_i), the value the mean of v_j at both ends), its
  field sigmoid(LayerNorm(W y + b + u τ)) after a linear projection.
- ``per-pair loop``: our equations one pair at a time (the augmented key/value/integral state solved
  from t_j to t_i over the observation grid), only up to ``--pair-max`` points.

Columns: median seconds (interleaved repeats), the activation bytes autograd holds for backward (saved
tensors, parameters excluded; CUDA peak memory too on a GPU), the ratios to PhysioPro, and the relative
error of the interval means of the values against a dopri5 (rtol 1e-7) solve of the same trajectories.

    python bench/contiformer.py [--lengths 16 32 64 128 256] [--batch 8] [--repeats 3] [--device cpu]
    python bench/contiformer.py --quick       # smoke run: T = 8, one repeat
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _timing import interleaved, peak_saved_bytes  # noqa: E402

from hybridseq import build_block  # noqa: E402
from hybridseq.blocks.encoders.contiformer_paths import ODEDynamics, polyval, query_path  # noqa: E402
from hybridseq.solvers import ODESolver, SolverConfig  # noqa: E402

D_MODEL, HEADS = 32, 4
PHYSIOPRO_STEP = 0.1                 # its shipped atol_ode, used as the rk4 step over s ∈ [-1, 1]


class PhysioProField(nn.Module):
    """f(τ, y) = sigmoid(LayerNorm(W y + b + u τ)), u starting at 0 (its "concatnorm" layer)."""

    def __init__(self, d: int):
        super().__init__()
        self.lin, self.time, self.norm = nn.Linear(d, d), nn.Linear(1, d, bias=False), nn.LayerNorm(d, eps=1e-6)
        nn.init.zeros_(self.time.weight)

    def forward(self, tau, y):
        return torch.sigmoid(self.norm(self.lin(y) + self.time(tau[..., None])))


class _PairODE(nn.Module):
    """State (t_j, t_i, y) over s ∈ [-1, 1]: dy/ds = f(τ, y) (t_i - t_j) / 2, τ = t_j + (s + 1)(t_i - t_j) / 2."""

    def __init__(self, field):
        super().__init__()
        self.field = field

    def forward(self, s, state):
        t0, t1, y = state
        half = (t1 - t0) / 2
        return torch.zeros_like(t0), torch.zeros_like(t1), self.field(t0 + (s + 1) * half, y) * half[:, None]


class PhysioProAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        self.key_ode, self.value_ode = _PairODE(PhysioProField(d)), _PairODE(PhysioProField(d))

    def ends(self, ode, y, times, method="rk4", **options):
        """y_j at t_j and y_j(t_i) for every pair: 2 x [B, N_i, N_j, D]."""
        import torchdiffeq

        b, n, d = y.shape
        t0 = times[:, None, :].expand(b, n, n).reshape(-1)                  # t_j
        t1 = times[:, :, None].expand(b, n, n).reshape(-1)                  # t_i
        y0 = y[:, None].expand(b, n, n, d).reshape(-1, d)
        grid = torch.tensor([-1.0, 1.0], dtype=y.dtype, device=y.device)
        path = torchdiffeq.odeint_adjoint(ode, (t0, t1, y0), grid, method=method, **options)[2]
        return path[0].view(b, n, n, d), path[1].view(b, n, n, d)

    def forward(self, x, times, valid, step=PHYSIOPRO_STEP):
        b, n, d = x.shape
        e = d // self.heads
        q, k, v = self.q(x), self.k(x), self.v(x)
        options = {"options": {"step_size": step}}
        k_start, k_end = self.ends(self.key_ode, k, times, **options)
        v_start, v_end = self.ends(self.value_ode, v, times, **options)
        qh = q.view(b, n, self.heads, e)
        scores = 0.25 * (torch.einsum("bjhe,bijhe->bijh", qh, k_start.view(b, n, n, self.heads, e))
                         + torch.einsum("bihe,bijhe->bijh", qh, k_end.view(b, n, n, self.heads, e))) / e**0.5
        scores = scores.masked_fill(~valid[:, None, :, None], torch.finfo(x.dtype).min)
        values = (0.5 * (v_start + v_end)).view(b, n, n, self.heads, e)
        out = torch.einsum("bijh,bijhe->bihe", torch.softmax(scores, 2), values)
        return self.out(out.reshape(b, n, d))


class _PairState(nn.Module):
    """[k, v, ∫q·k per head, ∫v] [B, 3D + H] of one pair along real time τ, the query read on its interval."""

    def __init__(self, att, coeffs, times):
        super().__init__()
        self.att, self.coeffs, self.times = att, coeffs, times

    def forward(self, tau, y):
        d = self.coeffs.shape[2]
        k, v = y[:, :d], y[:, d:2 * d]
        m = (torch.searchsorted(self.times, tau.expand(self.times.shape[0], 1).contiguous(), right=True) - 1)
        m = m.clamp(0, self.coeffs.shape[1] - 1)[:, 0]                      # [B]: interval holding τ
        start, end = self.times.gather(1, m[:, None])[:, 0], self.times.gather(1, (m + 1)[:, None])[:, 0]
        sigma = ((tau - start) / (end - start).clamp_min(1e-12))[:, None, None]
        q = polyval(self.coeffs[torch.arange(len(m)), m], sigma[..., 0])     # [B, D]
        qk = (q * k).view(k.shape[0], self.att.heads, -1).sum(-1)
        dyn = self.att.dynamics
        return torch.cat([dyn.key(tau.expand(k.shape[0]), k), dyn.value(tau.expand(k.shape[0]), v), qk, v], -1)


def per_pair_forward(att, x, times, valid, solver):
    """Our attention computed pair by pair (batched over series only); times shared by the series."""
    b, n, d = x.shape
    q, k, v = att.q(x), att.k(x), att.v(x)
    coeffs = query_path(q, times, valid, att.query_kind)
    field = _PairState(att, coeffs, times)
    scores = x.new_zeros(b, n, n, att.heads)
    means = x.new_zeros(b, n, n, d)
    for i in range(n):
        for j in range(n):
            if i == j:
                scores[:, i, j] = (q[:, i] * k[:, j]).view(b, att.heads, -1).sum(-1)
                means[:, i, j] = v[:, j]
                continue
            grid = times[0, j:i + 1] if i > j else times[0, i:j + 1].flip(0)
            y0 = torch.cat([k[:, j], v[:, j], x.new_zeros(b, att.heads + d)], -1)
            y = solver(field, y0, grid)[-1]
            span = (times[:, i] - times[:, j])[:, None]
            scores[:, i, j] = y[:, 2 * d:2 * d + att.heads] / span
            means[:, i, j] = y[:, 2 * d + att.heads:] / span
    scores = (scores * att.scale).masked_fill(~valid[:, None, :, None], torch.finfo(x.dtype).min)
    out = torch.einsum("bijh,bijhe->bihe", torch.softmax(scores, 2), means.view(b, n, n, att.heads, -1))
    return att.out(out.reshape(b, n, d))


def value_means_error(means, exact):
    return ((means - exact).abs().max() / exact.abs().max()).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pair-max", type=int, default=16, help="longest T for the per-pair loop")
    parser.add_argument("--physiopro-max", type=int, default=256, help="longest T for PhysioPro's formulation")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run: T = 8, B = 2, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.batch, args.repeats, args.pair_max = [8], 2, 1, 8
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    blocks = {name: build_block("contiformer", d_in=3, d_model=D_MODEL, heads=HEADS, **over).to(device)
              for name, over in (("ours mlp", {}), ("ours mlp checkpoint", {"checkpoint": True}),
                                 ("ours mlp stream", {"stream": True}),
                                 ("ours mlp stream midpoint", {"stream": True, "solver": {"method": "midpoint"}}),
                                 ("ours mlp adjoint", {"solver": {"method": "rk4", "adjoint": True}}),
                                 ("ours linear", {"dynamics": "linear"}))}
    for name in ("ours mlp checkpoint", "ours mlp stream", "ours mlp stream midpoint", "ours mlp adjoint"):
        blocks[name].load_state_dict(blocks["ours mlp"].state_dict())
    physiopro = PhysioProAttention(D_MODEL, HEADS).to(device)
    tight = ODESolver(SolverConfig(method="dopri5", rtol=1e-7, atol=1e-9))
    print(f"B={args.batch}, d_model={D_MODEL}, {HEADS} heads, forward+backward of one attention layer, "
          f"{torch.get_num_threads()} thread(s), device {device}, median of {args.repeats}")
    print("| T | method | time (s) | saved for backward (MiB) | time / PhysioPro | memory / PhysioPro | "
          "value-mean error |")
    print("|---|---|---|---|---|---|---|")
    for n in args.lengths:
        g = torch.Generator().manual_seed(n)
        times = torch.sort(torch.rand(args.batch, n, generator=g), 1).values.to(device)
        if n <= args.pair_max:                                               # the loop needs shared times
            times = times[:1].expand(args.batch, n).contiguous()
        x = torch.randn(args.batch, n, D_MODEL, generator=g).to(device)
        valid = torch.ones(args.batch, n, dtype=torch.bool, device=device)
        fns = {name: (lambda b=b: b.layers[0].attention(x, times, valid, b.solver)) for name, b in blocks.items()}
        if n <= args.physiopro_max:
            fns["physiopro"] = lambda: physiopro(x, times, valid)
        if n <= args.pair_max:
            b = blocks["ours mlp"]
            fns["per-pair loop"] = lambda: per_pair_forward(b.layers[0].attention, x, times, valid, b.solver)
            with torch.no_grad():
                gap = (fns["per-pair loop"]() - fns["ours mlp"]()).abs().max().item()
            print(f"|   | per-pair loop vs ours mlp: max |difference| {gap:.1e} | | | | | |")
        errors = {}
        with torch.no_grad():
            for name, b in blocks.items():
                att = b.layers[0].attention
                exact = ODEDynamics(att.dynamics.key, att.dynamics.value) if name == "ours linear" else att.dynamics
                ref = exact.integrals(tight, query_path(att.q(x), times, valid, "hermite"), att.q(x), att.k(x),
                                      att.v(x), times, HEADS, False)[1]
                errors[name] = value_means_error(att.integrals(x, times, valid, b.solver)[1], ref)
            if "physiopro" in fns:
                v = physiopro.v(x)
                start, end = physiopro.ends(physiopro.value_ode, v, times, options={"step_size": PHYSIOPRO_STEP})
                solved = ODEDynamics(physiopro.value_ode.field, physiopro.value_ode.field)
                ref = solved.integrals(tight, query_path(v, times, valid, "linear"), v, v, v, times, HEADS, False)[1]
                errors["physiopro"] = value_means_error(0.5 * (start + end), ref)

        def step(fn):
            def run():
                fn().square().sum().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize()
            return run

        seconds = interleaved({name: step(fn) for name, fn in fns.items()}, repeats=args.repeats, warmup=1)
        params = [p for b in blocks.values() for p in b.parameters()] + list(physiopro.parameters())
        memory = {name: peak_saved_bytes(step(fn), params) for name, fn in fns.items()}
        base = "physiopro" if "physiopro" in fns else None
        for name in fns:
            ratio_t = f"{seconds[name] / seconds[base]:.3f}" if base else "-"
            ratio_m = f"{memory[name] / memory[base]:.3f}" if base else "-"
            err = f"{errors[name]:.1e}" if name in errors else "-"
            mib = memory[name] / 2**20
            print(f"| {n} | {name} | {seconds[name]:.3f} | {mib:.1f} | {ratio_t} | {ratio_m} | {err} |",
                  flush=True)


if __name__ == "__main__":
    main()
