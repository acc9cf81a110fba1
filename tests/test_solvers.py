"""The solver registry: torchdiffeq methods, options, adjoint, NFE counting, third-party solvers, errors."""
import pytest
import torch
from torch import nn

from hybridseq import ConfigError, ODESolver, SolverConfig, build_block, hookimpl, registry
from hybridseq.schema import build_config
from hybridseq.testing import example_input, register_plugin

ODE_ENCODERS = ["ode_rnn", "gru_ode", "ncde", "contiformer"]


class Decay(nn.Module):
    def __init__(self):
        super().__init__()
        self.rate = nn.Parameter(torch.tensor(0.7, dtype=torch.float64))

    def forward(self, t, y):
        return -self.rate * y


def euler(func, y0, t, *, rtol=None, atol=None, **unused):
    """One explicit Euler step per output interval."""
    ys = [y0]
    for t0, t1 in zip(t[:-1], t[1:]):
        ys.append(ys[-1] + (t1 - t0) * func(t0, ys[-1]))
    return torch.stack(ys)


class TinyEulerPlugin:
    @hookimpl
    def hybridseq_register_solvers(register):
        register("tiny_euler", euler)


def _solver(**cfg):
    return ODESolver(build_config(SolverConfig, cfg, "solver"))


def test_every_torchdiffeq_method_is_registered_with_adjoint():
    from torchdiffeq._impl.odeint import SOLVERS

    for method in SOLVERS:
        entry = registry.solvers.entry(method)
        assert entry.owner == "hybridseq.solvers.builtin" and entry.obj.adjoint


@pytest.mark.parametrize("cfg", [{"method": "dopri5", "rtol": 1e-8, "atol": 1e-10},
                                 {"method": "bosh3", "rtol": 1e-7, "atol": 1e-9},
                                 {"method": "rk4", "step_size": 0.01}, {"method": "midpoint", "step_size": 0.01},
                                 {"method": "dopri8", "options": {"max_num_steps": 1000}}])
def test_methods_solve_exponential_decay(cfg):
    solver = _solver(**cfg)
    y0, t = torch.ones(3, dtype=torch.float64), torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    ys = solver(Decay(), y0, t)
    torch.testing.assert_close(ys[:, 0], torch.exp(-0.7 * t), rtol=1e-3, atol=1e-4)
    assert solver.nfe > 0


def test_step_size_is_passed_through_and_counted():
    for step, steps in ((None, 1), (0.25, 4), (0.1, 10)):
        solver = _solver(method="rk4", step_size=step)
        solver(Decay(), torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64))
        assert solver.nfe == 4 * steps


def test_adjoint_gradient_matches_the_analytic_one_and_backward_is_counted():
    solver = _solver(method="dopri5", rtol=1e-10, atol=1e-12, adjoint=True)
    field = Decay()
    y1 = solver(field, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64))[-1]
    forward_nfe = solver.nfe
    y1.sum().backward()
    torch.testing.assert_close(field.rate.grad, -2.0 * torch.exp(torch.tensor(-1.4, dtype=torch.float64)))
    assert solver.nfe > forward_nfe                                   # the adjoint solve evaluates f too


@pytest.mark.parametrize("name", ODE_ENCODERS)
def test_a_third_party_solver_works_in_every_ode_block(name):
    with register_plugin(TinyEulerPlugin, "tiny-euler") as info:
        assert info.registered == {"solvers": ["tiny_euler"]}
        torch.manual_seed(0)
        ours = build_block(name, d_in=3, d_model=8, solver={"method": "tiny_euler"})
        torch.manual_seed(0)
        reference = build_block(name, d_in=3, d_model=8, solver={"method": "euler"})
        batch = example_input(type(ours), ours.cfg, batch=2, length=5)
        torch.testing.assert_close(ours(batch).x, reference(batch).x)
        assert ours.stats()["nfe"] == reference.stats()["nfe"] > 0
    assert "tiny_euler" not in registry.solvers


def test_a_solver_without_adjoint_refuses_adjoint():
    with register_plugin(TinyEulerPlugin, "tiny-euler"):
        with pytest.raises(ConfigError, match="does not support adjoint") as err:
            build_block("ode_rnn", d_in=2, d_model=4, solver={"method": "tiny_euler", "adjoint": True})
        assert err.value.path == "ode_rnn.solver.adjoint" and "dopri5" in err.value.choices


@pytest.mark.parametrize("solver,path,message", [
    ({"method": "dopri55"}, "solver.method", "did you mean 'dopri5'"),
    ({"method": "dopri5", "step_size": 0.1}, "solver.step_size", "takes no step_size"),
    ({"method": "rk4", "options": {"stepsize": 0.1}}, "solver.options.stepsize", "did you mean 'step_size'"),
    ({"method": "dopri5", "options": {"max_num_steps": "many"}}, "solver.options.max_num_steps", "rejected options"),
    ({"method": "rk4", "atol": 0.0}, "solver.atol", "must be > 0"),
    ({"method": "rk4", "step_size": -1.0}, "solver.step_size", "must be > 0"),
])
def test_bad_solver_config_names_the_key_path(solver, path, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_block("ncde", d_in=2, d_model=4, solver=solver)
    assert err.value.path == f"ncde.{path}"


def test_records_declare_capabilities():
    rk4, dopri5 = registry.solvers.get("rk4"), registry.solvers.get("dopri5")
    assert rk4.fixed_grid and rk4.takes("grid_constructor") and rk4.takes("step_size") and rk4.adjoint
    assert not dopri5.fixed_grid and not dopri5.takes("step_size") and dopri5.options["max_num_steps"] is float


def _never(func, y0, t, **options):
    raise AssertionError("validation ran the solver")


class NeverPlugin:
    @hookimpl
    def hybridseq_register_solvers(register):
        register("never_run", _never, fixed_grid=True, options={"step_size": float, "order": int})


def test_validation_reads_the_record_and_never_solves():
    with register_plugin(NeverPlugin, "never-run"):
        cfg = build_config(SolverConfig, {"method": "never_run", "step_size": 0.1, "options": {"order": 2}}, "s")
        assert cfg.options == {"order": 2}
        with pytest.raises(ConfigError, match="rejected options order=2.5: expected int") as err:
            build_config(SolverConfig, {"method": "never_run", "options": {"order": 2.5}}, "s")
        assert err.value.path == "s.options.order"
        block = build_block("neural_ode_transformer", d_model=4, heads=2, steps=3, solver={"method": "never_run"})
        assert block.output_steps == 3                       # fixed grid without a grid option: output times


def test_the_private_torchdiffeq_table_is_read_in_one_function():
    from pathlib import Path

    import hybridseq
    from hybridseq.solvers import builtin

    users = [p for p in Path(hybridseq.__file__).parent.rglob("*.py") if "torchdiffeq._impl" in p.read_text()]
    assert users == [Path(builtin.__file__)]
    assert builtin.torchdiffeq_methods().keys() >= {"rk4", "dopri5"}


def test_an_untested_torchdiffeq_version_is_refused(monkeypatch):
    import torchdiffeq

    from hybridseq.solvers import builtin

    monkeypatch.setattr(torchdiffeq, "__version__", "0.4.0")
    with pytest.raises(ImportError, match="torchdiffeq 0.4.0 is not a tested version"):
        builtin.torchdiffeq_methods()
