import math
from dataclasses import dataclass, field, replace

import pytest
import torch

import hybridseq as hs
from hybridseq.testing import check_block, example_input, perturb_padding, register_plugin

from conftest import tiny_model


def test_sequential_chain_runs_and_infers_widths():
    model = hs.assemble(tiny_model(blocks=[{"type": "mlp", "d_out": 24}, {"type": "transformer", "heads": 4}]))
    assert [(n.width_in, n.width_out) for n in model.spec.nodes] == [(3, 16), (16, 24), (24, 24), (24, 4)]
    out = model(torch.randn(2, 7, 3))
    assert out.x.shape == (2, 4)


def test_repeat_makes_independent_copies():
    model = hs.assemble(tiny_model(blocks=[{"type": "transformer", "heads": 2, "repeat": 3}]))
    names = [n.name for n in model.spec.nodes]
    assert names == ["encoder", "b0_0", "b0_1", "b0_2", "head"]
    w = [model.nodes[f"b0_{i}"].attn.qkv.weight for i in range(3)]
    assert w[0].data_ptr() != w[1].data_ptr() and not torch.equal(w[0], w[1])


def test_pattern_interleaves_legend_blocks():
    model = hs.assemble(tiny_model(blocks=[{"type": "pattern", "pattern": "MM*M", "name": "mix",
                                            "legend": {"M": {"type": "mlp", "hidden_ratio": 2}, "*": "transformer"}}]))
    types = [(n.name, n.type) for n in model.spec.nodes[1:-1]]
    assert types == [("mix_0", "mlp"), ("mix_1", "mlp"), ("mix_2", "transformer"), ("mix_3", "mlp")]
    assert model.nodes["mix_0"].ff[0].out_features == 32


def test_dag_add_and_concat():
    model = hs.assemble(tiny_model(blocks=[
        {"type": "mlp", "name": "a"},
        {"type": "transformer", "heads": 2, "name": "b", "inputs": ["encoder"]},
        {"type": "mlp", "name": "sum", "inputs": ["a", "b"], "merge": "add"},
        {"type": "mlp", "name": "cat", "inputs": ["a", "sum"], "merge": "concat"},
    ]))
    spec = {n.name: n for n in model.spec.nodes}
    assert spec["b"].inputs == ["encoder"] and spec["sum"].width_in == 16 and spec["cat"].width_in == 32
    assert spec["head"].width_in == 32
    batch = example_input(spec["encoder"].cls, spec["encoder"].cfg)
    # the DAG equals the same modules wired by hand
    enc = model.nodes["encoder"](batch)
    a, b = model.nodes["a"](enc), model.nodes["b"](enc)
    s = model.nodes["sum"](hs.Seq(a.x + b.x, a.t, a.mask))
    c = model.nodes["cat"](hs.Seq(torch.cat([a.x, s.x], -1), a.t, a.mask))
    torch.testing.assert_close(model(batch).x, model.nodes["head"](c).x)


def test_state_dict_round_trip_and_dtype_move():
    cfg = tiny_model(blocks=[{"type": "transformer", "heads": 2, "repeat": 2}])
    a, b = hs.assemble(cfg).eval(), hs.assemble(cfg).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 5, 3)
    torch.testing.assert_close(a(x).x, b(x).x)
    out = a.to(torch.float64)(x.double())
    assert out.x.dtype == torch.float64


def test_padding_mask_respected_end_to_end():
    model = hs.assemble(tiny_model(blocks=[{"type": "transformer", "heads": 2}, {"type": "mlp"}],
                                   head={"type": "classify", "classes": 4, "pool": "mean"})).eval()
    first = model.spec.nodes[0]
    batch = example_input(first.cls, first.cfg)
    torch.testing.assert_close(model(batch).x, model(perturb_padding(batch)).x)


def test_sequence_input_without_encoder():
    model = hs.assemble({"d_model": 4, "input": {"kind": "sequence", "channels": 5},
                         "blocks": [{"type": "mlp"}], "head": {"type": "regress", "outputs": 2}})
    assert model(hs.Seq(torch.randn(3, 6, 5))).x.shape == (3, 2)
    with pytest.raises(TypeError, match="IrregularBatch, a Seq or a tensor"):
        model([torch.randn(3, 6, 5)])


