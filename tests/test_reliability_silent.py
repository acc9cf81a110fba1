"""Settings and data that used to run silently wrong: each is now an error naming the key, file or line."""
import json
import math

import pytest
import torch
from omegaconf import OmegaConf

import hybridseq as hs
from hybridseq.config import load_config
from hybridseq.data import TSFormatError, read_ts
from hybridseq.data.transforms import channel_stats, sample
from hybridseq.errors import TrainingError
from hybridseq.io import read_jsonl, to_json
from hybridseq.schema import build_config
from hybridseq.solvers import SolverConfig
from hybridseq.testing import block_config, register_plugin
from hybridseq.train import train
from hybridseq.train.config import train_config
from hybridseq.train.guard import check_loss

HEADER = "@problemName Toy\n@timeStamps false\n@univariate false\n@dimensions 2\n@equalLength false\n" \
         "@classLabel true a b\n@data\n"


def tiny_run(**train_over):
    return {"data": {"name": "spirals", "n_train": 16, "n_test": 8, "points": 8},
            "model": {"d_model": 8, "encoder": {"type": "linear"}, "blocks": [{"type": "transformer", "heads": 2}],
                      "head": {"type": "classify"}},
            "train": {"epochs": 1, "progress": False, "batch_size": 8, **train_over}}


@pytest.mark.parametrize("key,value,match", [
    ("grad_clip", -1.0, "must be > 0"),             # clipping to a negative norm made the optimiser climb the loss
    ("grad_clip", 0.0, "must be > 0"),
    ("grad_clip", math.nan, "finite"),
    ("lr", math.inf, "finite"),
    ("lr", 1e-320, "float32"),
    ("weight_decay", -1.0, ">= 0"),
    ("seed", 2**64, "64-bit"),
    ("seed", -1, ">= 0"),
])
def test_train_settings_are_checked_for_range_and_finiteness(key, value, match):
    with pytest.raises(hs.ConfigError, match=match) as err:
        train_config({key: value})
    assert err.value.path == f"train.{key}"


@pytest.mark.parametrize("block,key,value,match", [
    ({"type": "s4d"}, "time_unit", 1e-320, "float32"),
    ({"type": "s4d"}, "time_unit", 0.0, "> 0"),
    ({"type": "pde_attention", "heads": 2}, "time", math.inf, "finite"),
    ({"type": "transformer", "heads": 2}, "dropout", 1.5, "< 1"),
    ({"type": "transformer", "heads": 2}, "mlp_ratio", -1.0, "> 0"),
    ({"type": "transformer", "heads": 2}, "mlp_ratio", math.nan, "finite"),
    ({"type": "mamba"}, "d_state", 0, "(> 0|>= 1)"),
])
def test_block_numbers_are_checked_for_range_and_finiteness(block, key, value, match):
    model = {"d_model": 8, "input": {"kind": "sequence", "channels": 8}, "blocks": [{**block, key: value}]}
    with pytest.raises(hs.ConfigError, match=match) as err:
        hs.assemble(model)
    assert err.value.path == f"model.blocks[0].{key}"


def test_every_registered_blocks_floats_reject_nan():
    """The finiteness check is general: it holds for every float field of every block, plugins included."""
    import dataclasses

    from hybridseq import registry

    hs.plugins.load()
    checked = 0
    for name in registry.blocks.names():
        cls, cfg = block_config(name)
        for f in dataclasses.fields(cls.Config):
            if f.type in (float, "float"):
                with pytest.raises(hs.ConfigError, match="finite|nan") as err:    # the block's own check may
                    build_config(cls.Config, {**dataclasses.asdict(cfg), f.name: math.nan}, name)   # word it
                assert err.value.path.startswith(f"{name}.")
                checked += 1
    assert checked >= 15


