"""Task heads: sequence → outputs."""
from ...hookspecs import hookimpl
from .pooled import Classify, Regress


@hookimpl
def hybridseq_register_blocks(register):
    register("classify", Classify)
    register("regress", Regress)
