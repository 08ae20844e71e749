"""Convert the authors' released DiffewS checkpoints into diffews model folders.

Their checkpoints hold a fine-tuned UNet saved by diffusers from a customised
`UNet2DConditionModel`: ``unet/config.json`` (standard keys plus ``in_channels_ref``; its
``_class_name`` may not be a diffusers class) and weights (safetensors, or a pickled ``.bin``)
with every standard key plus ``conv_in_ref.weight`` / ``conv_in_ref.bias``. The VAE and the text
encoder come from a base Stable Diffusion 2.1 folder. Their inference (t = 1, the empty prompt
tokenised without padding, support K/V banked on every ``attn1`` and concatenated in the query pass)
is what `DiffewSModel` computes, so conversion is a matter of reading and checking the parts and
storing the prompt embedding their evaluation used (``prompt="authors-eval"``, 2 tokens; or the
padded 77-token one of their training, ``"padded"``). Their thresholding is ``threshold_mode="authors"``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from ..errors import InputError, first_line
from ..io import is_empty_folder, replace_folder, require_new_folder
from ..paths import user_path
from .card import render_card
from .config import CONFIG_NAME, DiffewSConfig
from .diffews_model import BASE_PATTERNS, DiffewSModel, build_with_weights
from .prompt import PROMPT_AUTHORS_EVAL, PROMPT_PADDED, base_prompt_embedding, describe_prompt
from .support_conv import CONFIG_KEY
from .weights import (
    SD21_ALTERNATIVES,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
    check_not_lfs_pointer,
    check_safetensors,
    load_safetensors_folder,
    read_json,
    require_subfolders,
    resolve_model_dir,
)

PICKLE_NAME = "diffusion_pytorch_model.bin"
PICKLE_ADVICE = (
    "a pickle can run code when loaded, so diffews does not read it further: convert the UNet's tensors to "
    f"{WEIGHTS_NAME} in a trusted environment (for example, one with no access to your data) and pass that folder"
)
BASE_WEIGHTS = {"vae": (WEIGHTS_NAME, WEIGHTS_INDEX_NAME), "text_encoder": ("model.safetensors", "model.safetensors.index.json")}
"""The base's weights a conversion reads, per subfolder: a single safetensors file or a shard index."""


def check_unet_weights_allowed(folder: Path, allow_pickle: bool = False) -> None:
    """`InputError` when the UNet in `folder` has only pickled weights and `allow_pickle` is off: a pickle
    is read only when the user asks for it."""
    if allow_pickle or (folder / WEIGHTS_NAME).is_file() or (folder / WEIGHTS_INDEX_NAME).is_file():
        return
    if (folder / PICKLE_NAME).is_file():
        raise InputError(
            f"{folder / PICKLE_NAME}: a pickle, which can run code when loaded, so diffews reads it only when asked: pass "
            "--allow-pickle (allow_pickle=True) to read it with torch's restricted loader (weights_only=True, tensors only) "
            f"if you trust where it came from, or convert its tensors to {WEIGHTS_NAME} in a trusted environment and pass that folder"
        )


