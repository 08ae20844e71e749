"""Training DiffewS: configuration, the accelerate-based trainer, checkpoints and EMA."""

from .config import TrainConfig, load_config
from .trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "load_config"]
