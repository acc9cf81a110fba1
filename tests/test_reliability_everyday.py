"""Everyday use: printing the composed config, Hydra-style overrides, list items by dotted index, and
evaluation files that do not overwrite each other."""
import json

import pytest

from hybridseq import ConfigError
from hybridseq.cli import main
from hybridseq.config import load_config
from hybridseq.train import train
from hybridseq.train.evaluate import evaluate_run

BASE = {
    "data": {"name": "spirals", "n_train": 16, "n_test": 8, "points": 8, "batch_size": 8},
    "model": {"d_model": 8, "encoder": {"type": "linear"},
              "blocks": [{"type": "transformer", "heads": 2}], "head": {"type": "classify"}},
    "train": {"epochs": 1, "progress": False},
}


def test_config_prints_the_composed_resolved_config_without_env_values(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HYBRIDSEQ_TEST_TOKEN", "s3cr3t-value")
    base = tmp_path / "base.yaml"
    base.write_text("model: {d_model: 16}\ntrain: {lr: 0.1}\n")
    top = tmp_path / "top.yaml"
    top.write_text("defaults: [base.yaml]\ntrain: {epochs: 3, token: '${oc.env:HYBRIDSEQ_TEST_TOKEN}'}\n"
                   "notes: {width: '${model.d_model}'}\n")
    assert main(["config", str(top), "train.lr=0.5"]) == 0
    out = capsys.readouterr().out
    printed = load_config_text(out)
    assert printed["train"]["lr"] == 0.5 and printed["train"]["epochs"] == 3 and printed["notes"]["width"] == 16
    assert "s3cr3t-value" not in out and "${oc.env:HYBRIDSEQ_TEST_TOKEN}" in out
    assert main(["config", str(top), "--unresolved"]) == 0
    assert "${model.d_model}" in capsys.readouterr().out


def load_config_text(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)


def test_double_plus_sets_or_adds_and_dotted_indices_address_list_items():
    cfg = load_config(BASE, ["++train.lr=0.1", "++train.new_key=1", "model.blocks.0.heads=4",
                             "+model.blocks.0.dropout=0.1"])
    assert cfg.train.lr == 0.1 and cfg.train.new_key == 1
    assert cfg.model.blocks[0].heads == 4 and cfg.model.blocks[0].dropout == 0.1
    with pytest.raises(ConfigError, match=r"'\+\+train.epochs=2'"):       # the advice names ++
        load_config(BASE, ["+train.epochs=2"])
    with pytest.raises(ConfigError, match="no list item"):
        load_config(BASE, ["model.blocks.3.heads=4"])


def test_evaluations_under_other_settings_get_their_own_files(tmp_path):
    run = tmp_path / "run"
    train(BASE, run)
    evaluate_run(run)
    evaluate_run(run, ["irregular.drop=0.5"])
    evaluate_run(run, ["irregular.drop=0.7"])
    files = sorted(p.name for p in run.glob("eval_*.json"))
    assert len(files) == 3 and "eval_test.json" in files
    recorded = {tuple(json.loads((run / f).read_text())["data_overrides"]) for f in files}
    assert recorded == {(), ("irregular.drop=0.5",), ("irregular.drop=0.7",)}


def test_weights_that_do_not_fit_are_reported_briefly(tmp_path):
    import hybridseq as hs
    from hybridseq.train.checkpoint import load_weights, save_run

    small = {"d_model": 8, "input": {"kind": "sequence", "channels": 2}, "blocks": [{"type": "mlp", "repeat": 20}]}
    save_run(tmp_path, {"model": small}, hs.assemble(small))
    wide = hs.assemble({**small, "input": {"kind": "sequence", "channels": 4}})
    with pytest.raises(ConfigError, match="and [0-9]+ more") as err:
        load_weights(wide, tmp_path / "best.safetensors", "overrides")
    assert err.value.path == "overrides" and len(str(err.value)) < 800
