"""The block contract: a `Block` is an ``nn.Module`` with a config schema and typed ports."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Optional, Protocol, runtime_checkable

from omegaconf import MISSING
from torch import Tensor, nn

from ..seq import Seq
from ..solvers import ODESolver, SolverConfig

PORTS = ("irregular", "tokens", "sequence", "pooled")


def choice(default: str, *choices: str) -> Any:
    """A string config field restricted to ``choices`` (checked at validation, with suggestions)."""
    options = (default, *[c for c in choices if c != default])
    return field(default=default, metadata={"choices": options})


class Block(nn.Module):
    """Base class of every block.

    Subclasses define a nested ``@dataclass Config`` (the YAML schema: types, defaults, ``MISSING`` for
    required values), the ports ``accepts`` / ``produces`` (``"irregular"`` | ``"tokens"`` |
    ``"sequence"`` | ``"pooled"``) and ``forward(seq) -> Seq``. The assembler injects ``d_model`` (the
    incoming stream width) and, for encoders, ``d_in`` (input channels; ``vocab`` for a ``"tokens"``
    encoder) into Config fields of those names. A block whose
    output width differs from ``d_model`` overrides `out_width`.

    Optional class attributes: ``example`` (config values that make a small valid instance, used by
    conformance checks and ``hybridseq blocks``); ``compile_safe`` (False if ``torch.compile`` cannot
    trace it). Instances may set ``impl`` (the implementation chosen, shown by ``describe``).

    The constructor receives the validated ``Config`` instance; it may call ``super().__init__()`` with
    or without it, and the assembler attaches it as ``self.cfg`` either way (`build`).
    """

    @dataclass
    class Config:
        d_model: int = MISSING

    accepts: ClassVar[str] = "sequence"
    produces: ClassVar[str] = "sequence"
    example: ClassVar[dict] = {}
    compile_safe: ClassVar[bool] = True
    impl: str = "torch"

    def __init__(self, cfg=None):
        super().__init__()
        self.cfg = cfg

    @classmethod
    def build(cls, cfg) -> "Block":
        """``cls(cfg)`` with ``cfg`` attached, also when the constructor called ``super().__init__()``
        without it, as with any ``nn.Module``."""
        block = cls(cfg)
        if getattr(block, "cfg", None) is None:
            block.cfg = cfg
        return block

    @classmethod
    def out_width(cls, cfg) -> int:
        """Width of ``forward``'s output ``x`` given the validated config."""
        return cfg.d_model

    def stats(self) -> dict:
        """Per-forward statistics shown by ``describe`` and logged in training (e.g. ``{"nfe": 26}``)."""
        return {}

    def reset_stats(self) -> None:
        """Start the statistics of a new forward (the model calls it on every block before each forward)."""

    def aux_loss(self):
        """A scalar loss term of the last forward that training adds to the task's loss (e.g. an
        observation likelihood), or None. A block that has one computes it in ``forward``."""
        return None

    def forward(self, seq: Seq) -> Seq:  # pragma: no cover - abstract
        raise NotImplementedError


class PositionWise:
    """Mixin for a block whose output at a position depends on that position's input alone (a norm, an
    MLP, a per-position head): it runs step by step, for generation, through its own ``forward`` on a
    sequence of one position. Blocks that mix positions implement `allocate_state` / `step` themselves."""

    def allocate_state(self, batch_size: int, device=None, dtype=None) -> None:
        return None

    def step(self, x_t: Tensor, state: None, gap: Tensor | None = None) -> tuple[Tensor, None]:
        """x_t [B, D] -> (y_t [B, D_out], None)."""
        return self.forward(Seq(x=x_t.unsqueeze(1))).x.squeeze(1), state


class ODEBlock(Block):
    """Base class of blocks that integrate an ODE with a registered solver.

    The Config holds ``solver: SolverConfig``; the constructor builds ``self.solver`` (an `ODESolver`)
    from `solver_config`, which a subclass may override to add options derived from its own config.
    `stats` reports the function evaluations (NFE) of the last forward and its backward, and
    `reset_stats` zeroes them. ``compile_safe`` is False by default (adaptive step control and loops over
    observation intervals depend on the data); a block whose solve traces under ``torch.compile``
    declares True.
    """

    compile_safe: ClassVar[bool] = False

    def __init__(self, cfg=None):
        super().__init__(cfg)
        self.solver = ODESolver(self.solver_config(cfg))

    def solver_config(self, cfg) -> SolverConfig:
        """The solver settings of ``cfg``: ``cfg.solver``."""
        return cfg.solver

    def stats(self) -> dict:
        return {"nfe": self.solver.nfe}

    def reset_stats(self) -> None:
        self.solver.reset()


@dataclass
class DepthMap:
    """A continuous-depth head's map from its input to its output on one batch, for analysis.

    Either ``steps`` discrete steps ``step(i, x) -> x`` (one per layer), or a ``field(t, x)`` whose flow
    over depth t ∈ [0, 1] the caller integrates with a step count of its choice.
    """

    x0: Tensor                                 # [B, L, D] the state at depth 0
    valid: Tensor                              # [B, L, 1] bool, the positions that count
    step: Optional[Callable] = None
    steps: int = 0
    field: Optional[Callable] = None


@runtime_checkable
class ContinuousDepth(Protocol):
    """What a continuous-depth head offers the analysis (`hybridseq.analysis`): its attention maps along
    depth and its depth map on an input. Heads implement it without naming it."""

    def attention_along_depth(self, times: int) -> tuple[int, list[tuple[float, Tensor, Tensor]]]:
        """``(heads, [(t, qkv_weight [3D, D], out_weight [D, D]), ...])`` along depth t ∈ [0, 1]."""

    def depth_map(self, seq: Seq) -> DepthMap:
        """The map that carries ``seq.x`` through depth."""
