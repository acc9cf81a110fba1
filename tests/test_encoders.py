"""Irregular encoders: padding and per-channel-mask invariance, closed forms, references, adjoint, NFE, losses."""
import pytest
import torch
from torch import nn

from hybridseq import IrregularBatch, assemble, describe, registry
from hybridseq.blocks.encoders.ncde import control_knots
from hybridseq.testing import block_config, example_input

ENCODERS = sorted(n for n in registry.blocks.names() if registry.blocks.get(n).accepts == "irregular")   # plugins' too
ODE_ENCODERS = ["ode_rnn", "gru_ode", "ncde", "contiformer"]
VARIANTS = [("ncde", {"interpolation": "cubic"}), ("ncde", {"interpolation": "linear"}),
            ("ncde", {"interpolation": "rectilinear", "counts": False}), ("mtan", {"reference": "fixed"})]


def _build(name, d_in=3, **over):
    cls, cfg = block_config(name, over, d_model=8, d_in=d_in)
    torch.manual_seed(0)
    return cls(cfg).eval()


def _valid(out, batch):
    return out.x if out.mask is None else out.x[batch.valid]


def _dirty(batch, seed=1):
    """The batch with noise wherever nothing was observed: padded values, times and mask, hidden channels."""
    g = torch.Generator().manual_seed(seed)
    pad = ~batch.valid
    values = torch.where(batch.mask, batch.values, 100 * torch.randn(batch.values.shape, generator=g))
    times = torch.where(pad, 50 * torch.rand(batch.times.shape, generator=g), batch.times)
    mask = batch.mask | (pad[..., None] & (torch.rand(batch.mask.shape, generator=g) > 0.5))
    return IrregularBatch(values, times, mask, batch.lengths, batch.query_times)


@pytest.mark.parametrize("name,over", [(n, {}) for n in ENCODERS] + VARIANTS)
def test_padding_and_channel_mask_invariance(name, over):
    block = _build(name, **over)
    batch = example_input(type(block), block.cfg, batch=3, length=8)
    with torch.no_grad():
        clean, dirty = block(batch), block(_dirty(batch))
    torch.testing.assert_close(_valid(dirty, batch), _valid(clean, batch), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name,over", [(n, {}) for n in ENCODERS] + VARIANTS)
def test_a_series_alone_equals_it_in_a_padded_batch(name, over):
    block = _build(name, **over)
    batch = example_input(type(block), block.cfg, batch=3, length=8)
    k, n = 1, int(batch.lengths[1])                                  # the shorter series, alone and unpadded
    alone = IrregularBatch(batch.values[k:k + 1, :n], batch.times[k:k + 1, :n], batch.mask[k:k + 1, :n],
                           batch.lengths[k:k + 1])
    with torch.no_grad():
        together, single = block(batch), block(alone)
    if together.mask is None:
        torch.testing.assert_close(single.x[0], together.x[k], rtol=1e-5, atol=1e-6)
    else:
        torch.testing.assert_close(single.x[0], together.x[k, :n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name,over", [("ode_rnn", {}), ("gru_ode", {}), ("ncde", {"interpolation": "hermite"}),
                                       ("ncde", {"interpolation": "linear"}),
                                       ("ncde", {"interpolation": "rectilinear"})])
def test_causal_encoders_ignore_later_observations(name, over):
    block = _build(name, **over)
    batch = example_input(type(block), block.cfg, batch=3, length=8)
    values = batch.values.clone()
    values[:, 5:] += 3.0                                             # change every observation from step 5 on
    later = IrregularBatch(values, batch.times, batch.mask, batch.lengths)
    with torch.no_grad():
        before, after = block(batch).x, block(later).x
    torch.testing.assert_close(after[:, :5], before[:, :5], rtol=0, atol=1e-6)
    assert not torch.allclose(after[:, 5:][batch.valid[:, 5:]], before[:, 5:][batch.valid[:, 5:]])


class _DiagonalLinearField(nn.Module):
    """f(z)[h, p] = A[h, p] z[h]: dz_h = z_h Σ_p A_hp dX_p, so z(t) = z(0) exp(A (X(t) - X(0)))."""

    def __init__(self, a):
        super().__init__()
        self.a = a

    def forward(self, z):
        return self.a * z[..., None]


@pytest.mark.parametrize("interpolation", ["hermite", "cubic", "linear", "rectilinear"])
def test_ncde_matches_the_closed_form_of_a_linear_cde(interpolation):
    block = _build("ncde", d_in=2, hidden=4, interpolation=interpolation,
                   solver={"method": "dopri5", "rtol": 1e-10, "atol": 1e-12}).double()
    batch = example_input(type(block), block.cfg, batch=3, length=7).to(dtype=torch.float64)
    a = 0.3 * torch.randn(4, 5, dtype=torch.float64)
    block.field = _DiagonalLinearField(a)
    knots, valid = control_knots(batch)                                  # [B, N, 5]
    z = block.states(batch)                                              # [B, N, 4]
    expected = block.initial(knots[:, :1]) * torch.exp((knots - knots[:, :1]) @ a.T)
    torch.testing.assert_close(z[valid], expected[valid], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["ode_rnn", "gru_ode"])
def test_a_time_point_with_nothing_observed_takes_no_update(name):
    block = _build(name, solver={"method": "dopri5", "rtol": 1e-10, "atol": 1e-10}).double()
    batch = example_input(type(block), block.cfg, batch=1, length=6).to(dtype=torch.float64)
    mask = batch.mask.clone()
    mask[0, 3] = False                                               # time point 3: no channel observed
    empty = IrregularBatch(batch.values, batch.times, mask, batch.lengths)
    keep = [0, 1, 2, 4, 5]
    without = IrregularBatch(batch.values[:, keep], batch.times[:, keep], mask[:, keep], torch.tensor([5]))
    with torch.no_grad():
        a, b = block(empty).x, block(without).x
    torch.testing.assert_close(a[:, keep], b, rtol=1e-7, atol=1e-8)  # the flow passes through t_3 untouched


@pytest.mark.parametrize("interpolation", ["hermite", "cubic", "linear", "rectilinear"])
def test_ncde_stays_finite_on_repeated_time_stamps(interpolation):
    block = _build("ncde", d_in=2, interpolation=interpolation)
    times = torch.tensor([[0.0, 0.3, 0.3, 0.5, 0.5, 0.5, 0.9]])
    values = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [-1.0, 2.0], [0.5, 0.5], [2.0, -2.0], [0.0, 0.0], [1.0, 1.0]]])
    batch = IrregularBatch(values, times, torch.ones(1, 7, 2, dtype=torch.bool), torch.tensor([7]))
    out = block(batch).x
    out.square().sum().backward()
    assert torch.isfinite(out).all() and out.abs().max() < 10
    assert all(torch.isfinite(p.grad).all() for p in block.parameters())


