"""Config mistakes fail at validation with the key path, the bad value and the valid choices."""
import math
import subprocess
import sys

import pytest
import torch

import hybridseq as hs
from hybridseq import ConfigError
from hybridseq.cli import main

from conftest import tiny_model


def error_for(**over) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        hs.validate_model(tiny_model(**over))
    return err.value


def test_unknown_block_type_suggests_closest_and_lists_names():
    err = error_for(blocks=[{"type": "mlp"}, {"type": "mlp"}, {"type": "transfomer"}])
    assert err.path == "model.blocks[2].type"
    assert "did you mean 'transformer'" in str(err) and "classify" in str(err)


def test_unknown_key_lists_valid_keys():
    err = error_for(blocks=[{"type": "transformer", "hedas": 2}])
    assert err.path == "model.blocks[0].hedas" and "did you mean 'heads'" in str(err)


def test_wrong_type():
    err = error_for(blocks=[{"type": "transformer", "heads": "many"}])
    assert err.path == "model.blocks[0].heads" and "many" in str(err)


def test_missing_required_value():
    err = error_for(head={"type": "classify"})
    assert err.path == "model.head.classes" and "missing" in str(err)


def test_invalid_choice():
    err = error_for(head={"type": "classify", "classes": 3, "pool": "avg"})
    assert err.path == "model.head.pool" and "mean" in str(err)


def test_unknown_inputs_reference():
    err = error_for(blocks=[{"type": "mlp"}, {"type": "mlp", "inputs": ["b0", "bo"]}])
    assert err.path == "model.blocks[1].inputs[1]" and "b0" in str(err)


def test_cycle():
    err = error_for(blocks=[{"type": "mlp", "inputs": ["b1"]}, {"type": "mlp"}])
    assert "cycle" in str(err) and err.path.startswith("model.blocks[")


def test_port_mismatch_irregular_block_after_sequence_block():
    err = error_for(blocks=[{"type": "mlp"}, {"type": "linear"}])
    assert err.path == "model.blocks[1].type" and "port mismatch" in str(err)


def test_sequence_block_after_pooled_head_is_a_port_mismatch():
    err = error_for(blocks=[{"type": "classify", "classes": 3}, {"type": "mlp"}], head=None)
    assert err.path == "model.blocks[1].type"


def test_width_mismatch_explicit_d_model_and_add_merge():
    assert error_for(blocks=[{"type": "mlp", "d_model": 8}]).path == "model.blocks[0].d_model"
    err = error_for(blocks=[{"type": "mlp", "d_out": 8}, {"type": "mlp", "inputs": ["encoder", "b0"]}])
    assert err.path == "model.blocks[1].inputs" and "width mismatch" in str(err)


def test_cross_field_check():
    err = error_for(blocks=[{"type": "transformer", "heads": 5}])
    assert err.path == "model.blocks[0].heads"


def test_model_level_keys():
    assert error_for(dmodel=3).path == "model.dmodel"
    assert error_for(input={"kind": "regular", "channels": 3}).path == "model.input.kind"


def test_pattern_errors_name_the_legend():
    err = error_for(blocks=[{"type": "pattern", "pattern": "MX", "legend": {"M": "mlp"}}])
    assert err.path == "model.blocks[0].pattern" and "'X'" in str(err)
    err = error_for(blocks=[{"type": "pattern", "pattern": "M", "legend": {"M": {"type": "mlp", "bad": 1}}}])
    assert err.path == "model.blocks[0].legend.M.bad"


def test_cli_prints_the_message_and_exits_nonzero(tmp_path, capsys):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("model: {d_model: 8, input: {channels: 2}, encoder: {type: linear}, blocks: [{type: transfomer}]}\n")
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "model.blocks[0].type" in err and "transformer" in err and "Traceback" not in err


def test_validate_config_in_a_fresh_interpreter():
    code = ("from hybridseq.config import load_config; from hybridseq.sections import validate_config; "
            "print(validate_config(load_config({'model': {'d_model': 8, 'input': {'kind': 'sequence', 'channels': 2}, "
            "'blocks': [{'type': 'mlp'}]}, 'train': {'epochs': 1}})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['model', 'train']"


def test_stack_depth_is_injected_as_n_layer_unless_given():
    model = {"d_model": 8, "input": {"kind": "sequence", "channels": 8},
             "blocks": [{"type": "mamba", "d_state": 4, "repeat": 3},
                        {"type": "pattern", "pattern": "M*",
                         "legend": {"M": {"type": "mamba2", "head_dim": 4}, "*": "transformer"}},
                        {"type": "mamba", "d_state": 4, "n_layer": 2}]}
    spec = hs.validate_model(model)
    depth = {n.name: getattr(n.cfg, "n_layer", None) for n in spec.nodes}
    assert depth == {"b0_0": 6, "b0_1": 6, "b0_2": 6, "b1_0": 6, "b1_1": None, "b2": 2}
    torch.manual_seed(0)
    stacked = hs.assemble(model).nodes["b0_0"].out_proj.weight
    torch.manual_seed(0)
    alone = hs.build_block("mamba", d_model=8, d_state=4).out_proj.weight
    torch.testing.assert_close(stacked, alone / math.sqrt(6))            # 1/√depth, from the same draw
