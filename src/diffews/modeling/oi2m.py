"""OI2M, one-step image-to-mask generation, as diffusion-schedule arithmetic.

The scheduler is DDIM with ``beta_start = beta_end = 1``, so the cumulative signal rate
``alpha_bar_t`` is 0 at every timestep, and v-prediction. The UNet input ``x_t`` is the query
*image* latent, in the place of the noise, and the clean sample ``x_0`` the *mask* latent.
With v-prediction,

    v = sqrt(alpha_bar) * x_t - sqrt(1 - alpha_bar) * x_0     (training target)
    x_0 = sqrt(alpha_bar) * x_t - sqrt(1 - alpha_bar) * v     (generation)

which at alpha_bar = 0 reduce to ``v = -x_0``: the UNet outputs minus the mask latent.
The general formulas are kept so the schedule stays an explicit, inspectable choice.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler

OI2M_TIMESTEP = 1
"""Timestep fed to the UNet in both passes, training and inference."""


def oi2m_scheduler(num_train_timesteps: int = 1000) -> DDIMScheduler:
    """The DDIM schedule DiffewS uses: alpha_bar = 0 at every step, v-prediction."""
    return DDIMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_start=1.0,
        beta_end=1.0,
        beta_schedule="linear",
        prediction_type="v_prediction",
        clip_sample=False,
        set_alpha_to_one=False,
    )


def _signal_rates(scheduler: DDIMScheduler, timestep: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if scheduler.config.prediction_type != "v_prediction":
        raise ValueError(f"DiffewS needs a v-prediction schedule, got {scheduler.config.prediction_type!r}")
    alpha_bar = scheduler.alphas_cumprod[timestep].to(device=like.device, dtype=torch.float32)
    return alpha_bar.sqrt().to(like.dtype), (1 - alpha_bar).sqrt().to(like.dtype)


def velocity_target(
    scheduler: DDIMScheduler, mask_latents: torch.Tensor, image_latents: torch.Tensor, timestep: int
) -> torch.Tensor:
    """v-target for a query: ``-mask_latents`` under the OI2M schedule. Shapes ``(B, 4, h, w)``."""
    signal, noise = _signal_rates(scheduler, timestep, mask_latents)
    return signal * image_latents - noise * mask_latents


def mask_latents_from_velocity(
    scheduler: DDIMScheduler, image_latents: torch.Tensor, velocity: torch.Tensor, timestep: int
) -> torch.Tensor:
    """Predicted mask latents ``x_0`` from the UNet's v-output: ``-velocity`` under the OI2M schedule."""
    signal, noise = _signal_rates(scheduler, timestep, velocity)
    return signal * image_latents - noise * velocity
