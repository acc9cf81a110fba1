"""The README stays true: its quickstart YAML + Python run as written, its test command is what CI runs,
every sub-command of `hybridseq` has a row in its CLI table, and every registered block is catalogued."""
import argparse
import re
import subprocess
import sys
from pathlib import Path

from hybridseq import registry
from hybridseq.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def fenced(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_quickstart_yaml_and_python_run_as_written(tmp_path):
    (yaml_text,) = [b for b in fenced("yaml") if b.startswith("# model.yaml")]
    (code,) = [b for b in fenced("python") if "hs.assemble" in b]
    (tmp_path / "model.yaml").write_text(yaml_text)
    code += "\nassert logits.shape == (2, 9), logits.shape\nprint('ok')\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "total params" in proc.stdout and proc.stdout.rstrip().endswith("ok")


def test_ci_runs_the_readme_test_command():
    command = next(line for b in fenced("bash") for line in b.splitlines() if "pytest" in line)
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()
    assert command.index("ruff check .") < command.index("pytest")          # lint first


def test_the_tree_passes_the_configured_lint():
    import shutil

    import pytest

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "[tool.ruff]" in pyproject and '"ruff' in pyproject.split("[project.optional-dependencies]")[1]
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    out = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:]


def test_cli_table_lists_every_command():
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert {"blocks", "train", "ablate", "analyze"} <= set(sub.choices)
    for name in sub.choices:
        assert f"`hybridseq {name}" in README, f"README's CLI table lacks `hybridseq {name}`"


def test_block_catalogue_names_every_builtin_block():
    for name in registry.blocks.names():
        if registry.blocks.entry(name, "name").owner.startswith("hybridseq."):
            assert f"`{name}`" in README, f"README's block table lacks `{name}`"
