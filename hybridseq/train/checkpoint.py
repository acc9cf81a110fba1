"""Run directories: ``config.yaml`` (the resolved config) and model weights as safetensors."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..assemble import HybridModel, assemble
from ..config import load_config
from ..errors import ConfigError
from ..io import atomic_save_safetensors, atomic_write_text

CONFIG_FILE = "config.yaml"


def save_run(run_dir, cfg, model: HybridModel, name: str = "best") -> Path:
    """Write ``config.yaml`` (as given: interpolations stay, see `hybridseq.config.as_written`) and
    ``<name>.safetensors`` into ``run_dir`` atomically."""
    run_dir = Path(run_dir)
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    atomic_write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg))
    module = getattr(model, "module", model)  # unwrap DDP / compiled wrappers
    module = getattr(module, "_orig_mod", module)
    return atomic_save_safetensors(module.state_dict(), run_dir / f"{name}.safetensors")


def run_files(path, name: str = "best") -> tuple[Path, Path]:
    """(weights, config) of a run directory, or of a ``.safetensors`` file with config.yaml beside it."""
    path = Path(path)
    if Path(name).name != name or name.startswith("."):
        raise ConfigError("--checkpoint", f"expected the name of a checkpoint in the run directory (best, ...), "
                          f"got {name!r}", got=name)
    weights = path if path.suffix == ".safetensors" else path / f"{name}.safetensors"
    config = weights.parent / CONFIG_FILE
    for needed in (weights, config):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} not found: expected a run directory with {CONFIG_FILE} and "
                                    f"{name}.safetensors, or a .safetensors file with {CONFIG_FILE} beside it")
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


def load_run(path, name: str = "best", overrides=None):
    """Load ``(cfg, model)`` from a run directory or a ``.safetensors`` file with config.yaml beside it.

    ``overrides`` (dotlist) apply to the saved config before the model is assembled, e.g.
    ``["model.blocks[2].steps=16"]`` to evaluate a continuous-depth head with more steps.
    """
    weights, config = run_files(path, name)
    cfg = load_config(config, overrides)
    model = assemble(cfg.model)
    load_weights(model, weights, "overrides" if overrides else str(weights))
    return cfg, model
