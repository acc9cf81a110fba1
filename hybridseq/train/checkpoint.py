"""Run directories: `RunDir` owns the name of every file in one, and reads and writes them.

A run directory holds ``config.yaml`` (the resolved config: task, widths from the data, every train
default), ``metrics.jsonl`` (one record per epoch), ``best.safetensors`` (the selected weights: the best
validation epoch's, or the last epoch's), ``last.pt`` (everything needed to resume), ``results.json``
(written when training ends), ``vocab.json`` for token data (the vocabulary size and the name of the text
codec, `hybridseq.data.tokens.TEXT_CODECS`, or null; read by ``hybridseq generate``) and
``eval_<split>.json`` (written by ``hybridseq evaluate``). Every file is written atomically.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..assemble import HybridModel, assemble
from ..config import load_config
from ..errors import ConfigError
from ..io import append_jsonl, atomic_save_safetensors, atomic_write_text, to_json
from .state import load_state, save_state


class RunDir:
    """The files of one run directory. ``RunDir(None)`` is no directory: writes do nothing, reads find
    nothing. With ``writer=False`` (every DDP rank but the first) writes do nothing either."""

    CONFIG, METRICS, RESULTS, STATE = "config.yaml", "metrics.jsonl", "results.json", "last.pt"
    VOCAB = "vocab.json"
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

    def evaluation(self, split: str, changes=()) -> Path:
        """``eval_<split>.json``; ``eval_<split>-<digest>.json`` when ``changes`` (overrides, data
        overrides, another checkpoint) alter the setting, so one evaluation never overwrites another."""
        if not changes:
            return self.path / f"eval_{split}.json"
        digest = hashlib.sha1("\n".join(changes).encode()).hexdigest()[:8]
        return self.path / f"eval_{split}-{digest}.json"

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
        """``cfg`` as given: interpolations stay as written (see `hybridseq.config.as_written`)."""
        if self.writes:
            cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
            atomic_write_text(self.config, OmegaConf.to_yaml(cfg))

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
            atomic_write_text(self.path / self.METRICS, "".join(to_json(r) + "\n" for r in history))

    def write_json(self, path: Path, data: dict) -> None:
        if self.writes:
            atomic_write_text(path, to_json(data, indent=2))

    def write_vocabulary(self, info) -> None:
        """``vocab.json`` from the data's `DataInfo`, when the data are tokens."""
        if self.writes and getattr(info, "vocab", None) is not None:
            self.write_json(self.path / self.VOCAB, {"size": info.vocab, "text": getattr(info, "text", None)})

    def write_results(self, results: dict) -> None:
        if self.writes:
            self.write_json(self.path / self.RESULTS, results)

    # -- reading ---------------------------------------------------------------------------------
    def vocabulary(self) -> dict | None:
        """What `write_vocabulary` wrote, or None (not token data, or trained before it was recorded)."""
        path = self.path / self.VOCAB
        return json.loads(path.read_text()) if self and path.is_file() else None

    def load_state(self) -> dict | None:
        return load_state(self.state) if self else None

    def load_selected(self, model: HybridModel, device) -> bool:
        """Load the selected weights into ``model`` if training saved any; whether it did."""
        if not (self and self.weights().is_file()):
            return False
        load_weights(model, self.weights(), str(self.weights()))
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
    if Path(name).name != name or name.startswith("."):
        raise ConfigError("--checkpoint", f"expected the name of a checkpoint in the run directory (best, ...), "
                          f"got {name!r}", got=name)
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
        tensors = load_file(str(weights), device="cpu")
    except Exception as err:          # truncated, tampered or not a safetensors file
        raise ConfigError(str(weights), f"not a readable safetensors file ({type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else 'unreadable'})") from None
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        detail = _mismatches(str(err))
        raise ConfigError(key, f"the weights in {weights} do not fit this model: {detail}; only changes that "
                          "keep every parameter's name and shape apply to saved weights (e.g. a head's steps "
                          "or solver)") from None


SHOWN_MISMATCHES = 3       # parameters named in a does-not-fit error; the rest are counted


def _mismatches(message: str) -> str:
    """torch's load_state_dict error cut to its first few problems: keys are listed one by one, and a
    model with many layers makes it thousands of characters long."""
    items = []
    for line in message.splitlines()[1:]:
        line = line.strip().rstrip(".")
        if line.startswith(("Missing key(s)", "Unexpected key(s)")):
            kind, _, keys = line.partition(":")
            items += [f"{kind.split()[0].lower()} {k.strip().strip(chr(34))}" for k in keys.split(",") if k.strip()]
        elif line:
            items.append(line)
    shown = "; ".join(items[:SHOWN_MISMATCHES])
    return shown + (f"; and {len(items) - SHOWN_MISMATCHES} more" if len(items) > SHOWN_MISMATCHES else "")


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
