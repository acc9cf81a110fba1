"""Ablation sweeps: expansion and sharding, resumable results store, failures recorded, summary and plots."""
from pathlib import Path

import pytest
import yaml

from hybridseq import ConfigError, cli, plugins
from hybridseq.ablate import ablate, load_sweep, shard, summarize
from hybridseq.ablate.store import ResultStore
from hybridseq.ablate.summary import metric_keys, to_markdown

from ablate_cases import BASE, sweep

ROOT = Path(__file__).resolve().parents[1]


def test_expansion_is_variants_by_grid_by_seeds_with_stable_ids():
    s = load_sweep(sweep(variants={"a": [], "b": ["model.d_model=16"]},
                         axes={"data.irregular.drop": [0.3, 0.5], "train.lr": [0.001]}, seeds=[0, 1]))
    runs = s.runs()
    assert len(runs) == 2 * 2 * 1 * 2
    assert runs[0].variant == "a/drop=0.3/lr=0.001" and runs[-1].variant == "b/drop=0.5/lr=0.001"
    assert runs[-1].overrides == ["model.d_model=16", "data.irregular.drop=0.5", "train.lr=0.001", "train.seed=1"]
    assert [r.run_id for r in runs] == [r.run_id for r in load_sweep(s.as_dict()).runs()]
    assert len({r.run_id for r in runs}) == len(runs)


def test_editing_the_base_config_makes_every_run_new():
    ids = [r.run_id for r in load_sweep(sweep(seeds=[0, 1])).runs()]
    assert ids == [r.run_id for r in load_sweep(sweep(seeds=[0, 1])).runs()]
    edited = {**BASE, "train": {**BASE["train"], "lr": 0.01}}
    assert not set(ids) & {r.run_id for r in load_sweep({**sweep(seeds=[0, 1]), "base": edited}).runs()}


def test_shards_partition_the_runs():
    runs = load_sweep(sweep(axes={"train.lr": [1e-3, 2e-3, 3e-3]}, seeds=[0, 1, 2])).runs()
    parts = [shard(runs, f"{i}/4") for i in range(4)]
    ids = [r.run_id for p in parts for r in p]
    assert sorted(ids) == sorted(r.run_id for r in runs) and len(set(ids)) == len(runs)
    with pytest.raises(ConfigError, match="--shard: expected 0 <= i < n"):
        shard(runs, "4/4")


def test_shards_run_apart_and_merge_in_the_summary(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep(seeds=[0, 1])))
    out = str(tmp_path / "out")
    for i in (0, 1):                                      # two machines sharing one output folder
        assert cli.main(["ablate", str(path), "--workers", "0", "--out", out, "--shard", f"{i}/2"]) == 0
        assert len(ResultStore(out).latest()) == i + 1
    capsys.readouterr()
    assert cli.main(["ablate", str(path), "--out", out, "--summary-only"]) == 0
    assert "| base | 2 |" in capsys.readouterr().out


@pytest.mark.parametrize("bad, message", [
    ({"axis": {}}, "sweep.axis: unknown key 'axis'; did you mean 'axes'?"),
    ({"seeds": "0"}, "sweep.seeds: expected a non-empty list of integers"),
    ({"variants": {"v": ["model.blocks[3].type=mamba"]}}, "model.blocks[3]: no list item 3"),
    ({"base": "missing.yaml"}, "sweep.base: config file not found"),
])
def test_bad_sweeps_name_the_key(bad, message):
    with pytest.raises(ConfigError) as err:
        load_sweep(sweep(**bad))
    assert message in str(err.value)


class Interrupted(Exception):
    pass


def test_interrupted_sweep_resumes_without_rerunning_finished_runs(tmp_path):
    spec = sweep(variants={"transformer": [], "mlp": ["model.blocks[0]={type: mlp}"]})
    lines = []

    def stop_after_first(line):
        lines.append(line)
        if line.startswith("[1/"):
            raise Interrupted

    with pytest.raises(Interrupted):
        ablate(spec, tmp_path, workers=0, echo=stop_after_first)
    first = ResultStore(tmp_path).latest()
    assert len(first) == 1
    done = next(iter(first.values()))
    assert done["run_dir"] == str(tmp_path / "runs" / f"{done['variant']}-seed0-{done['run_id']}")
    before = (Path(done["run_dir"]) / "results.json").stat().st_mtime_ns

    lines.clear()
    records, table = ablate(spec, tmp_path, workers=0, echo=lines.append)
    assert lines[0].startswith("1 of 2 runs already recorded")
    assert len(records) == 2 and all(r["status"] == "ok" for r in records)
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2
    assert (Path(done["run_dir"]) / "results.json").stat().st_mtime_ns == before
    assert "| transformer | 1 |" in table and "| mlp | 1 |" in table
    for name in ("summary.md", "summary.csv", "plots/test_accuracy.png", "plots/curves.png"):
        assert (tmp_path / name).is_file(), name
    for name in ("test_accuracy.png", "curves.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (tmp_path / "summary.csv").read_text().splitlines()[0].startswith("variant,runs,failed,test_accuracy_mean")


def test_failing_variant_is_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep(axes={"model.blocks[0].heads": [2, 3]})))
    out = tmp_path / "out"
    assert cli.main(["ablate", str(path), "--workers", "2", "--out", str(out)]) == 1   # spawned workers
    records = list(ResultStore(out).latest().values())
    status = {r["variant"]: r["status"] for r in records}
    assert status == {"heads=2": "ok", "heads=3": "failed"}
    failed = next(r for r in records if r["status"] == "failed")
    assert failed["error"]["type"] == "ConfigError"
    assert "model.blocks[0].heads: heads=3 must be >= 1 and divide d_model=8" in failed["error"]["message"]
    assert failed["error"]["traceback"].endswith(failed["error"]["message"]) and "File " in failed["error"]["traceback"]
    printed = capsys.readouterr().out
    assert "FAILED ConfigError" in printed and "heads=3 | 0 (+1 failed)" in printed
    assert "Failed runs:" in (out / "summary.md").read_text()


