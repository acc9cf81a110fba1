"""The autoregressive ODE-RNN head: its teacher-forced one-step-ahead score against a hand computation
(rk4 written out), the free-running rollout as the same recursion fed its own predictions, no update at a
query without observations, and what reaches the trainer."""
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from hybridseq import Seq, build_block
from hybridseq.tasks import get_task

B, L, D, C = 2, 4, 5, 2


def _head(**over):
    torch.manual_seed(0)
    return build_block("autoregressive", d_model=D, channels=C, **over)


def _seq():
    g = torch.Generator().manual_seed(3)
    t = torch.tensor([[0.1, 0.3, 0.5, 0.9], [0.2, 0.4, 0.6, 0.0]])
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    # series 0: one query inside the window; series 1: one before its first observation, one padded
    query = torch.tensor([[0.4, 1.0, 1.5], [0.1, 0.9, 0.9]])
    return Seq(x=torch.randn(B, L, D, generator=g), t=t, mask=mask, query_t=query)


def _rk4(head, h, dt):
    """One classical Runge–Kutta step of dh/dt = f(h) over dt (the head's default: one step per gap)."""
    f = lambda z: head.func.net(z)                                   # noqa: E731
    k1 = f(h)
    k2 = f(h + dt / 2 * k1)
    k3 = f(h + dt / 2 * k2)
    k4 = f(h + dt * k3)
    return h + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def _by_hand(head, seq, feed, observed):
    """Predictions [B, Q, C] written out series by series. A query before the last observation reads the
    state of the last observation at or before it (or the first one), carried to it; past the last one the
    rollout steps from query to query, and the cell then takes in feed[b, q] (None: the prediction itself)
    with its mask, nothing where no channel is observed."""
    out = torch.zeros(B, seq.query_t.shape[1], C)
    last = seq.mask.sum(1) - 1
    for b in range(B):
        state = lambda i: head.init(head.norm(seq.x[b, i]))        # noqa: E731
        h, t_prev = state(last[b]), seq.t[b, last[b]]
        for q in range(seq.query_t.shape[1]):
            tq = seq.query_t[b, q]
            if tq < seq.t[b, last[b]]:
                a = max([i for i in range(int(last[b]) + 1) if seq.t[b, i] <= tq], default=0)
                out[b, q] = head.readout(_rk4(head, state(a), tq - seq.t[b, a]))
                continue
            h = _rk4(head, h, tq - t_prev)
            t_prev = tq
            y = head.readout(h)
            out[b, q] = y
            v, m = (y, torch.ones(C)) if feed is None else (feed[b, q] * observed[b, q], observed[b, q].float())
            if m.any():
                h = head.cell(torch.cat([v, m])[None], h[None])[0]
    return out


def test_teacher_forced_score_and_rollout_equal_a_hand_computation():
    head, seq = _head(), _seq()
    values = torch.randn(B, 3, C, generator=torch.Generator().manual_seed(4))
    observed = torch.ones(B, 3, C, dtype=torch.bool)
    observed[0, 1] = False                                           # nothing seen at series 0's second query
    observed[1, 1, 0] = False                                        # one channel missing
    with torch.no_grad():
        out = head(seq)
        torch.testing.assert_close(out.x, _by_hand(head, seq, None, None), atol=1e-6, rtol=1e-5)
        forced = _by_hand(head, seq, values, observed)
        m = observed.float()
        want = float(((forced - values).square() * m).sum() / m.sum())
        assert float(out.predictive.score(values, observed)["loss"]) == pytest.approx(want, rel=1e-5)


def test_the_rollout_is_the_teacher_forced_pass_fed_its_own_predictions():
    head, seq = _head(), _seq()
    with torch.no_grad():
        out = head(seq)
        p = out.predictive
        fed = head.rollout(p.h0, p.gaps, p.inside, out.x, torch.ones_like(out.x).bool())
    assert p.inside.tolist() == [[True, False, False], [True, False, False]]
    torch.testing.assert_close(fed[~p.inside], out.x[~p.inside])


