"""Backbones: sequence → sequence."""
from ...hookspecs import hookimpl
from .mlp import MLP
from .transformer import Transformer


@hookimpl
def hybridseq_register_blocks(register):
    register("transformer", Transformer)
    register("mlp", MLP)