def test_a_number_for_a_bool_is_an_error_everywhere_and_bool_words_still_read():
    """OmegaConf alone reads any int as a bool (3 would mean true); every bool field of every block, nested
    solver settings and the train section refuse numbers."""
    import dataclasses
    import typing

    from hybridseq import registry

    hs.plugins.load()
    checked = 0
    for name in registry.blocks.names():
        cls, cfg = block_config(name)
        for f in dataclasses.fields(cls.Config):
            if typing.get_type_hints(cls.Config)[f.name] is bool:
                with pytest.raises(hs.ConfigError, match="expected true or false, got 3") as err:
                    build_config(cls.Config, {**dataclasses.asdict(cfg), f.name: 3}, name)
                assert err.value.path == f"{name}.{f.name}"
                checked += 1
    assert checked >= 10
    with pytest.raises(hs.ConfigError, match="true or false") as err:
        build_config(type(block_config("ode_rnn")[1]), {"solver": {"method": "dopri5", "adjoint": 1}}, "enc")
    assert err.value.path == "enc.solver.adjoint"
    assert build_config(SolverConfig, {"adjoint": "off"}, "solver").adjoint is False
    with pytest.raises(hs.ConfigError, match="true or false") as err:
        train_config({"bf16": 2})
    assert err.value.path == "train.bf16"


class NanSolver:
    @hs.hookimpl
    def hybridseq_register_solvers(self, register):
        register("nan_euler", lambda func, y0, t, **kw: torch.full((len(t), *y0.shape), math.nan))
        register("flat_euler", lambda func, y0, t, **kw: y0)


def test_a_solver_that_returns_nan_or_a_wrong_shape_is_named():
    with register_plugin(NanSolver(), "nan-solvers"):
        cfg = tiny_run()
        cfg["model"]["encoder"] = {"type": "ode_rnn", "solver": {"method": "nan_euler"}}
        with pytest.raises(TrainingError) as err:                  # NaN: the block that runs it is named
            train(cfg)
        assert err.value.path == "model.encoder" and "epoch 1, step 1" in str(err.value)
        solver = hs.ODESolver(build_config(SolverConfig, {"method": "flat_euler"}, "solver"))
        with pytest.raises(hs.ConfigError, match=r"plugin nan-solvers\) returned shape \[1\]") as err:
            solver(torch.nn.Identity(), torch.ones(1), torch.tensor([0.0, 1.0]))
        assert err.value.path == "solver.method"


def test_a_non_finite_loss_stops_training_naming_epoch_step_and_key(tmp_path):
    with pytest.raises(TrainingError) as err:
        train(tiny_run(lr=1e30, grad_clip=None, epochs=3), tmp_path / "run")
    text = str(err.value)
    assert err.value.path == "train.lr" and "epoch" in text and "step" in text
    assert not (tmp_path / "run" / "results.json").exists()


def test_the_loss_check_names_the_likely_key():
    from dataclasses import replace

    model = hs.assemble({"d_model": 4, "input": {"kind": "sequence", "channels": 4},
                         "blocks": [{"type": "mlp"}, {"name": "bad", "type": "mlp"}]})
    x = torch.randn(2, 3, 4)
    assert check_loss(torch.tensor(0.5), model, x, {}, 1, 1) == 0.5
    hook = model.nodes["bad"].register_forward_hook(lambda m, i, out: replace(out, x=out.x * math.nan))
    with pytest.raises(TrainingError) as err:                  # finite weights and input: the block is named
        check_loss(model(x).x.mean(), model, x, {}, epoch=1, step=1)
    assert err.value.path == "model.blocks[1]" and "epoch 1, step 1" in str(err.value)
    with pytest.raises(TrainingError) as err:                  # the same after training steps: divergence
        check_loss(model(x).x.mean(), model, x, {}, epoch=2, step=5)
    assert err.value.path == "train.lr" and "model.blocks[1]" in str(err.value) and "epoch 2, step 5" in str(err.value)
    hook.remove()
    with pytest.raises(TrainingError) as err:                  # non-finite input: the data
        check_loss(torch.tensor(math.nan), model, x * math.inf, {}, 1, 1)
    assert err.value.path == "data"
    with torch.no_grad():
        next(model.nodes["bad"].parameters()).fill_(math.inf)
    with pytest.raises(TrainingError) as err:                  # non-finite weights: the run diverged
        check_loss(model(x).x.mean(), model, x, {}, 1, 1)
    assert err.value.path == "train.lr"


