"""`Trainer`: fine-tunes Stable Diffusion 2.1 (or a DiffewS model) into DiffewS with accelerate.

One code path for one GPU, DDP, multi-node and DeepSpeed: whatever ``accelerate launch``
sets up. The loss is `DiffewSModel.training_loss` (OI2M); the trainer adds the recipe around it:
random K shots per step, AdamW with a decaying learning rate, gradient clipping and accumulation,
mixed precision, optional EMA, periodic validation, atomic resumable checkpoints and the export.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..errors import InputError, first_line, one_line_errors
from ..io import TreeSnapshot
from ..modeling import DiffewSConfig, DiffewSModel
from ..modeling.config import TORCH_DTYPES as DTYPES
from ..modeling.config import CONFIG_NAME
from ..modeling.kernels import attention_kernel
from ..modeling.prompt import PROMPT_AUTHORS_EVAL
from ..paths import user_path
from ..registry import load_model, named_model
from ..signals import raise_if_stop_requested
from .checkpoints import (
    CHECKPOINTS,
    CONFIG_FILE,
    LOGS,
    check_output_dir,
    checkpoint_name,
    complete_checkpoints,
    latest_checkpoint,
    load_train_state,
    read_state_summary,
    resolve_resume,
    save_train_state,
)
from .config import ModelOptions, TrainConfig
from .ema import EMAWeights
from .episodes import EpisodeSampler, RandomFlip, ShotSampler, build_dataset, check_episode, collate_training
from .export import MODEL_DIR, export_model
from .posteriors import PosteriorEpisodes
from .state import TrainState
from .validation import ValidationResult, validate

logger = logging.getLogger("diffews")

VAL_SEED = 0
MIXED_DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def cast_module(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast `module`'s parameters and buffers to `dtype` in place, as `torch.nn.Module.to` does.

    diffusers' own ``ModelMixin.to`` logs a warning about keep-in-float32 modules on every dtype
    cast, even for models that have none (the SD VAE): a cast the trainer means would alarm users.
    """
    return torch.nn.Module.to(module, dtype=dtype)


class TrainingStep(nn.Module):
    """The loss of a batch of episodes as a `forward`, so accelerate can wrap it (DDP, autocast).

    With `from_posteriors` the batches hold VAE posteriors (`PosteriorEpisodes`) instead of pixels.
    """

    def __init__(self, model: DiffewSModel, from_posteriors: bool = False) -> None:
        super().__init__()
        self.model = model
        self.from_posteriors = from_posteriors

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None, sample_latents: bool) -> torch.Tensor:
        return self.model.training_loss(
            batch["query_image"], batch["query_mask"], batch["support_images"], batch["support_masks"],
            generator=generator, sample_latents=sample_latents, posteriors=self.from_posteriors,
        )


