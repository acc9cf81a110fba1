"""Sweeps on a real Ray cluster on this machine (a local head with 2 CPUs, started here): the same records
as the process pool, failures recorded, lost workers' runs retried, a killed driver loses nothing."""
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hybridseq.ablate import ablate, load_sweep
from hybridseq.ablate.store import ResultStore

from ablate_cases import TWO_BY_TWO, sweep

if os.environ.get("CI"):
    import ray  # CI installs the ray extra: these tests must run there, not skip
else:
    ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
CPUS = 2
DYING_DATASETS = """
import os
import pathlib

import hybridseq as hs
from hybridseq.data.synthetic import spirals


def dies_once(marker, **options):
    \"\"\"Kills its process the first time (as a lost node would), loads spirals on the retry.\"\"\"
    if not pathlib.Path(marker).exists():
        pathlib.Path(marker).write_text("")
        os._exit(9)
    return spirals(**options)


@hs.hookimpl
def hybridseq_register_datasets(register):
    register("dies_once", dies_once)
    register("dies", lambda **options: os._exit(9))
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray head on this machine whose workers also find a plugin with datasets that kill their worker."""
    site = tmp_path_factory.mktemp("site")
    (site / "hs_dies-0.1.dist-info").mkdir()
    (site / "hs_dies.py").write_text(DYING_DATASETS)
    (site / "hs_dies-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: hs-dies\nVersion: 0.1\n")
    (site / "hs_dies-0.1.dist-info" / "entry_points.txt").write_text("[hybridseq]\nhs-dies = hs_dies\n")
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "HYBRIDSEQ_LOAD_PLUGINS")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), str(ROOT), saved["PYTHONPATH"]) if p)
    os.environ.pop("HYBRIDSEQ_LOAD_PLUGINS", None)
    info = ray.init(address="local", num_cpus=CPUS, include_dashboard=False, log_to_driver=False)
    try:
        yield info.address_info["gcs_address"]
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def quiet(line):
    pass


def numbers(record: dict) -> dict:
    keys = [k for k in record if k.startswith(("val_", "test_")) or k in ("params", "nfe", "epochs", "best_epoch")]
    return {k: record[k] for k in keys}


def close(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=0, abs_tol=1e-6)
    return a == b


def test_ray_and_the_process_pool_record_the_same_runs(cluster, tmp_path):
    spec = sweep(**TWO_BY_TWO)
    pool, _ = ablate(spec, tmp_path / "pool", workers=2, threads=1, echo=quiet)
    lines = []
    on_ray, table = ablate(spec, tmp_path / "ray", executor="ray", echo=lines.append)
    assert [r["run_id"] for r in on_ray] == [r["run_id"] for r in pool] == [r.run_id for r in load_sweep(spec).runs()]
    for a, b in zip(pool, on_ray):
        assert b["status"] == a["status"] == "ok"
        assert (a["variant"], a["seed"], a["overrides"]) == (b["variant"], b["seed"], b["overrides"])
        assert numbers(a).keys() == numbers(b).keys() and "test_accuracy" in numbers(a)
        assert all(close(numbers(a)[k], numbers(b)[k]) for k in numbers(a)), (numbers(a), numbers(b))
        assert all(close(x, y) for key in a["curves"] for x, y in zip(a["curves"][key], b["curves"][key]))
        assert Path(b["run_dir"]) == tmp_path / "ray" / Path(a["run_dir"]).relative_to(tmp_path / "pool")
        assert (Path(b["run_dir"]) / "results.json").is_file()
        assert b["worker"]["pid"] != os.getpid() and b["worker"]["threads"] == 1
    assert len((tmp_path / "ray" / "results.jsonl").read_text().splitlines()) == 4
    assert "| transformer | 2 |" in table and "| mlp | 2 |" in table
    assert lines[-1].startswith("[4/4] ") and "running 0, queued 0" in lines[-1]


