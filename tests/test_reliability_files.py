"""Where files go: only into the folder the user named, never through links, never a secret or an
included file's content, no leftovers of killed writes, no second process in a live run's folder."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybridseq import ConfigError
from hybridseq.ablate import ablate, load_sweep
from hybridseq.cli import main
from hybridseq.config import load_config
from hybridseq.io import append_jsonl, atomic_write_text, remove_stale_temps
from hybridseq.train import train
from hybridseq.train.guard import MARKER_FILE, claim_run_dir, release_run_dir

BASE = {
    "data": {"name": "spirals", "n_train": 16, "n_test": 8, "points": 8, "batch_size": 8},
    "model": {"d_model": 8, "encoder": {"type": "linear"},
              "blocks": [{"type": "transformer", "heads": 2}], "head": {"type": "classify"}},
    "train": {"epochs": 1, "progress": False},
}
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


@pytest.mark.parametrize("name", ["/abs/where", "../..", "a/b", ".hidden", ""])
def test_a_sweep_name_is_one_plain_folder_name(name):
    if not name:                                       # empty falls back to the default name
        assert load_sweep({"name": name, "base": BASE}).name == "sweep"
        return
    with pytest.raises(ConfigError) as err:
        load_sweep({"name": name, "base": BASE})
    assert err.value.path == "sweep.name"


def test_out_into_a_folder_of_the_users_own_files_is_refused(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own\n")
    (mine / "results.json").write_text("{}")
    cfg = tmp_path / "c.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(BASE))
    assert main(["train", str(cfg), "--out", str(mine), "--no-progress"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (mine / "config.yaml").read_text() == "my own\n" and sorted(p.name for p in mine.iterdir()) == [
        "config.yaml", "results.json"]
    assert main(["train", str(cfg), "--out", str(mine), "--no-progress", "--force"]) == 0
    assert (mine / MARKER_FILE).is_file()


def test_a_sweep_refuses_a_folder_of_the_users_own_files(tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="--force"):
        ablate({"name": "t", "base": BASE}, tmp_path, workers=0, echo=lambda *a: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_appends_never_follow_a_symbolic_link(tmp_path):
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("")
    link = tmp_path / "metrics.jsonl"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        append_jsonl(link, {"epoch": 1})
    assert target.read_text() == ""


def test_atomic_writes_replace_a_link_instead_of_writing_through_it(tmp_path):
    target = tmp_path / "users_file.txt"
    target.write_text("keep")
    link = tmp_path / "results.json"
    link.symlink_to(target)
    atomic_write_text(link, "{}")
    assert target.read_text() == "keep" and not link.is_symlink() and link.read_text() == "{}"


def test_the_saved_config_keeps_interpolations_and_never_an_env_value(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDSEQ_TEST_DEVICE", "cpu")
    cfg = {**BASE, "data": {**BASE["data"], "batch_size": "${model.d_model}"},
           "train": {**BASE["train"], "device": "${oc.env:HYBRIDSEQ_TEST_DEVICE}"}}
    train(cfg, tmp_path / "run")
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "device: cpu" not in saved and "${oc.env:HYBRIDSEQ_TEST_DEVICE}" in saved and "${model.d_model}" in saved
    assert "channels: 2" in saved                                    # what the data filled in is kept
    assert load_config(tmp_path / "run" / "config.yaml").train.device == "cpu"


def test_errors_never_echo_an_env_value(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HYBRIDSEQ_TEST_TOKEN", "s3cr3t-value")
    path = tmp_path / "c.yaml"
    path.write_text("model: {d_model: '${oc.env:HYBRIDSEQ_TEST_TOKEN}', input: {channels: 2}, blocks: [{type: mlp}]}\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model.d_model" in err and "s3cr3t-value" not in err and "***" in err


def test_an_include_must_be_a_yaml_mapping_and_is_never_echoed(tmp_path):
    private = tmp_path / "private.txt"
    private.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"defaults: [{private}]\nmodel: {{d_model: 8}}\n")
    with pytest.raises(ConfigError, match="must hold a YAML mapping") as err:
        load_config(cfg)
    assert "root" not in str(err.value).replace(str(private), "")


def test_leftover_temporary_files_are_removed_when_a_run_starts(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER_FILE).write_text("")
    stale, fresh = run / ".last.pt.abc123.tmp", run / ".config.yaml.def456.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    assert remove_stale_temps(run) == [stale]
    stale.write_bytes(b"x")
    os.utime(stale, (old, old))
    claim_run_dir(run)
    release_run_dir(run)
    assert not stale.exists() and fresh.exists()               # a write in flight elsewhere is left alone


def test_a_folder_a_live_process_trains_into_is_refused(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from hybridseq.train.guard import "
                               f"claim_run_dir; claim_run_dir({str(run)!r}); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True, env=CHILD_ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"in use by a live process \\(pid {holder.pid}\\)"):
            claim_run_dir(run)
    finally:
        holder.kill()
        holder.wait()
    claim_run_dir(run)                                         # the lock died with its process
    release_run_dir(run)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in state


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_a_worker_exits_when_its_parent_is_killed():
    worker = ("import sys, time; from hybridseq.train.guard import exit_with_parent; "
              "exit_with_parent(int(sys.argv[1]), every_s=0.05); print('ready', flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", "import os, subprocess, sys, time; "
                               f"w = subprocess.Popen([sys.executable, '-c', {worker!r}, str(os.getpid())]); "
                               "print(w.pid, flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True,
                              env=CHILD_ENV)
    child = int(parent.stdout.readline())
    assert parent.stdout.readline().strip() == "ready" and _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while _alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_a_data_key_typo_stops_the_sweep_before_anything_trains(tmp_path):
    spec = {"name": "t", "base": BASE, "axes": {"train.lr": [1e-3, 2e-3]}, "overrides": ["+data.irregular.dorp=0.5"]}
    with pytest.raises(ConfigError, match="dorp") as err:
        ablate(spec, tmp_path / "out", workers=0, echo=lambda *a: None)
    assert err.value.path == "data.irregular.dorp"
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_a_checkpoint_name_cannot_leave_the_run_directory(tmp_path):
    from hybridseq.train.checkpoint import run_files

    with pytest.raises(ConfigError) as err:
        run_files(tmp_path, "../../etc/passwd")
    assert err.value.path == "--checkpoint"