def test_a_mistake_every_run_shares_fails_the_sweep_before_any_trains(tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep(variants={"a": [], "b": ["model.d_model=16"]})))
    out = tmp_path / "out"
    assert cli.main(["ablate", str(path), "--out", str(out), "--workers", "0", "train.epohcs=2"]) == 2
    err = capsys.readouterr().err
    assert "train.epohcs: unknown key 'epohcs' for train (sweep variant 'a', seed 0); did you mean 'epochs'?" in err
    assert not out.exists()                                         # nothing trained, nothing written
    assert cli.main(["ablate", str(path), "--out", str(out), "--workers", "0", "train.epochs=1"]) == 0
    assert all(r["epochs"] == 1 for r in ResultStore(out).latest().values())


def test_command_line_overrides_win_over_variants_and_axes():
    s = load_sweep(sweep(variants={"a": ["model.d_model=16"]}, axes={"train.lr": [0.1]}),
                   overrides=["model.d_model=8", "train.lr=0.01"])
    (run,) = s.runs()
    assert run.overrides[-3:] == ["model.d_model=8", "train.lr=0.01", "train.seed=0"]
    assert s.config(run).model.d_model == 8 and s.config(run).train.lr == 0.01
    assert [r.run_id for r in load_sweep(s.as_dict()).runs()] == [run.run_id]


DYING_DATASET = """
import os
import hybridseq as hs

@hs.hookimpl
def hybridseq_register_datasets(register):
    register("dies", lambda **options: os._exit(9))     # the process vanishes, as when killed for memory
"""


def test_a_run_that_kills_its_worker_fails_alone(tmp_path, monkeypatch):
    site = tmp_path / "site"                            # a dataset plugin the spawned workers find
    (site / "hs_dies-0.1.dist-info").mkdir(parents=True)
    (site / "hs_dies.py").write_text(DYING_DATASET)
    (site / "hs_dies-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: hs-dies\nVersion: 0.1\n")
    (site / "hs_dies-0.1.dist-info" / "entry_points.txt").write_text("[hybridseq]\nhs-dies = hs_dies\n")
    plugins.load()                                      # this process keeps the plugins it has
    monkeypatch.syspath_prepend(str(site))              # spawned workers start with this sys.path
    monkeypatch.delenv("HYBRIDSEQ_LOAD_PLUGINS", raising=False)
    # one worker: the dying run breaks the pool while the good run still waits in its queue
    records, _ = ablate(sweep(variants={"dies": ["data={name: dies}"], "good": []}), tmp_path / "out", workers=1,
                        echo=lambda line: None)
    status = {r["variant"]: r["status"] for r in records}
    assert status == {"dies": "failed", "good": "ok"}
    assert records[0]["error"]["type"] == "BrokenProcessPool"
    assert len(ResultStore(tmp_path / "out").latest()) == 2


def test_summary_is_mean_and_std_over_seeds():
    records = [{"variant": "v", "seed": s, "status": "ok", "test_accuracy": a, "params": 10, "time_per_epoch": 1.0,
                "nfe": 0, "peak_mem_mb": 5.0, "monitor": "val_accuracy", "val_accuracy": a}
               for s, a in enumerate([0.5, 0.7, 0.9])]
    row = summarize(records, "test_accuracy")[0]
    assert row["runs"] == 3 and row["test_accuracy"] == pytest.approx((0.7, 0.2))
    assert "0.7000 ± 0.2000" in to_markdown([row], records)
    regress = [{"variant": "v", "seed": 0, "status": "ok", "test_mae": 0.1, "test_mse": 0.2, "monitor": "val_mse"}]
    assert metric_keys(regress) == ["test_mse", "test_mae", "val_mse"]    # the selection metric leads


def test_shipped_sweeps_expand():
    for path in sorted((ROOT / "configs" / "sweeps").glob("*.yaml")):
        assert load_sweep(path).runs(), path


def test_every_run_of_the_shipped_sweeps_builds():
    """Each configuration of each shipped sweep (first seed) resolves against its data, validates and
    assembles, as the trainer does before training it."""
    from omegaconf import OmegaConf

    from hybridseq import assemble
    from hybridseq.data import load_data
    from hybridseq.train.config import train_config
    from hybridseq.train.tasks import check_output, resolve

    infos = {}
    for path in sorted((ROOT / "configs" / "sweeps").glob("*.yaml")):
        s = load_sweep(path)
        for run in s.runs():
            if run.seed != s.seeds[0]:
                continue
            cfg = s.config(run)
            key = OmegaConf.to_yaml(cfg.data)
            if key not in infos:
                infos[key] = load_data(cfg.data).info
            cfg, task = resolve(cfg, infos[key])
            train_config(cfg.train)
            check_output(assemble(cfg.model), task, infos[key])
