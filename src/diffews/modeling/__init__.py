"""The DiffewS model: FSA attention, the support input convolution, OI2M generation."""

from .config import DiffewSConfig
from .diffews_model import DiffewSModel
from .fsa import SupportContext
from .tiny import build_tiny_model

__all__ = ["DiffewSConfig", "DiffewSModel", "SupportContext", "build_tiny_model"]