def test_a_prediction_sees_only_the_targets_before_it_and_none_that_were_not_observed():
    head, seq = _head(), _seq()
    values = torch.randn(B, 3, C, generator=torch.Generator().manual_seed(5))
    observed = torch.ones(B, 3, C, dtype=torch.bool)
    observed[:, 0] = False

    def forced(v):
        with torch.no_grad():
            out = head(seq)
            p = out.predictive
            return head.rollout(p.h0, p.gaps, p.inside, v, observed)

    base = forced(values)
    unseen, later = values.clone(), values.clone()
    unseen[:, 0] += 10.0                                             # not observed: must change nothing
    later[:, 1] += 10.0                                              # changes query 2 only
    torch.testing.assert_close(forced(unseen), base)
    moved = forced(later)
    torch.testing.assert_close(moved[:, :2], base[:, :2])
    assert (moved[:, 2] - base[:, 2]).abs().min() > 1e-4


def test_the_teacher_forced_loss_trains_every_parameter_and_without_it_the_task_scores_the_rollout():
    seq = _seq()
    targets = {"query_values": torch.randn(B, 3, C), "query_mask": torch.ones(B, 3, C, dtype=torch.bool)}
    task = get_task("extrapolate")
    head = _head()
    loss, terms = task.objective(head(seq), targets)
    loss.backward()
    assert terms == {} and all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    with torch.no_grad():
        out = _head(teacher_forcing=False)(seq)
    assert out.predictive is None
    assert float(task.objective(out, targets)[0]) == pytest.approx(float(task.loss(out.x, targets)))


def test_queries_all_inside_the_window_are_read_without_a_cell_update():
    head, seq = _head(), _seq()
    seq.query_t = torch.tensor([[0.2, 0.45, 0.8], [0.1, 0.3, 0.5]])   # before every series' last observation
    calls = []
    head.cell.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        out = head(seq)
        torch.testing.assert_close(out.x, _by_hand(head, seq, None, None), atol=1e-6, rtol=1e-5)
        out.predictive.score(torch.randn(B, 3, C), None)
    assert calls == []


def test_unsorted_query_times_are_walked_in_time_order_and_returned_as_given():
    head, seq = _head(), _seq()
    seq.query_t[1] = torch.tensor([0.1, 0.9, 1.3])                   # no tied times: their order is the input's
    perm = torch.tensor([2, 0, 1])
    shuffled = Seq(x=seq.x, t=seq.t, mask=seq.mask, query_t=seq.query_t[:, perm])
    values = torch.randn(B, 3, C, generator=torch.Generator().manual_seed(6))
    observed = torch.rand(B, 3, C, generator=torch.Generator().manual_seed(7)) > 0.3
    with torch.no_grad():
        given, walked = head(seq), head(shuffled)
        torch.testing.assert_close(walked.x, given.x[:, perm])
        assert torch.equal(walked.t, shuffled.query_t)
        want = float(given.predictive.score(values, observed)["loss"])
        got = float(walked.predictive.score(values[:, perm], observed[:, perm])["loss"])
    assert got == pytest.approx(want, rel=1e-6)


def test_the_shipped_experiment_trains_on_the_one_step_error_and_selects_on_the_rollout(tmp_path):
    from hybridseq.config import load_config
    from hybridseq.train import train

    path = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "spirals_autoregressive.yaml"
    cfg = load_config(str(path), ["data.n_train=24", "data.n_test=8", "data.points=10", "data.queries=4",
                                  "data.val_fraction=0.25", "data.batch_size=8", "train.epochs=2",
                                  "train.progress=false", "model.d_model=8"])
    results = train(OmegaConf.create(OmegaConf.to_container(cfg)), tmp_path / "run")
    assert results["monitor"] == "val_mse"
    for split in ("val", "test"):
        assert math.isfinite(results[f"{split}_loss"]) and math.isfinite(results[f"{split}_mse"])
        assert results[f"{split}_loss"] != pytest.approx(results[f"{split}_mse"])   # one-step vs free-running


def test_the_extrapolation_experiments_compared_in_the_docs_share_their_data_and_training():
    from hybridseq.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs" / "experiments"
    names = ["spirals_autoregressive", "spirals_latent_ode", "spirals_mtand_extrapolate"]
    cfgs = {n: load_config(str(root / f"{n}.yaml"), []) for n in names}
    first = cfgs[names[0]]
    for name in names[1:]:
        assert cfgs[name].data == first.data and cfgs[name].train == first.train, name
    assert [cfgs[n].model.head.type for n in names] == ["autoregressive", "latent_ode", "mtand"]
