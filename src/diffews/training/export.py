"""Final export: a `DiffewSModel.from_pretrained`-loadable folder with a model card, written atomically."""

from __future__ import annotations

from pathlib import Path

from ..io import replace_folder
from ..modeling import DiffewSModel
from ..modeling.card import render_card
from ..modeling.prompt import describe_prompt
from .config import TrainConfig

MODEL_DIR = "model"


def export_model(
    model: DiffewSModel, config: TrainConfig, steps: int, metrics: dict[str, float] | None, val_episodes: int = 0
) -> Path:
    """Save `model` and its card to ``<output_dir>/model`` (replacing an older export only once complete).

    Raises:
        InputError: the folder could not be written (full disk, permissions): one line naming it;
            nothing of the new export is left, an older export is kept.
    """

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        (folder / "README.md").write_text(model_card(model, config, steps, metrics, val_episodes))

    target = Path(config.checkpointing.output_dir) / MODEL_DIR
    return replace_folder(target, write, "export the model", "; the checkpoints hold the trained weights")


def model_card(
    model: DiffewSModel, config: TrainConfig, steps: int, metrics: dict[str, float] | None, val_episodes: int = 0
) -> str:
    """Markdown model card: what was trained, on what, how, and its scores on `val_episodes` validation episodes."""
    data, optim = config.data, config.optim
    setting = "in-context (all classes)" if data.fold is None else f"strict few-shot, held-out fold {data.fold}"
    if metrics:
        scores = "\n".join(f"| {name} | {value:.2f} |" for name, value in metrics.items())
        validation = (
            f"Validation on {val_episodes} fixed '{config.validation.val_split}' episodes "
            f"with {data.shots} shot(s), scored at {config.model.resolution} px:\n\n| metric | value |\n|---|---|\n{scores}\n"
        )
    else:
        validation = "No validation was run (validation.val_every = 0).\n"
    ema = " EMA weights (decay {:g}).".format(config.ema.ema_decay) if config.ema.use_ema else ""
    summary = f"""DiffewS few-shot segmenter fine-tuned from `{config.model.pretrained}` with `diffews train`.

- Data: {data.benchmark}, {setting}, trained with K in 1..{data.shots} shot(s) per step.
- Prompt embedding: {describe_prompt(model.config.prompt, model.prompt_embedding.shape[1])}; inference uses the same.
- Training: {steps} optimizer steps of {optim.batch_size} x {optim.gradient_accumulation_steps} episodes per process,
  AdamW ({optim.optimizer}) lr {optim.learning_rate:g} ({optim.lr_scheduler} schedule), weight decay {optim.weight_decay:g},
  {config.precision.mixed_precision} mixed precision, seed {config.run.seed}.{ema}
"""
    sections = f"""## Validation

{validation}
## Training configuration

```yaml
{config.to_yaml()}```
"""
    return render_card("DiffewS model", summary, sections)
