"""The optimiser's parameter groups: what is decayed, what a block marks, per-parameter hyperparameters."""
import pytest
import torch
from torch import nn

import hybridseq as hs
from hybridseq.blocks.layers import no_weight_decay
from hybridseq.train.optim import configure_optimizer, param_groups


def groups_by_param(opt):
    return {id(p): g for g in opt.param_groups for p in g["params"]}


def test_only_matrices_are_decayed_and_marks_are_honoured():
    net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    marked = nn.Parameter(torch.zeros(3, 3))
    tuned = nn.Parameter(torch.zeros(5, 2))
    no_weight_decay(marked)
    tuned._optim = {"lr": 1e-4, "weight_decay": 0.0}
    net.register_parameter("marked", marked)
    net.register_parameter("tuned", tuned)
    opt = configure_optimizer(net, lr=1e-2, weight_decay=0.1)
    by = groups_by_param(opt)
    assert by[id(net[0].weight)]["weight_decay"] == 0.1 and by[id(net[2].weight)]["weight_decay"] == 0.1
    for p in (net[0].bias, net[1].weight, net[1].bias, net[2].bias, marked):
        assert by[id(p)]["weight_decay"] == 0.0 and by[id(p)]["lr"] == 1e-2
    assert by[id(tuned)]["lr"] == 1e-4 and by[id(tuned)]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))


def test_undecayed_parameters_do_not_move_without_gradient():
    """With zero gradients AdamW moves only decayed weights: norms, biases and marked ones stay put."""
    model = hs.assemble({"d_model": 8, "input": {"kind": "sequence", "channels": 2},
                         "blocks": [{"type": "transformer", "heads": 2}], "head": {"type": "classify", "classes": 2}})
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = configure_optimizer(model, lr=1e-1, weight_decay=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        moved = not torch.equal(before[n], p.detach())
        assert moved == (p.ndim >= 2), n


def test_frozen_parameters_are_left_out():
    net = nn.Linear(3, 3)
    net.bias.requires_grad_(False)
    groups = param_groups(net, 0.1)
    assert [len(g["params"]) for g in groups] == [1]


def test_groups_follow_parameter_order_so_resume_matches():
    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    a, b = configure_optimizer(net, 1e-3, 0.1), configure_optimizer(net, 1e-3, 0.1)
    b.load_state_dict(a.state_dict())
    assert [g["weight_decay"] for g in a.param_groups] == [0.1, 0.0]


@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_trainer_uses_the_groups(tmp_path, wd):
    from hybridseq.train.trainer import Trainer

    from test_train import tiny_config

    trainer = Trainer(tiny_config(weight_decay=wd), tmp_path / "run")
    decays = {g["weight_decay"] for g in trainer.opt.param_groups}
    assert decays == ({0.0} if wd == 0.0 else {0.0, wd})
    trainer.close()
