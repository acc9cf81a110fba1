"""The trainer's parts: prepare, RunDir (every run file's name), EarlyStopping."""
import ast
from pathlib import Path

import pytest
import torch

import hybridseq
from hybridseq.train import EarlyStopping, RunDir, prepare

from conftest import tiny_model
from test_train import tiny_config

FILE_NAMES = {"config.yaml", "metrics.jsonl", "results.json", "last.pt", "best.safetensors"}


def test_prepare_resolves_the_config_from_the_data_and_builds_the_model():
    prep = prepare(tiny_config())
    assert prep.task.name == "classify" and prep.cfg.model.head.classes == 2 == prep.width
    assert prep.checked == ["data", "model", "task", "train"] and prep.cfg.train.epochs == 2
    assert prep.model.spec.nodes[-1].width_out == 2 and prep.batch_size == 16
    again = prepare(tiny_config())                       # seeded: the same weights
    assert all(torch.equal(a, b) for a, b in zip(prep.model.parameters(), again.model.parameters()))


def test_prepare_without_data_or_without_building():
    prep = prepare({"model": tiny_model()})
    assert prep.task is None and prep.splits is None and prep.model is not None
    assert prepare(tiny_config(), build=False).model is None
    with pytest.raises(hybridseq.ConfigError, match="^data: missing data section.*spirals"):
        prep.require_data()
    from hybridseq.train import train

    with pytest.raises(hybridseq.ConfigError, match="^data: missing data section"):
        train({"model": tiny_model(), "train": {"epochs": 1}})


def test_run_dir_owns_every_file_name(tmp_path):
    run = RunDir(tmp_path)
    names = {run.config.name, run.state.name, run.weights().name, RunDir.METRICS, RunDir.RESULTS}
    assert names == FILE_NAMES and run.evaluation("val").name == "eval_val.json"
    spelled = []
    for path in Path(hybridseq.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in FILE_NAMES:
                spelled.append(path.name)
    assert spelled == ["checkpoint.py"] * len(spelled) and spelled


def test_run_dir_without_a_directory_or_off_rank_0_writes_nothing(tmp_path):
    for run in (RunDir(None), RunDir(tmp_path / "r", writer=False)):
        run.write_config({"a": 1})
        run.write_results({"a": 1})
        assert not run.holds_run()
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("select,patience,scores,selected,stopped", [
    ("best", None, [0.5, 0.7, 0.6, 0.4], [True, True, False, False], False),
    ("best", 2, [0.5, 0.7, 0.6, 0.4], [True, True, False, False], True),
    ("last", None, [0.5, 0.7, 0.6, 0.4], [True, True, True, True], False),
])
def test_early_stopping_selects_and_stops(select, patience, scores, selected, stopped):
    stop = EarlyStopping("accuracy", True, select, patience)
    got = [stop.step(epoch, {"val_accuracy": s}) for epoch, s in enumerate(scores, 1)]
    assert got == selected and stop.stopped == stopped
    assert stop.best_epoch == (2 if select == "best" else 4)
    twin = EarlyStopping("accuracy", True, select, patience)
    twin.load_state_dict(stop.state_dict())
    assert twin.state_dict() == stop.state_dict()
    lower = EarlyStopping("mse", False, "best", None)
    assert [lower.step(e, {"val_mse": s}) for e, s in enumerate([1.0, 2.0, 0.5], 1)] == [True, False, True]
