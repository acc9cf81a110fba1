"""Training options: console progress, bf16 autocast (CUDA only), opt-in torch.compile, device choice."""
import json

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from hybridseq import ConfigError
from hybridseq.cli import main
from hybridseq.train.config import train_config
from hybridseq.train.ddp import pick_device
from hybridseq.train.evaluate import autocast
from hybridseq.train.trainer import Trainer, train

from test_train import tiny_config

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_progress_bar_and_one_line_per_epoch(capsys):
    train(OmegaConf.create(tiny_config(epochs=2, progress=True)), None)
    out, err = capsys.readouterr()
    assert "classify on spirals:" in out and "device cpu" in out
    lines = [line for line in out.splitlines() if line.startswith("epoch")]
    assert [line.split()[1] for line in lines] == ["1", "2"]
    assert "val_accuracy" in lines[0] and "nfe" in lines[0]
    assert "epoch 1/2" in err                                     # the tqdm bar


def test_quiet_run_prints_nothing(capsys):
    train(OmegaConf.create(tiny_config(epochs=1)), None)
    out, err = capsys.readouterr()
    assert out == "" and "epoch 1/1" not in err


def test_bf16_autocast_is_off_on_cpu():
    with autocast(torch.device("cpu"), True):
        assert not torch.is_autocast_enabled("cpu")
    same = [train(OmegaConf.create(tiny_config(epochs=1, bf16=bf16)), None)["curves"] for bf16 in (True, False)]
    assert same[0] == same[1]


@cuda
def test_bf16_autocast_on_cuda():
    with autocast(torch.device("cuda"), True):
        assert torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.bfloat16
    with autocast(torch.device("cuda"), False):
        assert not torch.is_autocast_enabled("cuda")
    results = train(OmegaConf.create(tiny_config(epochs=1, device="auto")), None)
    assert results["device"].startswith("cuda") and results["mem_kind"] == "cuda_max_allocated"
    assert all(torch.isfinite(torch.tensor(results["curves"]["train_loss"])))


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")   # torch's own
def test_compile_is_opt_in_and_skips_blocks_that_are_not_compile_safe():
    plain = Trainer(OmegaConf.create(tiny_config()))
    assert plain.net is plain.model and plain.cfg.train.compile is False
    compiled = Trainer(OmegaConf.create(tiny_config()), compile=True)
    assert isinstance(compiled.net, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled.net._orig_mod is compiled.model and compiled.cfg.train.compile is True
    cfg = tiny_config(compile=True)
    cfg["model"]["encoder"] = {"type": "ode_rnn"}
    with pytest.warns(UserWarning, match=r"train.compile: blocks \['ode_rnn'\] are not compile_safe"):
        unsafe = Trainer(OmegaConf.create(cfg))
    assert unsafe.net is unsafe.model


def test_device_choice_errors_name_the_key():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match=r"train\.device: invalid value 'tpu'") as err:
        train_config({"device": "tpu"})
    assert "cuda" in err.value.choices
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"train\.device: 'cuda' asked for, but CUDA is not available"):
            pick_device("cuda")


def depth_config(**train_over):
    cfg = tiny_config(epochs=1, **train_over)
    cfg["model"]["blocks"] = [{"type": "neural_ode_transformer", "heads": 2, "steps": 2, "solver": {"method": "rk4"}}]
    return cfg


def test_adaptive_depth_from_the_command_line(tmp_path, capsys):
    """Trained with 2 steps; evaluated with 8 and fine-tuned with 4 by config alone (same weights)."""
    train(OmegaConf.create(depth_config()), tmp_path / "n2")
    assert main(["evaluate", str(tmp_path / "n2"), "model.blocks[0].steps=8"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["overrides"] == ["model.blocks[0].steps=8"] and result["nfe"] == 8 * 4   # rk4: 4 per step
    assert main(["evaluate", str(tmp_path / "n2"), "model.d_model=16"]) == 2
    assert "overrides: the weights in" in capsys.readouterr().err

    cfg = depth_config(init_from=str(tmp_path / "n2"))
    cfg["model"]["blocks"][0]["steps"] = 4
    start = Trainer(OmegaConf.create(cfg), None).model.state_dict()
    saved = load_file(str(tmp_path / "n2" / "best.safetensors"))
    assert saved.keys() == start.keys() and all(torch.equal(start[k], saved[k]) for k in saved)
    assert train(OmegaConf.create(cfg), tmp_path / "n4")["nfe"] == 4 * 4


def test_init_from_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.init_from: .*not found"):
        Trainer(OmegaConf.create(depth_config(init_from=str(tmp_path / "nowhere"))), None)
    train(OmegaConf.create(tiny_config(epochs=1)), tmp_path / "plain")
    with pytest.raises(ConfigError, match=r"train\.init_from: the weights in .* do not fit this model"):
        Trainer(OmegaConf.create(depth_config(init_from=str(tmp_path / "plain"))), None)
