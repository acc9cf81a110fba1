"""pde_attention and its steppers: conservation, spectral = explicit, wave energy, convergence in steps at
fixed pseudo-time, causality, padding."""
import math

import pytest
import torch

from hybridseq import ConfigError, Seq, build_block, validate_model
from hybridseq.blocks.heads import pde as ops
from hybridseq.blocks.heads.pde_attention import PDES

D = 8

LENGTHS = torch.tensor([9, 6, 1])


def _batch(channels=D, n=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(len(LENGTHS), channels, n, generator=g)                   # [B, C, L]
    m = (torch.arange(n)[None, :] < LENGTHS[:, None])[:, None, :]            # [B, 1, L]
    return torch.where(m, u, 100.0), m                                        # padding holds junk


def _valid_stats(u, m):
    rows = [u[b, :, : int(m[b].sum())] for b in range(u.shape[0])]
    return [r.mean(-1) for r in rows], [r.var(-1, unbiased=False) for r in rows]


@pytest.mark.parametrize("stepper", ["explicit", "spectral"])
def test_diffusion_conserves_the_valid_mean_and_shrinks_the_variance(stepper):
    u, m = _batch()
    D_ = torch.full((D, 1), 0.4)
    if stepper == "explicit":
        out = ops.explicit(u, m, "diffusion", {"D": D_}, dt=1.0, steps=5)
    else:
        out = ops.diffusion_spectral(u, m, D_, time=5.0)
    (mean0, var0), (mean1, var1) = _valid_stats(u, m), _valid_stats(out, m)
    for a, b in zip(mean0, mean1):
        torch.testing.assert_close(a, b)
    for a, b in zip(var0[:2], var1[:2]):                                      # length-1 rows have none
        assert (b < a).all()
    assert torch.equal(out[~m.expand_as(out)], u[~m.expand_as(u)])          # padding untouched


def test_dct_matches_the_cosine_sum_and_inverts():
    x = torch.randn(3, 7, dtype=torch.float64)
    n = x.shape[-1]
    j, k = torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64)[:, None]
    direct = x @ torch.cos(math.pi * k * (2 * j + 1) / (2 * n)).T
    torch.testing.assert_close(ops.dct2(x), direct)
    torch.testing.assert_close(ops.idct2(ops.dct2(x)), x)


def test_spectral_diffusion_equals_explicit_for_small_steps():
    u, m = _batch()
    u, rate = u.double(), torch.linspace(0.1, 0.9, D, dtype=torch.float64)[:, None]
    exact = ops.diffusion_spectral(u, m, rate, time=1.5)
    fine = ops.explicit(u, m, "diffusion", {"D": rate}, dt=1.5 / 3000, steps=3000)
    coarse = ops.explicit(u, m, "diffusion", {"D": rate}, dt=1.5 / 6, steps=6)
    torch.testing.assert_close(exact, fine, atol=1e-3, rtol=0)
    assert (exact - coarse).abs().max() > 10 * (exact - fine).abs().max()


def test_spectral_diffusion_refuses_masks_with_gaps():
    u, m = _batch()
    gaps = m.clone()
    gaps[0, 0, 3] = False
    with pytest.raises(ValueError, match="prefix"):
        ops.diffusion_spectral(u, gaps, torch.full((D, 1), 0.4), time=1.0)


def test_block_spectral_equals_block_explicit_with_the_same_weights():
    seq = Seq(x=torch.randn(3, 9, D), mask=torch.arange(9)[None, :] < LENGTHS[:, None])
    spectral = build_block("pde_attention", d_model=D, heads=2, stepper="spectral", diffusion_max=0.5)
    explicit = build_block("pde_attention", d_model=D, heads=2, steps=400, diffusion_max=0.5)
    explicit.load_state_dict(spectral.state_dict())
    valid = seq.mask
    torch.testing.assert_close(explicit(seq).x[valid], spectral(seq).x[valid], atol=2e-3, rtol=0)


