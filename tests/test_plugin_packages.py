"""The plugin packages in plugins/ as users meet them: installed, found through their entry points, and
used together in a YAML model that trains. Also: the guide's example plugin runs as written."""
import dataclasses
import importlib.metadata as md
import math
import re
import types
from pathlib import Path

import pytest
import tomllib
import torch
import yaml

import hybridseq as hs
from hybridseq import plugins, registry
from hybridseq.testing import check_block, example_input, register_plugin

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"hybridseq-lru": {"blocks": ["lru"]},
            "hybridseq-torchode": {"solvers": [f"torchode_{m}" for m in ("dopri5", "tsit5", "heun", "euler")]}}
MISSING = [name for name in PACKAGES if name not in {ep.name for ep in md.entry_points(group="hybridseq")}]
installed = pytest.mark.skipif(bool(MISSING), reason=f"plugin packages {MISSING} are not installed: pip install "
                               + " ".join(f"-e plugins/{n}" for n in MISSING))
MODEL = """
model:
  d_model: 16
  input: {kind: irregular, channels: 2}
  encoder:
    type: ode_rnn
    hidden: 8
    field_width: 16
    solver: {method: torchode_tsit5, rtol: 1.0e-2, atol: 1.0e-3}
  blocks:
    - {type: lru, d_state: 8, r_min: 0.5, time_gaps: true}
  head: {type: classify, pool: mean}
data: {name: spirals, n_train: 24, n_test: 8, points: 8, batch_size: 8}
train: {epochs: 1, max_steps_per_epoch: 3, lr: 1.0e-2, progress: false}
"""


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_package_is_complete(name):
    folder = ROOT / "plugins" / name
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    assert project["name"] == name and "hybridseq" in project["dependencies"]
    assert name in project["entry-points"]["hybridseq"]
    assert (folder / "README.md").is_file()
    tests = [p.name for p in (folder / "tests").glob("test_*.py")]
    assert tests, f"{name} has no tests"
    taken = {p.name for p in (ROOT / "tests").glob("test_*.py")}
    for other in PACKAGES:
        if other != name:
            taken |= {p.name for p in (ROOT / "plugins" / other / "tests").glob("test_*.py")}
    assert not set(tests) & taken, "test file names must be unique across test folders (pytest rootdir import)"


@installed
def test_entry_points_register_through_the_hooks():
    plugins.load()
    for name, registered in PACKAGES.items():
        info = plugins.infos[name]
        assert not info.builtin and info.version == md.version(name) and info.errors == []
        assert info.registered == registered
    assert registry.blocks.entry("lru").owner == "hybridseq-lru"
    assert registry.solvers.entry("torchode_tsit5").owner == "hybridseq-torchode"


@installed
def test_yaml_model_with_plugin_block_and_solver_trains(tmp_path):
    from hybridseq.train.checkpoint import load_run
    from hybridseq.train.trainer import train

    (tmp_path / "model.yaml").write_text(MODEL)
    cfg = hs.load_config(str(tmp_path / "model.yaml"))
    results = train(cfg, tmp_path / "run")
    losses = results["curves"]["train_loss"]
    assert losses and all(math.isfinite(v) for v in losses)
    assert results["nfe"] > 0
    config, model = load_run(tmp_path / "run")                  # names resolve again through the registry
    assert [n.type for n in model.spec.nodes] == ["ode_rnn", "lru", "classify"]
    assert config.model.encoder.solver.method == "torchode_tsit5"
    first = model.spec.nodes[0]
    with torch.no_grad():
        model.eval()(example_input(first.cls, first.cfg, length=6))
    table = hs.describe(model)
    assert "max_radius" in table and model.stats()["encoder"]["nfe"] > 0


def solver_fields() -> list[tuple[str, str]]:
    """(block, config field) for every registered block that embeds a SolverConfig."""
    out = []
    for name in registry.blocks.names():
        for f in dataclasses.fields(registry.blocks.get(name).Config):
            if f.default_factory is not dataclasses.MISSING and isinstance(f.default_factory(), hs.SolverConfig):
                out.append((name, f.name))
    return out


@installed
@pytest.mark.parametrize("block,key", solver_fields())
def test_every_ode_block_runs_a_plugin_solver(block, key):
    out = check_block(block, {key: {"method": "torchode_tsit5", "rtol": 1e-2, "atol": 1e-3}})
    assert torch.isfinite(out.x).all()


def test_guide_example_plugin_works_as_written():
    text = (ROOT / "docs" / "plugins.md").read_text()
    blocks = re.findall(r"```(\w+)\n(.*?)```", text, re.S)
    source = next(code for lang, code in blocks if lang == "python" and "def hybridseq_register_blocks" in code)
    module = types.ModuleType("hybridseq_causal_conv")
    exec(compile(source, "docs/plugins.md", "exec"), module.__dict__)
    config = next(yaml.safe_load(code) for lang, code in blocks if lang == "yaml")
    with register_plugin(module, "hybridseq-causal-conv") as info:
        assert info.registered == {"blocks": ["causal_conv"]}
        check_block("causal_conv")
        check_block("causal_conv", {"kernel": 1})
        out = hs.assemble(config["model"])(torch.randn(2, 7, 3))
        assert out.x.shape == (2, 4)
        config["model"]["blocks"][0]["kernal"] = 4
        with pytest.raises(hs.ConfigError, match=r"model\.blocks\[0\]\.kernal: unknown key 'kernal' .* 'kernel'"):
            hs.assemble(config["model"])
