"""Task heads: sequence → outputs."""
from ...hookspecs import hookimpl
from .autoregressive import Autoregressive
from .latent_ode import LatentODE
from .lm import LanguageModelHead
from .mtand import MTAND
from .pooled import Classify, Regress
from .query import Extrapolate, Interpolate


@hookimpl
def hybridseq_register_blocks(register):
    register("classify", Classify)
    register("regress", Regress)
    register("interpolate", Interpolate)
    register("extrapolate", Extrapolate)
    register("autoregressive", Autoregressive)
    register("latent_ode", LatentODE)
    register("mtand", MTAND)
    register("lm", LanguageModelHead)
