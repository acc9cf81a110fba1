"""Run directories: ``config.yaml`` (the resolved config) and model weights as safetensors."""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..assemble import HybridModel, assemble
from ..config import load_config
from ..io import atomic_save_safetensors, atomic_write_text

CONFIG_FILE = "config.yaml"


def save_run(run_dir, cfg, model: HybridModel, name: str = "best") -> Path:
    """Write ``config.yaml`` and ``<name>.safetensors`` into ``run_dir`` atomically."""
    run_dir = Path(run_dir)
    cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    atomic_write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    module = getattr(model, "module", model)  # unwrap DDP / compiled wrappers
    module = getattr(module, "_orig_mod", module)
    return atomic_save_safetensors(module.state_dict(), run_dir / f"{name}.safetensors")


def load_run(path, name: str = "best", overrides=None, map_location: str = "cpu"):
    """Load ``(cfg, model)`` from a run directory or a ``.safetensors`` file with config.yaml beside it.

    ``overrides`` (dotlist) apply to the saved config before the model is assembled, e.g.
    ``["model.blocks[2].steps=16"]`` to evaluate a continuous-depth head with more steps.
    """
    from safetensors.torch import load_file

    path = Path(path)
    weights = path if path.suffix == ".safetensors" else path / f"{name}.safetensors"
    config = weights.parent / CONFIG_FILE
    for needed in (weights, config):
        if not needed.is_file():
            raise FileNotFoundError(f"{needed} not found: expected a run directory with {CONFIG_FILE} and "
                                    f"{name}.safetensors, or a .safetensors file with {CONFIG_FILE} beside it")
    cfg = load_config(config, overrides)
    model = assemble(cfg.model)
    model.load_state_dict(load_file(str(weights), device=map_location))
    return cfg, model