def read_unet_weights(folder: Path, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The UNet's tensors: safetensors when present; else, with `allow_pickle`, ``diffusion_pytorch_model.bin``
    read with ``torch.load(weights_only=True)`` and accepted only if it is a flat mapping of names to tensors."""
    if (folder / WEIGHTS_NAME).is_file() or (folder / WEIGHTS_INDEX_NAME).is_file():
        return load_safetensors_folder(folder)
    check_unet_weights_allowed(folder, allow_pickle)
    pickled = folder / PICKLE_NAME
    if not pickled.is_file():
        raise InputError(f"{folder}: no {WEIGHTS_NAME} or {PICKLE_NAME}")
    check_not_lfs_pointer(pickled)
    try:
        state = torch.load(pickled, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses anything but plain containers of tensors
        raise InputError(f"{pickled}: refused, not a plain file of tensors ({_refused_content(error)}); {PICKLE_ADVICE}") from None
    if not isinstance(state, dict):
        raise InputError(f"{pickled}: refused, holds a {type(state).__name__} instead of a mapping of tensors; {PICKLE_ADVICE}")
    odd = next(((key, value) for key, value in state.items() if not (isinstance(key, str) and isinstance(value, torch.Tensor))), None)
    if odd is not None:
        raise InputError(f"{pickled}: refused, entry {odd[0]!r} is a {type(odd[1]).__name__}, not a tensor; {PICKLE_ADVICE}")
    return state


def load_authors_unet(folder: str | Path, allow_pickle: bool = False) -> UNet2DConditionModel:
    """The authors' fine-tuned UNet (config + weights) as a diffusers UNet with `conv_in_ref` attached;
    pickled weights only with `allow_pickle` (`read_unet_weights`).

    Raises:
        InputError: one line naming `folder`, for a missing config or weights, a UNet without
            ``conv_in_ref``, or channel counts that are not DiffewS's (support = 2 x query).
    """
    folder = user_path(folder)
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder}: no config.json; expected the authors' unet/ folder")
    config = read_json(folder / "config.json")
    if not isinstance(config, dict):
        raise InputError(f"{folder / 'config.json'}: not a UNet config (a JSON object of settings)")
    state = read_unet_weights(folder, allow_pickle)
    if "conv_in_ref.weight" not in state or "conv_in_ref.bias" not in state:
        raise InputError(f"{folder}: no conv_in_ref weights; this is not a DiffewS UNet")
    flat = next((name for name in ("conv_in.weight", "conv_in_ref.weight") if name in state and state[name].ndim != 4), None)
    if flat is not None:
        raise InputError(f"{folder}: {flat} has shape {tuple(state[flat].shape)}, not a convolution's (out, in, height, width)")
    query_channels = state["conv_in.weight"].shape[1] if "conv_in.weight" in state else None
    support_channels = state["conv_in_ref.weight"].shape[1]
    if query_channels is None or support_channels != 2 * query_channels:
        raise InputError(
            f"{folder}: conv_in_ref takes {support_channels} input channels but conv_in takes {query_channels}; "
            "DiffewS needs twice as many (image + mask latents)"
        )
    declared = config.get(CONFIG_KEY, support_channels)
    if declared != support_channels or config.get("in_channels", query_channels) != query_channels:
        raise InputError(
            f"{folder}: config.json declares in_channels {config.get('in_channels')} / {CONFIG_KEY} {declared} "
            f"but the weights take {query_channels} / {support_channels}"
        )
    return build_with_weights(UNet2DConditionModel, {**config, CONFIG_KEY: support_channels}, state, folder)


def resolve_base(base: str | Path) -> Path:
    """The local folder of a base Stable Diffusion 2.1 (hub id, downloaded without its UNet, or folder),
    checked to hold what a conversion reads: ``vae/`` and ``text_encoder/`` with safetensors weights.

    Raises:
        InputError: one line naming the folder and what is missing, and what to use instead.
    """
    root = resolve_model_dir(base, BASE_PATTERNS, SD21_ALTERNATIVES)
    require_subfolders(root, list(BASE_WEIGHTS))
    for subfolder, names in BASE_WEIGHTS.items():
        present = [root / subfolder / name for name in names if (root / subfolder / name).is_file()]
        if not present:
            raise InputError(f"{root / subfolder}: no {names[0]} (base weights are read as safetensors only); {SD21_ALTERNATIVES}")
        if not (root / subfolder / "config.json").is_file():
            raise InputError(f"{root / subfolder}: no config.json; {SD21_ALTERNATIVES}")
        check_safetensors(root / subfolder)
    return root


def convert_authors_checkpoint(
    unet: str | Path, base: str | Path, config: DiffewSConfig | None = None, prompt: str = PROMPT_AUTHORS_EVAL,
    allow_pickle: bool = False,
) -> DiffewSModel:
    """A `DiffewSModel` from the authors' ``unet/`` folder and a base SD 2.1 (hub id or folder with
    ``vae/`` and ``text_encoder/``, safetensors; ``tokenizer/`` used when present).

    `prompt` picks the stored empty-prompt embedding (see `diffews.modeling.prompt`):
    ``"authors-eval"`` (default; 2 tokens, what their evaluation and the paper's numbers use) or
    ``"padded"`` (77 tokens, their training's). It is recorded as ``config.prompt``. `allow_pickle`: read a
    UNet whose weights are only a pickled ``.bin`` (see `read_unet_weights`).
    """
    model_unet = load_authors_unet(unet, allow_pickle)
    root = resolve_base(base)
    try:  # diffusers' loader: it also reads VAE weights saved under older attention names
        vae = AutoencoderKL.from_pretrained(root / "vae", use_safetensors=True)
    except (OSError, ValueError, TypeError, RuntimeError) as error:  # a damaged config, weights of another model
        raise InputError(f"{root / 'vae'}: cannot load the VAE ({first_line(error)})") from None
    if vae.config.latent_channels != model_unet.config.in_channels:
        raise InputError(
            f"{root}: the VAE has {vae.config.latent_channels} latent channels but the UNet takes {model_unet.config.in_channels}"
        )
    embedding = base_prompt_embedding(root, model_unet.config.cross_attention_dim, padded=prompt == PROMPT_PADDED)
    settings = config if config is not None else DiffewSConfig()
    settings = DiffewSConfig.from_dict({**settings.to_dict(), "base_model": f"{unet} + {base}", "prompt": prompt})
    return DiffewSModel(vae, model_unet, embedding, config=settings).eval()


def converted_model_card(model: DiffewSModel) -> str:
    """Markdown model card of a converted model: where it came from and how to reproduce the paper with it."""
    config = model.config
    tokens = model.prompt_embedding.shape[1]
    reproduces = (
        "This is the embedding the authors' evaluation used: with `threshold_mode=\"authors\"` (or\n  "
        "`diffews evaluate --protocol authors`) the model computes what their evaluation computes."
        if config.prompt == PROMPT_AUTHORS_EVAL
        else "The authors' evaluation used the 2-token embedding instead (`diffews convert --prompt authors-eval`);\n  "
        "this folder does not reproduce the paper's numbers."
    )
    summary = f"""The authors' released DiffewS weights, converted by `diffews convert` from `{config.base_model}`.

- Prompt embedding: {describe_prompt(config.prompt, tokens)}.
  {reproduces}
- Working resolution {config.resolution}, timestep {config.timestep}; default threshold {config.threshold:g} ({config.threshold_mode}).
"""
    return render_card("DiffewS model (converted)", summary)


def is_model_folder(path: Path) -> bool:
    """Whether `path` is a finished diffews model folder (`save_new_folder` renames it into place complete)."""
    return (path / CONFIG_NAME).is_file()


def check_new_folder(out: str | Path, replace: bool = False) -> Path:
    """`out` (``~`` expanded) if `save_new_folder` may write it: missing or an empty folder, or with
    `replace` a diffews model folder; else `InputError`. Call it before a long conversion too."""
    out = user_path(out)
    if replace and out.exists() and not is_empty_folder(out):
        if not is_model_folder(out):
            raise InputError(f"{out}: exists and is not a diffews model folder (no {CONFIG_NAME}); not replacing it")
        return out
    require_new_folder(out, "choose another --out")
    return out


def save_new_folder(model: DiffewSModel, out: str | Path, replace: bool = False, card: str | None = None) -> Path:
    """`save_pretrained` (and a model `card` as ``README.md``) into `out` atomically: written to a
    temporary folder beside it and renamed, so a failure or an interruption leaves nothing behind and
    a reader never sees a half-written model.

    `out` must not exist or be empty; with `replace`, an existing diffews model folder there is replaced
    (only once the new one is complete). Anything else at `out` is never touched.
    """
    out = check_new_folder(out, replace)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        if card is not None:
            (folder / "README.md").write_text(card)

    return replace_folder(out, write, "write here")


def _refused_content(error: Exception) -> str:
    """What `torch.load(weights_only=True)` refused, without its advice (which includes turning the check off)."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    return f"it references {found.group(1)}" if found else type(error).__name__
