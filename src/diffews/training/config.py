"""Training configuration: typed dataclasses that round-trip to YAML, with one CLI flag per option.

A config file has one mapping per section (``model``, ``data``, ``optim``, ``precision``, ``ema``,
``validation``, ``checkpointing``, ``run``); every option of every section is also a flag of
``diffews train`` named after it (``learning_rate`` -> ``--learning-rate``), so option names are
unique across sections. Defaults are the authors' recipe (METHOD.md).
"""

from __future__ import annotations

import argparse
import math
import types
import typing
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..data import BENCHMARKS
from ..errors import InputError
from ..modeling.kernels import SdpaKernelChoice
from ..modeling.config import MAX_RESOLUTION, check_resolution
from ..modeling.weights import SD21_HUB_ID
from ..paths import user_path

if TYPE_CHECKING:
    from typing_extensions import Self


def option(default: Any, help: str, choices: Collection[str] = ()) -> Any:
    """A dataclass field with the help text of its CLI flag (and its allowed values, where a
    ``Literal`` type cannot list them because they are only known at run time)."""
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class ModelOptions:
    pretrained: str = option(
        SD21_HUB_ID,
        "where training starts: a Stable Diffusion 2.1 checkpoint (hub id or diffusers folder), a DiffewS "
        "folder or model name (fine-tune further; see 'diffews segment --help'), or 'tiny-random' (a tiny random model for tests)",
    )
    pretrained_type: Literal["auto", "stable-diffusion", "diffews"] = option(
        "auto", "what --pretrained is; auto: a local folder with diffews_config.json is DiffewS, anything else SD"
    )
    resolution: int = option(512, f"training resolution in pixels (square; multiple of 8, at most {MAX_RESOLUTION})")

    def check(self) -> None:
        check_resolution(self.resolution)


@dataclass(frozen=True)
class DataOptions:
    benchmark: str = option("coco", "dataset family (its layout: \"Benchmark data\" in the README)", choices=BENCHMARKS)
    root: str | None = option(None, "dataset root folder (each benchmark's layout: \"Benchmark data\" in the README)")
    fold: int | None = option(0, "held-out fold for strict few-shot training; null: all classes (in-context, custom)")
    shots: int = option(1, "N: each step trains with K shots, K drawn uniformly in 1..N")
    train_split: Literal["trn", "val", "test"] = option("trn", "split to train on")
    splits: str | None = option(
        None, "folder of split lists, or 'hsnet' for HSNet's published PASCAL-5i / FSS-1000 lists; null: generated from the annotations"
    )
    train_episodes: int | None = option(None, "training episodes per pass over the data; null: the dataset's default")
    train_images_per_class: int | None = option(
        None, "train on at most this many images of each class (a fixed random choice); null: all"
    )
    num_workers: int = option(4, "data loading worker processes per GPU")
    cache_latents: bool = option(
        False, "encode each training image and mask once with the frozen VAE and train from the stored posteriors "
        "(same loss, no per-step VAE cost; memory: 2 x 8 x (resolution/8)^2 floats per image)"
    )
    random_flip: float = option(
        0.0, "probability of mirroring each training image left to right with its mask (the query and each support "
        "on their own draws; with cache_latents, the stored posteriors are mirrored, close to but not the posteriors of "
        "mirrored images); 0: never"
    )

    def check(self) -> None:
        benchmark = BENCHMARKS[self.benchmark]
        if benchmark.num_folds:
            require(self.fold is None or 0 <= self.fold < benchmark.num_folds, "fold", f"null or 0..{benchmark.num_folds - 1} for {benchmark.title}", self.fold)
        else:
            require(self.fold is None, "fold", f"null ({benchmark.name} has no folds)", self.fold)
        require(self.train_split in benchmark.splits, "train_split", f"one of {', '.join(benchmark.splits)} for {benchmark.title}", self.train_split)
        require(self.shots >= 1, "shots", ">= 1", self.shots)
        require(self.train_episodes is None or self.train_episodes >= 1, "train_episodes", "null or >= 1", self.train_episodes)
        require(self.train_images_per_class is None or self.train_images_per_class >= 2, "train_images_per_class", "null or >= 2", self.train_images_per_class)
        require(self.num_workers >= 0, "num_workers", ">= 0", self.num_workers)
        require(0 <= self.random_flip <= 1, "random_flip", "a probability in 0..1", self.random_flip)


