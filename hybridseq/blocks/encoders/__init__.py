"""Encoders: irregular observations (or token ids) → a sequence on the model's stream."""
from ...hookspecs import hookimpl
from .contiformer import ContiFormerEncoder
from .embedding import Embedding
from .gru_ode import GRUODEEncoder
from .linear import LinearEncoder
from .mtan import MTANEncoder
from .ncde import NCDEEncoder
from .ode_rnn import ODERNNEncoder


@hookimpl
def hybridseq_register_blocks(register):
    register("linear", LinearEncoder)
    register("ode_rnn", ODERNNEncoder)
    register("gru_ode", GRUODEEncoder)
    register("ncde", NCDEEncoder)
    register("mtan", MTANEncoder)
    register("contiformer", ContiFormerEncoder)
    register("embedding", Embedding)
