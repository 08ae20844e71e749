"""diffews: few-shot semantic segmentation with a one-step latent diffusion model (DiffewS)."""

from .errors import InputError
from .modeling import DiffewSConfig, DiffewSModel, SupportContext
from .pipeline import ClassesOutput, DiffewSOutput, DiffewSPipeline, SpeedOptions
from .registry import load_model

__version__ = "0.1.0"

__all__ = [
    "ClassesOutput",
    "DiffewSConfig",
    "DiffewSModel",
    "DiffewSOutput",
    "DiffewSPipeline",
    "InputError",
    "SpeedOptions",
    "SupportContext",
    "load_model",
    "__version__",
]
