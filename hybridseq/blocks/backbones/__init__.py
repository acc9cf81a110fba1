"""Backbones: sequence → sequence."""
from ...hookspecs import hookimpl
from .gru import GRU
from .mamba import Mamba
from .mamba2 import Mamba2
from .mlp import MLP
from .s4 import S4
from .s4d import S4D
from .transformer import Transformer


@hookimpl
def hybridseq_register_blocks(register):
    register("transformer", Transformer)
    register("mlp", MLP)
    register("gru", GRU)
    register("s4d", S4D)
    register("s4", S4)
    register("mamba", Mamba)
    register("mamba2", Mamba2)
