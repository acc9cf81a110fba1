"""Plugins at their worst (noisy, slow, raising at run time) and configs that used to hang: each case now
ends quickly with clean output and a message that names the culprit."""
import json
import os
import subprocess
import sys
import time

import pytest

import hybridseq as hs
from hybridseq import config as config_module
from hybridseq.config import MAX_INCLUDE_DEPTH, load_config
from hybridseq.schema import build_config
from hybridseq.solvers import SolverConfig
from hybridseq.spec import MAX_NODES

from test_plugin_robustness import write_distribution

RAISES = '''
from dataclasses import dataclass
import hybridseq as hs

class Fails(hs.Block):
    @dataclass
    class Config:
        d_model: int = 0

    def forward(self, seq):
        raise RuntimeError("the plugin's kernel is broken")

@hs.hookimpl
def hybridseq_register_blocks(register):
    register("fails", Fails)
'''
PLUGINS = {
    "hs-noisy": 'print("hello from a plugin at import")\n',
    "hs-slow": 'import time\ntime.sleep(2.6)\n',
    "hs-raises": RAISES,
}
MODEL = "model: {d_model: 8, input: {kind: sequence, channels: 2}, blocks: [{type: fails}]}\n"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    for name, source in PLUGINS.items():
        write_distribution(root, name, source)
    (root / "model.yaml").write_text(MODEL)
    return root


def hybridseq(site, plugins: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYBRIDSEQ_LOAD_PLUGINS": plugins, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    env.pop("HYBRIDSEQ_TRACEBACK", None)
    return subprocess.run([sys.executable, "-m", "hybridseq.cli", *args], env=env, text=True, capture_output=True,
                          timeout=120, cwd=site)


def test_a_plugin_that_prints_at_import_leaves_json_output_clean(site):
    result = hybridseq(site, "hs-noisy", "plugins", "--json")
    assert result.returncode == 0, result.stderr
    assert [p["name"] for p in json.loads(result.stdout)] == ["hs-noisy"]
    assert "hello from a plugin at import" in result.stderr


def test_a_plugin_slow_to_import_is_named(site):
    start = time.perf_counter()
    result = hybridseq(site, "hs-slow", "--help")
    assert result.returncode == 0 and "usage" in result.stdout
    assert "loading plugin 'hs-slow' is taking more than 2 s" in result.stderr
    assert time.perf_counter() - start < 60


def test_an_error_raised_inside_a_plugins_block_names_the_plugin(site):
    result = hybridseq(site, "hs-raises", "describe", "model.yaml", "--forward", "4")
    assert result.returncode == 1
    assert "in plugin 'hs-raises'" in result.stderr and "the plugin's kernel is broken" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_includes_are_read_once_per_load(tmp_path, monkeypatch):
    """19 files each including the next twice used to take 2^18 reads."""
    for k in range(19):
        includes = f"defaults: [f{k + 1}.yaml, f{k + 1}.yaml]\n" if k < 18 else ""
        (tmp_path / f"f{k}.yaml").write_text(f"{includes}key{k}: {k}\n")
    reads = []
    original = config_module._parse_file
    monkeypatch.setattr(config_module, "_parse_file", lambda path: reads.append(path) or original(path))
    cfg = load_config(tmp_path / "f0.yaml")
    assert cfg.key18 == 18 and cfg.key0 == 0 and len(reads) == 19


def test_a_deep_include_chain_is_a_clear_error(tmp_path):
    depth = MAX_INCLUDE_DEPTH + 5
    for k in range(depth):
        (tmp_path / f"f{k}.yaml").write_text(f"defaults: [f{k + 1}.yaml]\n" if k < depth - 1 else "a: 1\n")
    with pytest.raises(hs.ConfigError, match=f"deeper than {MAX_INCLUDE_DEPTH} files"):
        load_config(tmp_path / "f0.yaml")


def test_repeat_and_patterns_are_capped():
    model = {"d_model": 4, "input": {"kind": "sequence", "channels": 4}}
    with pytest.raises(hs.ConfigError) as err:
        hs.assemble({**model, "blocks": [{"type": "mlp", "repeat": 10**9}]})
    assert err.value.path == "model.blocks[0].repeat"
    with pytest.raises(hs.ConfigError) as err:
        too_long = {"type": "pattern", "pattern": "M" * (MAX_NODES + 1), "legend": {"M": "mlp"}}
        hs.assemble({**model, "blocks": [too_long]})
    assert err.value.path == "model.blocks[0].pattern"


def test_a_tiny_step_size_validates_quickly():
    build_config(SolverConfig, {"method": "rk4", "step_size": 0.1}, "solver")     # plugins load once
    start = time.perf_counter()
    build_config(SolverConfig, {"method": "rk4", "step_size": 1e-9}, "solver")
    assert time.perf_counter() - start < 2.0
