"""Every script in examples/ runs as a user runs it: ``python examples/NAME.py`` in a fresh process, from
an empty working directory, and prints what its docstring promises. A new example without a case here
fails `test_every_example_has_a_case`."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("*.py"))


def check_assemble(out: str, cwd: Path) -> None:
    assert "total params" in out.lower()
    assert "logits (2, 4)" in out and "block output (2, 5, 32)" in out


def check_inline_block(out: str, cwd: Path) -> None:
    assert "registered: {'blocks': ['gated_ff']}" in out
    assert "config error: model.blocks[0].hiden: unknown key 'hiden'" in out
    losses = [float(m) for m in re.findall(r"loss (\d+\.\d+)", out)]
    assert len(losses) == 5 and losses[-1] < losses[0]


def check_ablation(out: str, cwd: Path) -> None:
    assert "| variant |" in out and "| linear |" in out and "| mtan |" in out
    records = [json.loads(line) for line in (cwd / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert (cwd / "out" / "summary.md").is_file() and (cwd / "out" / "summary.csv").is_file()


CASES = {"assemble": ([], check_assemble),
         "inline_block": ([], check_inline_block),
         "ablation": (["--tiny", "--out", "out"], check_ablation)}


def test_every_example_has_a_case():
    assert sorted(CASES) == EXAMPLES


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name, tmp_path):
    args, check = CASES[name]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check(proc.stdout, tmp_path)