def test_failures_are_recorded_and_lost_workers_retried(cluster, tmp_path, monkeypatch):
    from hybridseq.ablate import ray_executor

    monkeypatch.setattr(ray_executor, "PROGRESS_S", 0.2)      # progress lines while runs are in flight
    marker = tmp_path / "died-once"
    spec = sweep(variants={"good": [], "bad_heads": ["model.blocks[0].heads=3"],
                           "flaky": ["data.name=dies_once", f"+data.marker={marker}"],
                           "dies": ["data={name: dies}"]},
                 resources={"cpus_per_run": 1, "max_retries": 1})
    lines = []
    records, table = ablate(spec, tmp_path / "out", executor="ray", echo=lines.append)
    assert any(re.fullmatch(r"\[[0-3]/4(, [12] failed)?\] running [12], queued [0-2]", line) for line in lines), lines
    assert re.match(r"\[4/4, 2 failed\] ", lines[-1])
    by = {r["variant"]: r for r in records}
    assert {v: r["status"] for v, r in by.items()} == {"good": "ok", "bad_heads": "failed", "flaky": "ok",
                                                        "dies": "failed"}
    assert marker.exists()                                 # flaky's first attempt did die; its retry trained
    assert by["bad_heads"]["error"]["type"] == "ConfigError"
    assert "heads=3 must be >= 1 and divide d_model=8" in by["bad_heads"]["error"]["message"]
    assert by["dies"]["error"]["type"] in ("WorkerCrashedError", "RayTaskError", "NodeDiedError")
    assert "Failed runs:" in table and len(ResultStore(tmp_path / "out").latest()) == 4


def test_a_killed_driver_loses_no_finished_run(cluster, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep(variants={"a": [], "b": ["model.d_model=16"]}, seeds=[0, 1])))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hybridseq.cli", "ablate", str(path), "--out", str(out), "--executor", "ray"]
    driver = subprocess.Popen([*cmd, "--address", cluster], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while not (store.is_file() and store.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        assert driver.poll() is None, "the sweep ended before it could be killed"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    finished = ResultStore(out).latest()
    assert 1 <= len(finished) < 4
    stamps = {rid: (Path(r["run_dir"]) / "results.json").stat().st_mtime_ns for rid, r in finished.items()}
    deadline = time.monotonic() + 120
    while ray.available_resources().get("CPU", 0) < CPUS:   # Ray ends the dead driver's tasks
        assert time.monotonic() < deadline, "Ray kept the killed driver's tasks running"
        time.sleep(0.1)
    # the rerun starts a Ray of its own on this machine (no --address)
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{len(finished)} of 4 runs already recorded" in rerun.stdout
    latest = ResultStore(out).latest()
    assert len(latest) == 4 and all(r["status"] == "ok" for r in latest.values())
    assert all(latest[rid]["recorded_at"] == finished[rid]["recorded_at"] for rid in finished)
    assert all((Path(finished[rid]["run_dir"]) / "results.json").stat().st_mtime_ns == t for rid, t in stamps.items())
    assert len(store.read_text().splitlines()) == 4        # no finished run recorded twice


def test_without_ray_the_error_names_the_install(tmp_path, monkeypatch, capsys):
    from hybridseq import cli

    monkeypatch.setitem(sys.modules, "ray", None)          # as if the extra were not installed
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep()))
    assert cli.main(["ablate", str(path), "--out", str(tmp_path / "o"), "--executor", "ray"]) == 2
    assert "--executor: ray is not installed; install it with: pip install 'hybridseq[ray]'" in capsys.readouterr().err


def test_a_run_asking_for_more_than_the_cluster_has_is_an_error(cluster, tmp_path):
    from hybridseq import ConfigError

    message = "sweep.resources.gpus_per_run: a run asks for 1 GPUs but the Ray cluster has 0"
    with pytest.raises(ConfigError, match=message):
        ablate(sweep(resources={"gpus_per_run": 1}), tmp_path, executor="ray", echo=quiet)
