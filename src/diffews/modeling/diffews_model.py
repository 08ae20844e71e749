"""`DiffewSModel`: the SD VAE and UNet turned into a one-step few-shot segmenter."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import nn

from ..errors import InputError, first_line
from ..io import Transaction, remove
from ..processing.masks import decoded_to_mask_image, mask_to_image
from ..processing.thresholds import channel_mean
from ..signals import raise_if_stop_requested
from .config import CONFIG_NAME, DiffewSConfig
from .fsa import FSA_KWARG, KVExchange, KVFusion, KVRecorder, SupportContext, install_fsa
from .oi2m import mask_latents_from_velocity, oi2m_scheduler, velocity_target
from .prompt import PROMPT_AUTHORS_EVAL, PROMPT_PADDED, UNPADDED_TOKENS, base_prompt_embedding, check_prompt_embedding
from .support_conv import CONFIG_KEY, RoutedInputConv, attach_support_conv, init_support_conv
from .weights import (
    SD21_ALTERNATIVES,
    check_safetensors,
    load_safetensors_folder,
    read_json,
    read_safetensors,
    require_subfolders,
    resolve_model_dir,
    save_safetensors,
    save_safetensors_folder,
)

PROMPT_NAME = "prompt_embedding.safetensors"
PROMPT_KEY = "prompt_embedding"
BASE_PATTERNS = ["*.json", "*.txt", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"]
"""Files of a Stable Diffusion hub repository that a DiffewS model takes from it without the UNet:
configs, tokenizer, VAE and text encoder weights (full precision, safetensors)."""
SD_PATTERNS = [*BASE_PATTERNS, "unet/diffusion_pytorch_model.safetensors"]
"""`BASE_PATTERNS` and the UNet: what training from Stable Diffusion reads."""
MODEL_ALTERNATIVES = "use a folder written by save_pretrained, or fetch the authors' models with 'diffews download'"


class DiffewSModel(nn.Module):
    """DiffewS: Stable Diffusion's VAE and UNet, with KV-fusion self-attention and a support input conv.

    Build one with `from_stable_diffusion` (fresh, for training), `from_pretrained` (a saved
    DiffewS folder), or by name with `diffews.load_model` (``tiny-random``: random tiny weights, for tests).

    Tensor conventions: images ``(N, 3, H, W)`` in [-1, 1]; masks ``(N, 1, H, W)`` in {0, 1};
    latents ``(N, 4, H/8, W/8)``, already multiplied by the VAE scaling factor.
    `prompt_embedding` ``(1, T, D)`` is the constant text conditioning of both passes; T must fit
    ``config.prompt`` (2 for ``"authors-eval"``, the padded length, 77, for ``"padded"``).
    """

    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        prompt_embedding: torch.Tensor,
        scheduler: DDIMScheduler | None = None,
        config: DiffewSConfig | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(unet.conv_in, RoutedInputConv):
            raise ValueError("the UNet has no support input convolution; build with DiffewSModel.from_components")
        self.config = config if config is not None else DiffewSConfig()
        check_prompt_embedding(prompt_embedding, self.config.prompt)
        if unet.config.cross_attention_dim != prompt_embedding.shape[-1]:
            raise ValueError(
                f"prompt embedding width {prompt_embedding.shape[-1]} does not match the UNet's "
                f"cross-attention width {unet.config.cross_attention_dim}"
            )
        self.vae = vae
        self.unet = unet
        self.register_buffer(PROMPT_KEY, prompt_embedding, persistent=False)
        self.scheduler = scheduler if scheduler is not None else oi2m_scheduler()
        self.fsa_layers = install_fsa(unet)
        self.vae.requires_grad_(False)

    # ------------------------------------------------------------------ building, saving, loading

    @classmethod
    def from_components(
        cls,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        prompt_embedding: torch.Tensor,
        config: DiffewSConfig | None = None,
    ) -> DiffewSModel:
        """A fresh DiffewS model from pretrained SD parts: adds `conv_in_ref` initialised from `conv_in`."""
        if unet.config.in_channels != vae.config.latent_channels:
            raise ValueError(
                f"UNet takes {unet.config.in_channels} input channels but the VAE has "
                f"{vae.config.latent_channels} latent channels"
            )
        attach_support_conv(unet, init_support_conv(unet.conv_in))
        return cls(vae, unet, prompt_embedding, config=config)

    @classmethod
    def from_stable_diffusion(
        cls, name_or_path: str | Path, config: DiffewSConfig | None = None
    ) -> DiffewSModel:
        """Build from a Stable Diffusion 2.1 checkpoint: a hub id or a local diffusers folder.

        Reads ``vae/``, ``unet/`` and ``text_encoder/`` (safetensors weights) and, if present,
        ``tokenizer/``. The text encoder runs once, for the empty-prompt embedding padded to 77
        tokens as the authors trained (``prompt="padded"``; `config.prompt` is overridden), and is freed.
        """
        root = resolve_model_dir(name_or_path, SD_PATTERNS, SD21_ALTERNATIVES)
        require_subfolders(root, ["vae", "unet", "text_encoder"])
        for name in ("vae", "unet"):
            check_safetensors(root / name)
        vae = AutoencoderKL.from_pretrained(root / "vae", use_safetensors=True)
        unet = UNet2DConditionModel.from_pretrained(root / "unet", use_safetensors=True)
        embedding = base_prompt_embedding(root, unet.config.cross_attention_dim, padded=True)
        config = config if config is not None else DiffewSConfig()
        config = DiffewSConfig.from_dict({**config.to_dict(), "base_model": str(name_or_path), "prompt": PROMPT_PADDED})
        return cls.from_components(vae, unet, embedding, config=config)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> DiffewSModel:
        """Load a DiffewS folder written by `save_pretrained` (local path or hub id; model names:
        `diffews.registry.load_model`); safetensors only. Weights load as float32 unless `torch_dtype`
        says otherwise (as in diffusers), whatever dtype they are stored in."""
        root = resolve_model_dir(name_or_path, ["*.json", "*.safetensors"], MODEL_ALTERNATIVES, marker=CONFIG_NAME)
        require_subfolders(root, ["vae", "unet", "scheduler"])
        for name in (CONFIG_NAME, PROMPT_NAME):
            if not (root / name).is_file():
                raise InputError(f"{root}: missing {name}; is this a DiffewS model folder?")
        config = read_model_config(root)
        vae = load_component(AutoencoderKL, root / "vae")
        unet = load_component(UNet2DConditionModel, root / "unet")
        prompt_tensors = read_safetensors(root / PROMPT_NAME)
        if PROMPT_KEY not in prompt_tensors:
            raise InputError(f"{root / PROMPT_NAME}: holds no {PROMPT_KEY!r} tensor; is this a DiffewS model folder?")
        prompt_embedding = prompt_tensors[PROMPT_KEY]
        scheduler_config = root / "scheduler" / "scheduler_config.json"
        if not scheduler_config.is_file():
            raise InputError(f"{scheduler_config}: missing; is this a DiffewS model folder?")
        scheduler_settings = read_json(scheduler_config)  # its own one-line error, naming the file
        if not isinstance(scheduler_settings, dict):  # diffusers would take a string for a hub repository to download
            raise InputError(f"{scheduler_config}: not a scheduler config (a JSON object of settings)")
        try:
            scheduler = DDIMScheduler.from_config(scheduler_settings)
        except Exception as error:  # any bad value: diffusers raises whatever its arithmetic meets
            raise InputError(f"{scheduler_config}: cannot build the scheduler it describes ({first_line(error, lines=2)})") from None
        try:
            model = cls(vae, unet, prompt_embedding, scheduler=scheduler, config=config)
        except ValueError as error:
            raise InputError(f"{root / PROMPT_NAME}: {error}") from None
        return model.to(device=device, dtype=torch_dtype if torch_dtype is not None else torch.float32)

    def save_pretrained(self, path: str | Path) -> None:
        """Write the model as a folder: ``diffews_config.json``, ``prompt_embedding.safetensors``,
        ``scheduler/``, ``unet/`` (standard UNet keys plus ``conv_in_ref.*``) and ``vae/``.

        All or nothing (`diffews.io.Transaction`): each part is written under a temporary name and
        put in place; if anything fails or is interrupted, the parts already replaced are put back,
        a folder this call created is removed, and other files in `path` are never touched."""
        root = Path(path)
        created = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
        parts = Transaction()
        try:
            with parts.write(root / CONFIG_NAME) as staged:
                staged.write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
            with parts.write(root / PROMPT_NAME) as staged:
                save_safetensors({PROMPT_KEY: self.prompt_embedding}, staged)
            with parts.write(root / "scheduler", folder=True) as staged:
                self.scheduler.save_pretrained(staged)
            for name in ("unet", "vae"):
                module = getattr(self, name)
                with parts.write(root / name, folder=True) as staged:
                    module.save_config(staged)
                    save_safetensors_folder(module.state_dict(), staged)
            raise_if_stop_requested()
        except BaseException:
            parts.rollback()
            if created:
                remove(root)
            raise
        parts.commit()

    def use_authors_eval_prompt(self) -> None:
        """Condition on the empty prompt unpadded, as the authors' evaluation does, in place: a
        ``"padded"`` embedding (a model trained from Stable Diffusion) keeps its first 2 rows, which are
        that prompt's embedding (CLIP's text encoder is causal). Other prompts are left as they are."""
        if self.config.prompt == PROMPT_PADDED:
            self.prompt_embedding = self.prompt_embedding[:, :UNPADDED_TOKENS].clone()
            self.config = replace(self.config, prompt=PROMPT_AUTHORS_EVAL)

    # ------------------------------------------------------------------ the method

    @property
    def device(self) -> torch.device:
        return self.prompt_embedding.device

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's dtype (read from one weight: diffusers' `dtype` walks every module per call)."""
        return self.unet.conv_in.weight.dtype

    @property
    def vae_dtype(self) -> torch.dtype:
        """The VAE's dtype, read like `dtype`."""
        return self.vae.post_quant_conv.weight.dtype

    def encode_images(
        self, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """VAE latents of ``(N, 3, H, W)`` images in [-1, 1]: posterior mean (or a sample) x scaling factor."""
        return self.latents_from_posterior(self.encode_posterior(images), sample, generator)

    def encode_posterior(self, images: torch.Tensor) -> torch.Tensor:
        """VAE posterior parameters of ``(N, 3, H, W)`` images in [-1, 1]: mean and log-variance, ``(N, 8, h, w)``."""
        weight = self.vae.post_quant_conv.weight  # the VAE's own device: the trainer moves it first (latent caching)
        return self.vae.encode(images.to(device=weight.device, dtype=weight.dtype)).latent_dist.parameters

    def latents_from_posterior(
        self, posterior: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Latents ``(N, 4, h, w)`` from posterior parameters ``(N, 8, h, w)``: mean (or a sample) x scaling factor."""
        distribution = DiagonalGaussianDistribution(posterior)
        latents = distribution.sample(generator) if sample else distribution.mean
        return latents * self.vae.config.scaling_factor

    def encode_masks(
        self, masks: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """VAE latents of ``(N, 1, H, W)`` binary masks drawn white on black."""
        return self.encode_images(mask_to_image(masks.to(self.vae_dtype)), sample, generator)

    def support_context(self, image_latents: torch.Tensor, mask_latents: torch.Tensor) -> SupportContext:
        """Support pass: per-layer K/V of S support sets of K shots, latents ``(S, K, 4, h, w)``."""
        num_sets, num_shots = image_latents.shape[:2]
        recorder = KVRecorder(num_shots)
        self._run_unet(torch.cat([image_latents, mask_latents], dim=2).flatten(0, 1), recorder)
        return recorder.context()

    def encode_support(self, images: torch.Tensor, masks: torch.Tensor) -> SupportContext:
        """Support context of S sets of K shots: images ``(S, K, 3, H, W)``, masks ``(S, K, 1, H, W)``."""
        num_sets, num_shots = images.shape[:2]
        latents = self.encode_images(torch.cat([images.flatten(0, 1), mask_to_image(masks.flatten(0, 1).to(images))]))
        image_latents, mask_latents = latents.unflatten(0, (2 * num_sets, num_shots)).chunk(2)
        return self.support_context(image_latents, mask_latents)

    def predict_mask_latents(self, query_latents: torch.Tensor, context: SupportContext) -> torch.Tensor:
        """Query pass (OI2M): mask latents ``(B, 4, h, w)`` from query image latents and a support context."""
        velocity = self._run_unet(query_latents, KVFusion(context))
        return mask_latents_from_velocity(self.scheduler, query_latents, velocity, self.config.timestep)

    def decode_mask_images(self, mask_latents: torch.Tensor) -> torch.Tensor:
        """Decode mask latents to mask images ``(B, 3, H, W)`` in [0, 1], float32 (clipped, x 0.5 + 0.5)."""
        latents = mask_latents.to(self.vae_dtype) / self.vae.config.scaling_factor
        return decoded_to_mask_image(self.vae.decode(latents).sample.float())

    def decode_probabilities(self, mask_latents: torch.Tensor) -> torch.Tensor:
        """Decode mask latents to foreground probabilities ``(B, 1, H, W)`` in [0, 1]: the mask images' channel mean."""
        return channel_mean(self.decode_mask_images(mask_latents))

    def training_loss(
        self,
        query_images: torch.Tensor,
        query_masks: torch.Tensor,
        support_images: torch.Tensor,
        support_masks: torch.Tensor,
        generator: torch.Generator | None = None,
        sample_latents: bool = True,
        posteriors: bool = False,
    ) -> torch.Tensor:
        """OI2M loss of a batch of B episodes with K shots each: MSE (fp32) between the query pass's
        v-prediction and its target, minus the query mask latent.

        Args:
            query_images: ``(B, 3, H, W)`` in [-1, 1].
            query_masks: ``(B, 1, H, W)`` in {0, 1}.
            support_images: ``(B, K, 3, H, W)`` in [-1, 1].
            support_masks: ``(B, K, 1, H, W)`` in {0, 1}.
            generator: for the VAE posterior samples.
            sample_latents: sample the VAE posterior (the authors' training) instead of its mean.
            posteriors: the four tensors are stored VAE posteriors instead of pixels (`encode_posterior`
                of the images and of the mask images: ``(B, 8, h, w)`` and ``(B, K, 8, h, w)``); given
                the same posteriors and generator state, the loss is the same.
        """
        images = torch.cat([query_images, support_images.flatten(0, 1)]).to(self.device)
        masks = torch.cat([query_masks, support_masks.flatten(0, 1)]).to(self.device)
        if not posteriors:
            with torch.no_grad():
                images, masks = self.encode_posterior(images), self.encode_posterior(mask_to_image(masks.to(self.vae_dtype)))
        return self._latent_loss(images, masks, support_images.shape[:2], generator, sample_latents)

    def _latent_loss(
        self,
        image_posteriors: torch.Tensor,
        mask_posteriors: torch.Tensor,
        episodes: tuple[int, int],
        generator: torch.Generator | None,
        sample_latents: bool,
    ) -> torch.Tensor:
        """OI2M loss of B episodes of K shots from the posteriors of [queries; supports], ``(B + B K, 8, h, w)``."""
        batch, shots = episodes
        with torch.no_grad():
            image_latents = self.latents_from_posterior(image_posteriors, sample_latents, generator)
            mask_latents = self.latents_from_posterior(mask_posteriors, sample_latents, generator)
        dtype = self.dtype
        image_latents, mask_latents = image_latents.to(dtype), mask_latents.to(dtype)
        context = self.support_context(
            image_latents[batch:].unflatten(0, (batch, shots)), mask_latents[batch:].unflatten(0, (batch, shots))
        )
        velocity = self._run_unet(image_latents[:batch], KVFusion(context))
        target = velocity_target(self.scheduler, mask_latents[:batch], image_latents[:batch], self.config.timestep)
        return F.mse_loss(velocity.float(), target.float())

    def _run_unet(self, latents: torch.Tensor, exchange: KVExchange) -> torch.Tensor:
        text = self.prompt_embedding.to(dtype=self.dtype).expand(latents.shape[0], -1, -1)
        return self.unet(
            latents.to(self.dtype),
            self.config.timestep,
            encoder_hidden_states=text,
            cross_attention_kwargs={FSA_KWARG: exchange},
            return_dict=False,
        )[0]


def load_component(cls: type, folder: Path) -> nn.Module:
    """A diffusers model from ``folder/config.json`` and its safetensors, loaded strictly; `InputError`
    naming the file for an unreadable config."""
    try:
        config = dict(cls.load_config(folder))
    except (OSError, ValueError, TypeError) as error:
        raise InputError(f"{folder / 'config.json'}: cannot read it ({first_line(error, lines=2)})") from None
    return build_with_weights(cls, config, load_safetensors_folder(folder), folder)


def read_model_config(folder: Path) -> DiffewSConfig:
    """The `DiffewSConfig` stored in a model folder's ``diffews_config.json``; `InputError` naming the file if it is unreadable or invalid."""
    path = Path(folder) / CONFIG_NAME
    content = read_json(path)  # its own one-line error, naming the file
    try:
        return DiffewSConfig.from_dict(content)
    except (TypeError, ValueError) as error:
        raise InputError(f"{path}: {error}") from error


def build_with_weights(cls: type, config: dict, state_dict: dict[str, torch.Tensor], source: Path) -> nn.Module:
    """Instantiate the diffusers model class `cls` from `config` and load `state_dict` strictly.

    An ``in_channels_ref`` entry in the config adds the support convolution ``conv_in_ref`` first.
    Built on the meta device, so no time is spent on a random initialisation.

    Raises:
        InputError: naming `source`, when the weights do not fit the config.
    """
    config = {key: value for key, value in config.items() if not key.startswith("_")}
    support_channels = config.pop(CONFIG_KEY, None)
    try:
        with torch.device("meta"):
            module = cls.from_config(config)
            if support_channels is not None:
                attach_support_conv(module, init_support_conv(module.conv_in))
    except Exception as error:  # any bad value: diffusers raises what it meets (a zero group count divides by zero)
        raise InputError(f"{source / 'config.json'}: cannot build the model it describes ({first_line(error, lines=2)})") from None
    try:
        module.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as error:
        raise InputError(f"{source}: weights do not match its config.json ({first_line(error, lines=2)})") from error
    return module
