"""Encoders: irregular observations → a sequence on the model's stream."""
from ...hookspecs import hookimpl
from .linear import LinearEncoder


@hookimpl
def hybridseq_register_blocks(register):
    register("linear", LinearEncoder)
