"""Training: tasks and metrics, head/data checks, end-to-end train + evaluate, resume, CLI errors."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from hybridseq import ConfigError, cli
from hybridseq.data import load_data
from hybridseq.metrics import ClassifyMeter, ErrorMeter
from hybridseq.tasks import get_task
from hybridseq.train.evaluate import evaluate_run
from hybridseq.train.tasks import resolve
from hybridseq.train.trainer import train


def tiny_config(task="classify", head=None, **train_over):
    """A spirals run that trains in about a second."""
    return {
        "data": {"name": "spirals", "task": task, "n_train": 40, "n_test": 16, "points": 12, "queries": 4,
                 "val_fraction": 0.2, "batch_size": 16, "irregular": {"drop": 0.3}},
        "model": {"d_model": 8, "encoder": {"type": "linear"},
                  "blocks": [{"type": "transformer", "heads": 2, "dropout": 0.1}],
                  "head": {"type": head or task}},
        "train": {"epochs": 2, "lr": 3e-3, "progress": False, **train_over},
    }


def info_of(task="classify"):
    return load_data(OmegaConf.create(tiny_config(task)["data"])).info


# -- metrics ---------------------------------------------------------------------------------------
def test_classify_metrics_match_hand_computed_values():
    meter = ClassifyMeter(3)
    logits = torch.eye(3)[[0, 0, 1, 2, 2, 2]]                 # predictions 0 0 1 2 2 2
    label = torch.tensor([0, 1, 1, 2, 2, 0])
    meter.update(logits, label, loss=0.5)
    out = meter.compute()
    assert out["accuracy"] == pytest.approx(4 / 6)
    # per class F1: c0 tp1 fp1 fn1 -> 0.5; c1 tp1 fp0 fn1 -> 2/3; c2 tp2 fp1 fn0 -> 0.8
    assert out["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert out["loss"] == pytest.approx(0.5)


def test_masked_errors_ignore_unobserved_entries():
    meter = ErrorMeter()
    pred = torch.tensor([[[1.0, 5.0], [2.0, 0.0]]])           # [1, 2, 2]
    target = torch.tensor([[[0.0, 0.0], [0.0, 100.0]]])
    mask = torch.tensor([[[True, False], [True, False]]])
    meter.update(pred, target, mask, loss=0.0)
    out = meter.compute()
    assert out["mse"] == pytest.approx((1 + 4) / 2) and out["mae"] == pytest.approx(1.5)
    loss = get_task("interpolate").loss(pred, {"query_values": target, "query_mask": mask})
    assert float(loss) == pytest.approx(2.5)


# -- task resolution ---------------------------------------------------------------------------------
def test_widths_are_filled_from_the_data():
    cfg, task = resolve(OmegaConf.create(tiny_config()), info_of())
    assert task.name == "classify" and cfg.task == "classify"
    assert cfg.model.head.classes == 2 and cfg.model.input.channels == 2


def test_head_that_disagrees_with_the_data_names_the_key():
    cfg = tiny_config()
    cfg["model"]["head"]["classes"] = 5
    with pytest.raises(ConfigError, match=r"model\.head\.classes: is 5 but dataset 'spirals' has 2 classes"):
        resolve(OmegaConf.create(cfg), info_of())


def test_head_of_the_wrong_kind_lists_the_valid_heads():
    cfg = tiny_config(task="interpolate", head="classify")
    with pytest.raises(ConfigError, match=r"model\.head\.type: head 'classify' produces pooled") as err:
        resolve(OmegaConf.create(cfg), info_of("interpolate"))
    assert {"interpolate", "extrapolate"} <= set(err.value.choices)


def test_task_override_is_checked_against_the_data():
    cfg = {**tiny_config(), "task": "regress"}
    with pytest.raises(ConfigError, match="task 'regress' needs data with 'outputs'"):
        resolve(OmegaConf.create(cfg), info_of())


# -- training -----------------------------------------------------------------------------------------
def test_train_then_evaluate_end_to_end(tmp_path):
    run = tmp_path / "run"
    results = train(OmegaConf.create(tiny_config()), run)
    for name in ("config.yaml", "metrics.jsonl", "best.safetensors", "last.pt", "results.json"):
        assert (run / name).is_file(), name
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    for key in ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "epoch_time", "nfe", "peak_mem_mb"):
        assert key in lines[0], key
    assert lines[0]["mem_kind"] == "cpu_peak_rss" and lines[0]["peak_mem_mb"] > 0
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.task == "classify" and saved.model.head.classes == 2 and saved.train.epochs == 2
    assert 0.0 <= results["test_accuracy"] <= 1.0 and results["params"] > 0

    scored = evaluate_run(run, split="test")
    assert scored["accuracy"] == pytest.approx(results["test_accuracy"])
    assert (run / "eval_test.json").is_file()
    harder = evaluate_run(run, ["irregular.drop=0.7"], split="val", write=False)
    assert harder["split"] == "val" and 0.0 <= harder["accuracy"] <= 1.0


@pytest.mark.parametrize("task", ["interpolate", "extrapolate", "regress"])
def test_other_tasks_train_with_their_heads(task):
    results = train(OmegaConf.create(tiny_config(task, epochs=1)), None)
    assert results["task"] == task
    assert torch.isfinite(torch.tensor([results["test_mse"], results["test_mae"]])).all()
    if task == "extrapolate":
        assert results["nfe"] > 0                       # the ODE decoder's evaluations are counted


def test_early_stopping_stops_after_patience(tmp_path):
    results = train(OmegaConf.create(tiny_config(epochs=4, patience=1, lr=1e-9, monitor="loss")), tmp_path / "r")
    assert results["stopped_early"] and results["epochs"] < 4


class Killed(Exception):
    pass


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path):
    cfg = OmegaConf.create(tiny_config(epochs=2))
    full = train(cfg, tmp_path / "full")

    def kill_after_first(epoch, record):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        train(cfg, tmp_path / "cut", on_epoch_end=kill_after_first)
    torch.manual_seed(1234)                             # the resumed process starts from other RNG states
    resumed = train(cfg, tmp_path / "cut", resume=True)
    assert resumed["curves"] == full["curves"]
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_finished_run_is_not_overwritten(tmp_path):
    train(OmegaConf.create(tiny_config(epochs=1)), tmp_path / "r")
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        train(OmegaConf.create(tiny_config(epochs=1)), tmp_path / "r")


# -- command line ---------------------------------------------------------------------------------------
def test_cli_train_and_evaluate(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(tiny_config())))
    out = tmp_path / "run"
    assert cli.main(["train", str(path), "train.epochs=1", "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "results.json").read_text())["epochs"] == 1
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--split", "val"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["split"] == "val" and "accuracy" in printed
    assert cli.main(["evaluate", str(out), "--data", "irregular.drop=0.7", "--data", "seed=3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["split"] == "test" and printed["data_overrides"] == ["irregular.drop=0.7", "seed=3"]
    assert cli.main(["train", "--resume", "--out", str(out), "train.epochs=2", "--no-progress"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("override, message", [
    ("train.epochs=0", "train.epochs: must be >= 1"),
    ("train.epoch=1", "train.epoch: unknown key 'epoch' for train; did you mean 'epochs'?"),
    ("model.head.classes=7", "model.head.classes: is 7 but dataset 'spirals' has 2 classes"),
    ("model.blocks[0].type=transfomer",
     "model.blocks[0].type: unknown block 'transfomer'; did you mean 'transformer'?"),
])
def test_cli_config_errors_name_the_key_without_traceback(tmp_path, capsys, override, message):
    path = tmp_path / "tiny.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(tiny_config())))
    assert cli.main(["train", str(path), override, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# -- shipped configs -------------------------------------------------------------------------------------
ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
TINY_TOKENS = {"data": {"name": "selective_copy", "length": 8, "tokens": 4, "n_train": 8, "n_test": 4},
               "model": {"d_model": 8}, "train": {"epochs": 1, "progress": False}}


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "models").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_model_config_runs_on_data_of_its_task(path):
    from hybridseq import assemble
    from hybridseq.config import compose
    from hybridseq.data import collate

    model_section = OmegaConf.load(path).model
    head = model_section.head.type
    task = {"latent_ode": "extrapolate", "autoregressive": "extrapolate", "mtand": "interpolate"}.get(head, head)
    tokens = model_section.get("input", {}).get("kind") == "tokens"
    base = TINY_TOKENS if tokens else tiny_config(task)
    cfg = compose([OmegaConf.create(base), path])
    splits = load_data(cfg.data)
    cfg, _ = resolve(cfg, splits.info)
    model = assemble(cfg.model)
    batch, targets = collate([splits.train[i] for i in range(3)])
    out = model(batch).x
    want = {"classify": (3, 2), "regress": (3, 2), "lm": (3, 12, 16)}.get(task, (3, 4, 2))
    assert tuple(out.shape) == want and torch.isfinite(out).all()


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_experiment_config_is_valid(path):
    from hybridseq.config import compose
    from hybridseq.sections import validate_config

    assert validate_config(compose(path)) == ["model", "train"]


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg = tiny_config(epochs=3)
    path = tmp_path / "tiny.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    full = train(OmegaConf.create(cfg), tmp_path / "full")
    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}    # same reductions, same bits
    proc = subprocess.Popen([sys.executable, "-m", "hybridseq.cli", "train", str(path), "--out", str(run),
                             "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 300                      # a loaded machine can take a minute to start it
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and metrics.read_text().count("\n") >= 1:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert len(metrics.read_text().splitlines()) < 3
    resumed = train(OmegaConf.create(cfg), run, resume=True)
    assert resumed["curves"] == full["curves"]
    assert resumed["test_accuracy"] == full["test_accuracy"]


def test_every_builtin_block_has_a_model_config():
    import re

    from hybridseq import registry
    from hybridseq.plugins import load

    load()
    builtin = {n for n in registry.blocks.names() if registry.blocks.entry(n).owner.startswith("hybridseq.")}
    used = {name for path in (ROOT / "configs" / "models").glob("*.yaml")
            for name in re.findall(r"\btype:\s*(\w+)", path.read_text())}
    assert not builtin - used, f"built-in blocks without a config in configs/models: {sorted(builtin - used)}"


def test_every_dataset_has_an_experiment_and_every_config_file_is_documented():
    from hybridseq import registry
    from hybridseq.data.archive import embedded_names

    data = [OmegaConf.load(p).data for p in (ROOT / "configs" / "experiments").glob("*.yaml")]
    assert set(registry.datasets.names()) <= {d.name for d in data}
    assert set(embedded_names()) <= {d.get("dataset") for d in data if d.name == "uea"}
    doc = (ROOT / "docs" / "training.md").read_text()
    missing = [p.name for p in (ROOT / "configs").glob("*/*.yaml") if f"{p.name}`" not in doc]
    assert not missing, f"configs not described in docs/training.md: {missing}"
