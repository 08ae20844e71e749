"""Training a small latent autoencoder (diffusers `AutoencoderKL`) for a DiffewS model built from scratch.

DiffewS needs a VAE with 4 latent channels and /8 downsampling that reconstructs both images and
masks (masks are encoded as white-on-black images). Stable Diffusion's VAE is one; where it is not
available, or too large, `train_autoencoder` trains a small one on a benchmark's images and masks:
L1 reconstruction of images and mask images plus a small KL term, AdamW with cosine decay.

Afterwards the latent scaling factor is set to ``1 / std`` of the posterior samples of the training
images, as Stable Diffusion's was, so that UNet inputs have unit variance. The result is a diffusers
folder (``config.json`` + safetensors) with ``autoencoder_report.json`` beside it: the validation
images' PSNR and the masks' round-trip IoU (encode, decode, threshold the probability at 0.5).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from ..errors import InputError
from ..io import replace_folder
from ..modeling.config import check_resolution
from ..paths import user_path
from ..processing.images import image_to_tensor, resize_image, resize_mask
from ..data import BENCHMARKS
from ..processing.masks import decoded_to_mask_image, mask_to_image
from ..processing.thresholds import channel_mean
from ..signals import until_stopped
from .checkpoints import check_output_dir
from .config import SectionedConfig, option, require

logger = logging.getLogger("diffews")

REPORT_NAME = "autoencoder_report.json"
VAE_DIR = "vae"


@dataclass(frozen=True)
class AEDataOptions:
    benchmark: str = option("custom", "dataset family (its layout: \"Benchmark data\" in the README)", choices=BENCHMARKS)
    root: str | None = option(None, "dataset root (the benchmark's layout); its training classes are used")
    fold: int | None = option(None, "held-out fold whose classes are left out (null: all classes of the split)")
    train_split: str = option("trn", "split whose images and masks train the autoencoder")
    val_split: str = option("val", "split of the validation images and masks (PSNR, mask IoU)")
    val_images: int = option(64, "validation images (and their masks), the first in sorted order")
    resolution: int = option(128, "working resolution in pixels (square; multiple of 8): images and masks are resized to it")
    crop: int | None = option(None, "train on random crops of this side (multiple of 8; cheaper steps, the network is convolutional); null: whole images")

    def check(self) -> None:
        require(self.benchmark in BENCHMARKS, "benchmark", f"one of {', '.join(BENCHMARKS)}", self.benchmark)
        check_resolution(self.resolution)
        require(self.crop is None or (0 < self.crop <= self.resolution and self.crop % 8 == 0), "crop", "null or a multiple of 8 up to resolution", self.crop)
        require(self.val_images >= 1, "val_images", ">= 1", self.val_images)


@dataclass(frozen=True)
class AEModelOptions:
    block_out_channels: tuple[int, ...] = option((16, 32, 64, 64), "channels of the 4 encoder/decoder stages (3 downsamplings: /8)")
    layers_per_block: int = option(1, "residual blocks per stage")
    norm_num_groups: int = option(8, "GroupNorm groups (must divide every width)")

    def check(self) -> None:
        require(len(self.block_out_channels) == 4, "block_out_channels", "4 widths (/8 downsampling)", self.block_out_channels)
        require(self.norm_num_groups >= 1, "norm_num_groups", ">= 1", self.norm_num_groups)
        require(all(w >= 1 for w in self.block_out_channels), "block_out_channels", "widths >= 1", self.block_out_channels)
        require(all(w % self.norm_num_groups == 0 for w in self.block_out_channels), "block_out_channels", f"multiples of norm_num_groups {self.norm_num_groups}", self.block_out_channels)
        require(self.layers_per_block >= 1, "layers_per_block", ">= 1", self.layers_per_block)


@dataclass(frozen=True)
class AEOptimOptions:
    learning_rate: float = option(1e-3, "peak AdamW learning rate (cosine decay to 0 after a linear warm-up)")
    warmup_steps: int = option(100, "linear warm-up steps")
    batch_size: int = option(16, "images per step, and as many masks")
    max_steps: int = option(3000, "optimizer steps: the length of the learning-rate schedule")
    stop_at: int | None = option(None, "end the run after this step and its save, the schedule still spanning max_steps; null: max_steps")
    kl_weight: float = option(1e-6, "weight of the KL term (keeps the latent space smooth)")
    mask_weight: float = option(2.0, "weight of the mask reconstruction loss relative to the images'")

    def check(self) -> None:
        require(0 < self.learning_rate < math.inf, "learning_rate", "> 0 and finite", self.learning_rate)
        require(0 <= self.warmup_steps <= self.max_steps, "warmup_steps", "in [0, max_steps]", self.warmup_steps)
        for name in ("batch_size", "max_steps"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))
        require(self.stop_at is None or 1 <= self.stop_at <= self.max_steps, "stop_at", "null or in [1, max_steps]", self.stop_at)
        for name in ("kl_weight", "mask_weight"):
            require(0 <= getattr(self, name) < math.inf, name, ">= 0 and finite", getattr(self, name))


@dataclass(frozen=True)
class AERunOptions:
    output_dir: str = option("outputs/autoencoder", "run folder: the trained autoencoder goes to <output_dir>/vae")
    save_every: int = option(500, "write the current autoencoder to <output_dir>/vae every this many steps (and at the end)")
    seed: int = option(0, "seed of the initialisation, batch order and flips")
    threads: int | None = option(None, "torch CPU threads; null: torch's default")

    def check(self) -> None:
        require(self.save_every >= 1, "save_every", ">= 1", self.save_every)
        require(0 <= self.seed < 2**32, "seed", "in [0, 2**32)", self.seed)
        require(self.threads is None or 1 <= self.threads <= 4096, "threads", "null or in 1..4096", self.threads)


AE_SECTIONS: dict[str, type] = {"data": AEDataOptions, "model": AEModelOptions, "optim": AEOptimOptions, "run": AERunOptions}


@dataclass(frozen=True)
class AutoencoderConfig(SectionedConfig):
    """Everything `train_autoencoder` needs; YAML sections ``data``, ``model``, ``optim``, ``run``."""

    SECTIONS: ClassVar[dict[str, type]] = AE_SECTIONS

    data: AEDataOptions = field(default_factory=AEDataOptions)
    model: AEModelOptions = field(default_factory=AEModelOptions)
    optim: AEOptimOptions = field(default_factory=AEOptimOptions)
    run: AERunOptions = field(default_factory=AERunOptions)


def build_autoencoder(options: AEModelOptions, resolution: int) -> AutoencoderKL:
    """A randomly initialised `AutoencoderKL` with 4 latent channels and /8 downsampling."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=options.block_out_channels,
        layers_per_block=options.layers_per_block,
        latent_channels=4,
        norm_num_groups=options.norm_num_groups,
        sample_size=resolution,
    )


