"""`TrainState`: everything a checkpoint holds, so that a stopped run resumes bit-exactly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .ema import EMAWeights
from .episodes import RandomFlip, ShotSampler


@dataclass
class TrainState:
    """The resumable state of a training run: counters and every object with state of its own.

    `state_dict` / `load_state_dict` follow torch's convention; `diffews.training.checkpoints`
    writes the dict as a checkpoint folder and reads it back.

    Attributes:
        unet: the UNet being trained (stored as plain safetensors, loadable on its own).
        optimizer, scheduler: the optimizer and its learning-rate schedule.
        shots: draws each micro-batch's shot count K.
        flips: mirrors training images (``data.random_flip``).
        noise: the generator of the training noise and latent samples, on `device`.
        ema: the weight average (main process, when EMA is on), else None.
        scaler: the fp16 gradient scaler, else None.
        device: this process's device (its CUDA RNG state is saved with the others).
        step: optimizer steps done.
        metrics: the latest validation scores, or None.
        num_processes: processes of the run (the data order depends on it).
    """

    unet: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    shots: ShotSampler
    noise: torch.Generator
    flips: RandomFlip
    ema: EMAWeights | None = None
    scaler: Any = None
    device: torch.device = torch.device("cpu")
    step: int = 0
    metrics: dict[str, float] | None = None
    num_processes: int = 1

    def rng_state(self) -> dict[str, torch.Tensor]:
        """This process's random number generator states (torch, shot count, noise, flips, CUDA)."""
        state = {
            "torch": torch.get_rng_state(), "shots": self.shots.generator.get_state(), "noise": self.noise.get_state(),
            "flips": self.flips.generator.get_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state(self._cuda_device())
        return state

    def state_dict(self) -> dict[str, Any]:
        """``step``, ``num_processes``, ``metrics``, ``unet`` (flat tensors), ``ema`` (or None),
        ``optimizer``, ``scheduler``, ``scaler`` (or None) and ``rng``: a list of per-process RNG
        states, here this process's only (a distributed trainer gathers every process's)."""
        return {
            "step": self.step,
            "num_processes": self.num_processes,
            "metrics": self.metrics,
            "unet": {key: value.detach().contiguous().cpu() for key, value in self.unet.state_dict().items()},
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": [self.rng_state()],
        }

    def load_state_dict(self, state: dict[str, Any], process_index: int = 0) -> None:
        """Restore from `state_dict`'s layout; process `process_index` takes its own RNG states
        (the last ones when the saved run had fewer processes).

        Raises:
            RuntimeError, KeyError: the state does not fit this run's model or optimizer.
        """
        self.unet.load_state_dict(state["unet"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state["ema"] is not None:
                self.ema.load_state_dict(state["ema"])
            else:  # a checkpoint without an average: start it from the resumed weights
                self.ema = EMAWeights(self.unet, self.ema.decay)
        rng = state["rng"][min(process_index, len(state["rng"]) - 1)]
        torch.set_rng_state(rng["torch"])
        self.shots.generator.set_state(rng["shots"])
        self.noise.set_state(rng["noise"])
        if "flips" in rng:  # checkpoints written before data.random_flip have no flip state (and drew no flips)
            self.flips.generator.set_state(rng["flips"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"], self._cuda_device())
        self.step = int(state["step"])
        self.metrics = state["metrics"]

    def _cuda_device(self) -> torch.device | None:
        return self.device if self.device.type == "cuda" else None
