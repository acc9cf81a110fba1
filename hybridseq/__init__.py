"""hybridseq: declare hybrid sequence models in YAML and swap their blocks freely."""
from . import plugins  # noqa: F401  (importing it installs the registries' plugin loader)
from ._version import __version__
from .assemble import HybridModel, assemble, build_block, describe
from .blocks.base import Block, ODEBlock, choice
from .config import load_config
from .errors import ConfigError, PluginWarning
from .hookspecs import hookimpl
from .seq import IrregularBatch, Seq
from .solvers import ODESolver, SolverConfig
from .spec import validate_model

__all__ = [
    "Block", "ConfigError", "ODEBlock", "HybridModel", "IrregularBatch", "ODESolver", "PluginWarning", "Seq",
    "SolverConfig", "assemble", "build_block", "choice", "describe", "hookimpl", "load_config",
    "validate_model", "__version__",
]
