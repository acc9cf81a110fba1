"""Sweep files: a base config, grid axes and named variants of dotlist overrides, and seeds.

```yaml
name: encoders                       # optional; names the default output folder
base: [../experiments/japanese_vowels.yaml, ../models/ode_rnn_mamba.yaml]   # path(s) relative to this
                                     # file (a later model section replaces an earlier one), or a mapping
overrides: [train.epochs=10]         # applied to every run, before its variant and axes
final_overrides: []                  # applied to every run last (what the command line adds)
variants:                            # named sets of overrides, applied together (zipped)
  linear+transformer: [model.encoder.type=linear]
  ode_rnn+mamba: [model.encoder.type=ode_rnn, "model.blocks[0].type=mamba"]
axes:                                # grid: every combination of these values
  data.irregular.drop: [0.3, 0.5, 0.7]
seeds: [0, 1, 2]
metric: test_accuracy                # the summary's headline metric (default: the task's test metric)
resources: {cpus_per_run: 2, gpus_per_run: 1}   # what one run reserves on Ray (see resources.py)
tune: {params: {train.lr: {log_uniform: [1.0e-4, 1.0e-2]}}, trials: 8}   # per-configuration search (tune.py)
```
Runs are variants x axes grid x seeds. A run's id is a stable hash of the base config's content, its
overrides and its seed, so a re-run finds its finished runs whatever the order, and an edited base config
makes every run new. ``--shard i/n`` takes the runs at positions ``k`` with ``k % n == i`` in the
expansion order.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from .. import shipped
from ..config import compose
from ..errors import ConfigError
from .resources import Resources, parse_resources
from .tune import Tune, parse_tune

SWEEP_KEYS = ("name", "base", "overrides", "variants", "axes", "seeds", "metric", "final_overrides", "resources",
              "tune")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_+=-][A-Za-z0-9_.+=-]*")    # one folder name: no '/', no leading '.'


@dataclass
class Run:
    run_id: str
    variant: str                 # label shared by the seeds of one configuration
    seed: int
    overrides: list[str]         # everything applied to the base config, the seed included

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, "variant": self.variant, "seed": self.seed, "overrides": self.overrides}

    @property
    def dir_name(self) -> str:
        """``<variant>-seed<k>-<run_id>``: readable in a listing, unique by the id."""
        label = re.sub(r"[^A-Za-z0-9_.+=-]+", "_", self.variant).strip("_.")[:60] or "run"
        return f"{label}-seed{self.seed}-{self.run_id}"


@dataclass
class Sweep:
    name: str
    base: list[str] | dict       # absolute config paths, or an inline config
    overrides: list[str] = field(default_factory=list)
    variants: dict[str, list[str]] = field(default_factory=dict)
    axes: dict[str, list] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    metric: str | None = None
    final_overrides: list[str] = field(default_factory=list)    # after variants and axes: they win
    resources: Resources = field(default_factory=Resources)
    tune: Tune | None = None

    def _grid(self):
        """(variant name, its overrides, {axis key: value}) of each configuration, last axis fastest."""
        variants = list(self.variants.items()) or [("", [])]
        for (vname, vover), combo in itertools.product(variants, itertools.product(*self.axes.values())):
            yield vname, vover, dict(zip(self.axes, combo))

    def _name(self, vname: str, point: dict) -> str:
        keys = list(self.axes)
        return "/".join([vname] * bool(vname) + [f"{_short(k, keys)}={_label(v)}" for k, v in point.items()]) \
            or "base"

    def groups(self) -> list[tuple[str, list[str]]]:
        """(label, overrides) of each configuration that seeds repeat: variants, then the axes grid (last
        axis fastest). The overrides stop before `final_overrides`, which `run` adds."""
        return [(self._name(vname, point), [*self.overrides, *vover, *(f"{k}={_text(v)}" for k, v in point.items())])
                for vname, vover, point in self._grid()]

    def numeric_axis(self) -> tuple[str, dict[str, tuple[str, float]]] | None:
        """The last axis whose values are all numbers (a drop ratio, say), with each configuration's label
        mapped to (its label without that axis, the axis value): the lines and x of a plot. None if no
        axis is numeric."""
        numeric = [k for k, values in self.axes.items()
                   if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)]
        if not numeric:
            return None
        key = numeric[-1]
        return key, {self._name(vname, point): (self._name(vname, {k: v for k, v in point.items() if k != key}),
                                                float(point[key])) for vname, _, point in self._grid()}

    def run(self, label: str, overrides: list[str], seed: int, extra: list[str] = ()) -> Run:
        """The run of configuration (``label``, ``overrides``) at ``seed``; ``extra`` overrides (tuned
        values) come after the configuration's and before `final_overrides`."""
        over = [*overrides, *extra, *self.final_overrides]
        return Run(run_id(over, seed, self.base_digest), label, seed, [*over, f"train.seed={seed}"])

    def runs(self) -> list[Run]:
        """Every run in expansion order: `groups`, then seeds."""
        return [self.run(label, over, seed) for label, over in self.groups() for seed in self.seeds]

    @cached_property
    def base_digest(self) -> str:
        """Digest of the base config's content: part of every run id."""
        return hashlib.sha1(OmegaConf.to_yaml(self.config(None)).encode()).hexdigest()

    def config(self, run: Run | None) -> DictConfig:
        """The config of ``run`` (None: the base config alone)."""
        base = OmegaConf.create(self.base) if isinstance(self.base, dict) else self.base
        return compose(base, run.overrides if run else ())

    def as_dict(self) -> dict:
        return {"name": self.name, "base": self.base, "overrides": self.overrides, "variants": self.variants,
                "axes": self.axes, "seeds": self.seeds, "metric": self.metric, "final_overrides": self.final_overrides,
                "resources": self.resources.as_dict(), **({"tune": self.tune.as_dict()} if self.tune else {})}