def _wave_energy(u_old, u, w, m, c):
    """Leapfrog energy ½|w_{n+1/2}|² + ½c² Σ (∂u_n)(∂u_{n+1}): exactly conserved by the scheme."""
    back_old, back = ops.differences(u_old, m)[0], ops.differences(u, m)[0]
    return (0.5 * (w * w * m).sum() + 0.5 * c**2 * (back_old * back).sum()).item()


@pytest.mark.parametrize("courant", [0.5, 0.9, 1.1])
def test_discrete_wave_energy_is_conserved_and_bounded_within_the_courant_limit(courant):
    u, m = _batch()
    u, c = u.double(), 1.0
    w = torch.zeros_like(u)
    energies, kinetic = [], []
    for _ in range(300):
        u_new, w = ops.wave(u, w, m, torch.tensor(c, dtype=u.dtype), courant, steps=1)
        energies.append(_wave_energy(u, u_new, w, m, c))
        kinetic.append(0.5 * (w * w * m).sum().item())
        u = u_new
    energies = torch.tensor(energies, dtype=torch.float64)
    if courant < 1:   # conserved, and E >= ½(1 - c²dt²)|w|²: the energy bounds the velocity
        torch.testing.assert_close(energies, torch.full_like(energies, energies[0].item()), rtol=1e-8, atol=0)
        assert max(kinetic) <= energies[0] / (1 - courant**2) + 1e-9
    else:             # past the Courant limit the energy is indefinite and the solution blows up
        assert max(kinetic) > 1e6 * kinetic[0]


