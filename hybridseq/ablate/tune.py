"""Fair comparisons: every configuration of a sweep gets the same hyperparameter search (Optuna), on the
validation metric, before its test metrics are reported.

```yaml
tune:
  params:                                   # dotted key -> search space
    train.lr: {log_uniform: [1.0e-4, 1.0e-2]}
    train.weight_decay: {uniform: [0.0, 0.1]}
    model.blocks[0].d_state: {int: [4, 16]}
    model.encoder.type: {choice: [linear, mtan]}
  trials: 8                                 # per configuration (variant x axes point)
  metric: val_accuracy                      # default: the metric each run selects its checkpoint by
  direction: maximize                       # default: the run's task says (up for accuracy, down for mse)
  sampler: tpe                              # tpe (Optuna's default settings) | random
  seed: 0                                   # the sampler's seed, the same for every configuration
  parallel: 1                               # trials of one configuration in flight at once
```
Each trial trains at the sweep's first seed; its value is the run's best validation value. The test
split plays no part in the search. The selected setting (the best trial) then trains at every seed, and
the summary shows those runs only, with the chosen values.

Trials are asked in rounds (``parallel`` per configuration, every configuration side by side) and told
in the order they were asked, so the search is the same whatever order the runs finish in, and a
re-run replays it from the results store: each trial's run id is found recorded and nothing retrains.
This module holds the section's schema; the search itself is `hybridseq.ablate.search`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ConfigError

SPACES = ("log_uniform", "uniform", "int", "choice")
SAMPLER_NAMES = {"tpe": "TPE", "random": "random"}     # as the summary names them
SAMPLERS = tuple(SAMPLER_NAMES)
DIRECTIONS = ("maximize", "minimize")
INSTALL = "pip install 'hybridseq[tune]'"


@dataclass
class Tune:
    params: dict[str, tuple[str, list]]          # key -> (space, its bounds or choices)
    trials: int = 8
    metric: str | None = None
    direction: str | None = None
    sampler: str = "tpe"
    seed: int = 0
    parallel: int = 1
    KEYS = ("params", "trials", "metric", "direction", "sampler", "seed", "parallel")

    def as_dict(self) -> dict:
        return {"params": {k: {space: list(v)} for k, (space, v) in self.params.items()}, "trials": self.trials,
                "metric": self.metric, "direction": self.direction, "sampler": self.sampler, "seed": self.seed,
                "parallel": self.parallel}

    def higher(self, record: dict) -> bool:
        """Whether larger values of this search's metric are better (for ``record``'s task)."""
        if self.direction:
            return self.direction == "maximize"
        from ..tasks import get_task

        return get_task(record["task"]).higher_is_better(self.metric_of(record).removeprefix("val_"))

    def metric_of(self, record: dict) -> str:
        """The metric searched on: ``metric``, else the run's checkpoint-selection metric."""
        return self.metric or record.get("monitor") or "val_loss"


def _space(key: str, raw) -> tuple[str, list]:
    path = f"sweep.tune.params.{key}"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise ConfigError(path, f"expected one search space such as {{log_uniform: [1.0e-4, 1.0e-2]}}, got {raw!r}",
                          choices=SPACES)
    (space, values), = raw.items()
    if space not in SPACES:
        raise ConfigError(path, f"unknown search space '{space}'", choices=SPACES, got=space)
    if not isinstance(values, list) or not values:
        raise ConfigError(f"{path}.{space}", f"expected a non-empty list, got {values!r}")
    if space == "choice":
        return space, list(values)
    kind = int if space == "int" else (int, float)
    ok = (len(values) == 2 and all(isinstance(v, kind) and not isinstance(v, bool) and math.isfinite(v) for v in values)
          and values[0] < values[1] and (space != "log_uniform" or values[0] > 0))
    if not ok:
        what = "two integers" if space == "int" else "two finite numbers"
        extra = ", both > 0" if space == "log_uniform" else ""
        raise ConfigError(f"{path}.{space}", f"expected [low, high]: {what}, low < high{extra}; got {values!r}")
    return space, list(values)


def parse_tune(raw) -> Tune | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("sweep.tune", f"expected a mapping with params and trials, got {raw!r}")
    for key in raw:
        if key not in Tune.KEYS:
            raise ConfigError(f"sweep.tune.{key}", f"unknown key '{key}'", choices=Tune.KEYS, got=key)
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        raise ConfigError("sweep.tune.params", "expected a mapping from a dotted key to a search space, e.g. "
                          "{train.lr: {log_uniform: [1.0e-4, 1.0e-2]}}")
    tune = Tune({str(k): _space(str(k), v) for k, v in params.items()},
                **{k: raw[k] for k in Tune.KEYS[1:] if k in raw})
    for key in ("trials", "parallel", "seed"):
        value = getattr(tune, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "seed" else 1):
            raise ConfigError(f"sweep.tune.{key}", f"expected an integer >= {0 if key == 'seed' else 1}, got {value!r}")
    if tune.metric is not None and not str(tune.metric).startswith("val_"):
        raise ConfigError("sweep.tune.metric", f"the search selects on a validation metric (val_...), so the test "
                          f"split stays unseen; got {tune.metric!r}")
    if tune.direction is not None and tune.direction not in DIRECTIONS:
        raise ConfigError("sweep.tune.direction", f"unknown direction {tune.direction!r}", choices=DIRECTIONS,
                          got=tune.direction)
    if tune.sampler not in SAMPLERS:
        raise ConfigError("sweep.tune.sampler", f"unknown sampler {tune.sampler!r}", choices=SAMPLERS, got=tune.sampler)
    return tune
