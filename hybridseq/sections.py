"""The top-level sections of a run's config, registered through ``hybridseq_register_sections``.

Built in: ``model`` (the blocks, validated into a `ModelSpec`), ``train`` (the `TrainConfig`),
``data`` (checked by loading the dataset, which is when its options are known) and ``task`` (a
registered task name; by default the dataset's). A plugin adds a section of its own with the same
hook. `check_sections` rejects any other top-level key, with the closest section name.
"""
from __future__ import annotations

from . import registry
from .errors import ConfigError
from .hookspecs import hookimpl


def _model(section, path: str):
    from .spec import validate_model

    return validate_model(section, path)


def _train(section, path: str):
    from .train.config import train_config

    return train_config(section, path)


def _task(section, path: str) -> str:
    return registry.tasks.entry(section, path).name


@hookimpl
def hybridseq_register_sections(register):
    register("model", _model)
    register("data", None)             # validated by loading: `hybridseq.data.load_data`
    register("train", _train)
    register("task", _task)


def check_sections(cfg) -> None:
    """A `ConfigError` at the first top-level key of ``cfg`` that is no registered section."""
    for key in cfg:
        if key not in registry.sections:
            raise ConfigError(str(key), f"unknown config section '{key}'", choices=registry.sections.names(),
                              got=key)


def validate_config(cfg) -> list[str]:
    """Check the top-level keys, then validate every section with a validator; returns those checked."""
    check_sections(cfg)
    done = []
    for key in registry.sections.names():
        validate = registry.sections.get(key)
        if key in cfg and validate is not None:
            validate(cfg[key], key)
            done.append(key)
    if not done:
        raise ConfigError("", "nothing to validate: the config has none of the sections "
                          + ", ".join(n for n in registry.sections.names() if registry.sections.get(n)))
    return done
