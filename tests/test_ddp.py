"""Data-parallel training: ``hybridseq train`` under torchrun with two CPU processes (gloo) follows the
single-process loss curve."""
import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from hybridseq.train.trainer import train


def config():
    return {
        "data": {"name": "spirals", "n_train": 40, "n_test": 8, "points": 12, "val_fraction": 0.2},
        "model": {"d_model": 8, "encoder": {"type": "linear"},
                  "blocks": [{"type": "transformer", "heads": 2}], "head": {"type": "classify"}},
        # 32 training series, global batch 16: each of 2 processes takes 8 per step
        "train": {"epochs": 2, "batch_size": 16, "lr": 1e-2, "progress": False},
    }


def torchrun_train(tmp_path, cfg: dict, out: str, *overrides: str) -> subprocess.CompletedProcess:
    """``hybridseq train`` under torchrun with two CPU processes."""
    (tmp_path / f"{out}.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "hybridseq.cli", "train", str(tmp_path / f"{out}.yaml"), *overrides, "--out",
                           str(tmp_path / out), "--no-progress"], env=env, capture_output=True, text=True,
                          timeout=300)


def test_two_processes_match_one(tmp_path):
    single = train(OmegaConf.create(config()), tmp_path / "single")
    proc = torchrun_train(tmp_path, config(), "ddp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "find_unused_parameters" not in proc.stderr               # every parameter is used: no notice
    assert proc.stdout.count("run directory:") == 1                # rank 0 alone reports
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["world_size"] == 2
    # same samples per global step, gradients averaged over equal halves: the same optimisation
    for key in ("train_loss", "val_loss"):
        assert ddp["curves"][key] == pytest.approx(single["curves"][key], rel=1e-4, abs=1e-5), key
    assert ddp["test_accuracy"] == pytest.approx(single["test_accuracy"])


def test_unused_parameters_are_named_with_the_setting_that_allows_them(tmp_path):
    cfg = config()
    cfg["train"]["epochs"] = 1
    cfg["model"]["blocks"] = [{"type": "transformer", "heads": 2},                   # b0: nothing reads it
                              {"type": "mlp", "inputs": ["encoder"]}]
    proc = torchrun_train(tmp_path, cfg, "dead")
    assert proc.returncode != 0
    assert "config error: train.find_unused_parameters: some model parameters got no gradient" in proc.stderr
    proc = torchrun_train(tmp_path, cfg, "allowed", "train.find_unused_parameters=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
