"""Shell completion: the scripts parse in their shells, and the hidden completer offers the right words."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hybridseq import registry, shipped
from hybridseq.cli import main
from hybridseq.commands.completion import FILES, SCRIPTS
from hybridseq.testing import register_plugin

ROOT = Path(__file__).resolve().parents[1]
JV = str(ROOT / "configs" / "experiments" / "japanese_vowels.yaml")     # its block 0 is a transformer


def complete(capsys, *words) -> list[str]:
    assert main(["__complete", "--", *words]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_scripts_are_valid_syntax(shell, capsys):
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert script == SCRIPTS[shell] and "__complete --" in script
    if shutil.which(shell) is None:
        if shell == "bash":
            pytest.fail("bash is needed to check the bash script")
        pytest.skip(f"{shell} not installed")
    proc = subprocess.run([shell, "-n"], input=script, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_commands_and_options(capsys):
    names = complete(capsys, "")
    assert names[-3:] == ["--help", "--version", "--traceback"]
    assert {"train", "ablate", "completion", "configs", "blocks"} <= set(names) and "__complete" not in names
    assert complete(capsys, "tr") == ["train"]
    assert complete(capsys, "train", JV, "--o") == ["--out"]
    assert complete(capsys, "train", JV, "--out", "") == [FILES]
    assert complete(capsys, "completion", "") == ["bash", "zsh", "fish"]


def test_block_names_for_type(capsys):
    got = complete(capsys, "train", JV, "model.blocks.0.type=")
    assert got == [f"model.blocks.0.type={n}" for n in registry.blocks.names()]
    assert "model.blocks.0.type=lru" in got                             # a plugin's block
    assert complete(capsys, "validate", JV, "model.blocks[0].type=mamb") == [
        "model.blocks[0].type=mamba", "model.blocks[0].type=mamba2"]
    assert complete(capsys, "blocks", "s4") == ["s4", "s4d"]


def test_block_registered_by_a_plugin_object_is_offered(capsys):
    class Plugin:
        from hybridseq.hookspecs import hookimpl

        @hookimpl
        def hybridseq_register_blocks(self, register):
            register("zz_completion_probe", registry.blocks.get("transformer"))

    with register_plugin(Plugin(), "completion-probe"):
        assert complete(capsys, "train", JV, "model.encoder.type=zz") == ["model.encoder.type=zz_completion_probe"]
    assert complete(capsys, "train", JV, "model.encoder.type=zz") == []


def test_config_keys(capsys):
    train = complete(capsys, "train", JV, "train.")
    assert {"train.epochs=", "train.lr=", "train.grad_clip=", "train.scheduler="} <= set(train)
    assert all(k.startswith("train.") for k in train)
    assert complete(capsys, "train", JV, "train.sch") == ["train.scheduler="]
    assert complete(capsys, "train", JV, "train.scheduler=") == ["train.scheduler=constant", "train.scheduler=cosine"]
    assert complete(capsys, "train", JV, "++train.pat") == ["++train.patience="]
    top = complete(capsys, "train", JV, "")
    assert {"model.", "data.", "train."} <= set(top) and FILES in top
    model = complete(capsys, "train", JV, "model.")
    assert {"model.d_model=", "model.encoder.", "model.blocks.", "model.head."} <= set(model)
    block = complete(capsys, "train", JV, "model.blocks.0.")           # the transformer's own schema
    assert {"model.blocks.0.heads=", "model.blocks.0.dropout=", "model.blocks.0.type="} <= set(block)
    assert "model.blocks.0.d_model=" not in block                       # injected, never set by the user
    assert "data.irregular.drop=" in complete(capsys, "train", JV, "data.irregular.")   # keys the file holds


def test_nested_solver_keys_and_method_values(capsys, tmp_path):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("model:\n  d_model: 8\n  input: {kind: irregular, channels: 2}\n  encoder: {type: ode_rnn}\n"
                   "  blocks: [{type: transformer}]\n  head: {type: classify, classes: 2}\n")
    keys = complete(capsys, "describe", str(cfg), "model.encoder.solver.")
    assert "model.encoder.solver.method=" in keys and "model.encoder.solver.rtol=" in keys
    assert complete(capsys, "describe", str(cfg), "model.encoder.solver.method=dopri") == [
        "model.encoder.solver.method=dopri5", "model.encoder.solver.method=dopri8"]


def test_shipped_configs_as_arguments(capsys):
    assert complete(capsys, "ablate", "sweeps/q") == ["sweeps/quickstart", FILES]
    assert complete(capsys, "configs", "") == ["list", "show", "copy"]
    assert complete(capsys, "configs", "show", "experiments/japanese") == ["experiments/japanese_vowels"]
    assert set(complete(capsys, "train", "")) == {*shipped.names(), FILES}


def test_bash_function_completes_a_partial_value(tmp_path):
    """The bash script end to end: COMP_* as bash sets them, the completer run as `hybridseq` on PATH."""
    if shutil.which("bash") is None:
        pytest.fail("bash is needed")
    line = f"hybridseq train {JV} model.blocks.0.type=mamb"
    script = SCRIPTS["bash"] + (
        f'COMP_LINE="{line}"; COMP_POINT=${{#COMP_LINE}}\n'
        f'COMP_WORDS=(hybridseq train "{JV}" model.blocks.0.type = mamb); COMP_CWORD=5\n'
        '_hybridseq_complete; printf "%s\\n" "${COMPREPLY[@]}"\n')
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=_tool_on_path(tmp_path),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["mamba", "mamba2"]


def _tool_on_path(tmp_path) -> dict:
    """An environment whose `hybridseq` runs this interpreter's hybridseq."""
    tool = tmp_path / "hybridseq"
    tool.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hybridseq.cli "$@"\n')
    tool.chmod(0o755)
    return {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}