def load_start_model(options: ModelOptions) -> DiffewSModel:
    """The model training starts from: SD 2.1 (new DiffewS), or a DiffewS model (a folder or a
    registered name such as ``tiny-random``, see `diffews.registry`)."""
    settings = DiffewSConfig(resolution=options.resolution)
    kind = options.pretrained_type
    if kind == "auto":
        is_diffews = named_model(options.pretrained) is not None or (user_path(options.pretrained) / CONFIG_NAME).is_file()
        kind = "diffews" if is_diffews else "stable-diffusion"
    if kind == "stable-diffusion":
        return DiffewSModel.from_stable_diffusion(options.pretrained, config=settings)
    model = load_model(options.pretrained)
    if model.config.prompt == PROMPT_AUTHORS_EVAL:
        logger.warning(
            "%s holds the authors' evaluation prompt embedding (2 tokens); their training used the empty prompt padded "
            "to 77 tokens: to train as they did, convert with --prompt padded", options.pretrained,
        )
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

    `train` runs `setup`, then `step` / `log` / `validate` / `checkpoint` until ``max_steps``,
    then `finish`. After it, ``model`` is the trained `DiffewSModel` (raw weights on processes
    other than the main one, which holds the EMA weights when EMA is on), ``state`` the final
    `TrainState` and ``loss_history`` this process's mean loss of every optimizer step it ran.
    """

    def __init__(self, config: TrainConfig, train_dataset: Dataset | None = None, val_dataset: Dataset | None = None) -> None:
        self.config = config
        self._train_dataset = train_dataset
        self._val_dataset = val_dataset
        self.model: DiffewSModel | None = None
        self.state: TrainState | None = None
        self.loss_history: list[float] = []

    def train(self) -> Path:
        """Train (resuming if asked), export the model; returns the exported folder.

        A run that fails or is interrupted before it has written a checkpoint leaves the output folder
        as it found it (what appeared in its ``logs/``, ``checkpoints/`` and ``model/`` removed; anything
        else there, such as another run's folder inside it, is never touched); after one, its
        checkpoints let it resume.
        """
        output_dir = user_path(self.config.checkpointing.output_dir)
        before = [TreeSnapshot(output_dir / name) for name in (LOGS, CHECKPOINTS, MODEL_DIR)]
        checkpoints = set(complete_checkpoints(output_dir))
        try:
            return self._train()
        except BaseException:
            if not set(complete_checkpoints(output_dir)) - checkpoints:
                self._undo_outputs(before)
            raise

    def _undo_outputs(self, before: list[TreeSnapshot]) -> None:
        """Close the trackers and remove what the failed run created in its own folders (main process);
        a failure to do so is logged, never raised over the run's own error."""
        from accelerate import PartialState

        try:
            if getattr(self, "accelerator", None) is not None:
                self.accelerator.end_training()
            if PartialState().is_main_process:
                for snapshot in before:  # the output folder goes too, if the run created it, once it is empty
                    snapshot.remove_new()
        except Exception as error:  # the run's own error is the one to report
            logger.warning("could not remove the failed run's outputs from %s: %s", before[0].root.parent, error)

    def _train(self) -> Path:
        self.setup()
        config, state = self.config, self.state
        bar = tqdm(
            total=config.optim.max_steps, initial=state.step, desc="training", unit="step",
            disable=not self.accelerator.is_local_main_process,
        )
        with bar, attention_kernel(self.config.precision.sdpa_backend):  # the bar ends its line before an error is printed
            while state.step < config.optim.max_steps:
                raise_if_stop_requested()
                loss = self.step()
                self.log(loss, bar)
                every, last = config.validation.val_every, state.step == config.optim.max_steps
                metrics = self.validate() if every and state.step % every == 0 and not last else None  # the last: in finish
                path = self.checkpoint() if state.step % config.checkpointing.checkpoint_every == 0 or last else None
                if (metrics or path) and not bar.disable:  # tqdm.write prints from every process; the bar is the main one's
                    bar.write(self._progress_line(loss, metrics, path))
        return self.finish()

    # ------------------------------------------------------------------ the stages

    def setup(self) -> None:
        """Check the output folder, build the model, data, optimizer and `TrainState`; resume if asked."""
        from accelerate.utils import set_seed

        config = self.config
        output_dir = Path(config.checkpointing.output_dir)
        check_output_dir(output_dir)
        resume_from = self._resume_point(output_dir)
        accelerator = self.accelerator = self._accelerator(output_dir)
        set_seed(config.run.seed)

        model = self.model = load_start_model(config.model)
        self._vae_fp32 = self._prepare_model(model)
        train_data = self._train_dataset if self._train_dataset is not None else build_dataset(
            config.data, config.data.train_split, config.model.resolution, config.data.train_episodes, config.run.seed,
            config.data.train_images_per_class,
        )
        check_episode(train_data[0], config.data.shots)
        if config.data.cache_latents:
            train_data = PosteriorEpisodes(train_data, model, progress=accelerator.is_local_main_process)
        self._val_data = self._validation_dataset()

        self._params = [p for p in model.unet.parameters() if p.requires_grad]
        optimizer = self._optimizer(self._params)
        scheduler = self._scheduler(optimizer)
        self._step_module, optimizer = accelerator.prepare(TrainingStep(model, config.data.cache_latents), optimizer)
        state = self.state = TrainState(
            unet=model.unet,
            optimizer=optimizer,
            scheduler=scheduler,
            shots=ShotSampler(config.data.shots, config.run.seed),
            noise=torch.Generator(device=accelerator.device).manual_seed(config.run.seed + 1 + accelerator.process_index),
            flips=RandomFlip(config.data.random_flip, _stream_seed(config.run.seed, "flips", accelerator.process_index)),
            ema=EMAWeights(model.unet, config.ema.ema_decay) if config.ema.use_ema and accelerator.is_main_process else None,
            scaler=accelerator.scaler,
            device=accelerator.device,
            num_processes=accelerator.num_processes,
        )
        if resume_from is not None:
            self._resume(resume_from)
        self._batches = one_line_errors(self._loader(train_data, state.step))  # a worker's InputError carries its traceback
        if accelerator.is_main_process:
            accelerator.init_trackers(config.run.project, config=_flat_config(config))
        self._window_losses: list[float] = []
        self._started, self._start_step = time.perf_counter(), state.step

    def step(self) -> float:
        """One optimizer step: accumulate gradients over the micro-batches, clip, step the optimizer,
        the schedule and the EMA; returns the mean micro-batch loss."""
        accelerator, optim, state = self.accelerator, self.config.optim, self.state
        losses = []
        for _ in range(optim.gradient_accumulation_steps):
            batch = state.flips.apply(state.shots.slice(next(self._batches)))
            batch = {key: value.to(accelerator.device) for key, value in batch.items()}
            with accelerator.accumulate(self._step_module):
                loss = self._step_module(batch, state.noise, self.config.precision.sample_latents)
                accelerator.backward(loss)
                if accelerator.sync_gradients and optim.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(self._params, optim.max_grad_norm)
                state.optimizer.step()
                state.optimizer.zero_grad(set_to_none=True)
            losses.append(loss.detach().float().item())
        if not accelerator.optimizer_step_was_skipped:
            state.scheduler.step()
        state.step += 1
        if state.ema is not None:
            state.ema.update(state.unet)
        mean = sum(losses) / len(losses)
        self.loss_history.append(mean)
        return mean

    def log(self, loss: float, bar: tqdm) -> None:
        """Show the step on the progress bar; every ``log_every`` steps (and at the end) log the
        loss averaged over the window and the processes, and the learning rate."""
        config, state, accelerator = self.config, self.state, self.accelerator
        self._window_losses.append(loss)
        lr = state.scheduler.get_last_lr()[0]
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", refresh=False)
        bar.update(1)
        if state.step % config.run.log_every == 0 or state.step == config.optim.max_steps:
            mean_loss = accelerator.reduce(torch.tensor(self._window_losses, device=accelerator.device).mean(), "mean").item()
            accelerator.log({"train/loss": mean_loss, "train/lr": lr}, step=state.step)
            self._window_losses = []

    def validate(self, final: bool = False) -> dict[str, float] | None:
        """Validate on the main process (the others wait); logs scores and panels, keeps the scores in the state."""
        accelerator, model, dataset = self.accelerator, self.model, self._val_data
        metrics = None
        if accelerator.is_main_process and dataset is not None:
            model.unet.eval()
            with accelerator.autocast():
                result: ValidationResult = validate(model, dataset, self.config.validation.val_panels)
            model.unet.train()
            metrics = result.metrics
            prefix = "final" if final else "val"
            accelerator.log({f"{prefix}/{name}": value for name, value in metrics.items()}, step=self.state.step)
            if result.panels:
                _log_panels(accelerator, f"{prefix}/episodes", result.panels, self.state.step)
        if not final:
            accelerator.wait_for_everyone()
            self.state.metrics = metrics
        return metrics

    def checkpoint(self) -> Path:
        """Gather every process's RNG states, write the checkpoint from the main process; returns its folder."""
        from accelerate.utils import gather_object

        accelerator, config = self.accelerator, self.config
        self._check_finite()
        rng = gather_object([self.state.rng_state()])
        target = Path(config.checkpointing.output_dir) / CHECKPOINTS / checkpoint_name(self.state.step)
        if accelerator.is_main_process:
            state = {**self.state.state_dict(), "rng": rng}
            target = save_train_state(config.checkpointing.output_dir, state, config.to_yaml(), config.checkpointing.keep_checkpoints)
        accelerator.wait_for_everyone()
        return target

    def _check_finite(self) -> None:
        """`InputError` once the UNet's weights are no longer finite (the run diverged). Checked before every
        checkpoint (the last step always writes one, before the export), so a diverged state never replaces
        the checkpoints `keep_checkpoints` keeps. Every process holds the same weights: all stop together."""
        if not all(bool(torch.isfinite(p).all()) for p in self._params):
            newest = latest_checkpoint(self.config.checkpointing.output_dir)
            before = f"; the newest checkpoint, {newest}, is from before" if newest else ""
            raise InputError(
                f"training diverged by step {self.state.step}: the UNet's weights are no longer finite; "
                f"lower optim.learning_rate{before}"
            )

    def finish(self) -> Path:
        """Swap in the EMA weights, validate a last time, export the model (main process); returns the export."""
        config, accelerator, model, state = self.config, self.accelerator, self.model, self.state
        exported = None
        if accelerator.is_main_process:
            if state.ema is not None:
                state.ema.copy_to(model.unet)
            final = self.validate(final=True) if config.validation.val_every else None
            if final:
                tqdm.write(f"final validation at step {state.step}: {_scores(final)}")
            if self._vae_fp32 is not None:
                cast_module(model.vae, torch.float32).load_state_dict(self._vae_fp32)
            exported = export_model(model, config, state.step, final, len(self._val_data) if final else 0)
            logger.info("exported %s", exported)
        accelerator.wait_for_everyone()
        accelerator.end_training()
        return exported if exported is not None else Path(config.checkpointing.output_dir) / MODEL_DIR

    # ------------------------------------------------------------------ set-up helpers

    def _accelerator(self, output_dir: Path):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        config = self.config
        try:
            accelerator = Accelerator(
                mixed_precision=config.precision.mixed_precision,
                gradient_accumulation_steps=config.optim.gradient_accumulation_steps,
                log_with=self._tracker(),
                project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / LOGS)),
            )
        except ValueError as error:
            raise InputError(f"mixed_precision {config.precision.mixed_precision}: {error}") from None
        if getattr(accelerator.state, "fsdp_plugin", None) is not None:
            # the trainer clips and checkpoints the UNet's own parameters, which FSDP replaces by shards
            raise InputError("FSDP is not supported by diffews train; launch with DDP or DeepSpeed ZeRO-2 (docs/scaling.md)")
        deepspeed = accelerator.state.deepspeed_plugin
        if deepspeed is not None:
            # DeepSpeed reads the micro-batch size from a prepared data loader, which the trainer does
            # not use (it samples its own episodes), and clips gradients itself under ZeRO.
            deepspeed.deepspeed_config["train_micro_batch_size_per_gpu"] = config.optim.batch_size
            deepspeed.deepspeed_config["gradient_clipping"] = config.optim.max_grad_norm or 0.0
        return accelerator

    def _loader(self, train_data: Dataset, step: int) -> DataLoader:
        """This process's endless batches of `train_data`, from where `step` optimizer steps left off."""
        config, accelerator = self.config, self.accelerator
        micro_batches = config.optim.batch_size * config.optim.gradient_accumulation_steps
        sampler = EpisodeSampler(
            len(train_data), config.run.seed, accelerator.process_index, accelerator.num_processes, start=step * micro_batches
        )
        return DataLoader(
            train_data, batch_size=config.optim.batch_size, sampler=sampler, num_workers=config.data.num_workers,
            collate_fn=collate_training,
            pin_memory=accelerator.device.type == "cuda", persistent_workers=config.data.num_workers > 0,
        )

    def _resume_point(self, output_dir: Path) -> Path | None:
        resume = self.config.checkpointing.resume
        if resume is None and complete_checkpoints(output_dir):
            raise InputError(
                f"{output_dir}: already holds checkpoints of a run; pass --resume latest to continue it, "
                "or choose another output_dir"
            )
        found = resolve_resume(resume, output_dir)
        latest = latest_checkpoint(output_dir)
        # only the run's own continuation (from its newest checkpoint) may replace its model/
        continues_own = found is not None and latest is not None and found.resolve() == latest.resolve()
        if (output_dir / MODEL_DIR).exists() and not continues_own:
            raise InputError(f"{output_dir / MODEL_DIR}: already holds a trained model; choose another output_dir")
        if resume == "latest" and found is None:
            logger.info("no checkpoint in %s yet: starting from scratch", output_dir)
        if found is not None:
            step, max_steps = read_state_summary(found)["step"], self.config.optim.max_steps
            if step > max_steps:
                raise InputError(f"{found}: is at step {step}, past max_steps {max_steps}; pass --max-steps {step} or more")
        return found

    def _resume(self, folder: Path) -> None:
        accelerator = self.accelerator
        if accelerator.state.deepspeed_plugin is not None:
            raise InputError(
                f"{folder}: resuming is not supported under DeepSpeed: its optimizer states are partitioned over the processes "
                "and a checkpoint keeps only the main process's"
            )
        self._check_resumed_config(folder)
        saved = load_train_state(folder)
        if saved["num_processes"] != accelerator.num_processes:
            logger.warning(
                "%s was written by %d process(es), resuming with %d: the data order changes from here on",
                folder, saved["num_processes"], accelerator.num_processes,
            )
        if self.state.ema is not None and saved["ema"] is None:
            logger.warning("%s has no EMA weights: the average starts from the resumed weights", folder)
        try:
            self.state.load_state_dict(saved, accelerator.process_index)
        except (RuntimeError, LookupError, TypeError, ValueError) as error:  # a damaged state that still parses
            raise InputError(f"{folder}: does not match the model being trained ({first_line(error)})") from None
        logger.info("resumed from %s at step %d", folder, self.state.step)

    def _check_resumed_config(self, folder: Path) -> None:
        """`InputError` if this run's options differ from the checkpoint's where that changes the run."""
        try:
            saved = TrainConfig.from_yaml((folder / CONFIG_FILE).read_text())
        except (OSError, ValueError) as error:
            logger.warning("%s: cannot compare its %s with this run's (%s)", folder, CONFIG_FILE, first_line(error))
            return
        changes = self.config.changes_for_resume(saved)
        if changes:
            raise InputError(
                f"{folder}: this run changes options the checkpoint fixes ({'; '.join(changes)}); resume with the "
                "checkpoint's settings (its config.yaml), or export its weights (resume with --max-steps at its step) "
                "and start a new run from them (--pretrained OUTPUT_DIR/model)"
            )

    def _progress_line(self, loss: float, metrics: dict[str, float] | None, path: Path | None) -> str:
        """The line a validation or a checkpoint prints: this step's loss, learning rate and speed, the
        scores of a validation run at this step, and the checkpoint written."""
        state, config = self.state, self.config
        rate = (state.step - self._start_step) / (time.perf_counter() - self._started)
        lr = state.scheduler.get_last_lr()[0]
        return (
            f"step {state.step}/{config.optim.max_steps}: loss {loss:.4f}, lr {lr:.2e}, {rate:.2f} steps/s"
            + (f", {_scores(metrics)}" if metrics else "")
            + (f" -> {path}" if path is not None else "")
        )

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
            cast_module(model.vae, vae_dtype)
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



def _scores(metrics: dict[str, float]) -> str:
    """Validation scores as the progress lines print them: ``miou 43.23, fbiou 66.36``."""
    return ", ".join(f"{name} {value:.2f}" for name, value in metrics.items())


def _stream_seed(seed: int, stream: str, process_index: int) -> int:
    """A seed for one named random stream of one process, independent of the run's other streams."""
    entropy = [seed, process_index, *stream.encode()]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def _flat_config(config: TrainConfig) -> dict[str, Any]:
    """Config as flat scalars for the trackers' hyper-parameter tables (None shown as 'null')."""
    return {f"{section}.{key}": ("null" if value is None else value) for section, values in config.to_dict().items() for key, value in values.items()}


def _log_panels(accelerator, name: str, panels: list, step: int) -> None:
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({name: np.stack(panels)}, step=step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({name: panels}, step=step)