@dataclass(frozen=True)
class OptimOptions:
    optimizer: Literal["adamw", "adamw8bit"] = option("adamw", "AdamW, or bitsandbytes' 8-bit AdamW (pip install 'diffews[bnb]')")
    learning_rate: float = option(1e-5, "peak learning rate")
    weight_decay: float = option(1e-2, "AdamW weight decay")
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.999, "AdamW beta2")
    adam_epsilon: float = option(1e-8, "AdamW epsilon")
    lr_scheduler: Literal["linear", "constant", "cosine"] = option(
        "linear", "learning-rate schedule after warm-up: linear decay to 0, constant, or cosine decay to 0"
    )
    warmup_steps: int = option(0, "linear warm-up steps")
    max_grad_norm: float | None = option(1.0, "clip the gradient norm to this value; null: no clipping")
    batch_size: int = option(1, "episodes per micro-batch per process")
    gradient_accumulation_steps: int = option(4, "micro-batches per optimizer step")
    max_steps: int = option(20000, "optimizer steps of the whole run (the schedule's length)")

    def check(self) -> None:
        require(0 < self.learning_rate < math.inf, "learning_rate", "> 0 and finite", self.learning_rate)
        require(0 <= self.weight_decay < math.inf, "weight_decay", ">= 0 and finite", self.weight_decay)
        for name in ("adam_beta1", "adam_beta2"):
            require(0 <= getattr(self, name) < 1, name, "in [0, 1)", getattr(self, name))
        require(0 < self.adam_epsilon < math.inf, "adam_epsilon", "> 0 and finite", self.adam_epsilon)
        require(0 <= self.warmup_steps <= self.max_steps, "warmup_steps", "in [0, max_steps]", self.warmup_steps)
        require(self.max_grad_norm is None or 0 < self.max_grad_norm < math.inf, "max_grad_norm", "null or > 0 and finite", self.max_grad_norm)
        for name in ("batch_size", "gradient_accumulation_steps", "max_steps"):
            require(getattr(self, name) >= 1, name, ">= 1", getattr(self, name))


@dataclass(frozen=True)
class PrecisionOptions:
    mixed_precision: Literal["no", "fp16", "bf16"] = option(
        "fp16", "autocast dtype of the UNet (fp32 master weights); bf16 is safer where the GPU has it"
    )
    vae_dtype: Literal["auto", "float32", "float16", "bfloat16"] = option(
        "auto", "dtype of the frozen VAE; auto: the mixed-precision dtype (fp32 without mixed precision)"
    )
    gradient_checkpointing: bool = option(False, "recompute UNet activations in the backward pass (less activation memory; 0.60-0.65x the speed on an H100)")
    sdpa_backend: SdpaKernelChoice = option(
        "auto", "PyTorch scaled-dot-product-attention kernel; efficient/flash save memory on GPUs"
    )
    sample_latents: bool = option(True, "sample the VAE posterior for training latents (the authors' recipe) instead of its mean")

    def check(self) -> None:
        pass


@dataclass(frozen=True)
class EMAOptions:
    use_ema: bool = option(False, "keep an exponential moving average of the UNet weights (exported instead of the raw weights)")
    ema_decay: float = option(0.9999, "EMA decay (warmed up as min(decay, (1 + n) / (10 + n)) over the first updates)")

    def check(self) -> None:
        require(0 < self.ema_decay < 1, "ema_decay", "in (0, 1)", self.ema_decay)