def test_fish_completes_a_partial_value(tmp_path):
    if shutil.which("fish") is None:
        pytest.skip("fish not installed")
    script = tmp_path / "hybridseq.fish"
    script.write_text(SCRIPTS["fish"])
    line = f"hybridseq train {JV} model.blocks.0.type=mamb"
    proc = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C '{line}'"],
                          capture_output=True, text=True, env=_tool_on_path(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["model.blocks.0.type=mamba", "model.blocks.0.type=mamba2"]


def test_zsh_function_adds_the_candidates(tmp_path):
    """The zsh function with zsh's completion builtins replaced by recorders (no terminal needed)."""
    if shutil.which("zsh") is None:
        pytest.skip("zsh not installed")
    stubs = ('compadd() { local suffix=" "; [[ $1 == -S ]] && { suffix=$2; shift 2 }; '
             'print -l -- "${(@P)2/%/|$suffix}" }\n_files() { print FILES }\ncompdef() { }\n')
    calls = (f"words=(hybridseq train {JV} train.sch); CURRENT=4; _hybridseq\n"
             f"words=(hybridseq train {JV} train.scheduler=c); CURRENT=4; _hybridseq\n"
             "words=(hybridseq tr); CURRENT=2; _hybridseq\n")
    proc = subprocess.run(["zsh", "-f", "-c", stubs + SCRIPTS["zsh"] + calls], capture_output=True, text=True,
                          env=_tool_on_path(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    # a key ending in '=' or '.' takes no space after it; a whole value or command does
    assert proc.stdout.splitlines() == ["train.scheduler=|", "train.scheduler=constant| ",
                                        "train.scheduler=cosine| ", "train| "]


def test_evaluate_reads_the_keys_from_the_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(Path(JV).read_text())
    assert "model.blocks.0.heads=" in complete(capsys, "evaluate", str(run), "model.blocks.0.")
    assert complete(capsys, "evaluate", str(run), "--split", "") == [FILES]
    assert "model.blocks.0.heads=" not in complete(capsys, "ablate", "configs/sweeps/quickstart.yaml",
                                                   "model.blocks.0.")   # a sweep is no run config