def test_ncde_rectilinear_path_moves_time_then_values():
    from hybridseq.blocks.encoders.ncde import path_derivative_coeffs, rectilinear_knots

    knots = torch.tensor([[[0.0, 1.0], [0.5, 3.0], [2.0, -1.0]]])        # (t, x) at three observations
    rect, valid = rectilinear_knots(knots, torch.ones(1, 3, dtype=torch.bool))
    assert rect[0].tolist() == [[0.0, 1.0], [0.5, 1.0], [0.5, 3.0], [2.0, 3.0], [2.0, -1.0]]
    coeffs = path_derivative_coeffs(rect, valid, "rectilinear")          # [1, 4, 2, 3]: straight pieces
    assert coeffs[0, :, :, 0].tolist() == [[0.5, 0.0], [0.0, 2.0], [1.5, 0.0], [0.0, -4.0]]
    assert (coeffs[..., 1:] == 0).all()


def test_ncde_count_channels_are_optional():
    with_counts, without = _build("ncde", d_in=3), _build("ncde", d_in=3, counts=False)
    assert with_counts.initial.in_features == 7 and without.initial.in_features == 4
    batch = example_input(type(without), without.cfg, batch=2, length=5)
    assert torch.isfinite(without(batch).x).all()


def test_ncde_interpolations_agree_on_a_straight_path():
    values = torch.linspace(0, 1, 6)[None, :, None] * torch.tensor([1.0, -2.0])       # [1, 6, 2], on a line
    batch = IrregularBatch(values, torch.linspace(0, 1, 6)[None], torch.ones(1, 6, 2, dtype=torch.bool),
                           torch.tensor([6]))
    outs = [_build("ncde", d_in=2, interpolation=k)(batch).x for k in ("hermite", "cubic", "linear")]
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(outs[0], outs[2])


def test_adjoint_gradients_equal_direct_backprop():
    grads = []
    for adjoint in (False, True):
        block = _build("ode_rnn", d_in=2, hidden=4, field_width=8,
                       solver={"method": "dopri5", "rtol": 1e-9, "atol": 1e-9, "adjoint": adjoint}).double()
        batch = example_input(type(block), block.cfg, batch=2, length=4).to(dtype=torch.float64)
        block(batch).x[batch.valid].square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in block.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-6, atol=1e-8, msg=name)