def test_an_irregular_batch_reaches_a_sequence_model_as_its_observed_values():
    model = hs.assemble({"d_model": 4, "input": {"kind": "sequence", "channels": 5},
                         "blocks": [{"type": "mlp"}], "head": {"type": "regress", "outputs": 2}}).eval()
    encoder = hs.build_block("linear", d_in=5, d_model=4)
    batch = example_input(type(encoder), encoder.cfg)                    # padded, channels missing
    seq = batch.to_seq()
    assert torch.equal(seq.x, torch.where(batch.mask & batch.valid[..., None], batch.values, 0.0))
    assert torch.equal(seq.t, batch.times) and torch.equal(seq.mask, batch.valid)
    torch.testing.assert_close(model(batch).x, model(seq).x)
    back = hs.IrregularBatch.from_seq(seq)
    assert back.mask.all(-1).equal(batch.valid) and torch.equal(back.values, seq.x)


def test_torch_compile_traces_the_model():
    model = hs.assemble(tiny_model(blocks=[{"type": "transformer", "heads": 2}])).eval()
    x = torch.randn(2, 6, 3)
    compiled = torch.compile(model, backend="aot_eager")
    torch.testing.assert_close(compiled(x).x, model(x).x)


def test_build_block_validates():
    block = hs.build_block("transformer", d_model=8, heads=2)
    assert block(hs.Seq(torch.randn(2, 3, 8))).x.shape == (2, 3, 8)
    with pytest.raises(hs.ConfigError, match=r"transformer\.heads"):
        hs.build_block("transformer", d_model=8, heads=3)


def test_describe_lists_every_node():
    text = hs.describe(hs.assemble(tiny_model()))
    for word in ("encoder", "linear", "transformer", "classify", "3→16", "total params"):
        assert word in text


class PlainInit(hs.Block):
    """Written the way any nn.Module is: ``super().__init__()`` without the config."""

    @dataclass
    class Config:
        d_model: int = 0
        scale: float = 2.0

    def __init__(self, cfg):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(cfg.scale))

    def forward(self, seq):
        return replace(seq, x=seq.x * self.scale)


class PlainPlugin:
    @hs.hookimpl
    def hybridseq_register_blocks(self, register):
        register("plain_init", PlainInit)


def test_block_calling_super_init_without_cfg_assembles():
    with register_plugin(PlainPlugin(), "test-plain-init"):
        model = hs.assemble(tiny_model(blocks=[{"type": "plain_init", "scale": 3.0}]))
        block = model.nodes["b0"]
        assert block.cfg.scale == 3.0 and block.cfg.d_model == 16
        assert hs.build_block("plain_init", d_model=4).cfg.d_model == 4
        check_block("plain_init")


class Decay(hs.ODEBlock):
    """dx/dt = -x over [0, 1] with the configured solver."""

    @dataclass
    class Config:
        d_model: int = 0
        solver: hs.SolverConfig = field(default_factory=lambda: hs.SolverConfig(method="rk4", step_size=0.25))

    def forward(self, seq):
        t = torch.tensor([0.0, 1.0])
        return replace(seq, x=self.solver(lambda t, y: -y, seq.x, t)[-1])


class DecayPlugin:
    @hs.hookimpl
    def hybridseq_register_blocks(self, register):
        register("decay", Decay)


def test_ode_block_owns_solver_and_stats_and_the_model_resets_them():
    with register_plugin(DecayPlugin(), "test-decay"):
        model = hs.assemble({"d_model": 4, "input": {"kind": "sequence", "channels": 4},
                             "blocks": [{"type": "decay"}, {"type": "decay", "solver": {"step_size": 0.5}}]})
        x = torch.ones(2, 3, 4)
        for _ in range(2):                                # counts restart at every forward
            out = model(x)
            assert model.stats() == {"b0": {"nfe": 16}, "b1": {"nfe": 8}}
        torch.testing.assert_close(out.x, torch.full_like(x, math.exp(-2.0)), atol=1e-3, rtol=0)
        model.nodes["b0"].reset_stats()
        assert model.nodes["b0"].stats() == {"nfe": 0}
        assert not Decay.compile_safe


def test_model_does_not_know_solvers():
    import ast
    from pathlib import Path

    source = Path(hs.assemble.__module__.replace(".", "/") + ".py")
    tree = ast.parse((Path(hs.__file__).parent.parent / source).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "solvers" not in imported and "hybridseq.solvers" not in imported