def _seq(n=9, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Seq(x=torch.randn(b, n, D, generator=g))


@pytest.mark.parametrize("target", ["states", "weights"])
@pytest.mark.parametrize("pde", PDES)
def test_causal_variant_never_lets_a_later_token_reach_an_earlier_one(pde, target):
    block = build_block("pde_attention", d_model=D, heads=2, pde=pde, target=target, causal=True)
    with torch.no_grad():
        for raw in block.raw.values():
            raw.fill_(1.0)                                                   # strong coefficients
        seq = _seq()
        out = block(seq).x
        j = 5
        x = seq.x.clone()
        x[:, j] += 3 * torch.randn(2, D)
        moved = block(Seq(x=x)).x
    torch.testing.assert_close(moved[:, :j], out[:, :j], atol=1e-6, rtol=0)
    assert (moved[:, j:] - out[:, j:]).abs().max() > 1e-3


@pytest.mark.parametrize("options", [{"pde": p, "target": t} for p in PDES for t in ("states", "weights")]
                         + [{"stepper": "spectral", "pde": p, "target": t} for p in ("diffusion", "wave")
                            for t in ("states", "weights")]
                         + [{"boundary": "fixed", "pde": p} for p in PDES] + [{"placement": "after"}])
def test_padded_batch_equals_each_sequence_alone(options):
    block = build_block("pde_attention", d_model=D, heads=2, **options)
    with torch.no_grad():
        for raw in block.raw.values():
            raw.fill_(1.0)
        x = torch.randn(3, 9, D)
        mask = torch.arange(9)[None, :] < LENGTHS[:, None]
        out = block(Seq(x=torch.where(mask[..., None], x, 50.0), mask=mask)).x
        for b, n in enumerate(LENGTHS.tolist()):
            alone = block(Seq(x=x[b : b + 1, :n])).x[0]
            torch.testing.assert_close(out[b, :n], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("pde", PDES)
def test_evolved_attention_weights_are_distributions_over_allowed_keys(pde, causal):
    block = build_block("pde_attention", d_model=D, heads=2, pde=pde, target="weights", causal=causal)
    with torch.no_grad():
        for raw in block.raw.values():
            raw.fill_(2.0)
        mask = torch.arange(9)[None, :] < LENGTHS[:, None]
        weights, _ = block.attention_weights(torch.randn(3, 9, D), mask)    # [B, H, L, L]
    allowed = mask[:, None, None, :] & (torch.ones(9, 9).tril().bool() if causal else True)
    assert (weights >= 0).all() and (weights[~allowed.expand_as(weights)] == 0).all()
    rows = mask[:, None, :, None].expand_as(weights)[..., 0]                 # valid query rows
    torch.testing.assert_close(weights.sum(-1)[rows], torch.ones(int(rows.sum())))


@pytest.mark.parametrize("pde", ["diffusion", "advection_diffusion", "reaction_diffusion"])
def test_coefficients_stay_stable_whatever_the_raw_parameters(pde):
    block = build_block("pde_attention", d_model=D, heads=2, pde=pde, steps=1, time=3.0)
    u, m = _batch()
    with torch.no_grad():
        for raw in block.raw.values():
            raw.fill_(50.0 if pde != "reaction_diffusion" else -50.0)        # at the ceiling (ρ < 0: damping)
        out = block.evolve(u, m, (-1, 1))
    valid = m.expand_as(u)
    assert block.cfg.substeps() > 1                                         # more steps than asked: stable ones
    assert out[valid].max() <= u[valid].max() + 1e-5 and out[valid].min() >= u[valid].min() - 1e-5


def _strong(block, value=1.0):
    with torch.no_grad():
        for raw in block.raw.values():
            raw.fill_(value)
    return block


CASES = [(p, "explicit") for p in PDES] + [(p, "spectral") for p in ("diffusion", "wave", "reaction_diffusion")]


@pytest.mark.parametrize("pde, stepper", CASES)
def test_steps_only_refine_the_solution_at_fixed_pseudo_time(pde, stepper):
    """At fixed T, doubling ``steps`` brings the output closer to a fine reference: ``steps`` refines the
    discretisation of one equation instead of changing the equation."""
    u, m = _batch()
    u = u.double()

    def run(steps, kind=stepper):
        block = _strong(build_block("pde_attention", d_model=D, heads=2, pde=pde, stepper=kind, steps=steps,
                                    time=2.0)).double()
        with torch.no_grad():
            return block.evolve(u, m, (-1, 1)), block.cfg.substeps()

    fine, _ = run(4096, "explicit")
    errors, counts = [], []
    for steps in (16, 32, 64):
        out, n = run(steps)
        errors.append((out - fine)[m.expand_as(u)].abs().max().item())
        counts.append(n)
    if stepper == "spectral" and pde != "reaction_diffusion":                 # exact: no steps at all
        assert errors[0] == errors[1] == errors[2] and errors[0] < 1e-2
    else:
        assert counts == [16, 32, 64]
        assert errors[1] < 0.7 * errors[0] and errors[2] < 0.7 * errors[1], errors


@pytest.mark.parametrize("pde, stepper", CASES)
def test_pseudo_time_changes_the_output(pde, stepper):
    seq = Seq(x=torch.randn(2, 9, D, generator=torch.Generator().manual_seed(3)))
    outs = []
    for time in (0.1, 1.0, 5.0):
        block = build_block("pde_attention", d_model=D, heads=2, pde=pde, stepper=stepper, time=time)
        torch.manual_seed(0)
        block.load_state_dict(_strong(build_block("pde_attention", d_model=D, heads=2, pde=pde)).state_dict())
        with torch.no_grad():
            outs.append(block(seq).x)
    assert (outs[0] - outs[1]).abs().max() > 1e-2 and (outs[1] - outs[2]).abs().max() > 1e-2


@pytest.mark.parametrize("stepper", ["explicit", "spectral"])
def test_the_wave_at_its_speed_ceiling_stays_bounded(stepper):
    """From rest, ‖u(T)‖ <= ‖u(0)‖ mode by mode (Verlet start, Courant number 0.9), the highest mode too."""
    n = 64
    highest = (-1.0) ** torch.arange(n, dtype=torch.float64)                   # the top Neumann mode
    u = torch.stack([highest, torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))])
    m = torch.ones(1, n, dtype=torch.bool)
    for time in (0.3, 1.0, 7.3):
        block = _strong(build_block("pde_attention", d_model=D, heads=2, pde="wave", stepper=stepper, time=time,
                                    steps=1), 50.0).double()
        with torch.no_grad():
            out = block.evolve(u[:, None, :].expand(2, D, n), m, (-1, 1))
        assert (out.norm(dim=-1) <= 1.1 * u.norm(dim=-1)[:, None]).all()