def test_results_are_strict_json():
    text = to_json({"a": math.nan, "b": [math.inf, 1.0], "c": {"d": -math.inf}})
    assert json.loads(text) == {"a": None, "b": [None, 1.0], "c": {"d": None}} and "NaN" not in text


def test_run_files_hold_valid_json(tmp_path):
    train(tiny_run(), tmp_path / "run")
    for name in ("results.json",):
        json.loads((tmp_path / "run" / name).read_text(), parse_constant=pytest.fail)
    assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 1


@pytest.mark.parametrize("cell", ["inf", "-inf", "1e400", "Infinity"])
def test_a_non_finite_value_is_an_error_at_its_line(tmp_path, cell):
    f = tmp_path / "bad.ts"
    f.write_text(HEADER + "1,2,3:4,5,6:a\n1,2:" + cell + ",3:b\n")
    with pytest.raises(TSFormatError, match=r"bad\.ts:9: value") as err:
        read_ts(f)
    assert err.value.line == 9


def test_a_non_finite_time_stamp_is_an_error_at_its_line(tmp_path):
    f = tmp_path / "stamped.ts"
    f.write_text(HEADER.replace("@timeStamps false", "@timeStamps true")
                 + "(0,1),(1,2):(0,3):a\n(0,1),(inf,2):(0,3):b\n")
    with pytest.raises(TSFormatError, match=r"stamped\.ts:9: time stamp 'inf'"):
        read_ts(f)


def test_one_huge_value_does_not_wipe_its_channel():
    """1e30 squared overflows float32; the statistics are float64, so other values keep their spread."""
    values = torch.tensor([[1.0, 1e30], [2.0, 3.0], [3.0, 4.0]])
    mean, std = channel_stats([sample(values, torch.arange(3.0))])
    assert torch.isfinite(mean).all() and torch.isfinite(std).all()
    assert std[1] > 1e29 and mean[0] == 2.0


def test_duplicate_class_labels_are_an_error(tmp_path):
    f = tmp_path / "dup.ts"
    f.write_text(HEADER.replace("@classLabel true a b", "@classLabel true a b a") + "1:2:a\n")
    with pytest.raises(TSFormatError, match=r"dup\.ts:6: @classLabel lists 'a' more than once"):
        read_ts(f)


def test_base_60_numbers_stay_strings(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: {d_model: 16:00}\ntrain: {lr: 1e-3}\n")
    cfg = load_config(f, ["train.epochs=1:30"])
    assert cfg.model.d_model == "16:00" and cfg.train.epochs == "1:30" and cfg.train.lr == 1e-3
    with pytest.raises(hs.ConfigError, match="16:00") as err:
        hs.assemble({**OmegaConf.to_container(cfg.model), "input": {"channels": 2}, "blocks": [{"type": "mlp"}]})
    assert err.value.path == "model.d_model"


def test_a_validation_split_that_leaves_nothing_to_train_on():
    from hybridseq.data import load_data

    with pytest.raises(hs.ConfigError) as err:
        load_data({"name": "spirals", "n_train": 4, "n_test": 2, "val_fraction": 0.99})
    assert err.value.path == "data.val_fraction"


def test_a_case_with_every_value_missing_is_an_error_at_its_line(tmp_path):
    f = tmp_path / "empty.ts"
    f.write_text(HEADER + "1,2:3,4:a\n?,?:?:b\n")
    with pytest.raises(TSFormatError, match=r"empty\.ts:9: every value of this case is missing"):
        read_ts(f)
