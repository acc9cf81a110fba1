"""The hooks: each one is documented and tested; registration through them, and failure isolation."""
import inspect
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import hybridseq as hs
from hybridseq import hookspecs, plugins, registry
from hybridseq.cli import main
from hybridseq.metrics import ErrorMeter
from hybridseq.solvers import ODESolver, SolverConfig
from hybridseq.tasks import Task
from hybridseq.testing import register_plugin

from conftest import tiny_model

HOOKS = sorted(n for n in dir(hookspecs) if n.startswith("hybridseq_"))
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook)) or ""
    assert ":param" in doc, f"{hook} needs a docstring with :param"
    assert hook in (ROOT / "docs" / "plugins.md").read_text(), f"{hook} is missing from docs/plugins.md"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook):
    assert f"def test_{hook}" in Path(__file__).read_text(), f"add test_{hook} to tests/test_plugins.py"


class Doubler(hs.Block):
    """Multiplies the stream by a learned scale."""

    @dataclass
    class Config:
        d_model: int = 0
        scale: float = 2.0

    def __init__(self, cfg):
        super().__init__(cfg)
        self.scale = torch.nn.Parameter(torch.tensor(cfg.scale))

    def forward(self, seq):
        return hs.Seq(seq.x * self.scale, seq.t, seq.mask, seq.query_t)


class BlockPlugin:
    @hs.hookimpl
    def hybridseq_register_blocks(self, register):
        register("doubler", Doubler)


def test_hybridseq_register_blocks():
    with register_plugin(BlockPlugin(), "test-blocks") as info:
        assert info.registered == {"blocks": ["doubler"]}
        model = hs.assemble(tiny_model(blocks=[{"type": "doubler", "scale": 3.0}]))
        assert model.nodes["b0"].scale.item() == 3.0
        assert registry.blocks.entry("doubler").owner == "test-blocks"
    assert "doubler" not in registry.blocks


def euler_solve(func, y0, t, *, rtol=None, atol=None, step_size=None):
    ys = [y0]
    for t0, t1 in zip(t[:-1], t[1:]):
        ys.append(ys[-1] + (t1 - t0) * func(t0, ys[-1]))
    return torch.stack(ys)


class SolverPlugin:
    @hs.hookimpl
    def hybridseq_register_solvers(self, register):
        register("my_euler", euler_solve)


class Decay(torch.nn.Module):
    def forward(self, t, y):
        return -y


def test_hybridseq_register_solvers():
    with register_plugin(SolverPlugin(), "test-solvers"):
        solver = ODESolver(SolverConfig(method="my_euler"))
        ys = solver(Decay(), torch.ones(2), torch.tensor([0.0, 0.5, 1.0]))
        torch.testing.assert_close(ys[-1], torch.full((2,), 0.25))
        assert solver.nfe == 2
        with pytest.raises(hs.ConfigError, match="does not support adjoint"):
            hs.schema.build_config(SolverConfig, {"method": "my_euler", "adjoint": True}, "solver")
    with pytest.raises(hs.ConfigError, match="did you mean 'euler'"):
        hs.schema.build_config(SolverConfig, {"method": "my_euler"}, "solver")


class DatasetPlugin:
    @hs.hookimpl
    def hybridseq_register_datasets(self, register):
        register("ones", lambda **options: [torch.ones(3)])


def test_hybridseq_register_datasets():
    with register_plugin(DatasetPlugin(), "test-datasets"):
        assert registry.datasets.get("ones")()[0].sum() == 3


class CommandPlugin:
    @hs.hookimpl
    def hybridseq_register_commands(self, cli):
        p = cli.add_parser("hello", help="say hello")
        p.add_argument("who")
        p.set_defaults(func=lambda args: print(f"hello {args.who}") or 0)


def test_hybridseq_register_commands(capsys):
    with register_plugin(CommandPlugin(), "test-commands") as info:
        assert main(["hello", "world"]) == 0
        assert main(["hello", "again"]) == 0 and info.registered == {"commands": ["hello"]}
    assert capsys.readouterr().out.split("\n")[:2] == ["hello world", "hello again"]


class MedianRegress(Task):
    """Regression trained on the absolute error: selects on MAE."""

    width_key, monitor = "outputs", "mae"

    def loss(self, pred, targets):
        return (pred.float() - targets["target"].float()).abs().mean()

    def meter(self, width):
        return ErrorMeter()

    def update(self, meter, pred, targets, loss):
        meter.update(pred, targets["target"], None, loss)


class TaskPlugin:
    @hs.hookimpl
    def hybridseq_register_tasks(self, register):
        register("median_regress", MedianRegress)