def test_old_solver_key_names_the_new_one():
    model = {"d_model": D, "input": {"kind": "sequence", "channels": D},
             "blocks": [{"type": "pde_attention", "heads": 2, "solver": "spectral"}]}
    with pytest.raises(ConfigError) as err:
        validate_model(model)
    assert err.value.path == "model.blocks[0].solver" and "renamed to 'stepper'" in str(err.value)


@pytest.mark.parametrize("options, path, words", [
    ({"pde": "difusion"}, "model.blocks[0].pde", "did you mean 'diffusion'"),
    ({"target": "keys"}, "model.blocks[0].target", "Valid choices"),
    ({"pde": "advection_diffusion", "stepper": "spectral"}, "model.blocks[0].stepper", "solves pde diffusion"),
    ({"causal": True, "stepper": "spectral"}, "model.blocks[0].causal", "explicit"),
    ({"diffusion_max": 1.0e5}, "model.blocks[0].diffusion_max", "stable steps"),
    ({"pde": "wave", "speed_max": 1.0e5}, "model.blocks[0].speed_max", "stable steps"),
    ({"pde": "advection_diffusion", "speed_max": 8.0e4}, "model.blocks[0].speed_max", "stable steps"),
    ({"pde": "reaction_diffusion", "reaction_max": 9.0e4}, "model.blocks[0].reaction_max", "stable steps"),
    ({"diffusion_max": -1.0}, "model.blocks[0].diffusion_max", "positive"),
    ({"time": float("inf")}, "model.blocks[0].time", "finite"),
    ({"steps": 0}, "model.blocks[0].steps", ">= 1"),
    ({"boundary": "fixed", "stepper": "spectral"}, "model.blocks[0].boundary", "explicit"),
    ({"placement": "after", "target": "weights"}, "model.blocks[0].placement", "inside"),
    ({"reaction": "fisher"}, "model.blocks[0].reaction", "Valid choices"),
])
def test_config_mistakes_name_the_key_path(options, path, words):
    model = {"d_model": D, "input": {"kind": "sequence", "channels": D},
             "blocks": [{"type": "pde_attention", "heads": 2, **options}]}
    with pytest.raises(ConfigError) as err:
        validate_model(model)
    assert err.value.path == path and words in str(err.value)


def test_held_ends_stay_and_the_interior_evolves():
    block = _strong(build_block("pde_attention", d_model=D, heads=2, boundary="fixed"))
    u, m = _batch()
    with torch.no_grad():
        out = block.evolve(u, m, (-1, 1))
    for b, n in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(out[b, :, [0, n - 1]], u[b, :, [0, n - 1]], atol=0, rtol=0)
        if n > 2:
            assert (out[b, :, 1 : n - 1] - u[b, :, 1 : n - 1]).abs().max() > 1e-2
    neumann = _strong(build_block("pde_attention", d_model=D, heads=2))
    with torch.no_grad():
        assert (neumann.evolve(u, m, (-1, 1))[0, :, 0] - u[0, :, 0]).abs().max() > 1e-2


def test_placement_after_is_a_transformer_layer_then_the_pde():
    block = _strong(build_block("pde_attention", d_model=D, heads=2, placement="after"))
    layer = build_block("transformer", d_model=D, heads=2)
    layer.load_state_dict({k: v for k, v in block.state_dict().items() if not k.startswith("raw.")})
    seq = Seq(x=torch.randn(3, 9, D), mask=torch.arange(9)[None, :] < LENGTHS[:, None])
    with torch.no_grad():
        y = layer(seq).x.transpose(1, 2)
        expected = block.evolve(y, seq.mask[:, None, :], (-1, 1)).transpose(1, 2)
        torch.testing.assert_close(block(seq).x, expected)


