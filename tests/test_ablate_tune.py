"""tune: every variant gets the same Optuna search on a validation metric; the summary shows each at its
selected setting, with the test metrics of the selected runs only."""
import os

import pytest
import yaml

from hybridseq import ConfigError, cli
from hybridseq.ablate import ablate, load_sweep, summarize
from hybridseq.ablate.store import ResultStore

from ablate_cases import TWO_BY_TWO, sweep

if not os.environ.get("CI"):          # CI installs the tune extra: there these tests must run, not skip
    pytest.importorskip("optuna")

TUNE = {"params": {"train.lr": {"log_uniform": [1.0e-3, 1.0e-1]}}, "trials": 3, "metric": "val_loss",
        "sampler": "random", "seed": 7}


def test_each_variant_is_reported_at_its_best_trial(tmp_path):
    spec = sweep(**TWO_BY_TWO, tune=TUNE, overrides=["data.val_fraction=0.3"])
    records, table = ablate(spec, tmp_path, workers=0, echo=lambda line: None)
    stored = list(ResultStore(tmp_path).latest().values())
    assert len(stored) == 2 * (3 + 1)               # per variant: 3 trials at seed 0, then the best at seed 1
    trials = {}
    for r in stored:
        if r["seed"] == 0:
            trials.setdefault(r["variant"], []).append(r)
    assert {v: len(t) for v, t in trials.items()} == {"transformer": 3, "mlp": 3}
    # the same seeded sampler proposes the same candidates to every variant: the same budget, fairly spent
    assert [t["tune"]["params"] for t in trials["transformer"]] == [t["tune"]["params"] for t in trials["mlp"]]
    for variant, group in trials.items():
        best = min(group, key=lambda r: r["val_loss"])            # val_loss: lower is better
        chosen = [r for r in records if r["variant"] == variant]
        assert [r["seed"] for r in chosen] == [0, 1] and chosen[0]["run_id"] == best["run_id"]
        assert all(r["tune"]["params"] == best["tune"]["params"] for r in chosen)
        assert chosen[1]["overrides"][-2] == f"train.lr={best['tune']['params']['train.lr']}"
        assert chosen[0]["tune"]["value"] == best["val_loss"] and chosen[0]["tune"]["trials"] == 3
        row = next(r for r in summarize(records) if r["variant"] == variant)
        mean = sum(r["test_accuracy"] for r in chosen) / 2       # only the selected setting's test values
        assert row["test_accuracy"][0] == pytest.approx(mean) and row["runs"] == 2
        assert f"{best['tune']['params']['train.lr']:.4g}" in table
    assert table.splitlines()[0].startswith("| variant | runs | train.lr | test_accuracy")
    assert "3 trials of random search (seed 7) on val_loss at seed 0" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "summary.csv").read_text().splitlines()[0].startswith("variant,runs,failed,train.lr,")

    lines = []                                      # a re-run replays the search from the store
    again, table_again = ablate(spec, tmp_path, workers=0, echo=lines.append)
    assert [r["run_id"] for r in again] == [r["run_id"] for r in records] and table_again == table
    assert not any(line.startswith("[") for line in lines)            # nothing trained
    assert len(ResultStore(tmp_path).latest()) == 8
    summary, table_summary = ablate(spec, tmp_path, summary_only=True, echo=lines.append)
    assert table_summary == table


def test_without_a_validation_split_the_search_stops_with_the_reason(tmp_path):
    with pytest.raises(ConfigError, match=r"sweep.tune.metric: run \w+ reports no val_loss \(validation cases: 0\)"):
        ablate(sweep(tune=TUNE), tmp_path, workers=0, echo=lambda line: None)     # 30 cases: no validation split


def test_a_tuned_sweep_runs_whole(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep(tune=TUNE)))
    assert cli.main(["ablate", str(path), "--out", str(tmp_path / "o"), "--index", "0"]) == 2
    assert "sweep.tune: a tuned sweep picks its runs as trials finish" in capsys.readouterr().err
    assert cli.main(["ablate", str(path), "--list"]) == 2
    path.write_text(yaml.safe_dump(sweep(tune={**TUNE, "params": {"train.lrr": {"uniform": [0.1, 0.2]}}})))
    capsys.readouterr()
    assert cli.main(["ablate", str(path), "--out", str(tmp_path / "o"), "--workers", "0"]) == 2
    assert "train.lrr: unknown key 'lrr' for train" in capsys.readouterr().err


@pytest.mark.parametrize("bad, message", [
    ({"params": {"train.lr": {"log_uniform": [0, 1]}}}, "sweep.tune.params.train.lr.log_uniform: expected [low, high]"),
    ({"params": {"train.lr": {"loguniform": [1e-3, 1e-2]}}},
     "unknown search space 'loguniform'; did you mean 'log_uniform'?"),
    ({"params": {"model.d_model": {"int": [8.5, 16]}}}, "expected [low, high]: two integers"),
    ({"params": {}}, "sweep.tune.params: expected a mapping from a dotted key to a search space"),
    ({**TUNE, "metric": "test_accuracy"}, "sweep.tune.metric: the search selects on a validation metric"),
    ({**TUNE, "trials": 0}, "sweep.tune.trials: expected an integer >= 1, got 0"),
    ({**TUNE, "sampler": "grid"}, "sweep.tune.sampler: unknown sampler 'grid'"),
    ({**TUNE, "budget": 3}, "sweep.tune.budget: unknown key 'budget'"),
])
def test_bad_tune_sections_name_the_key(bad, message):
    with pytest.raises(ConfigError) as err:
        load_sweep(sweep(tune=bad))
    assert message in str(err.value)


def test_trials_proposing_the_same_setting_train_it_once(tmp_path):
    tune = {"params": {"train.lr": {"choice": [0.01]}}, "trials": 2, "parallel": 2, "metric": "val_loss"}
    records, _ = ablate(sweep(tune=tune, overrides=["data.val_fraction=0.3"]), tmp_path, workers=0,
                        echo=lambda line: None)
    assert len(records) == 1 and records[0]["status"] == "ok" and records[0]["tune"]["trials"] == 2
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 1
