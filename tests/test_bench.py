"""The irregular benchmark runs as documented (its --quick smoke run), resumes, and reports skips."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import hybridseq as hs

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "irregular_benchmark.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("irregular_benchmark", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_prints_the_table_and_resumes(tmp_path):
    cmd = [sys.executable, str(BENCH), "--quick", "--out", str(tmp_path), "--configs", "ref:transformer",
           "ref:gru", "linear+transformer"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "| config | BasicMotions | average | vs ref | params | s/epoch | NFE | act. MiB |" in out.stdout
    for name in ("ref:transformer", "ref:gru", "linear+transformer"):
        assert f"| {name} |" in out.stdout
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok"] * 3
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["params"] > 0 for r in records)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0 and again.stderr == ""                    # nothing rerun
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 3


def test_over_budget_runs_are_recorded_as_skipped_with_their_projection(tmp_path):
    bench = load_bench()
    bench.main(["--quick", "--out", str(tmp_path), "--configs", "ref:gru", "linear+transformer",
                "--budget", "0"])
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["skipped", "skipped"]
    assert all(r["projected_s"] > 0 and r["act_mib"] > 0 for r in records)
    bench.main(["--quick", "--out", str(tmp_path), "--configs", "ref:gru", "--budget", "0"])   # still over
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    bench.main(["--quick", "--out", str(tmp_path), "--configs", "ref:gru"])         # the budget covers it now
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["skipped", "skipped", "ok"]


def test_table_says_how_many_seeds_a_cell_has_when_not_all():
    bench = load_bench()
    run = {"config": "ref:gru", "problem": "Trace", "drop": 0.5, "status": "ok", "params": 1, "s_per_epoch": 1.0,
           "nfe": 0, "act_mib": 1.0}
    records = [{**run, "seed": s, "accuracy": a} for s, a in enumerate((0.5, 0.7))] + [
        {**run, "problem": "Coffee", "seed": s, "accuracy": a} for s, a in enumerate((0.4, 0.6, 0.8))]
    text = bench.table(records, ["ref:gru"], ["Trace", "Coffee"], [0.5], seeds=3)
    assert "| ref:gru | 60.0 ± 14.1 (2) | 60.0 ± 20.0 | 60.0 | — |" in text


def test_table_gives_the_gap_to_the_reference_seed_by_seed():
    """Per seed, the average over problems minus the reference's; a seed missing a problem is left out."""
    bench = load_bench()
    run = {"drop": 0.5, "status": "ok", "params": 1, "s_per_epoch": 1.0, "nfe": 0, "act_mib": 1.0}
    acc = {("ref:transformer", "A"): [0.5, 0.6, 0.7], ("ref:transformer", "B"): [0.9, 0.9, 0.9],
           ("linear+transformer", "A"): [0.7, 0.7, 0.7], ("linear+transformer", "B"): [0.9, 1.0]}
    records = [{**run, "config": c, "problem": p, "seed": s, "accuracy": a}
               for (c, p), values in acc.items() for s, a in enumerate(values)]
    text = bench.table(records, ["ref:transformer", "linear+transformer"], ["A", "B"], [0.5], seeds=3)
    # seed 0: (70 + 90)/2 - (50 + 90)/2 = +10, seed 1: (70 + 100)/2 - (60 + 90)/2 = +10; seed 2 lacks B
    assert "| 95.0 ± 7.1 (2) | 82.5 | +10.0 ± 0.0 (2) |" in text
    assert "| ref:transformer | 60.0 ± 10.0 | 90.0 ± 0.0 | 75.0 | — |" in text


def test_every_configuration_of_the_suite_validates():
    """Each row of the benchmark is a valid hybridseq config on 3 channels and 4 classes."""
    bench = load_bench()
    from omegaconf import OmegaConf

    suite = OmegaConf.load(bench.SUITE)
    splits = type("S", (), {"info": type("I", (), {"channels": 3, "classes": 4})()})()
    for name in suite.configs:
        cfg = bench.hybridseq_config(suite, name, splits, {"epochs": 1, "lr": 1e-3, "batch_size": 4}, 0)
        model = hs.assemble(cfg.model)
        batch = hs.IrregularBatch(values=torch.randn(2, 6, 3), times=torch.linspace(0, 1, 6).expand(2, 6),
                                  mask=torch.ones(2, 6, 3, dtype=torch.bool), lengths=torch.tensor([6, 4]))
        assert model(batch).x.shape == (2, 4), name


def test_the_shipped_ode_rnn_model_is_the_benchmark_row_it_quotes():
    """configs/models/ode_rnn_transformer.yaml builds the blocks and initial weights of the bench's row
    (the row's overrides on the bench's base file), so the numbers its header quotes are the row's."""
    bench = load_bench()
    from omegaconf import OmegaConf

    suite = OmegaConf.load(bench.SUITE)
    shipped = bench.file_nodes(ROOT / "configs" / "models" / "ode_rnn_transformer.yaml", [])
    assert shipped == bench.model_nodes(suite, "ode_rnn+transformer")
    assert shipped != bench.model_nodes(suite, "linear+transformer")


@pytest.mark.parametrize("name", ["RefTransformer", "RefGRU"])
def test_references_ignore_padding(name):
    """A reference's output for a series does not depend on what follows its last valid point."""
    bench = load_bench()
    torch.manual_seed(0)
    model = getattr(bench, name)(3, 4).eval()
    values = torch.randn(1, 8, 3)
    times = torch.linspace(0, 1, 8)[None]
    mask = torch.ones(1, 8, 3, dtype=torch.bool)
    short = hs.IrregularBatch(values=values, times=times, mask=mask, lengths=torch.tensor([5]))
    junk = hs.IrregularBatch(values=values + 10 * (torch.arange(8) >= 5)[None, :, None], times=times, mask=mask,
                             lengths=torch.tensor([5]))
    torch.testing.assert_close(model(short), model(junk))


def test_out_naming_a_file_is_a_usage_error(tmp_path, capsys):
    store = tmp_path / "results.jsonl"
    store.write_text("")
    with pytest.raises(SystemExit):
        load_bench().main(["--print-only", "--out", str(store)])
    assert "--out: expected a folder" in capsys.readouterr().err
    assert store.read_text() == ""