@dataclass(frozen=True)
class ValidationOptions:
    val_every: int = option(1000, "validate every this many optimizer steps and at the end; 0: never")
    val_split: Literal["trn", "val", "test"] = option("val", "split of the validation episodes")
    val_episodes: int = option(32, "fixed validation episodes (same every time)")
    val_panels: int = option(4, "validation episodes drawn as image panels in the tracker")

    def check(self) -> None:
        require(self.val_every >= 0, "val_every", ">= 0", self.val_every)
        require(self.val_episodes >= 1, "val_episodes", ">= 1", self.val_episodes)
        require(self.val_panels >= 0, "val_panels", ">= 0", self.val_panels)


@dataclass(frozen=True)
class CheckpointOptions:
    output_dir: str = option("outputs/diffews", "run folder: checkpoints/, logs/, the exported model in model/")
    checkpoint_every: int = option(1000, "save a resumable checkpoint every this many optimizer steps")
    keep_checkpoints: int = option(3, "keep only the newest this many checkpoints")
    resume: str | None = option(None, "'latest' (newest complete checkpoint in output_dir, if any) or a checkpoint folder")

    def __post_init__(self) -> None:  # '~' expanded once: every reader of output_dir sees the same folder
        object.__setattr__(self, "output_dir", str(user_path(self.output_dir)))

    def check(self) -> None:
        require(self.checkpoint_every >= 1, "checkpoint_every", ">= 1", self.checkpoint_every)
        require(self.keep_checkpoints >= 1, "keep_checkpoints", ">= 1", self.keep_checkpoints)


@dataclass(frozen=True)
class RunOptions:
    seed: int = option(42, "seed of the model init, data order, shot counts and latent sampling")
    tracker: Literal["tensorboard", "wandb", "none"] = option("tensorboard", "experiment tracker for losses, mIoU and panels")
    project: str = option("diffews", "tracker project name")
    log_every: int = option(10, "log loss and learning rate every this many optimizer steps")

    def check(self) -> None:
        require(self.log_every >= 1, "log_every", ">= 1", self.log_every)
        require(0 <= self.seed < 2**32, "seed", "in [0, 2**32)", self.seed)


SECTIONS: dict[str, type] = {
    "model": ModelOptions,
    "data": DataOptions,
    "optim": OptimOptions,
    "precision": PrecisionOptions,
    "ema": EMAOptions,
    "validation": ValidationOptions,
    "checkpointing": CheckpointOptions,
    "run": RunOptions,
}