@pytest.mark.parametrize("name,expected", [("ode_rnn", 4 * 7), ("gru_ode", 4 * 7), ("ncde", 4 * 7),
                                           ("contiformer", 2 * 4 * 7)])
def test_nfe_is_counted_per_block_and_shown_by_describe(name, expected):
    model = assemble({"d_model": 8, "input": {"kind": "irregular", "channels": 3}, "encoder": {"type": name},
                      "head": {"type": "classify", "classes": 2}})
    batch = example_input(type(model.nodes["encoder"]), model.nodes["encoder"].cfg, batch=2, length=8)
    model(batch)
    assert model.stats() == {"encoder": {"nfe": expected}}      # rk4: 4 evaluations per interval (and sweep)
    header, row = (line.split() for line in describe(model).splitlines() if line.split()[:1] in (["name"], ["encoder"]))
    assert row[header.index("nfe")] == str(expected)                # describe shows the count in the encoder's row
    model(batch)
    assert model.stats()["encoder"]["nfe"] == expected          # reset at every forward


def test_training_metrics_report_the_encoders_nfe():
    from omegaconf import OmegaConf

    from hybridseq.train import train

    cfg = {"data": {"name": "spirals", "n_train": 10, "n_test": 4, "points": 6, "batch_size": 4},
           "model": {"d_model": 8, "encoder": {"type": "ode_rnn", "hidden": 4, "field_width": 8},
                     "head": {"type": "classify"}},
           "train": {"epochs": 2, "progress": False}}
    results = train(OmegaConf.create(cfg), None)
    assert results["nfe"] == 4 * 5          # rk4, no adjoint: 4 evaluations per interval, 6 points per series


def test_mtan_outputs_at_increasing_reference_times():
    block = _build("mtan", reference_points=6)
    batch = example_input(type(block), block.cfg, batch=2, length=5)
    out = block(batch)
    assert out.x.shape == (2, 6, 8) and out.mask is None and torch.equal(out.query_t, batch.query_times)
    torch.testing.assert_close(out.t[0], torch.linspace(0, 1, 6), rtol=0, atol=1e-6)
    with torch.no_grad():
        block.raw_gaps.fill_(-30.0)                                    # gaps can shrink but never turn negative
    assert (block.reference_times().diff() >= 0).all()


def test_mtan_fixed_reference_points_are_the_papers_even_grid():
    block = _build("mtan", reference_points=128, reference="fixed")
    assert not any("gaps" in n or n == "start" for n, _ in block.named_parameters())
    batch = example_input(type(block), block.cfg, batch=2, length=5)
    out = block(batch)
    assert out.x.shape == (2, 128, 8)
    torch.testing.assert_close(out.t[0], torch.linspace(0, 1, 128))


def test_mtan_attends_to_each_channel_separately():
    block = _build("mtan", d_in=2)
    times = torch.tensor([[0.1, 0.5, 0.9]])
    mask = torch.tensor([[[True, False], [True, False], [True, True]]])
    base = IrregularBatch(torch.zeros(1, 3, 2), times, mask, torch.tensor([3]))
    with torch.no_grad():
        block.out.weight.zero_()
        block.out.weight[0, 1] = 1.0                                  # read out head 0, channel 1
        block.out.bias.zero_()
        moved = IrregularBatch(torch.tensor([[[0.0, 0.0], [0.0, 0.0], [0.0, 2.0]]]), times, mask, torch.tensor([3]))
        out = block(moved).x[0, :, 0]
    assert torch.allclose(out, torch.full_like(out, 2.0))              # channel 1 has one observation: weight 1
    assert block(base).x.abs().max() == 0


def test_solver_options_errors_name_the_key_path():
    from hybridseq import ConfigError, validate_model

    model = {"d_model": 8, "input": {"kind": "irregular", "channels": 3},
             "encoder": {"type": "ode_rnn", "solver": {"method": "rk5"}}, "head": {"type": "classify", "classes": 2}}
    with pytest.raises(ConfigError, match="did you mean 'rk4'") as err:
        validate_model(model)
    assert err.value.path == "model.encoder.solver.method"
    model["encoder"]["solver"] = {"method": "dopri5", "options": {"max_steps": 10}}
    with pytest.raises(ConfigError) as err:
        validate_model(model)
    assert err.value.path == "model.encoder.solver.options.max_steps"


