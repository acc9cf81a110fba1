"""The ``train:`` config section: its schema, validated with `build_config` (errors name ``train.<key>``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional

from omegaconf import DictConfig, OmegaConf

from ..blocks.base import choice
from ..errors import ConfigError
from ..loggers import check_names
from ..schema import build_config

DEFAULT_BATCH_SIZE = 32


@dataclass
class TrainConfig:
    epochs: int = 20                           # passes over the training split
    lr: float = 1.0e-3                         # AdamW learning rate
    weight_decay: float = 0.01
    batch_size: Optional[int] = None           # global batch; None = data.batch_size, else 32
    seed: int = 0                              # model init, shuffling, dropout
    patience: Optional[int] = None             # stop after this many epochs without improvement
    grad_clip: Optional[float] = 1.0           # max gradient norm; None = no clipping
    scheduler: str = choice("constant", "cosine")   # learning-rate schedule over all steps (benchmarks.md)
    device: str = "auto"                       # auto (cuda if available) | cpu | cuda | cuda:N
    compile: bool = False                      # torch.compile the model (blocks marked compile_safe)
    bf16: bool = True                          # bfloat16 autocast on CUDA (on CPU only with bf16_cpu)
    bf16_cpu: bool = False                     # with bf16, autocast on CPU too (slow without bf16 units)
    max_steps_per_epoch: Optional[int] = None  # cap on optimizer steps per epoch
    num_workers: int = 0                       # DataLoader worker processes
    monitor: Optional[str] = None              # validation metric to select on; None = the task's
    select: str = choice("auto", "best", "last")   # weights scored on test: the best validation epoch's or
    #                                            the last epoch's; auto = best when there is a validation split
    progress: bool = True                      # tqdm progress bar
    init_from: Optional[str] = None            # start from these weights: a run dir or a .safetensors file
    find_unused_parameters: bool = False       # DDP: let a step leave some parameters without gradient
    loggers: List[str] = field(default_factory=list)   # experiment loggers, e.g. [tensorboard] (training.md)

    def validate(self, path: str) -> None:
        if self.epochs < 1:
            raise ConfigError(f"{path}.epochs", f"must be >= 1, got {self.epochs}")
        for key in ("batch_size", "patience", "max_steps_per_epoch"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{path}.{key}", f"must be >= 1 or null, got {value}")
        if self.lr <= 0:
            raise ConfigError(f"{path}.lr", f"must be > 0, got {self.lr}")
        if self.num_workers < 0:
            raise ConfigError(f"{path}.num_workers", f"must be >= 0, got {self.num_workers}")
        check_names(self.loggers, f"{path}.loggers")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"{path}.device", f"invalid value {self.device!r}", choices=("auto", "cpu", "cuda"),
                              got=self.device)


def train_config(section, path: str = "train") -> TrainConfig:
    """Validate the ``train:`` section (DictConfig, dict or None) into a `TrainConfig`."""
    if section is None:
        section = {}
    if isinstance(section, DictConfig):
        section = OmegaConf.to_container(section, resolve=True)
    if not isinstance(section, dict):
        raise ConfigError(path, f"expected a mapping, got {type(section).__name__}")
    if isinstance(section.get("loggers"), str):              # `loggers: tensorboard` means the one logger
        section = {**section, "loggers": [section["loggers"]]}
    return build_config(TrainConfig, section, path, what="train")


def batch_size(tcfg: TrainConfig, data_cfg) -> int:
    """The global batch size: ``train.batch_size``, else ``data.batch_size``, else 32."""
    if tcfg.batch_size is not None:
        return tcfg.batch_size
    value = (data_cfg or {}).get("batch_size") if hasattr(data_cfg or {}, "get") else None
    return int(value) if value else DEFAULT_BATCH_SIZE


def as_dict(tcfg: TrainConfig) -> dict:
    return asdict(tcfg)