class SectionedConfig:
    """Base of the frozen dataclass configs made of option sections (``SECTIONS``: YAML name -> dataclass).

    Each section dataclass has a ``check()`` that raises `ValueError` for bad values; option names
    are unique across a config's sections, so every option is also one command-line flag.
    """

    SECTIONS: ClassVar[dict[str, type]] = {}

    def __post_init__(self) -> None:
        for name in self.SECTIONS:
            getattr(self, name).check()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict, one mapping per section."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Inverse of `to_dict`; missing keys take their defaults, unknown keys and bad values raise `ValueError`."""
        known_sections = cls.SECTIONS
        if not isinstance(values, dict):
            raise ValueError(f"expected a mapping of sections ({', '.join(known_sections)}), got {type(values).__name__}")
        unknown = sorted(str(key) for key in set(values) - set(known_sections))  # YAML keys may be numbers
        if unknown:
            raise ValueError(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(known_sections)}")
        sections = {}
        for name, section_type in known_sections.items():
            entries = values.get(name) or {}
            if not isinstance(entries, dict):
                raise ValueError(f"section '{name}' must be a mapping, got {type(entries).__name__}")
            known = {f.name for f in fields(section_type)}
            bad = sorted(str(key) for key in set(entries) - known)
            if bad:
                raise ValueError(f"unknown key(s) {', '.join(bad)} in section '{name}'; known: {', '.join(sorted(known))}")
            sections[name] = section_type(**{key: _coerce(section_type, key, value) for key, value in entries.items()})
        return cls(**sections)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(_plain(self.to_dict()), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> Self:
        """Parse YAML text; syntax errors, a key given twice, unknown keys and bad values raise `ValueError`."""
        return cls.from_dict(_parse_yaml(text) or {})

    def with_overrides(self, overrides: dict[str, Any]) -> Self:
        """A copy with options replaced by name (``{"learning_rate": 2e-5}``), whatever their section."""
        sections = {name: {} for name in self.SECTIONS}
        owner = option_sections(self.SECTIONS)
        for key, value in overrides.items():
            if key not in owner:
                raise ValueError(f"unknown option '{key}'")
            sections[owner[key]][key] = _coerce(self.SECTIONS[owner[key]], key, value)
        return replace(self, **{name: replace(getattr(self, name), **changes) for name, changes in sections.items() if changes})

    @classmethod
    def load(cls, path: str | Path | None, overrides: dict[str, Any] | None = None) -> Self:
        """Read a YAML config (defaults where `path` is None) and apply `overrides`; errors become `InputError`."""
        config = cls()
        if path is not None:
            path = user_path(path)
            try:
                config = cls.from_yaml(path.read_text())
            except OSError as error:
                raise InputError(f"{path}: cannot read config ({error.strerror or error})") from None
            except ValueError as error:
                raise InputError(f"{path}: {_one_line(error)}") from None
        try:
            return config.with_overrides(overrides or {})
        except ValueError as error:
            raise InputError(f"command line: {_one_line(error)}") from None


@dataclass(frozen=True)
class TrainConfig(SectionedConfig):
    """Everything a training run needs; see each section's fields for meanings and defaults."""

    SECTIONS: ClassVar[dict[str, type]] = SECTIONS

    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataOptions = field(default_factory=DataOptions)
    optim: OptimOptions = field(default_factory=OptimOptions)
    precision: PrecisionOptions = field(default_factory=PrecisionOptions)
    ema: EMAOptions = field(default_factory=EMAOptions)
    validation: ValidationOptions = field(default_factory=ValidationOptions)
    checkpointing: CheckpointOptions = field(default_factory=CheckpointOptions)
    run: RunOptions = field(default_factory=RunOptions)

    def __post_init__(self) -> None:
        super().__post_init__()
        benchmark = BENCHMARKS[self.data.benchmark]
        split = self.validation.val_split
        if self.validation.val_every:  # found now, not after the model loads and the training set is encoded
            require(split in benchmark.splits, "val_split", f"one of {', '.join(benchmark.splits)} for {benchmark.title}", split)

    def changes_for_resume(self, saved: TrainConfig) -> list[str]:
        """``"name: saved -> now"`` for every option that differs from `saved` (the config a checkpoint was
        written with) and would change the run's trajectory, i.e. is not in `RESUME_MAY_CHANGE`."""
        now, before = (
            {name: value for section in config.to_dict().values() for name, value in section.items()} for config in (self, saved)
        )
        return [
            f"{name}: {_show(before[name])} -> {_show(value)}"
            for name, value in now.items()
            if name not in RESUME_MAY_CHANGE and value != before[name]
        ]


RESUME_MAY_CHANGE = frozenset({
    "max_steps", "root", "num_workers", "gradient_checkpointing", "sdpa_backend", "use_ema", "ema_decay",
    "val_every", "val_split", "val_episodes", "val_panels", "output_dir", "checkpoint_every", "keep_checkpoints", "resume",
    "tracker", "project", "log_every",
})
"""Options a resumed run may set differently from its checkpoint: where the data lives, how long to
train, speed and memory settings, the weight average, validation, checkpointing and logging. Every
other option (learning rate, batch, seed, data, model, precision, ...) is restored from the checkpoint's
state or decides the data order, so changing it would silently not apply or break bit-exact resume."""


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """`TrainConfig.load`: a YAML training config with `overrides` applied; errors become `InputError`."""
    return TrainConfig.load(path, overrides)


def option_sections(sections: dict[str, type] = SECTIONS) -> dict[str, str]:
    """Option name -> its section name (default: the training config's sections)."""
    return {f.name: section for section, section_type in sections.items() for f in fields(section_type)}


def add_config_flags(parser: argparse.ArgumentParser, sections: dict[str, type] = SECTIONS) -> None:
    """One flag per option, grouped by section; unset flags are absent from the parsed namespace."""
    for section, section_type in sections.items():
        group = parser.add_argument_group(f"{section} options (YAML section '{section}')")
        for f in fields(section_type):
            kind, choices, nullable = _describe(section_type, f.name)
            help_text = f"{f.metadata['help']} (default: {_show(f.default)})"
            flag = "--" + f.name.replace("_", "-")
            if kind is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
                continue
            metavar = "{" + ",".join(choices) + "}" if choices else "INT,INT,..." if kind is tuple else kind.__name__.upper()
            if nullable:
                metavar += "|null"
            group.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar=metavar, help=help_text)


