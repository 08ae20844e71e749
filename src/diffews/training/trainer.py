"""`Trainer`: fine-tunes Stable Diffusion 2.1 (or a DiffewS model) into DiffewS with accelerate.

One code path for one GPU, DDP, multi-node, DeepSpeed and FSDP: whatever ``accelerate launch``
sets up. The loss is `DiffewSModel.training_loss` (OI2M); the trainer adds the recipe around it:
random K shots per step, AdamW with a decaying learning rate, gradient clipping and accumulation,
mixed precision, optional EMA, periodic validation, atomic resumable checkpoints and the export.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import InputError
from ..modeling import DiffewSConfig, DiffewSModel
from ..modeling.config import TORCH_DTYPES as DTYPES
from ..modeling.diffews_model import CONFIG_NAME
from ..modeling.tiny import TINY_RANDOM
from ..modeling.weights import read_json
from .checkpoints import STATE_NAME, complete_checkpoints, load_nested, resolve_resume, save_nested, write_checkpoint, write_json
from .config import ModelOptions, TrainConfig
from .ema import EMAWeights
from .episodes import EpisodeSampler, ShotSampler, build_dataset, check_episode, collate_training
from .export import export_model
from .validation import ValidationResult, validate

logger = logging.getLogger("diffews")

VAL_SEED = 0
UNET_FILE, EMA_FILE, OPTIM_FILE, RNG_FILE = "unet.safetensors", "ema.safetensors", "optimizer.safetensors", "rng.safetensors"
MIXED_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TrainingStep(nn.Module):
    """The loss of a batch of episodes as a `forward`, so accelerate can wrap it (DDP, autocast)."""

    def __init__(self, model: DiffewSModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None, sample_latents: bool) -> torch.Tensor:
        return self.model.training_loss(
            batch["query_image"], batch["query_mask"], batch["support_images"], batch["support_masks"],
            generator=generator, sample_latents=sample_latents,
        )


def load_start_model(options: ModelOptions, seed: int) -> DiffewSModel:
    """The model training starts from: SD 2.1 (new DiffewS), a DiffewS folder, or tiny random weights."""
    settings = DiffewSConfig(resolution=options.resolution)
    if options.pretrained == TINY_RANDOM:
        from ..modeling import build_tiny_model

        return build_tiny_model(seed=seed, resolution=options.resolution)
    kind = options.pretrained_type
    if kind == "auto":
        kind = "diffews" if (Path(options.pretrained).expanduser() / CONFIG_NAME).is_file() else "stable-diffusion"
    if kind == "stable-diffusion":
        return DiffewSModel.from_stable_diffusion(options.pretrained, config=settings)
    model = DiffewSModel.from_pretrained(options.pretrained)
    model.config = replace(model.config, resolution=options.resolution)
    return model


class Trainer:
    """Runs one training run described by a `TrainConfig`.

    Args:
        config: the run; ``config.checkpointing.output_dir`` receives ``checkpoints/``, ``logs/``
            and the exported ``model/``.
        train_dataset: episodes to train on, instead of building them from ``config.data`` (items
            follow `diffews.data`'s layout: ``query_image (3, R, R)`` in [-1, 1], ``query_mask
            (1, R, R)`` in {0, 1}, ``support_images (N, 3, R, R)``, ``support_masks (N, 1, R, R)``,
            ``class_id``; item i must be a fixed function of i for exact resumption).
        val_dataset: validation episodes, likewise (default: ``config.validation.val_episodes``
            episodes of ``config.validation.val_split``, seed 0).

    After `train`, ``model`` is the trained `DiffewSModel` (raw weights on processes other than the
    main one, which holds the EMA weights when EMA is on) and ``loss_history`` this process's mean
    loss of every optimizer step it ran.
    """

    def __init__(self, config: TrainConfig, train_dataset: Dataset | None = None, val_dataset: Dataset | None = None) -> None:
        self.config = config
        self._train_dataset = train_dataset
        self._val_dataset = val_dataset
        self.model: DiffewSModel | None = None
        self.loss_history: list[float] = []

    def train(self) -> Path:
        """Train (resuming if asked), export the model; returns the exported folder."""
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed

        config = self.config
        output_dir = Path(config.checkpointing.output_dir)
        resume_from = self._resume_point(output_dir)
        try:
            accelerator = Accelerator(
                mixed_precision=config.precision.mixed_precision,
                gradient_accumulation_steps=config.optim.gradient_accumulation_steps,
                log_with=self._tracker(),
                project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
            )
        except ValueError as error:
            raise InputError(f"mixed_precision {config.precision.mixed_precision}: {error}") from None
        self.accelerator = accelerator
        set_seed(config.run.seed)

        model = self.model = load_start_model(config.model, config.run.seed)
        vae_fp32 = self._prepare_model(model)
        train_data = self._train_dataset if self._train_dataset is not None else build_dataset(
            config.data, config.data.train_split, config.model.resolution, config.data.train_episodes, config.run.seed
        )
        check_episode(train_data[0], config.data.shots)
        val_data = self._validation_dataset()

        params = [p for p in model.unet.parameters() if p.requires_grad]
        optimizer = self._optimizer(params)
        scheduler = self._scheduler(optimizer)
        step_module, optimizer = accelerator.prepare(TrainingStep(model), optimizer)
        ema = EMAWeights(model.unet, config.ema.ema_decay) if config.ema.use_ema and accelerator.is_main_process else None
        shots = ShotSampler(config.data.shots, config.run.seed)
        noise = torch.Generator(device=accelerator.device).manual_seed(config.run.seed + 1 + accelerator.process_index)

        state = dict(step=0, metrics=None)
        if resume_from is not None:
            state = self._load_checkpoint(resume_from, model, optimizer, scheduler, ema, shots, noise)
        step = state["step"]
        micro_batches = config.optim.batch_size * config.optim.gradient_accumulation_steps
        sampler = EpisodeSampler(
            len(train_data), config.run.seed, accelerator.process_index, accelerator.num_processes, start=step * micro_batches
        )
        loader = DataLoader(
            train_data, batch_size=config.optim.batch_size, sampler=sampler, num_workers=config.data.num_workers,
            collate_fn=collate_training,
            pin_memory=accelerator.device.type == "cuda", persistent_workers=config.data.num_workers > 0,
        )
        if accelerator.is_main_process:
            accelerator.init_trackers(config.run.project, config=_flat_config(config))

        batches = iter(loader)
        metrics: dict[str, float] | None = state["metrics"]
        window_losses: list[float] = []
        started, start_step = time.perf_counter(), step
        bar = tqdm(total=config.optim.max_steps, initial=step, desc="training", unit="step", disable=not accelerator.is_local_main_process)
        with self._attention_kernels():
            while step < config.optim.max_steps:
                loss = self._optimizer_step(step_module, optimizer, params, batches, shots, noise)
                if not accelerator.optimizer_step_was_skipped:
                    scheduler.step()
                step += 1
                if ema is not None:
                    ema.update(model.unet)
                window_losses.append(loss)
                self.loss_history.append(loss)
                lr = scheduler.get_last_lr()[0]
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
                bar.update(1)
                if step % config.run.log_every == 0 or step == config.optim.max_steps:
                    mean_loss = accelerator.reduce(torch.tensor(window_losses, device=accelerator.device).mean(), "mean").item()
                    accelerator.log({"train/loss": mean_loss, "train/lr": lr}, step=step)
                    window_losses = []
                every = config.validation.val_every
                if every and step % every == 0 and step < config.optim.max_steps:
                    metrics = self._validate(model, val_data, step)
                if step % config.checkpointing.checkpoint_every == 0 or step == config.optim.max_steps:
                    path = self._save_checkpoint(step, model, optimizer, scheduler, ema, shots, noise, metrics)
                    rate = (step - start_step) / (time.perf_counter() - started)
                    bar.write(
                        f"step {step}/{config.optim.max_steps}: loss {loss:.4f}, lr {lr:.2e}, {rate:.2f} steps/s"
                        + "".join(f", {k} {v:.2f}" for k, v in (metrics or {}).items())
                        + f" -> {path}"
                    )
        bar.close()

        exported = None
        if accelerator.is_main_process:
            if ema is not None:
                ema.copy_to(model.unet)
            final = self._validate(model, val_data, step, final=True) if config.validation.val_every else None
            if vae_fp32 is not None:
                model.vae.to(torch.float32).load_state_dict(vae_fp32)
            exported = export_model(model, config, step, final, len(val_data) if final else 0)
            logger.info("exported %s", exported)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return exported if exported is not None else Path(config.checkpointing.output_dir) / "model"

    # ------------------------------------------------------------------ set-up

    def _resume_point(self, output_dir: Path) -> Path | None:
        resume = self.config.checkpointing.resume
        if resume is None and complete_checkpoints(output_dir):
            raise InputError(
                f"{output_dir}: already holds checkpoints of a run; pass --resume latest to continue it, "
                "or choose another output_dir"
            )
        found = resolve_resume(resume, output_dir)
        if resume == "latest" and found is None:
            logger.info("no checkpoint in %s yet: starting from scratch", output_dir)
        return found

    def _tracker(self) -> list[str] | None:
        name = self.config.run.tracker
        if name == "none":
            return None
        try:
            __import__("tensorboard" if name == "tensorboard" else "wandb")
        except ImportError:
            if name == "wandb":
                raise InputError("tracker wandb: wandb is not installed (pip install wandb)") from None
            logger.warning("tensorboard is not installed: logging to no tracker (pip install 'diffews[train]')")
            return None
        return [name]

    def _prepare_model(self, model: DiffewSModel) -> dict[str, torch.Tensor] | None:
        """Freeze and cast the VAE, set up the UNet; returns the fp32 VAE weights if the VAE was cast (for the export)."""
        precision = self.config.precision
        vae_dtype = MIXED_DTYPES[precision.mixed_precision] if precision.vae_dtype == "auto" else DTYPES[precision.vae_dtype]
        vae_fp32 = None
        model.vae.to(self.accelerator.device).eval()
        if vae_dtype != model.vae.dtype:
            vae_fp32 = {key: value.detach().cpu().clone() for key, value in model.vae.state_dict().items()}
            model.vae.to(dtype=vae_dtype)
        model.unet.requires_grad_(True).train()
        if precision.gradient_checkpointing:
            model.unet.enable_gradient_checkpointing()
        return vae_fp32

    def _validation_dataset(self) -> Dataset | None:
        options = self.config.validation
        if self._val_dataset is not None or not options.val_every:
            return self._val_dataset
        return build_dataset(self.config.data, options.val_split, self.config.model.resolution, options.val_episodes, VAL_SEED)

    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        optim = self.config.optim
        settings = dict(lr=optim.learning_rate, betas=(optim.adam_beta1, optim.adam_beta2), eps=optim.adam_epsilon, weight_decay=optim.weight_decay)
        if optim.optimizer == "adamw8bit":
            try:
                import bitsandbytes
            except ImportError:
                raise InputError("optimizer adamw8bit needs bitsandbytes: pip install 'diffews[bnb]'") from None
            return bitsandbytes.optim.AdamW8bit(params, **settings)
        return torch.optim.AdamW(params, **settings)

    def _scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        from diffusers.optimization import get_scheduler

        optim = self.config.optim
        name = "constant_with_warmup" if optim.lr_scheduler == "constant" else optim.lr_scheduler
        return get_scheduler(name, optimizer, num_warmup_steps=optim.warmup_steps, num_training_steps=optim.max_steps)

    @contextlib.contextmanager
    def _attention_kernels(self):
        backend = self.config.precision.sdpa_backend
        if backend == "auto":
            yield
            return
        from torch.nn.attention import sdpa_kernel

        from ..pipeline.speed import SDPA_BACKENDS

        with sdpa_kernel(SDPA_BACKENDS[backend]):
            yield

    # ------------------------------------------------------------------ one optimizer step

    def _optimizer_step(self, step_module, optimizer, params, batches, shots: ShotSampler, noise: torch.Generator) -> float:
        """Accumulate gradients over the micro-batches, clip, step; returns the mean micro-batch loss."""
        accelerator, optim = self.accelerator, self.config.optim
        losses = []
        for _ in range(optim.gradient_accumulation_steps):
            batch = shots.slice(next(batches))
            batch = {key: value.to(accelerator.device) for key, value in batch.items()}
            with accelerator.accumulate(step_module):
                loss = step_module(batch, noise, self.config.precision.sample_latents)
                accelerator.backward(loss)
                if accelerator.sync_gradients and optim.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(params, optim.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach().float().item())
        return sum(losses) / len(losses)

    def _validate(self, model: DiffewSModel, dataset: Dataset | None, step: int, final: bool = False) -> dict[str, float] | None:
        """Validate on the main process (the others wait); logs scores and panels."""
        accelerator = self.accelerator
        metrics = None
        if accelerator.is_main_process and dataset is not None:
            model.unet.eval()
            with accelerator.autocast():
                result: ValidationResult = validate(model, dataset, self.config.validation.val_panels)
            model.unet.train()
            metrics = result.metrics
            prefix = "final" if final else "val"
            accelerator.log({f"{prefix}/{name}": value for name, value in metrics.items()}, step=step)
            if result.panels:
                _log_panels(accelerator, f"{prefix}/episodes", result.panels, step)
        if not final:
            accelerator.wait_for_everyone()
        return metrics

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, step, model, optimizer, scheduler, ema, shots, noise, metrics) -> Path:
        """Gather every process's RNG states, write the checkpoint from the main process."""
        from accelerate.utils import gather_object

        accelerator, config = self.accelerator, self.config
        rng = gather_object([self._rng_state(shots, noise)])
        target = Path(config.checkpointing.output_dir) / "checkpoints"
        if accelerator.is_main_process:
            scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None

            def write(folder: Path) -> None:
                save_file({k: v.detach().contiguous().cpu() for k, v in model.unet.state_dict().items()}, folder / UNET_FILE)
                if ema is not None:
                    save_nested(ema.state_dict(), folder / EMA_FILE)
                save_nested({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler}, folder / OPTIM_FILE)
                save_nested(rng, folder / RNG_FILE)
                (folder / "config.yaml").write_text(config.to_yaml())
                micro = config.optim.batch_size * config.optim.gradient_accumulation_steps
                write_json(
                    {"step": step, "num_processes": accelerator.num_processes, "samples_per_process": step * micro, "validation": metrics},
                    folder / STATE_NAME,
                )

            target = write_checkpoint(config.checkpointing.output_dir, step, write, config.checkpointing.keep_checkpoints)
        accelerator.wait_for_everyone()
        return target

    def _load_checkpoint(self, folder: Path, model, optimizer, scheduler, ema, shots, noise) -> dict[str, Any]:
        accelerator = self.accelerator
        trainer_state = read_json(folder / STATE_NAME)
        if trainer_state["num_processes"] != accelerator.num_processes:
            logger.warning(
                "%s was written by %d process(es), resuming with %d: the data order changes from here on",
                folder, trainer_state["num_processes"], accelerator.num_processes,
            )
        try:
            model.unet.load_state_dict(load_file(folder / UNET_FILE), strict=True)
        except RuntimeError as error:
            raise InputError(f"{folder / UNET_FILE}: does not match the model being trained ({str(error).splitlines()[0]})") from None
        training = load_nested(folder / OPTIM_FILE)
        optimizer.load_state_dict(training["optimizer"])
        scheduler.load_state_dict(training["scheduler"])
        if accelerator.scaler is not None and training["scaler"] is not None:
            accelerator.scaler.load_state_dict(training["scaler"])
        if ema is not None:
            if (folder / EMA_FILE).is_file():
                ema.load_state_dict(load_nested(folder / EMA_FILE, accelerator.device))
            else:
                logger.warning("%s has no EMA weights: the average starts from the resumed weights", folder)
        rng = load_nested(folder / RNG_FILE)
        self._restore_rng(rng[min(accelerator.process_index, len(rng) - 1)], shots, noise)
        logger.info("resumed from %s at step %d", folder, trainer_state["step"])
        return {"step": int(trainer_state["step"]), "metrics": trainer_state.get("validation")}

    def _rng_state(self, shots: ShotSampler, noise: torch.Generator) -> dict[str, torch.Tensor]:
        state = {"torch": torch.get_rng_state(), "shots": shots.generator.get_state(), "noise": noise.get_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state(self.accelerator.device if self.accelerator.device.type == "cuda" else None)
        return state

    def _restore_rng(self, state: dict[str, torch.Tensor], shots: ShotSampler, noise: torch.Generator) -> None:
        torch.set_rng_state(state["torch"])
        shots.generator.set_state(state["shots"])
        noise.set_state(state["noise"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"], self.accelerator.device if self.accelerator.device.type == "cuda" else None)


def _flat_config(config: TrainConfig) -> dict[str, Any]:
    """Config as flat scalars for the trackers' hyper-parameter tables (None shown as 'null')."""
    return {f"{section}.{key}": ("null" if value is None else value) for section, values in config.to_dict().items() for key, value in values.items()}


def _log_panels(accelerator, name: str, panels: list, step: int) -> None:
    import numpy as np

    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({name: np.stack(panels)}, step=step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({name: panels}, step=step)