def test_encoders_train_on_shipped_data():
    from hybridseq.data import load_data

    data = load_data({"name": "uea", "dataset": "JapaneseVowels", "irregular": {"drop": 0.5}})
    batch, targets = next(iter(data.loader("train", batch_size=4, shuffle=False)))
    for name in ENCODERS:
        model = assemble({"d_model": 8, "input": {"kind": "irregular", "channels": data.info.channels},
                          "encoder": {"type": name}, "head": {"type": "classify", "classes": data.info.classes}})
        loss = nn.functional.cross_entropy(model(batch).x, targets["label"])
        loss.backward()
        assert torch.isfinite(loss)


@pytest.mark.parametrize("name,over",
                         [(n, {}) for n in ENCODERS] + VARIANTS + [("contiformer", {"dynamics": "linear"})])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_encoders_train_under_autocast(name, over, dtype):
    block = _build(name, **over).train()
    batch = example_input(type(block), block.cfg, batch=2, length=5)
    with torch.autocast("cpu", dtype=dtype):
        out = block(batch).x
    out.float().square().mean().backward()                          # backward outside autocast
    assert torch.isfinite(out.float()).all()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in block.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


def test_gru_bayes_loss_equals_a_hand_computation():
    import math

    from hybridseq.blocks.encoders.common import evolve

    block = _build("gru_ode", d_in=2, hidden=3, mixing=0.5, obs_noise_std=0.1).double()
    times = torch.tensor([[0.0, 0.4, 1.0]], dtype=torch.float64)
    values = torch.tensor([[[0.5, -1.0], [2.0, 0.3], [0.0, 1.5]]], dtype=torch.float64)
    mask = torch.tensor([[[True, False], [True, True], [False, True]]])
    batch = IrregularBatch(values, times, mask, torch.tensor([3]))
    block(batch)
    states = block.flow(batch, block.jump)[0]                          # [N, H] after each update
    total, h = 0.0, torch.zeros(3, dtype=torch.float64)
    for i in range(3):
        if i > 0:
            h = evolve(block.solver, block.flow.field, states[i - 1][None], times[0, i:i + 1] - times[0, i - 1:i])[0]
        mean, logvar = block.predict(h).chunk(2)
        after_mean, after_logvar = block.predict(states[i]).chunk(2)
        for c in range(2):
            if not mask[0, i, c]:
                continue
            x, var = values[0, i, c], logvar[c].exp()
            total += 0.5 * ((x - mean[c]) ** 2 / var + logvar[c] + math.log(2 * math.pi))           # NLL before
            s1, s2 = (0.5 * after_logvar[c]).exp(), 0.1
            kl = math.log(s2) - torch.log(s1) + (s1**2 + (after_mean[c] - x) ** 2) / (2 * s2**2) - 0.5
            total += 0.5 * kl                                                                     # mixing × KL after
    torch.testing.assert_close(block.aux_loss(), total)                # one series: divided by 1


def test_a_block_aux_loss_reaches_the_model_and_training():
    from omegaconf import OmegaConf

    from hybridseq.train import train

    model = assemble({"d_model": 8, "input": {"kind": "irregular", "channels": 3}, "encoder": {"type": "gru_ode"},
                      "head": {"type": "classify", "classes": 2}})
    batch = example_input(type(model.nodes["encoder"]), model.nodes["encoder"].cfg, batch=2, length=5)
    model(batch)
    torch.testing.assert_close(model.aux_loss(), model.nodes["encoder"].aux_loss())
    assert _build("ode_rnn").aux_loss() is None
    off = assemble({"d_model": 8, "input": {"kind": "irregular", "channels": 3},
                    "encoder": {"type": "gru_ode", "loss_weight": 0.0}, "head": {"type": "classify", "classes": 2}})
    off(batch)
    assert off.aux_loss() is None
    cfg = {"data": {"name": "spirals", "n_train": 8, "n_test": 4, "points": 6, "batch_size": 4, "val_fraction": 0.0},
           "model": {"d_model": 8, "encoder": {"type": "gru_ode", "hidden": 4, "loss_weight": 1.0e3},
                     "head": {"type": "classify"}},
           "train": {"epochs": 1, "progress": False}}
    heavy = train(OmegaConf.create(cfg), None)
    cfg["model"]["encoder"]["loss_weight"] = 0.0
    plain = train(OmegaConf.create(cfg), None)
    assert heavy["curves"]["train_loss"][0] > 10 * plain["curves"]["train_loss"][0]   # the trainer adds it
