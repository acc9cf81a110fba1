"""Latent-variable query heads (`latent_ode`, `mtand`): the ELBO / IWAE bound against a hand computation,
the bound reaching training and evaluation, the backward ODE-RNN recognition network, config errors."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from hybridseq import ConfigError, IrregularBatch, Seq, build_block, validate_model
from hybridseq.blocks.encoders.common import flip_valid
from hybridseq.blocks.layers import multi_time_attention
from hybridseq.blocks.tasks.variational import MIN_STD, LatentBound
from hybridseq.tasks import get_task
from hybridseq.testing import check_block, example_input

B, L, D, Z, C, Q = 2, 4, 5, 3, 2, 3


def _latent_ode(**over):
    opts = {"d_model": D, "channels": C, "latent": Z, "samples": 3, "posterior_hidden": 6, "field_hidden": 7,
            "solver": {"method": "rk4", "step_size": 0.1}, **over}
    torch.manual_seed(0)
    return build_block("latent_ode", **opts)


def _fixed(head, mean, raw, drift):
    """q(z0) = N(mean, |raw|²) whatever the input, and the constant field dz/dt = drift."""
    with torch.no_grad():
        head.posterior[2].weight.zero_()
        head.posterior[2].bias.copy_(torch.cat([mean, raw]))
        head.func.net[0].weight.zero_()
        head.func.net[0].bias.zero_()                                  # tanh(0) = 0: f(z) = bias of the last layer
        head.func.net[2].bias.copy_(drift)


def _seq():
    g = torch.Generator().manual_seed(3)
    t = torch.tensor([[0.1, 0.3, 0.5, 0.9], [0.2, 0.4, 0.6, 0.0]])
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    query = torch.tensor([[0.0, 0.6, 1.2], [0.7, 0.9, 1.1]])          # 0.0: before the first observation
    return Seq(x=torch.randn(B, L, D, generator=g), t=t, mask=mask, query_t=query)


def _hand_bound(pred, values, mask, mean, std, obs_std, normalise=False):
    """(log p [K, B], KL [B]) written out entry by entry."""
    k = pred.shape[0]
    log_p = torch.zeros(k, B, dtype=torch.float64)
    for s in range(k):
        for b in range(B):
            for q in range(Q):
                for c in range(C):
                    if mask[b, q, c]:
                        err = float(values[b, q, c] - pred[s, b, q, c])
                        log_p[s, b] += -0.5 * (err**2 / obs_std**2 + math.log(obs_std**2) + math.log(2 * math.pi))
    kl = torch.tensor([sum(0.5 * (float(mean[j]) ** 2 + float(std[j]) ** 2 - 1) - math.log(float(std[j]))
                           for j in range(Z))] * B, dtype=torch.float64)
    if normalise:
        n = mask.sum((1, 2)).double()
        log_p, kl = log_p / n, kl / n
    return log_p, kl


@pytest.mark.parametrize("normalise,start", [(False, "observation"), (True, "observation"), (False, "query")])
def test_latent_ode_bound_equals_a_hand_computation(normalise, start):
    head = _latent_ode(normalise=normalise, obs_std=0.5, start=start)
    mean, raw, drift = torch.tensor([0.3, -0.2, 0.5]), torch.tensor([-1.0, 0.2, 0.7]), torch.tensor([1.0, -2.0, 0.5])
    _fixed(head, mean, raw, drift)
    seq = _seq()
    torch.manual_seed(5)
    eps = torch.randn(3, B, Z)
    torch.manual_seed(5)
    out = head(seq)
    std = raw.abs() + MIN_STD                                          # the authors' |·|, floored
    t0 = seq.t[:, 0] if start == "observation" else seq.query_t[:, 0]   # pool: first / the first query
    z0 = torch.cat([mean.expand(1, B, Z), mean + std * eps])           # [1 + K, B, Z]: the mean, the samples
    z = z0[:, :, None, :] + drift * (seq.query_t - t0[:, None])[None, :, :, None]   # z(τ) = z0 + drift τ
    pred = head.decoder(z).detach()                                    # [1 + K, B, Q, C]
    torch.testing.assert_close(out.x, pred[0], atol=1e-5, rtol=1e-5)  # x: the decoding of the posterior mean
    values = torch.randn(B, Q, C, generator=torch.Generator().manual_seed(7))
    mask = torch.tensor([[[True, True], [False, True], [True, True]], [[True, False], [True, True], [False, False]]])
    log_p, kl = _hand_bound(pred[1:], values, mask, mean, std, 0.5, normalise)
    weights = log_p - kl
    terms = out.predictive.score(values, mask)
    iwae = torch.logsumexp(weights, 0) - math.log(3)
    assert float(terms["loss"].detach()) == pytest.approx(-float(iwae.mean()), rel=1e-5)
    assert float(terms["elbo"]) == pytest.approx(float(weights.mean()), rel=1e-5)
    assert float(terms["kl"]) == pytest.approx(float(kl.mean()), rel=1e-5)
    assert float(terms["log_likelihood"]) == pytest.approx(float(log_p.mean()), rel=1e-5)
    assert float(terms["iwae"]) >= float(terms["elbo"])               # Jensen: the IWAE bound is tighter


def test_iwae_with_one_sample_is_the_elbo_and_kl_weight_scales_the_kl():
    g = torch.Generator().manual_seed(0)
    decoded, kl = torch.randn(1, B, Q, C, generator=g), torch.rand(B, generator=g)
    values = torch.randn(B, Q, C, generator=g)
    terms = LatentBound(decoded, kl, obs_std=0.1).score(values, None)
    assert float(terms["loss"]) == pytest.approx(-float(terms["elbo"]), rel=1e-6)
    assert float(terms["iwae"]) == pytest.approx(float(terms["elbo"]), rel=1e-6)
    off = LatentBound(decoded, kl, obs_std=0.1, kl_weight=0.0).score(values, None)
    assert float(off["elbo"]) == pytest.approx(float(terms["log_likelihood"]), rel=1e-6)


@pytest.mark.parametrize("head", ["latent_ode", "mtand"])
def test_kl_warmup_ramps_beta_over_training_steps_and_resumes_from_the_state_dict(head):
    """β = kl_weight · min(1, n / kl_warmup) at the n-th training step (n from 0); evaluation uses the full β;
    the step count is in the state dict, so a model restored mid-ramp goes on from where it was."""
    def build():
        opts = {"kl_weight": 2.0, "kl_warmup": 4}
        if head == "latent_ode":
            return _latent_ode(**opts)
        return build_block("mtand", d_model=D, channels=C, latent=Z, samples=2, rec_hidden=4, gen_hidden=4,
                           hidden=6, time_features=4, key_width=4, **opts)

    model = build()
    inputs = example_input(type(model), model.cfg)
    betas = [model.train()(inputs).predictive.kl_weight for _ in range(3)]
    assert betas == [0.0, 0.5, 1.0]
    assert model.eval()(inputs).predictive.kl_weight == 2.0                 # no step counted in eval
    restored = build()
    restored.load_state_dict(model.state_dict())
    assert [restored.train()(inputs).predictive.kl_weight for _ in range(3)] == [1.5, 2.0, 2.0]


def test_latent_ode_gradients_reach_the_recognition_network_through_the_bound():
    model_cfg = {"d_model": 8, "input": {"kind": "irregular", "channels": 2},
                 "encoder": {"type": "ode_rnn", "direction": "backward", "hidden": 6, "field_width": 8},
                 "head": {"type": "latent_ode", "channels": 2, "latent": 3, "samples": 2, "posterior_hidden": 8,
                          "field_hidden": 8, "solver": {"method": "rk4", "step_size": 0.2}}}
    from hybridseq import assemble

    model = assemble(model_cfg)
    cls = model.nodes["encoder"].__class__
    batch = example_input(cls, model.nodes["encoder"].cfg, queries=Q)
    out = model(batch)
    assert out.x.shape == (3, Q, 2) and out.predictive.decoded.shape == (2, 3, Q, 2)
    values = torch.randn(3, Q, 2)
    loss, terms = get_task("extrapolate").objective(out, {"query_values": values,
                                                          "query_mask": torch.ones(3, Q, 2, dtype=torch.bool)})
    assert set(terms) == {"iwae", "elbo", "log_likelihood", "kl"} and loss.requires_grad
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_a_task_scores_a_head_without_likelihood_by_its_loss_and_refuses_one_it_cannot_score():
    task = get_task("interpolate")
    pred, values = torch.randn(B, Q, C), torch.randn(B, Q, C)
    targets = {"query_values": values, "query_mask": torch.ones(B, Q, C, dtype=torch.bool)}
    loss, terms = task.objective(Seq(x=pred), targets)
    assert terms == {} and torch.equal(loss, task.loss(pred, targets))
    bound = LatentBound(pred[None], torch.zeros(B), obs_std=1.0)
    with pytest.raises(ConfigError, match="no values for the head's likelihood") as err:
        get_task("classify").objective(Seq(x=pred, predictive=bound), {"label": torch.zeros(B, dtype=torch.long)})
    assert err.value.path == "model.head.type"
    assert task.higher_is_better("elbo") and not task.higher_is_better("kl")


def test_mtand_kl_ignores_padding_and_one_sample_is_the_elbo():
    cls_cfg = {"d_model": D, "channels": C, "latent": Z, "samples": 1, "rec_hidden": 4, "gen_hidden": 4, "hidden": 6,
               "time_features": 4, "key_width": 4, "normalise": False}
    torch.manual_seed(0)
    head = build_block("mtand", **cls_cfg).eval()
    seq = _seq()
    noisy = Seq(x=torch.where(seq.mask[..., None], seq.x, 100.0), t=seq.t, mask=seq.mask, query_t=seq.query_t)
    with torch.no_grad():
        out, moved = head(seq), head(noisy)
    torch.testing.assert_close(moved.predictive.kl, out.predictive.kl)
    torch.testing.assert_close(moved.x, out.x)
    values = torch.randn(B, Q, C)
    terms = out.predictive.score(values, None)
    assert float(terms["loss"]) == pytest.approx(-float(terms["elbo"]), rel=1e-6)


def test_multi_time_attention_masks_alike_per_channel_or_once():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 3, 2, 4, generator=g), torch.randn(B, 5, 2, 4, generator=g)
    v = torch.randn(B, 5, 6, generator=g)
    keep = torch.tensor([[True] * 5, [True, True, True, False, False]])
    once = multi_time_attention(q, k, v, keep[..., None])
    per_channel = multi_time_attention(q, k, v, keep[..., None].expand(B, 5, 6))
    torch.testing.assert_close(once, per_channel)
    torch.testing.assert_close(multi_time_attention(q, k, v), multi_time_attention(q, k, v, torch.ones(B, 5, 1).bool()))
    assert once.shape == (B, 3, 2, 6)


def test_backward_ode_rnn_summarises_the_future_and_passes_the_block_checks():
    check_block("ode_rnn", {"direction": "backward"})
    lengths = torch.tensor([4, 3])
    x = torch.arange(8.0).view(2, 4, 1)
    assert flip_valid(x, lengths)[:, :, 0].tolist() == [[3, 2, 1, 0], [6, 5, 4, 7]]
    torch.testing.assert_close(flip_valid(flip_valid(x, lengths), lengths), x)
    torch.manual_seed(0)
    enc = {d: build_block("ode_rnn", d_in=2, d_model=4, hidden=5, direction=d).eval() for d in ("forward", "backward")}
    g = torch.Generator().manual_seed(1)
    values, times = torch.randn(2, 4, 2, generator=g), torch.cumsum(torch.rand(2, 4, generator=g) + 0.1, 1)
    mask = torch.ones(2, 4, 2, dtype=torch.bool)
    base = IrregularBatch(values, times, mask, lengths)
    first, last = values.clone(), values.clone()
    first[:, 0] += 1.0                                                  # change the first observation
    last[0, 3] += 1.0
    last[1, 2] += 1.0                                                   # change each series' last observation
    with torch.no_grad():
        ref = {d: e(base).x for d, e in enc.items()}
        moved_first = enc["backward"](IrregularBatch(first, times, mask, lengths)).x
        moved_last = enc["forward"](IrregularBatch(last, times, mask, lengths)).x
    ends = [(0, 3), (1, 2)]
    for b, end in ends:                                                # backward: the end state saw only the end
        torch.testing.assert_close(moved_first[b, end], ref["backward"][b, end])
        assert not torch.allclose(moved_first[b, 0], ref["backward"][b, 0])
    torch.testing.assert_close(moved_last[:, 0], ref["forward"][:, 0])  # forward: the start saw only the start


@pytest.mark.parametrize("encoder,head,key,value", [
    *[("ode_rnn", "latent_ode", k, v) for k, v in [("samples", 0), ("latent", 0), ("obs_std", 0.0),
                                                   ("obs_std", float("nan")), ("kl_weight", -1.0),
                                                   ("kl_warmup", -1), ("pool", "mean"), ("start", "end")]],
    *[("mtan", "mtand", k, v) for k, v in [("samples", 0), ("heads", 0), ("rec_hidden", 0), ("time_features", 1)]]])
def test_latent_head_config_errors_name_the_key(encoder, head, key, value):
    model = {"d_model": 8, "input": {"kind": "irregular", "channels": 2}, "encoder": {"type": encoder},
             "head": {"type": head, "channels": 2, key: value}}
    with pytest.raises(ConfigError) as err:
        validate_model(model)
    assert err.value.path == f"model.head.{key}" and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["spirals_latent_ode", "spirals_mtand", "spirals_mtand_extrapolate"])
def test_shipped_latent_experiments_train_a_step_and_report_the_bound(name, tmp_path):
    from pathlib import Path

    from hybridseq.config import load_config
    from hybridseq.train import train

    path = Path(__file__).resolve().parents[1] / "configs" / "experiments" / f"{name}.yaml"
    cfg = load_config(str(path), ["data.n_train=24", "data.n_test=8", "data.points=10", "data.queries=4",
                                  "data.val_fraction=0.25", "data.batch_size=8", "train.epochs=1",
                                  "train.max_steps_per_epoch=1", "train.progress=false", "model.d_model=8"])
    results = train(OmegaConf.create(OmegaConf.to_container(cfg)), tmp_path / "run")
    for split in ("val", "test"):
        for key in ("mse", "elbo", "iwae", "kl", "loss"):
            assert math.isfinite(results[f"{split}_{key}"]), (split, key)
        assert results[f"{split}_loss"] == pytest.approx(-results[f"{split}_iwae"], rel=1e-6)


def test_latent_ode_prediction_does_not_depend_on_the_samples_under_an_adaptive_solver():
    head = _latent_ode(solver={"method": "dopri5", "rtol": 1e-3, "atol": 1e-4}).eval()
    seq = _seq()
    with torch.no_grad():
        torch.manual_seed(1)
        first = head(seq)
        torch.manual_seed(2)
        second = head(seq)
    assert torch.equal(first.x, second.x)                              # only the samples differ
    assert not torch.equal(first.predictive.decoded, second.predictive.decoded)