def test_hybridseq_register_tasks():
    from hybridseq.train import train

    cfg = {"task": "median_regress", "data": {"name": "spirals", "task": "regress", "n_train": 24, "n_test": 8,
                                              "val_fraction": 0.25, "points": 8, "batch_size": 8},
           "model": {"d_model": 8, "encoder": {"type": "linear"}, "head": {"type": "regress"}},
           "train": {"epochs": 1, "progress": False}}
    with pytest.raises(hs.ConfigError, match="^task: unknown task 'median_regress'"):
        train(cfg)
    with register_plugin(TaskPlugin(), "test-tasks") as info:
        assert info.registered == {"tasks": ["median_regress"]}
        results = train(cfg)
        assert results["task"] == "median_regress" and results["monitor"] == "val_mae"
        assert results["test_mae"] >= 0
    assert "median_regress" not in registry.tasks


class NotATask:
    @hs.hookimpl
    def hybridseq_register_tasks(self, register):
        register("bad", int)


def test_registering_a_non_task_is_reported():
    with pytest.warns(hs.PluginWarning, match="not a subclass of hybridseq.tasks.Task"):
        with register_plugin(NotATask(), "nontask"):
            assert "bad" not in registry.tasks


def check_logging(section, path):
    if not isinstance(section, dict) or set(section) - {"every"}:
        raise hs.ConfigError(path, "expected {every: N}")
    return section


class SectionPlugin:
    @hs.hookimpl
    def hybridseq_register_sections(self, register):
        register("logging", check_logging)


def test_hybridseq_register_sections():
    from hybridseq.sections import validate_config

    cfg = {"model": tiny_model(), "logging": {"every": 2}}
    with pytest.raises(hs.ConfigError, match="unknown config section 'logging'"):
        validate_config(cfg)
    with register_plugin(SectionPlugin(), "test-sections") as info:
        assert info.registered == {"sections": ["logging"]}
        assert validate_config(cfg) == ["logging", "model"]
        with pytest.raises(hs.ConfigError, match="^logging: expected"):
            validate_config({**cfg, "logging": {"evry": 2}})
    assert "logging" not in registry.sections


class LoggerPlugin:
    @hs.hookimpl
    def hybridseq_register_loggers(self, register):
        register("null_logger", lambda *, run_dir, config, first_epoch: None)
        register("not_callable", 42)


def test_hybridseq_register_loggers():
    """A plugin's logger becomes a valid `train.loggers` name (trained with in tests/test_loggers.py)."""
    from hybridseq.loggers import check_names

    with pytest.warns(hs.PluginWarning, match="'test-loggers'.*42 is not callable"):
        with register_plugin(LoggerPlugin(), "test-loggers") as info:
            assert info.registered == {"loggers": ["null_logger"]}
            check_names(["tensorboard", "null_logger"])
    with pytest.raises(hs.ConfigError, match=r"train.loggers\[0\]: unknown logger 'null_logger'"):
        check_names(["null_logger"])


class Clashing:
    @hs.hookimpl
    def hybridseq_register_blocks(self, register):
        register("transformer", Doubler)
        register("doubler2", Doubler)


def test_clashing_name_is_skipped_with_a_warning_naming_the_plugin():
    with pytest.warns(hs.PluginWarning, match="'clasher'.*transformer.*already registered"):
        with register_plugin(Clashing(), "clasher") as info:
            assert registry.blocks.entry("transformer").owner == "hybridseq.blocks.backbones"
            assert info.registered == {"blocks": ["doubler2"]}


class Misspelled:
    @hs.hookimpl
    def hybridseq_register_blokcs(self, register):
        register("never", Doubler)


def test_misspelled_hook_fails_loudly_and_is_skipped():
    with pytest.warns(hs.PluginWarning, match="'speller'.*hybridseq_register_blokcs"):
        with register_plugin(Misspelled(), "speller"):
            assert "never" not in registry.blocks
    assert not plugins.pm.has_plugin("speller")


class Raising:
    @hs.hookimpl
    def hybridseq_register_blocks(self, register):
        raise RuntimeError("boom")


def test_plugin_whose_hook_raises_is_reported():
    with pytest.warns(hs.PluginWarning, match="'raiser'.*RuntimeError: boom"):
        with register_plugin(Raising(), "raiser") as info:
            assert info.errors
    assert "transformer" in registry.blocks


class NotABlock:
    @hs.hookimpl
    def hybridseq_register_blocks(self, register):
        register("bad", int)


def test_registering_a_non_block_is_reported():
    with pytest.warns(hs.PluginWarning, match="not a subclass of hybridseq.Block"):
        with register_plugin(NotABlock(), "nonblock"):
            assert "bad" not in registry.blocks
