"""Built-in blocks, one family per file, registered through the same hooks as third-party blocks."""
from .base import Block, choice

__all__ = ["Block", "choice"]
