"""The DiffewS model: FSA attention, the support input convolution, OI2M generation."""

from .config import DiffewSConfig
from .diffews_model import DiffewSModel
from .fsa import SupportContext

__all__ = ["DiffewSConfig", "DiffewSModel", "SupportContext"]
