"""torchode solvers agree with torchdiffeq and plug into hybridseq's solver machinery."""
import pytest
import torch
import torchdiffeq
from torch import nn

import hybridseq
import hybridseq_torchode
from hybridseq import ConfigError, ODESolver, SolverConfig, registry

NAMES = [f"torchode_{m}" for m in hybridseq_torchode.METHODS]
SETTINGS = {                    # name -> (options, tolerance against the exact solution)
    "torchode_dopri5": ({"rtol": 1e-8, "atol": 1e-10}, 1e-6),
    "torchode_tsit5": ({"rtol": 1e-8, "atol": 1e-10}, 1e-6),
    "torchode_heun": ({"rtol": 1e-5, "atol": 1e-7}, 1e-4),          # second order: looser
    "torchode_euler": ({"step_size": 1e-3}, 5e-3),
}


class Rotation(nn.Module):
    """dy/dt = A y with a rotation A: y(t) = exp(tA) y0, known in closed form."""

    def forward(self, t, y):
        return torch.stack([-y[..., 1], y[..., 0]], dim=-1)


class Tanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 3)

    def forward(self, t, y):
        return torch.tanh(self.layer(y))


def exact(y0, t):
    c, s = torch.cos(t)[:, None, None, None], torch.sin(t)[:, None, None, None]
    return torch.stack([c[..., 0] * y0[..., 0] - s[..., 0] * y0[..., 1],
                        s[..., 0] * y0[..., 0] + c[..., 0] * y0[..., 1]], dim=-1)


@pytest.mark.parametrize("name", NAMES)
def test_matches_exact_solution_and_torchdiffeq(name):
    y0 = torch.randn(3, 4, 2, dtype=torch.float64)              # any shape: [.., 2]
    t = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
    options, tol = SETTINGS[name]
    out = registry.solvers.get(name)(Rotation(), y0, t, **options)
    assert out.shape == (5, 3, 4, 2)
    reference = torchdiffeq.odeint(Rotation(), y0, t, method="dopri5", rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(out, reference, atol=tol, rtol=0)
    torch.testing.assert_close(out, exact(y0, t), atol=tol, rtol=0)


def test_gradients_backward_in_time_and_nfe():
    field = Tanh()
    layer = field.layer
    y0 = torch.randn(2, 3, requires_grad=True)
    t = torch.tensor([1.0, 0.4, 0.0])                           # decreasing times integrate backwards
    solver = ODESolver(SolverConfig(method="torchode_tsit5", rtol=1e-6, atol=1e-8))
    out = solver(field, y0, t)
    reference = torchdiffeq.odeint(field, y0, t, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=0)
    assert solver.nfe > 0
    grads = torch.autograd.grad(out[-1].sum(), [y0, layer.weight])
    expected = torch.autograd.grad(reference[-1].sum(), [y0, layer.weight])
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, atol=1e-3, rtol=1e-3)


def test_unknown_option_lists_valid_ones():
    with pytest.raises(TypeError, match="valid: rtol, atol, step_size"):
        registry.solvers.get("torchode_dopri5")(Rotation(), torch.ones(1, 2), torch.tensor([0.0, 1.0]), order=3)
    with pytest.raises(ConfigError, match=r"options.order: unknown option for solver 'torchode_tsit5'.*max_steps"):
        SolverConfig(method="torchode_tsit5", options={"order": 3}).validate("model.encoder.solver")
    with pytest.raises(ConfigError, match="rejected options max_steps='many': expected int"):
        SolverConfig(method="torchode_tsit5", options={"max_steps": "many"}).validate("model.encoder.solver")


def test_adjoint_is_refused_at_validation():
    assert registry.solvers.entry("torchode_tsit5").obj.adjoint is False
    with pytest.raises(ConfigError, match="does not support adjoint"):
        SolverConfig(method="torchode_tsit5", adjoint=True).validate("model.encoder.solver")


def test_step_limit_raises_with_reason():
    with pytest.raises(RuntimeError, match="REACHED_MAX_STEPS"):
        registry.solvers.get("torchode_dopri5")(Rotation(), torch.ones(1, 2), torch.tensor([0.0, 50.0]),
                                                rtol=1e-9, atol=1e-9, max_steps=3)


@pytest.mark.parametrize("name", NAMES)
def test_repeated_and_single_output_times(name):
    solve = registry.solvers.get(name)
    out = solve(Rotation(), torch.ones(3, 2), torch.tensor([0.0, 0.0, 0.5, 0.5]))
    torch.testing.assert_close(out[1], out[0])                  # no time passes: the state is unchanged
    torch.testing.assert_close(out[3], out[2])
    assert solve(Rotation(), torch.ones(3, 2), torch.tensor([0.5])).shape == (1, 3, 2)


def test_plugin_lists_its_solvers():
    owners = {registry.solvers.entry(n).owner for n in NAMES}
    assert owners == {"hybridseq-torchode"}
    assert hybridseq.plugins.infos["hybridseq-torchode"].registered["solvers"] == NAMES