def test_logistic_reaction_is_fisher_kpp_like():
    u = torch.linspace(-3, 3, 7, dtype=torch.float64)[None, None, :]
    m = torch.ones(1, 1, 7, dtype=torch.bool)
    rho = torch.tensor(0.5, dtype=torch.float64)
    out = ops.explicit(u, m, "reaction_diffusion", {"D": torch.tensor(0.0), "rho": rho}, dt=0.1, steps=1,
                       reaction_kind="logistic")
    torch.testing.assert_close(out, u + 0.1 * rho * u * (1 - torch.sigmoid(u)))


def test_the_causal_states_stencil_is_transport_an_impulse_drifts_by_D_T():
    """The one-sided stencil u_i += D dt (u_{i-1} - u_i) moves mass forward: after pseudo-time T an impulse's
    centre sits D·T positions later (a Poisson kernel), which is why docs call it causal transport."""
    n, start, rate, time = 64, 5, 0.8, 10.0
    u = torch.zeros(1, 1, n, dtype=torch.float64)
    u[..., start] = 1.0
    m = torch.ones(1, 1, n, dtype=torch.bool)
    out = ops.explicit(u, m, "diffusion", {"D": torch.tensor(rate, dtype=torch.float64)}, dt=time / 4000,
                       steps=4000, causal=True)
    centre = (out * torch.arange(n, dtype=torch.float64)).sum() / out.sum()
    assert abs(centre.item() - (start + rate * time)) < 0.05
    assert (out[..., :start] == 0).all()


@pytest.mark.parametrize("pde, stepper", [("diffusion", "explicit"), ("diffusion", "spectral"),
                                          ("advection_diffusion", "explicit")])
def test_the_weights_evolved_through_the_values_equal_evolving_the_matrix(pde, stepper):
    """Rows evolve as A Eᵀ with E row-stochastic, so the output is A (Eᵀ V): the fast path is the same layer."""
    block = _strong(build_block("pde_attention", d_model=D, heads=2, target="weights", pde=pde,
                                stepper=stepper)).double()
    assert block.through_values
    seq = Seq(x=torch.randn(3, 9, D, dtype=torch.float64), mask=torch.arange(9)[None, :] < LENGTHS[:, None])
    with torch.no_grad():
        h = block.norm1(seq.x)
        weights, v = block.attention_weights(h, seq.mask)                    # the L × L path
        b, n, d = h.shape
        matrix = block.attn.out((weights @ v).transpose(1, 2).reshape(b, n, d))
        fast = block._evolved_attention(h, seq.mask, seq.mask)
    torch.testing.assert_close(fast[seq.mask], matrix[seq.mask], atol=1e-10, rtol=1e-9)
    assert not build_block("pde_attention", d_model=D, heads=2, target="weights", causal=True).through_values


def test_the_transposed_stepper_is_the_transpose():
    u, m = _batch(channels=1)
    u, y = u.double(), torch.randn_like(u.double())
    coef = {"D": torch.tensor(0.3, dtype=torch.float64), "v": torch.tensor(-0.4, dtype=torch.float64)}
    E = lambda z: ops.explicit(z, m, "advection_diffusion", coef, 0.5, 3)            # noqa: E731
    Et = lambda z: ops.explicit_transpose(z, m, "advection_diffusion", coef, 0.5, 3)  # noqa: E731
    valid = m.expand_as(u)
    zero = lambda z: torch.where(valid, z, 0.0)                                         # noqa: E731
    torch.testing.assert_close((zero(y) * zero(E(u))).sum(), (zero(Et(y)) * zero(u)).sum())


@pytest.mark.parametrize("options", [{"target": "weights", "stepper": "spectral"}, {"target": "weights"},
                                     {"target": "weights", "pde": "advection_diffusion"},
                                     {"stepper": "spectral", "pde": "reaction_diffusion"}])
def test_trains_under_bf16_autocast(options):
    block = build_block("pde_attention", d_model=D, heads=2, **options)
    seq = Seq(x=torch.randn(3, 9, D), mask=torch.arange(9)[None, :] < LENGTHS[:, None])
    reference = block(seq).x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(seq).x
    out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in block.parameters() if p.grad is not None)
    assert (out.float() - reference)[seq.mask].abs().max() < 0.1
