"""The search behind ``tune:`` (see `hybridseq.ablate.tune` for the section): Optuna studies, one per
configuration, asked in rounds and told in the order asked, over any executor's `runner.Driver`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import ConfigError
from .sweep import _text, check_runs
from .tune import INSTALL, Tune


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
            why = "search incomplete" if not s.complete else "no trial succeeded"
            echo(f"{s.label}: {why}; left out of the summary")
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
