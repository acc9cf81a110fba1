"""The hooks a hybridseq plugin may implement.

Each ``register_*`` hook hands the plugin a ``register`` callback instead of expecting a return value,
so one plugin can register any number of items. Built-in blocks, solvers and datasets use exactly these
hooks. Signatures are part of the public contract: add new hooks rather than changing these.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("hybridseq")
hookimpl = pluggy.HookimplMarker("hybridseq")


@hookspec
def hybridseq_register_blocks(register) -> None:
    """Register blocks.

    :param register: ``register(name: str, cls: type[hybridseq.Block])``; ``name`` is what configs put
        under ``type:``. ``cls`` is a `Block` subclass with a nested ``@dataclass Config``.
    """


@hookspec
def hybridseq_register_solvers(register) -> None:
    """Register ODE solvers.

    :param register: ``register(name: str, solve: Callable, *, adjoint: bool = False, fixed_grid: bool =
        False, options: Iterable[str] | Mapping[str, type] | None = None)``. ``solve(func, y0, t, **options)``
        returns ``Tensor[len(t), *y0.shape]`` like ``torchdiffeq.odeint``; ``func(t, y)`` is an
        ``nn.Module``. The keywords declare capabilities, which validation reads instead of running the
        solver: ``adjoint=True``, that ``solve`` also accepts ``adjoint=True`` and then computes gradients by
        adjoint sensitivities; ``fixed_grid=True``, that it steps on a grid rather than choosing its steps;
        ``options``, the option names it accepts (optionally with the type of their values).
    """


@hookspec
def hybridseq_register_datasets(register) -> None:
    """Register datasets.

    :param register: ``register(name: str, factory: Callable[..., DataSplits])``; ``factory(**options)``
        receives the ``data:`` config section (less ``name``) and returns `hybridseq.data.DataSplits`:
        train/val/test datasets of sample dicts and a `DataInfo` (channels, task, classes, ...).
    """


@hookspec
def hybridseq_register_tasks(register) -> None:
    """Register learning tasks.

    :param register: ``register(name: str, cls: type[hybridseq.tasks.Task])``; ``name`` is what a
        dataset's `DataInfo.task` or a config's ``task:`` names. ``cls(name)`` owns the loss, the metric
        meter, the monitored metric and each metric's direction, and declares what the task head must
        produce (``port``) and which width it takes from the data (``width_key``).
    """


@hookspec
def hybridseq_register_sections(register) -> None:
    """Register top-level config sections (beside the built-in ``model``, ``data``, ``train``, ``task``).

    :param register: ``register(name: str, validate: Callable | None)``; ``validate(section, path)``
        checks the section's value (raising `hybridseq.ConfigError` naming the key path) and may return
        it validated; ``None`` accepts the section unchecked. A top-level key that no plugin registered
        is a `ConfigError` with the closest section name.
    """


@hookspec
def hybridseq_register_loggers(register) -> None:
    """Register experiment loggers, which configs select with ``train.loggers: [name, ...]``.

    :param register: ``register(name: str, factory: Callable[..., Logger])``; training calls
        ``factory(run_dir=Path, config=dict, first_epoch=int)`` once it starts (on the process that writes
        the run directory; ``config`` as saved in ``config.yaml``, interpolations unresolved; ``first_epoch``
        > 1 when a run resumes). The logger has ``log_epoch(epoch: int, scalars: dict[str, float])``
        (each epoch's record, as in ``metrics.jsonl``), ``log_hparams(hparams: dict, metrics: dict[str,
        float])`` (the flattened config and the final metrics, once at the end) and ``close()``.
    """


@hookspec
def hybridseq_register_commands(cli) -> None:
    """Add sub-commands to the ``hybridseq`` command line.

    :param cli: the ``argparse`` sub-parsers object: ``p = cli.add_parser("name", help=...)``, add
        arguments to ``p``, then ``p.set_defaults(func=handler)`` where ``handler(args) -> int | None``.
    """
