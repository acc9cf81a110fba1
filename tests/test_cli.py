import json
import subprocess
import sys

from hybridseq.cli import main

MODEL = """
model:
  d_model: 16
  input: {kind: irregular, channels: 3}
  encoder: {type: linear}
  blocks: [{type: transformer, heads: 2, repeat: 2}]
  head: {type: classify, classes: 4}
"""


def test_blocks_lists_schema(capsys):
    assert main(["blocks", "transformer"]) == 0
    out = capsys.readouterr().out
    assert "transformer  [sequence -> sequence]" in out and "heads: int = 4" in out
    assert main(["blocks", "--json"]) == 0
    names = {b["name"] for b in json.loads(capsys.readouterr().out)}
    assert {"linear", "transformer", "mlp", "classify", "regress"} <= names


def test_plugins_json_lists_builtin_registrations(capsys):
    assert main(["plugins", "--all", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert "transformer" in rows["hybridseq.blocks.backbones"]["registered"]["blocks"]
    assert "dopri5" in rows["hybridseq.solvers.builtin"]["registered"]["solvers"]


def test_validate_and_describe_with_overrides(tmp_path, capsys):
    cfg = tmp_path / "m.yaml"
    cfg.write_text(MODEL)
    assert main(["validate", str(cfg)]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["describe", str(cfg), "model.d_model=32", "--forward", "8"]) == 0
    out = capsys.readouterr().out
    assert "3→32" in out and "b0_1" in out and "total params" in out
    assert main(["validate", str(cfg), "model.blocks[0].heads=3"]) == 2
    assert "model.blocks[0].heads" in capsys.readouterr().err


def test_console_script_missing_file_is_a_clean_error():
    proc = subprocess.run([sys.executable, "-m", "hybridseq.cli", "validate", "nope.yaml"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_experiment_plus_model_file_takes_widths_from_the_data(capsys):
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    args = [str(configs / "experiments" / "spirals.yaml"), str(configs / "models" / "linear_s4.yaml")]
    assert main(["describe", *args]) == 0
    out = capsys.readouterr().out
    assert "s4" in out and "2→" in out                  # spirals: 2 channels, filled from the data
    assert main(["validate", *args, "data.irregular.dropp=0.3"]) == 2
    err = capsys.readouterr().err
    assert "data.irregular.dropp: unknown key 'dropp'" in err and "did you mean 'drop'" in err


def test_builtin_commands_register_through_the_commands_hook():
    from pathlib import Path

    from hybridseq import cli, plugins

    plugins.load()
    for module in ("core", "train", "ablate", "analyze"):
        assert "hybridseq_register_commands" in plugins.infos[f"hybridseq.commands.{module}"].hooks
    assert "add_parser(" not in Path(cli.__file__).read_text()          # cli.py parses and dispatches only
    commands = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert commands >= {"blocks", "plugins", "validate", "describe", "train", "evaluate", "ablate", "analyze"}
