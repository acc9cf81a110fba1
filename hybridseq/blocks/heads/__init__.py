"""Reasoning heads: sequence → sequence, read as differential equations in depth or pseudo-time."""
from ...hookspecs import hookimpl
from .neural_ode_transformer import NeuralODETransformer
from .ode_transformer import ODETransformer
from .pde_attention import PDEAttention


@hookimpl
def hybridseq_register_blocks(register):
    register("ode_transformer", ODETransformer)
    register("neural_ode_transformer", NeuralODETransformer)
    register("pde_attention", PDEAttention)
