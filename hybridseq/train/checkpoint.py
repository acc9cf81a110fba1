"""Run directories: `RunDir` owns the name of every file in one, and reads and writes them.

A run directory holds ``config.yaml`` (the resolved config: task, widths from the data, every train
default), ``metrics.jsonl`` (one record per epoch), ``best.safetensors`` (the selected weights: the best
validation epoch's, or the last epoch's), ``last.pt`` (everything needed to resume), ``results.json``
(written when training ends) and ``eval_<split>.json`` (written by ``hybridseq evaluate``). Every file is
written atomically.
"""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..assemble import HybridModel, assemble
from ..config import load_config
from ..errors import ConfigError
from ..io import append_jsonl, atomic_save_safetensors, atomic_write_text
from .state import load_state, save_state


class RunDir:
    """The files of one run directory. ``RunDir(None)`` is no directory: writes do nothing, reads find
    nothing. With ``writer=False`` (every DDP rank but the first) writes do nothing either."""

    CONFIG, METRICS, RESULTS, STATE = "config.yaml", "metrics.jsonl", "results.json", "last.pt"
    SELECTED = "best"                      # the weights training selects and evaluation loads by default

    def __init__(self, path=None, *, writer: bool = True):
        self.path = Path(path) if path is not None else None
        self.writes = self.path is not None and writer

    def __bool__(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        return str(self.path)

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def state(self) -> Path:
        return self.path / self.STATE

    def weights(self, name: str = SELECTED) -> Path:
        return self.path / f"{name}.safetensors"

    def evaluation(self, split: str) -> Path:
        return self.path / f"eval_{split}.json"

    def holds_run(self) -> bool:
        """Whether a run was trained here (it can be resumed)."""
        return bool(self) and self.state.is_file()

    def saved_config(self) -> dict | None:
        """The config saved here, resolved, or None."""
        if not (self and self.config.is_file()):
            return None
        return OmegaConf.to_container(OmegaConf.load(self.config), resolve=True)

    # -- writing ---------------------------------------------------------------------------------
    def write_config(self, cfg) -> None:
        if self.writes:
            cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
            atomic_write_text(self.config, OmegaConf.to_yaml(cfg, resolve=True))

    def save_weights(self, model: HybridModel, name: str = SELECTED) -> None:
        if self.writes:
            module = getattr(model, "module", model)  # unwrap DDP / compiled wrappers
            module = getattr(module, "_orig_mod", module)
            atomic_save_safetensors(module.state_dict(), self.weights(name))

    def save_epoch(self, state: dict, record: dict) -> None:
        """The resumable state, then the epoch's record (a kill between the two drops the record)."""
        if self.writes:
            save_state(self.state, state)
            append_jsonl(self.path / self.METRICS, record)

    def rewrite_metrics(self, history: list[dict]) -> None:
        if self.writes:
            atomic_write_text(self.path / self.METRICS, "".join(json.dumps(r) + "\n" for r in history))

    def write_json(self, path: Path, data: dict) -> None:
        if self.writes:
            atomic_write_text(path, json.dumps(data, indent=2))

    def write_results(self, results: dict) -> None:
        if self.writes:
            self.write_json(self.path / self.RESULTS, results)

    # -- reading ---------------------------------------------------------------------------------
    def load_state(self) -> dict | None:
        return load_state(self.state) if self else None

    def load_selected(self, model: HybridModel, device) -> bool:
        """Load the selected weights into ``model`` if training saved any; whether it did."""
        from safetensors.torch import load_file

        if not (self and self.weights().is_file()):
            return False
        model.load_state_dict(load_file(str(self.weights()), device=str(device)))
        return True


def save_run(run_dir, cfg, model: HybridModel, name: str = RunDir.SELECTED) -> Path:
    """Write ``config.yaml`` and ``<name>.safetensors`` into ``run_dir`` (a model saved by hand)."""
    run = RunDir(run_dir)
    run.write_config(cfg)
    run.save_weights(model, name)
    return run.weights(name)


def run_files(path, name: str = RunDir.SELECTED) -> tuple[Path, Path]:
    """(weights, config) of a run directory, or of a ``.safetensors`` file with config.yaml beside it."""
    path = Path(path)
    weights = path if path.suffix == ".safetensors" else RunDir(path).weights(name)
    config = RunDir(weights.parent).config
    for needed in (weights, config):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} not found: expected a run directory with {RunDir.CONFIG} and "
                                    f"{name}.safetensors, or a .safetensors file with {RunDir.CONFIG} beside it")
    return weights, config


def load_weights(model: HybridModel, weights, key: str) -> None:
    """Load a safetensors file into ``model``; weights that do not fit are a `ConfigError` at ``key``."""
    from safetensors.torch import load_file

    try:
        model.load_state_dict(load_file(str(weights), device="cpu"))
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise ConfigError(key, f"the weights in {weights} do not fit this model: {detail}; only changes that "
                          "keep every parameter's name and shape apply to saved weights (e.g. a head's steps "
                          "or solver)") from None


def load_run(path, name: str = RunDir.SELECTED, overrides=None):
    """Load ``(cfg, model)`` from a run directory or a ``.safetensors`` file with config.yaml beside it.

    ``overrides`` (dotlist) apply to the saved config before the model is assembled, e.g.
    ``["model.blocks[2].steps=16"]`` to evaluate a continuous-depth head with more steps.
    """
    weights, config = run_files(path, name)
    cfg = load_config(config, overrides)
    model = assemble(cfg.model)
    load_weights(model, weights, "overrides" if overrides else str(weights))
    return cfg, model
