"""Experiment loggers (`train.loggers`): the TensorBoard event file read back, a logger added by a plugin
through `hybridseq_register_loggers`, and the errors for unknown names or a missing package."""
import json
import sys

import pytest

from hybridseq import ConfigError, registry
from hybridseq.hookspecs import hookimpl
from hybridseq.loggers import TENSORBOARD_DIR
from hybridseq.testing import register_plugin
from hybridseq.train.trainer import Trainer, train

from test_train import tiny_config


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_scalars_per_epoch_and_hparams(tmp_path):
    pytest.importorskip("tensorboard", reason="the [test] extra installs tensorboard")
    run = tmp_path / "run"
    results = train(tiny_config(epochs=3, loggers=["tensorboard"]), run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    acc = _events(run)
    tags = acc.Tags()["scalars"]
    assert {"train_loss", "val_accuracy", "lr"} <= set(tags) and "best" not in tags and "epoch" not in tags
    loss = acc.Scalars("train_loss")
    assert [e.step for e in loss] == [1, 2, 3]                                     # integer epochs
    assert [e.value for e in loss] == pytest.approx([r["train_loss"] for r in records], rel=1e-6)
    assert acc.Scalars("hparam/test_accuracy")[0].value == pytest.approx(results["test_accuracy"], rel=1e-6)
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = acc.PluginTagToContent("hparams")
    session = next(plugin_data_pb2.HParamsPluginData.FromString(c) for c in content.values()
                   if plugin_data_pb2.HParamsPluginData.FromString(c).HasField("session_start_info"))
    hparams = session.session_start_info.hparams
    assert hparams["train.lr"].number_value == pytest.approx(3e-3)
    assert hparams["model.blocks"].string_value.startswith("[{")                 # lists as JSON text
    assert not list((run / TENSORBOARD_DIR).iterdir())[0].is_dir()                # beside the scalars


def test_tensorboard_resume_drops_the_epochs_it_trains_again(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "run"
    train(tiny_config(epochs=2, loggers=["tensorboard"]), run)
    with SummaryWriter(str(run / TENSORBOARD_DIR)) as stale:          # epoch 3 logged, then killed before saving
        stale.add_scalar("train_loss", 99.0, 3)
    train(tiny_config(epochs=4, loggers=["tensorboard"]), run, resume=True)
    loss = _events(run).Scalars("train_loss")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e.step for e in loss] == [1, 2, 3, 4] and 99.0 not in [e.value for e in loss]
    assert [e.value for e in loss] == pytest.approx([r["train_loss"] for r in records], rel=1e-6)


class Memory:
    """A logger that keeps what it is given."""
    calls: list = []

    def __init__(self, run_dir, config, first_epoch):
        self.calls.append(("open", run_dir, config["train"]["lr"], first_epoch))

    def log_epoch(self, epoch, scalars):
        self.calls.append(("epoch", epoch, sorted(scalars)))

    def log_hparams(self, hparams, metrics):
        self.calls.append(("hparams", hparams["train.epochs"], metrics))

    def close(self):
        self.calls.append(("close",))


class MemoryPlugin:
    @hookimpl
    def hybridseq_register_loggers(self, register):
        register("memory", lambda *, run_dir, config, first_epoch: Memory(run_dir, config, first_epoch))


def test_a_plugin_adds_a_logger(tmp_path):
    Memory.calls = []
    with register_plugin(MemoryPlugin(), "memory-logger"):
        assert registry.loggers.entry("memory").owner == "memory-logger"
        results = train(tiny_config(epochs=2, loggers=["memory"]), tmp_path / "run")
    kinds = [c[0] for c in Memory.calls]
    assert kinds == ["open", "epoch", "epoch", "hparams", "close"]
    assert Memory.calls[0] == ("open", tmp_path / "run", 3e-3, 1)
    assert Memory.calls[1][1] == 1 and "train_loss" in Memory.calls[1][2] and "val_accuracy" in Memory.calls[1][2]
    assert Memory.calls[3][1] == 2 and Memory.calls[3][2]["test_accuracy"] == results["test_accuracy"]
    assert "memory" not in registry.loggers                                       # gone with its plugin


def test_unknown_logger_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        Trainer(tiny_config(loggers=["tensorbord"]))
    assert err.value.path == "train.loggers[0]" and "did you mean 'tensorboard'" in str(err.value)
    assert "Valid choices: tensorboard" in str(err.value)


def test_one_logger_name_alone_is_a_list_of_one(tmp_path):
    Memory.calls = []
    with register_plugin(MemoryPlugin(), "memory-logger"):
        train(tiny_config(epochs=1, loggers="memory"), tmp_path / "run")
    assert [c[0] for c in Memory.calls] == ["open", "epoch", "hparams", "close"]


def test_missing_tensorboard_is_one_line_naming_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)            # as if not installed
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(tiny_config(epochs=1, loggers=["tensorboard"])))
    from hybridseq.cli import main

    assert main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.loggers" in err and "hybridseq[tensorboard]" in err
