"""Neural ODE Transformer (Tong et al., ICLR 2025, "Neural ODE Transformers: Analyzing Internal
Dynamics and Adaptive Fine-tuning").

A non-autonomous ODE over depth t ∈ [0, 1]:

    dx/dt = Attn_t(LN1_t(x)) + MLP_t(LN2_t(x))

where every weight, bias and norm parameter of the attention, the MLP and the norms is a function of t.
``hyper: qkvflow`` (default) is the authors' parameterisation: every linear layer generates its whole
matrix from its own time MLP of Fourier features [t, sin, cos] (`hyper.TemporalLayers`), the two
LayerNorms have weights 1 + h·f_w (zero-initialised), and a final (time-independent) LayerNorm follows the
flow; with ``solver: euler`` and ``steps: N`` this is their dt = 1/N Euler scheme. ``hyper: full |
lowrank`` share one time MLP across parameters (`hyper.HyperNet`) and use one LayerNorm for both
branches. The ODE is integrated by any registered solver (``solver:``, fixed-grid or adaptive,
optionally adjoint). ``steps`` makes fixed-grid solvers take that many equal steps over [0, 1] (adaptive
solvers choose their own): a model trained with N steps is evaluated with M by changing ``steps`` alone
(same state_dict). Only the final state is requested from the solver, so with ``adjoint: true`` the
memory kept for the backward pass does not grow with the number of steps.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import Tensor, nn

from ... import registry
from ...errors import ConfigError
from ...seq import Seq
from ...solvers import SolverConfig
from ..base import DepthMap, ODEBlock, choice
from ..layers import attention_mask, check_heads
from .hyper import HyperNet, TemporalLayers


def _initial_linears(d_model: int, hidden: int) -> dict[str, nn.Linear]:
    """The ordinary layers whose initial values start the generated ones."""
    return {"qkv": nn.Linear(d_model, 3 * d_model), "out": nn.Linear(d_model, d_model),
            "fc1": nn.Linear(d_model, hidden), "fc2": nn.Linear(hidden, d_model)}


def _initial_parameters(d_model: int, hidden: int) -> dict[str, Tensor]:
    """Base values θ0 (one shared norm), initialised as PyTorch initialises the ordinary layers."""
    out = {"norm_weight": torch.ones(d_model), "norm_bias": torch.zeros(d_model)}
    for name, lin in _initial_linears(d_model, hidden).items():
        out[f"{name}_weight"], out[f"{name}_bias"] = lin.weight, lin.bias
    return out


def _shared(d_model, hidden, cfg) -> HyperNet:
    return HyperNet(_initial_parameters(d_model, hidden), cfg.t_embed, cfg.hyper_hidden, cfg.hyper, cfg.rank)


def _qkvflow(d_model, hidden, cfg) -> TemporalLayers:
    weights = {n: lin.weight for n, lin in _initial_linears(d_model, hidden).items()}
    return TemporalLayers(weights, d_model, cfg.t_embed, cfg.hyper_hidden)


HYPERNETS = {"qkvflow": (_qkvflow, ("norm1", "norm2")), "full": (_shared, ("norm", "norm")),
             "lowrank": (_shared, ("norm", "norm"))}   # builder, (attention norm, MLP norm)


def field_update(p: dict[str, Tensor], x: Tensor, heads: int, mask: Tensor | None,
                 norms: tuple[str, str] = ("norm", "norm")) -> Tensor:
    """Attn(LN_a x) + MLP(LN_m x) with the parameters ``p``: x [B, L, D] -> [B, L, D]."""
    b, n, d = x.shape
    norm = lambda name: F.layer_norm(x, (d,), p[f"{name}_weight"], p[f"{name}_bias"])  # noqa: E731
    xa = norm(norms[0])
    xm = xa if norms[1] == norms[0] else norm(norms[1])
    q, k, v = F.linear(xa, p["qkv_weight"], p["qkv_bias"]).view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)                # [B, H, L, hd]
    a = F.linear(a.transpose(1, 2).reshape(b, n, d), p["out_weight"], p["out_bias"])
    m = F.linear(F.gelu(F.linear(xm, p["fc1_weight"], p["fc1_bias"])), p["fc2_weight"], p["fc2_bias"])
    return a + m


class DepthField(nn.Module):
    """The vector field f(t, x) of the depth ODE.

    ``mask`` (attention mask) and ``keep`` ([B, L, 1], valid positions) are set before each solve; padded
    positions have zero velocity, so adaptive solvers' error estimates see the valid positions only.
    """

    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.heads
        build, self.norms = HYPERNETS[cfg.hyper]
        self.hyper = build(cfg.d_model, int(cfg.mlp_ratio * cfg.d_model), cfg)
        self.mask: Tensor | None = None
        self.keep: Tensor | None = None

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        dx = field_update(self.hyper(t.to(x.dtype)), x, self.heads, self.mask, self.norms)
        return dx if self.keep is None else dx * self.keep


class NeuralODETransformer(ODEBlock):
    """A Transformer layer whose parameters depend on depth t, integrated from t=0 to t=1."""

    @dataclass
    class Config:
        d_model: int = MISSING        # stream width (injected)
        heads: int = 4                # attention heads; must divide d_model
        mlp_ratio: float = 4.0        # MLP hidden width as a multiple of d_model
        causal: bool = False          # position i attends to positions <= i only
        hyper: str = choice("qkvflow", "lowrank", "full")  # how the weights depend on t (see module docs)
        rank: int = 4                 # rank of the generated update of each matrix (hyper: lowrank)
        t_embed: int = 16             # qkvflow: frequencies K of [t, sin, cos] (2K+1 features); else sinusoids
        hyper_hidden: int = 20        # width of each time MLP (qkvflow: one per layer; else one shared)
        final_norm: Optional[bool] = None   # LayerNorm after the flow; None: on for qkvflow (as the paper)
        steps: Optional[int] = 4      # fixed-grid solvers: equal steps over [0, 1]; adaptive ones ignore it
        solver: SolverConfig = field(default_factory=lambda: SolverConfig(method="euler"))

        def validate(self, path: str) -> None:
            check_heads(self.d_model, self.heads, path)
            for key, low in (("rank", 1), ("hyper_hidden", 1), ("steps", 1), ("t_embed", 2)):
                value = getattr(self, key)
                if value is not None and value < low:
                    raise ConfigError(f"{path}.{key}", f"expected an integer >= {low}, got {value}")
            if self.steps is not None and self.solver.step_size is not None:
                raise ConfigError(f"{path}.steps", f"steps={self.steps} and solver.step_size="
                                  f"{self.solver.step_size} both set the grid; set steps: null or drop step_size")
            if self.t_embed % 2:
                raise ConfigError(f"{path}.t_embed", f"expected an even number, got {self.t_embed}")

    example = {"heads": 2, "mlp_ratio": 2.0, "rank": 2, "t_embed": 4, "hyper_hidden": 8, "steps": 2}
    compile_safe = True

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.field = DepthField(cfg)
        final = cfg.final_norm if cfg.final_norm is not None else cfg.hyper == "qkvflow"
        self.final_norm = nn.LayerNorm(cfg.d_model) if final else None

    def solver_config(self, cfg: Config) -> SolverConfig:
        """``steps`` equal steps: as a grid for solvers that take one, else as output times of a fixed-step
        solver; adaptive solvers integrate over the one interval [0, 1]."""
        record = registry.solvers.get(cfg.solver.method, "solver.method")   # what the solver declares
        self.output_steps = 1
        if cfg.steps is not None and record.takes("grid_constructor"):
            return replace(cfg.solver, options={**cfg.solver.options, "grid_constructor": self._grid})
        if cfg.steps is not None and record.fixed_grid:
            self.output_steps = cfg.steps
        return cfg.solver

    def _grid(self, func, y0, t: Tensor) -> Tensor:
        """``steps`` equal steps from t[0] to t[-1] (torchdiffeq's ``grid_constructor`` signature)."""
        return torch.linspace(float(t[0]), float(t[-1]), self.cfg.steps + 1, dtype=t.dtype, device=t.device)

    def times(self, device=None, dtype=torch.float32) -> Tensor:
        """Output times of the solve: [0, 1], or 0, 1/steps, …, 1 for a fixed-grid solver that takes no
        grid option (it then steps once per output time)."""
        return torch.linspace(0.0, 1.0, self.output_steps + 1, device=device, dtype=dtype)

    def weights_at(self, t: float) -> dict[str, Tensor]:
        """Every generated parameter at depth ``t`` (for analysis)."""
        ref = next(self.field.hyper.parameters())
        return self.field.hyper(torch.tensor(float(t), dtype=ref.dtype, device=ref.device))

    def forward(self, seq: Seq) -> Seq:
        x = seq.x                                                               # [B, L, D]
        keep = None if seq.mask is None else seq.mask[..., None].to(x.dtype)    # [B, L, 1]
        if keep is not None:
            x = torch.where(seq.mask[..., None], x, 0.0)
        # kept after the solve: an adjoint backward evaluates the field again
        self.field.mask = attention_mask(seq.mask, x.shape[1], self.cfg.causal, x.device)
        self.field.keep = keep
        x = self.solver(self.field, x, self.times(x.device, x.dtype))[-1]
        return replace(seq, x=x if self.final_norm is None else self.final_norm(x))

    def attention_along_depth(self, times: int) -> tuple[int, list[tuple[float, Tensor, Tensor]]]:
        """The generated attention weights at ``times`` depths spread evenly over [0, 1]."""
        out = []
        for t in torch.linspace(0, 1, times).tolist():
            p = self.weights_at(t)
            out.append((t, p["qkv_weight"], p["out_weight"]))
        return self.cfg.heads, out

    def feedforward_along_depth(self, times: int) -> list[tuple[float, Tensor, Tensor]]:
        """``[(t, fc1_weight [hidden, D], fc2_weight [D, hidden]), ...]`` at the same depths."""
        return [(t, p["fc1_weight"], p["fc2_weight"]) for t in torch.linspace(0, 1, times).tolist()
                for p in (self.weights_at(t),)]

    def depth_map(self, seq: Seq) -> DepthMap:
        x = seq.x.detach()                                                      # [B, L, D]
        valid = seq.valid()[..., None]                                          # [B, L, 1]
        self.field.mask = attention_mask(seq.mask, x.shape[1], self.cfg.causal, x.device)
        self.field.keep = valid.to(x.dtype)
        return DepthMap(torch.where(valid, x, 0.0), valid, field=self.field)
