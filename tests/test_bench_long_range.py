"""The long-range token benchmark: its --quick smoke run trains every model of the sweep for two steps
on both kinds of problem, resumes, reports over-budget runs as skipped, and its rows match the budget."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "long_range.py"
MODELS = ["transformer", "s4d", "mamba", "mamba2", "pde_attention", "pde_attention_weights",
          "neural_ode_transformer"]


def load_bench():
    spec = importlib.util.spec_from_file_location("long_range", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


def test_quick_run_trains_every_model_of_the_sweep_and_resumes(tmp_path):
    cmd = [sys.executable, str(BENCH), "--quick", "--out", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "| problem | L | model | params | test acc. % | s/epoch | act. MiB | epochs × steps |" in out.stdout
    runs = records(tmp_path)
    assert sorted((r["variant"], r["status"]) for r in runs) == sorted(
        (f"{p}/{m}", "ok") for p in ("copy256", "listops2048") for m in MODELS)
    for r in runs:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["act_mib"] > 0 and r["s_per_epoch"] > 0
        assert r["epochs"] == 1 and r["steps_per_epoch"] == 2 and r["length"] <= 40
        assert f"| {r['variant'].split('/')[0]} | {r['length']} | {r['variant'].split('/')[1]} |" in out.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0 and again.stderr == ""                    # nothing rerun
    assert len(records(tmp_path)) == len(runs)


def test_models_share_one_parameter_budget(tmp_path):
    """Within each problem every model is within 15% of the transformer's parameter count."""
    load_bench().main(["--quick", "--out", str(tmp_path), "--budget", "0"])
    runs = records(tmp_path)
    assert {r["status"] for r in runs} == {"skipped"}                      # nothing trained at budget 0
    assert all(r["projected_s"] > 0 and r["act_mib"] > 0 for r in runs)
    for problem in ("copy256", "listops2048"):
        params = {r["variant"].split("/")[1]: r["params"] for r in runs if r["variant"].startswith(problem)}
        assert set(params) == set(MODELS)
        base = params["transformer"]
        assert all(abs(n - base) <= 0.15 * base for n in params.values()), params


def test_skipped_runs_run_when_the_budget_allows_and_overrides_are_part_of_the_key(tmp_path, capsys):
    bench = load_bench()
    argv = ["--quick", "--out", str(tmp_path), "--problems", "copy256", "--models", "mamba"]
    bench.main([*argv, "--print-only"])
    assert "| copy256 | — | mamba | — | not run | — | — | — |" in capsys.readouterr().out
    bench.main([*argv, "--budget", "0"])
    bench.main([*argv, "--budget", "0"])                                  # still over budget: not probed again
    assert [r["status"] for r in records(tmp_path)] == ["skipped"]
    bench.main([*argv, "--budget", "0", "--print-only"])
    assert "| copy256 | 28 | mamba | 67,600 | skipped (projected 0 min) | — |" in capsys.readouterr().out
    bench.main(argv)                                                      # the default budget covers it
    bench.main([*argv, "--set", "train.lr=3.0e-3"])
    runs = records(tmp_path)
    assert [r["status"] for r in runs] == ["skipped", "ok", "ok"]
    assert runs[0]["key"] == runs[1]["key"] != runs[2]["key"] and "train.lr=3.0e-3" in runs[2]["overrides"]
    bench.main([*argv, "--print-only"])
    assert "| copy256 | 28 | mamba | 67,600 | skipped" not in capsys.readouterr().out


def test_unknown_problem_or_model_is_an_error(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        load_bench().main(["--quick", "--out", str(tmp_path), "--models", "lstm"])
    assert "unknown problems or models ['lstm']" in capsys.readouterr().err


def test_out_naming_a_file_is_a_usage_error(tmp_path, capsys):
    import pytest

    store = tmp_path / "results.jsonl"
    store.write_text("")
    with pytest.raises(SystemExit):
        load_bench().main(["--print-only", "--out", str(store)])
    assert f"--out: expected a folder (the runs are kept in <out>/results.jsonl), got the file {store}" in \
        capsys.readouterr().err
    assert store.read_text() == ""