def load_pairs(data: AEDataOptions, split: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (image, class mask) pair of a split at the working resolution: uint8 ``(N, 3, R, R)``, bool ``(N, 1, R, R)``."""
    from ..data import open_split

    if data.root is None:
        raise InputError("no dataset root: set data.root in the config or pass --root")
    fewshot = open_split(data.benchmark, data.root, split, data.fold)
    pairs = fewshot.pairs[:limit] if limit is not None else fewshot.pairs
    if not pairs:
        raise InputError(f"{fewshot.describe()}: no images")
    size = (data.resolution, data.resolution)
    images = torch.empty(len(pairs), 3, *size, dtype=torch.uint8)
    masks = torch.empty(len(pairs), 1, *size, dtype=torch.bool)
    for index, (key, class_id) in enumerate(tqdm(pairs, desc=f"reading {split}", unit="image", leave=False)):
        image = image_to_tensor(fewshot.open_image(key), str(fewshot.image_path(key)))
        images[index] = ((resize_image(image, size) + 1) * 127.5).round().to(torch.uint8)
        masks[index] = resize_mask(fewshot.target(key, class_id) == 1, size).bool()
    return images, masks


def _as_inputs(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and bool masks -> float images and mask images in [-1, 1]."""
    return images.float() / 127.5 - 1, mask_to_image(masks.float())


@torch.no_grad()
def evaluate_autoencoder(vae: AutoencoderKL, images: torch.Tensor, masks: torch.Tensor, batch_size: int = 32) -> dict[str, float]:
    """Round trips through the posterior mean: image PSNR (dB, images in [0, 1]) and mask IoU (x100, threshold 0.5).

    Args:
        images: uint8 ``(N, 3, R, R)``; masks: bool ``(N, 1, R, R)``.
    """
    squared_error, intersection, union = 0.0, 0, 0
    for start in range(0, len(images), batch_size):
        image, mask_image = _as_inputs(images[start : start + batch_size], masks[start : start + batch_size])
        decoded = vae.decode(vae.encode(torch.cat([image, mask_image])).latent_dist.mean).sample
        image_out, mask_out = decoded.chunk(2)
        squared_error += float(((image_out.clamp(-1, 1) - image) / 2).pow(2).sum())
        predicted = channel_mean(decoded_to_mask_image(mask_out)) > 0.5
        truth = masks[start : start + batch_size]
        intersection += int((predicted & truth).sum())
        union += int((predicted | truth).sum())
    mse = squared_error / images.numel()
    return {"image_psnr": 10 * math.log10(1 / max(mse, 1e-12)), "mask_iou": 100 * intersection / max(union, 1)}


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, images: torch.Tensor, masks: torch.Tensor, seed: int) -> float:
    """``1 / std`` of posterior samples of `images` and their mask images (Stable Diffusion's recipe)."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for start in range(0, len(images), 32):
        image, mask_image = _as_inputs(images[start : start + 32], masks[start : start + 32])
        samples.append(vae.encode(torch.cat([image, mask_image])).latent_dist.sample(generator))
    return float(1 / torch.cat(samples).std())


def train_autoencoder(config: AutoencoderConfig, progress: bool = True) -> Path:
    """Train an autoencoder as `config` says; returns the saved folder ``<output_dir>/vae``.

    The folder is replaced atomically at every save, so an interrupted run leaves the last save.
    """
    run, optim = config.run, config.optim
    if run.threads is not None:
        torch.set_num_threads(run.threads)
    output = user_path(run.output_dir)
    if (output / VAE_DIR).exists():
        raise InputError(f"{output / VAE_DIR}: already holds an autoencoder; choose another output_dir")
    check_output_dir(output)
    train_images, train_masks = load_pairs(config.data, config.data.train_split)
    val_images, val_masks = load_pairs(config.data, config.data.val_split, config.data.val_images)
    torch.manual_seed(run.seed)
    vae = build_autoencoder(config.model, config.data.resolution).train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=optim.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _cosine(step, optim.warmup_steps, optim.max_steps))
    generator = torch.Generator().manual_seed(run.seed)
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    last_step = optim.max_steps if optim.stop_at is None else optim.stop_at
    bar = tqdm(range(1, last_step + 1), desc="autoencoder", unit="step", disable=not progress)
    for step in until_stopped(bar):
        chosen = torch.randint(len(train_images), (optim.batch_size,), generator=generator)
        image, mask_image = _as_inputs(train_images[chosen], train_masks[chosen])
        flip = torch.rand(optim.batch_size, generator=generator) < 0.5
        inputs = torch.cat([image, mask_image])
        inputs[torch.cat([flip, flip])] = inputs[torch.cat([flip, flip])].flip(-1)
        if config.data.crop is not None:
            top, left = (int(v) for v in torch.randint(config.data.resolution - config.data.crop + 1, (2,), generator=generator))
            inputs = inputs[..., top : top + config.data.crop, left : left + config.data.crop]
        posterior = vae.encode(inputs).latent_dist
        decoded = vae.decode(posterior.sample(generator)).sample
        errors = (decoded - inputs).abs().flatten(1).mean(dim=1)
        reconstruction = errors[: optim.batch_size].mean() + optim.mask_weight * errors[optim.batch_size :].mean()
        loss = reconstruction + optim.kl_weight * posterior.kl().mean()
        if not torch.isfinite(loss):  # diverged: nothing after this is worth saving over the last good save
            raise InputError(
                f"the autoencoder diverged at step {step} (loss {loss.item()}); lower optim.learning_rate or the loss weights "
                f"(the last save in {output / VAE_DIR}, if any, is from before)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if step % run.save_every == 0 or step == last_step:
            vae.eval()
            metrics = evaluate_autoencoder(vae, val_images, val_masks)
            history.append({"step": step, "loss": loss.item(), **metrics, "elapsed_s": time.perf_counter() - started})
            vae.register_to_config(scaling_factor=latent_scaling_factor(vae, train_images[:256], train_masks[:256], run.seed))
            _save(vae, output, config, history, len(train_images), len(val_images))
            bar.write(f"step {step}: loss {loss.item():.4f}, val image PSNR {metrics['image_psnr']:.2f} dB, mask IoU {metrics['mask_iou']:.2f}")
            vae.train()
    return output / VAE_DIR


def _cosine(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def _save(vae: AutoencoderKL, output: Path, config: AutoencoderConfig, history: list, train_count: int, val_count: int) -> None:
    """Write ``<output>/vae`` (diffusers folder + report), replacing the previous save atomically."""

    def write(folder: Path) -> None:
        vae.save_pretrained(folder, safe_serialization=True)
        report = {
            "config": config.to_dict(),
            "train_pairs": train_count,
            "val_pairs": val_count,
            "scaling_factor": vae.config.scaling_factor,
            "parameters": sum(p.numel() for p in vae.parameters()),
            "history": history,
            "final": history[-1],
        }
        (folder / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")

    replace_folder(output / VAE_DIR, write, "save the autoencoder")
