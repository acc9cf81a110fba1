"""Task heads: sequence → outputs."""
from ...hookspecs import hookimpl
from .lm import LanguageModelHead
from .pooled import Classify, Regress
from .query import Extrapolate, Interpolate


@hookimpl
def hybridseq_register_blocks(register):
    register("classify", Classify)
    register("regress", Regress)
    register("interpolate", Interpolate)
    register("extrapolate", Extrapolate)
    register("lm", LanguageModelHead)
