"""The configs shipped inside the package: one copy (the repository's configs/ links to it), in the wheel,
listed, shown and copied by `hybridseq configs`, and named by `train` / `validate` / `ablate` from any
folder."""
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hybridseq import shipped
from hybridseq.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_repository_configs_is_the_package_folder():
    assert (ROOT / "configs").resolve() == shipped.ROOT
    assert "experiments/japanese_vowels" in shipped.names() and "sweeps/quickstart" in shipped.names()
    assert len(shipped.names()) == len(list((ROOT / "configs").glob("*/*.yaml")))


@pytest.mark.parametrize("name", ["experiments/japanese_vowels", "japanese_vowels", "japanese_vowels.yaml",
                                  "configs/experiments/japanese_vowels.yaml", "experiments/japanese_vowels.yaml"])
def test_names_of_a_shipped_config(name):
    assert shipped.get(name) == shipped.ROOT / "experiments" / "japanese_vowels.yaml"


def test_local_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "spirals.yaml").write_text("train: {epochs: 1}\n")
    assert shipped.locate("spirals.yaml") == Path("spirals.yaml")
    assert shipped.locate("spirals") == shipped.ROOT / "experiments" / "spirals.yaml"
    assert shipped.locate("no_such_config") == Path("no_such_config")


def test_cli_lists_shows_and_copies(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["configs"]) == 0
    listing = capsys.readouterr().out
    assert "experiments/japanese_vowels" in listing and "JapaneseVowels" in listing     # name and description
    assert main(["configs", "show", "spirals"]) == 0
    assert capsys.readouterr().out == (shipped.ROOT / "experiments" / "spirals.yaml").read_text()
    assert main(["configs", "copy", "spirals", "mine.yaml"]) == 0
    assert (tmp_path / "mine.yaml").read_text() == (shipped.ROOT / "experiments" / "spirals.yaml").read_text()
    assert main(["configs", "copy", "spirals", "mine.yaml"]) == 2                      # never overwrites
    assert "already exists" in capsys.readouterr().err
    assert main(["configs", "copy", "quickstart", "study"]) == 0                       # the sweep and its base
    assert (tmp_path / "study" / "sweeps" / "quickstart.yaml").is_file()
    assert (tmp_path / "study" / "experiments" / "japanese_vowels.yaml").is_file()
    from hybridseq.ablate import load_sweep

    assert load_sweep(tmp_path / "study" / "sweeps" / "quickstart.yaml").name == "quickstart"
    assert main(["configs", "show", "quickstrat"]) == 2
    assert "did you mean 'sweeps/quickstart'" in capsys.readouterr().err


def test_commands_take_a_shipped_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "japanese_vowels", "train.epochs=1"]) == 0
    out = capsys.readouterr()
    assert "OK" in out.out
    assert "no file japanese_vowels here; using the shipped config experiments/japanese_vowels" in out.err
    assert main(["validate", "configs/experiments/spirals.yaml", "configs/models/linear_s4.yaml"]) == 0
    capsys.readouterr()
    assert main(["ablate", "sweeps/quickstart", "--list"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 15
    assert main(["validate", "no_such_config"]) == 2
    assert "not found" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())                                                 # nothing written


def test_wheel_ships_the_configs(tmp_path):
    """Build the wheel from a copy of the sources, unpack it as pip would, and run `hybridseq configs` and
    `validate NAME` on that copy alone, from an empty folder."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "hybridseq", src / "hybridseq", ignore=shutil.ignore_patterns("__pycache__"))
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]   # offline if we can
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", *isolation, "-q",
                           "-w", str(tmp_path / "dist")], cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("hybridseq-*.whl"))
    inside = zipfile.ZipFile(wheel).namelist()
    assert {f"hybridseq/configs/{n}.yaml" for n in shipped.names()} <= set(inside)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HYBRIDSEQ_LOAD_PLUGINS": ""}
    code = ("import sys, hybridseq.cli as c; print(c.__file__); "
            "sys.exit(c.main(['configs']) or c.main(['validate', 'japanese_vowels']))")
    proc = subprocess.run([sys.executable, "-c", code],
                          cwd=empty, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0].startswith(str(site))
    assert "sweeps/quickstart" in proc.stdout and "japanese_vowels: OK" in proc.stdout
