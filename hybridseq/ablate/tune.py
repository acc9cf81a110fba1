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
  direction: maximize                       # default: up for accuracy and macro_f1, down otherwise
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
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

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
        from ..train.trainer import HIGHER_IS_BETTER

        return self.metric_of(record).removeprefix("val_") in HIGHER_IS_BETTER

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


def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("sweep.tune", f"optuna is not installed; install it with: {INSTALL}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _distributions(optuna, tune: Tune) -> dict:
    d = optuna.distributions
    make = {"log_uniform": lambda v: d.FloatDistribution(v[0], v[1], log=True),
            "uniform": lambda v: d.FloatDistribution(v[0], v[1]),
            "int": lambda v: d.IntDistribution(v[0], v[1]),
            "choice": lambda v: d.CategoricalDistribution(v)}
    return {key: make[space](values) for key, (space, values) in tune.params.items()}


@dataclass
class _Search:
    """One configuration's study and what it has asked so far."""
    label: str
    overrides: list[str]
    study: object
    asked: int = 0
    complete: bool = True             # False: a trial is missing from the store (summary only)
    trials: dict = field(default_factory=dict)      # trial number -> record


def tune_sweep(sweep, driver, echo=print) -> list[dict]:
    """Search every configuration of ``sweep`` with ``driver`` (a `runner.Driver`; one without an executor
    only reads the store), then train each selected setting at every seed. Returns the selected runs'
    latest records, configuration by configuration, seed by seed."""
    from .sweep import _text, check_runs

    optuna, tune = _optuna(), sweep.tune
    spaces = _distributions(optuna, tune)
    sampler = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}[tune.sampler]
    searches = [_Search(label, over, optuna.create_study(direction="maximize", sampler=sampler(seed=tune.seed)))
                for label, over in sweep.groups()]

    def extra(params: dict) -> list[str]:
        return [f"{k}={_text(v)}" for k, v in params.items()]

    low = {key: values[0] for key, (_, values) in tune.params.items()}     # a tuned key that fits no run fails now
    check_runs(sweep, [sweep.run(label, over, sweep.seeds[0], extra(low)) for label, over in sweep.groups()])

    while True:
        batch = []                    # (search, trial, run), in the order asked
        for s in searches:
            for _ in range(min(tune.parallel, tune.trials - s.asked) if s.complete else 0):
                trial = s.study.ask(spaces)
                s.asked += 1
                batch.append((s, trial, sweep.run(s.label, s.overrides, sweep.seeds[0], extra(trial.params))))
        if not batch:
            break
        notes = {run.run_id: {"tune": {"trial": trial.number, "params": trial.params}} for _, trial, run in batch}
        records = driver.run([run for _, _, run in batch], notes)
        for s, trial, run in batch:
            record = records.get(run.run_id)
            if record is None:        # not recorded and not trained here: the search stops short
                s.complete = False
                continue
            s.trials[trial.number] = record
            metric = tune.metric_of(record)
            if record.get("status") == "ok" and metric not in record:
                raise ConfigError("sweep.tune.metric", f"run {run.run_id} reports no {metric} (validation cases: "
                                  f"{record.get('val_cases', '?')}); the search needs a validation split, e.g. "
                                  "data.val_fraction=0.2", got=metric)
            value = record.get(metric) if record.get("status") == "ok" else None
            if isinstance(value, (int, float)) and math.isfinite(value):
                s.study.tell(trial, value if tune.higher(record) else -value)
            else:
                s.study.tell(trial, state=optuna.trial.TrialState.FAIL)
    final, notes = [], {}             # every selected setting at every seed, side by side
    for s in searches:
        done = [t for t in s.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not s.complete or not done:
            echo(f"{s.label}: {'search incomplete' if not s.complete else 'no trial succeeded'}; left out of the summary")
            continue
        best = s.study.best_trial     # ties go to the earlier trial
        metric = tune.metric_of(s.trials[best.number])
        runs = [sweep.run(s.label, s.overrides, seed, extra(best.params)) for seed in sweep.seeds]
        note = {"tune": {"trial": best.number, "params": best.params, "metric": metric,
                         "value": s.trials[best.number].get(metric), "trials": len(done)}}
        final += runs
        notes.update({run.run_id: note for run in runs})
    records = driver.run(final, notes)
    return [{**records[run.run_id], **notes[run.run_id]} for run in final if run.run_id in records]
