"""Ordinary mistakes reach the command line as one line naming the key or file, with exit status 2."""
import pytest

from hybridseq.cli import main

MODEL = """
model:
  d_model: 8
  encoder: {type: linear}
  blocks: [{type: transformer, heads: 2}]
  head: {type: classify}
data: {name: spirals, n_train: 16, n_test: 8, points: 8}
train: {epochs: 1, batch_size: 8, progress: false}
"""
TS = "@problemName Toy\n@dimensions 1\n@classLabel true a b\n@data\n1,2,3:a\n2,3,4:b\n1,1,1:a\n3,3,3:b\n"


def one_line_error(capsys, args, status=2) -> str:
    assert main(args) == status
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(MODEL)
    return path


@pytest.fixture
def trained(tmp_path, config, capsys):
    out = tmp_path / "run"
    assert main(["train", str(config), "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    return out


def test_a_malformed_ts_file_is_one_line_naming_file_and_line(tmp_path, config, capsys):
    (tmp_path / "Toy_TRAIN.ts").write_text(TS.replace("3,3,3:b", "3,x,3:b"))
    (tmp_path / "Toy_TEST.ts").write_text(TS)
    err = one_line_error(capsys, ["validate", str(config), "data={name: uea}", f"+data.path={tmp_path}"])
    assert "Toy_TRAIN.ts:8:" in err and "'x'" in err


@pytest.mark.parametrize("override,key", [
    ("train.seed=${nope}", "train.seed"),
    ("train.lr=${train.missing_key}", "train.lr"),
    ("train.lr=${oc.env:HYBRIDSEQ_TEST_UNSET_VAR}", "train.lr"),
])
def test_a_broken_interpolation_names_its_key(capsys, config, override, key):
    err = one_line_error(capsys, ["validate", str(config), override])
    assert f"{key}: interpolation" in err


def test_a_config_that_is_not_utf8_names_the_file(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model: {d_model: 8}  # d\u00e9j\u00e0\n".encode("latin-1"))
    assert "latin1.yaml: not a UTF-8 text file" in one_line_error(capsys, ["validate", str(path)])


def test_invalid_yaml_names_the_line_without_echoing_the_file(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  d_model: [8\n  secret_token: hunter2\n")
    err = one_line_error(capsys, ["validate", str(path)])
    assert "broken.yaml: invalid YAML at line" in err and "hunter2" not in err


def test_out_pointing_at_a_file(tmp_path, config, capsys):
    target = tmp_path / "taken.txt"
    target.write_text("mine")
    err = one_line_error(capsys, ["train", str(config), "--out", str(target), "--no-progress"])
    assert "--out" in err and "is a file" in err and target.read_text() == "mine"


def test_a_tampered_training_state_names_the_file(trained, config, capsys):
    (trained / "last.pt").write_bytes(b"not a torch file")
    err = one_line_error(capsys, ["train", str(config), "--out", str(trained), "--resume", "train.epochs=2",
                                  "--no-progress"])
    assert "last.pt: cannot load the saved training state" in err


def test_tampered_weights_name_the_file(trained, capsys):
    (trained / "best.safetensors").write_bytes(b"\x00" * 64)
    err = one_line_error(capsys, ["evaluate", str(trained)])
    assert "best.safetensors: not a readable safetensors file" in err


def test_analyze_with_a_bad_input_file(tmp_path, trained, capsys):
    bad = tmp_path / "batch.pt"
    bad.write_bytes(b"garbage")
    assert "--input" in one_line_error(capsys, ["analyze", str(trained), "--input", str(bad)])
    assert "--input" in one_line_error(capsys, ["analyze", str(trained), "--input", str(tmp_path / "absent.pt")])


def test_traceback_flag_and_variable_show_the_stack(capsys, config, monkeypatch):
    assert main(["validate", str(config), "train.lr=-1", "--traceback"]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("HYBRIDSEQ_TRACEBACK", "1")
    assert main(["validate", str(config), "train.lr=-1"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_an_unexpected_error_is_one_line_with_exit_1(capsys, monkeypatch):
    import hybridseq.commands.core as core

    def broken(args):
        raise RuntimeError("x" * 5000)

    monkeypatch.setattr(core, "cmd_blocks", broken)
    err = one_line_error(capsys, ["blocks"], status=1)
    assert "unexpected error RuntimeError" in err and "--traceback" in err and len(err) < 600


@pytest.mark.parametrize("override,key", [
    ("data.val_fraction=0.99", "data.val_fraction"),      # empty train split
    ("model=[1, 2]", "model"),
    ("model=3", "model"),
    ("model.head=true", "model.head"),
    ("data.name={}", "data.name"),
    ("train.weight_decay=-1", "train.weight_decay"),
    ("model.blocks[0].dropout=1.5", "model.blocks[0].dropout"),
    ("model.blocks[0].mlp_ratio=-2", "model.blocks[0].mlp_ratio"),
    ("model.blocks[0].mlp_ratio=.nan", "model.blocks[0].mlp_ratio"),
    ("model.encoder={type: mtan, reference_points: 0}", "model.encoder.reference_points"),
    ("train.seed=18446744073709551616", "train.seed"),
    ("data.seed=18446744073709551616", "data.seed"),
    ("model.blocks[0].repeat=100000", "model.blocks[0].repeat"),
])
def test_settings_that_failed_inside_torch_fail_at_validation(capsys, config, override, key):
    err = one_line_error(capsys, ["validate", str(config), override])
    assert f"config error: {key}:" in err