def overrides_from_args(args: argparse.Namespace, sections: dict[str, type] = SECTIONS) -> dict[str, Any]:
    """The options given as flags (raw strings, converted by `SectionedConfig.with_overrides`)."""
    return {name: getattr(args, name) for name in option_sections(sections) if hasattr(args, name)}


def _describe(section_type: type, name: str) -> tuple[type, tuple[str, ...], bool]:
    """(base type, choices, accepts None) of an option: its type hint, and choices from a ``Literal``
    hint or, for choices known at run time, the field's ``choices`` metadata."""
    hint = typing.get_type_hints(section_type)[name]
    choices = next(f for f in fields(section_type) if f.name == name).metadata.get("choices", ())
    args = typing.get_args(hint)
    nullable = type(None) in args
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) is Literal:
        return str, typing.get_args(hint), nullable
    if typing.get_origin(hint) is tuple:
        return tuple, (), nullable
    return hint, tuple(choices), nullable


def _coerce(section_type: type, key: str, value: Any) -> Any:
    """Convert `value` (from YAML or a flag string) to the field's type, or raise `ValueError` naming it."""
    kind, choices, nullable = _describe(section_type, key)
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none") and nullable):
        if nullable:
            return None
        raise ValueError(f"{key} must not be null")
    try:
        if kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            if not isinstance(value, bool):
                raise TypeError
            return value
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if kind is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind is tuple:
            items = value.split(",") if isinstance(value, str) else value
            if not isinstance(items, (list, tuple)) or any(isinstance(v, (bool, float)) for v in items):
                raise TypeError
            return tuple(int(v) for v in items)
        value = str(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be {_EXPECTED.get(kind, 'true or false')}, got {value!r}") from None
    if choices and value not in choices:
        raise ValueError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _parse_yaml(text: str) -> Any:
    """`yaml.safe_load`, except that a mapping with the same key twice is an error naming the key and
    its second line (plain YAML silently keeps the last value, hiding a mistyped config)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
            seen: set = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise ValueError(f"line {key_node.start_mark.line + 1}: a key must be a plain name or number, got {key!r}")
                if key in seen:
                    raise ValueError(f"line {key_node.start_mark.line + 1}: duplicate key '{key}' (each key may appear once)")
                seen.add(key)
            return super().construct_mapping(node, deep)

    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        raise ValueError(f"invalid YAML ({error})") from None


_EXPECTED = {int: "an integer", float: "a number", tuple: "a list of integers"}


def _plain(value: Any) -> Any:
    """`value` with tuples turned into lists, for YAML."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def require(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{key} must be {expected}, got {value!r}")


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())