def run_id(overrides: list[str], seed: int, base: str = "") -> str:
    """Stable id of one run: a hash of its overrides, seed and base config digest (12 hex digits)."""
    text = json.dumps({"overrides": list(overrides), "seed": int(seed), "base": base}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _text(value) -> str:
    """A value as override text that `load_config` parses back to the same value."""
    return value if isinstance(value, str) else json.dumps(value)


def _label(value) -> str:
    if isinstance(value, dict) and "type" in value:
        return str(value["type"])
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _short(key: str, keys: list[str]) -> str:
    """The last part of a dotted key, or the whole key when another axis ends the same way."""
    leaf = key.rsplit(".", 1)[-1]
    return leaf if sum(k.rsplit(".", 1)[-1] == leaf for k in keys) == 1 else key


def load_sweep(source, base_dir=None, overrides=()) -> Sweep:
    """A `Sweep` from a YAML file path or a mapping; config paths resolve against the file's folder.
    ``overrides`` (dotlist) apply to every run after everything the sweep sets (its overrides, variants
    and axes), so they win: e.g. ``train.epochs=2`` for a smoke run."""
    if isinstance(source, (str, Path)):
        path = shipped.locate(source)
        if not path.is_file():
            raise ConfigError("", f"sweep file not found: {path}")
        raw = yaml.safe_load(path.read_text()) or {}
        base_dir, default_name = path.parent, path.stem
    else:
        raw = OmegaConf.to_container(source, resolve=True) if isinstance(source, DictConfig) else dict(source)
        base_dir, default_name = Path(base_dir or "."), "sweep"
    if not isinstance(raw, dict):
        raise ConfigError("sweep", "a sweep file must hold a mapping")
    for key in raw:
        if key not in SWEEP_KEYS:
            raise ConfigError(f"sweep.{key}", f"unknown key '{key}'", choices=SWEEP_KEYS, got=key)
    base = raw.get("base")
    if isinstance(base, str):
        base = [base]
    if isinstance(base, list) and base and all(isinstance(b, str) for b in base):
        base = [str((base_dir / b).resolve()) for b in base]
        for b in base:
            if not Path(b).is_file():
                raise ConfigError("sweep.base", f"config file not found: {b}")
    elif not isinstance(base, dict):
        raise ConfigError("sweep.base", "expected a config path, a list of paths, or an inline config mapping")
    final = _strings(raw.get("final_overrides", []), "sweep.final_overrides") + list(overrides)
    overrides = _strings(raw.get("overrides", []), "sweep.overrides")
    variants = raw.get("variants") or {}
    if not isinstance(variants, dict):
        raise ConfigError("sweep.variants", "expected a mapping from variant name to a list of overrides")
    variants = {str(k): _strings(v, f"sweep.variants.{k}") for k, v in variants.items()}
    axes = raw.get("axes") or {}
    if not isinstance(axes, dict) or not all(isinstance(v, list) and v for v in axes.values()):
        raise ConfigError("sweep.axes", "expected a mapping from a dotted key to a non-empty list of values, "
                          "e.g. {model.blocks[0].type: [mamba, s4d]}")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError("sweep.seeds", f"expected a non-empty list of integers, got {seeds!r}")
    name = str(raw.get("name") or default_name)
    if not _PLAIN_NAME.fullmatch(name):
        raise ConfigError("sweep.name", f"must be a plain folder name (letters, digits, _ . + = -, not starting "
                          f"with '.'), got {name!r}: it names the output folder runs/ablate/<name>", got=name)
    sweep = Sweep(name, base, overrides, variants, axes, seeds, raw.get("metric"), final,
                  parse_resources(raw.get("resources")), parse_tune(raw.get("tune")))
    runs = sweep.runs()
    for run in runs:                       # fail fast on overrides that do not apply to the base config
        with in_variant(run):
            sweep.config(run)
    if len({r.run_id for r in runs}) != len(runs):
        raise ConfigError("sweep", "two runs of the sweep are identical (repeated variant, axis value or seed)")
    return sweep


@contextmanager
def in_variant(run: Run):
    """Re-raise a `ConfigError` with the sweep variant it belongs to."""
    try:
        yield
    except ConfigError as err:
        raise ConfigError(err.path, f"{err.reason} (sweep variant '{run.variant}', seed {run.seed})",
                          choices=err.choices, got=err.got) from None


def check_runs(sweep: Sweep, runs: list[Run]) -> None:
    """Check the runs before any trains: each distinct ``data`` section by loading it once, and the ``model``
    and ``train`` sections against their schemas (the widths the data fill get placeholders). If every run
    fails, the sweep itself is wrong (a misspelt key in the base or the overrides): raise the first error.
    Runs that fail alone are left to fail and be recorded while the others train."""
    from ..sections import validate_config
    from ..train.tasks import with_placeholder_widths

    errors, data_checked = [], {}
    for run in runs:
        try:
            with in_variant(run):
                cfg = sweep.config(run)
                _check_data(cfg, data_checked)
                validate_config(with_placeholder_widths(cfg))
        except ConfigError as err:
            errors.append(err)
    if errors and len(errors) == len(runs):
        raise errors[0]


def _check_data(cfg: DictConfig, checked: dict) -> None:
    """Load ``cfg.data`` once per distinct section (``checked``: its YAML -> the error it raised, or None)."""
    from ..data import load_data

    if "data" not in cfg:
        return
    key = OmegaConf.to_yaml(cfg.data, resolve=True) if isinstance(cfg.data, DictConfig) else repr(cfg.data)
    if key not in checked:
        try:
            load_data(cfg.data)
            checked[key] = None
        except ConfigError as err:
            checked[key] = err
    if checked[key] is not None:
        raise checked[key]


def _strings(value, path: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(path, f"expected a list of 'key=value' overrides, got {value!r}")
    return list(value)


def shard(runs: list[Run], spec: str | None) -> list[Run]:
    """The runs of shard ``"i/n"`` (0 <= i < n): positions ``k`` in expansion order with ``k % n == i``."""
    if not spec:
        return runs
    try:
        i, n = (int(p) for p in spec.split("/"))
    except ValueError:
        raise ConfigError("--shard", f"expected i/n such as 0/4, got {spec!r}") from None
    if not 0 <= i < n:
        raise ConfigError("--shard", f"expected 0 <= i < n, got {spec!r}")
    return [r for k, r in enumerate(runs) if k % n == i]
