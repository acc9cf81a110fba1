"""Data-parallel training: two CPU processes (gloo) follow the single-process loss curve."""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from hybridseq.train.trainer import train


def config():
    return {
        "data": {"name": "spirals", "n_train": 40, "n_test": 8, "points": 12, "val_fraction": 0.2},
        "model": {"d_model": 8, "encoder": {"type": "linear", "time_features": 4},
                  "blocks": [{"type": "transformer", "heads": 2}], "head": {"type": "classify"}},
        # 32 training series, global batch 16: each of 2 processes takes 8 per step
        "train": {"epochs": 2, "batch_size": 16, "lr": 1e-2, "progress": False},
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    train(OmegaConf.create(config()), out)


def test_two_processes_match_one(tmp_path):
    single = train(OmegaConf.create(config()), tmp_path / "single")
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    ddp = json.loads((tmp_path / "ddp" / "results.json").read_text())
    assert ddp["world_size"] == 2
    # same samples per global step, gradients averaged over equal halves: the same optimisation
    for key in ("train_loss", "val_loss"):
        assert ddp["curves"][key] == pytest.approx(single["curves"][key], rel=1e-4, abs=1e-5), key
    assert ddp["test_accuracy"] == pytest.approx(single["test_accuracy"])
