"""Run a DiffewS model over the episodes of a benchmark (HSNet protocol) and report mIoU / FB-IoU.

Predictions come from `DiffewSPipeline.predict`, the computation `diffews segment` runs (with the
pipeline's mask decoder and speed options). Scoring follows the authors' evaluation by default:
predictions (decoded at the working resolution) are brought to 512 x 512 and binarised with the
model's threshold (relative 0.25 unless its config says otherwise); the ground truth is
nearest-resized to 512 x 512 (HSNet's ``use_original_imgsize = False``), by the preprocessing's mask
rule: ``nearest-exact`` (centred) with diffews' default preprocessing, ``F.interpolate``'s
``nearest`` (HSNet's and the authors') with ``preprocessing="authors"``. ``score_size="original"``
scores at each query's original size instead (HSNet's other option). `authors_protocol` gives the
settings of the authors' evaluation exactly (their preprocessing and thresholding, 512 x 512).

An evaluation keeps its progress in ``<report>.partial.json`` after every batch; rerun with the
same report path and settings, it continues from there and gives the same numbers as an
uninterrupted run.

Launched as several processes (``accelerate launch``, see `diffews.distributed`), each process
scores its own share of every fold's episodes (whole batches) and keeps its own progress file
(``<report>.partial.<rank>-of-<N>.json``); at the end of a fold their intersections and unions are
summed exactly, so the report is the one a single process writes (only its timings differ).
"""

from __future__ import annotations

import glob
import logging
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from ..data import ORIGINAL, EpisodeDataset, NWayEpisodeDataset, build_episode_dataset, collate_episodes
from ..distributed import PeerFailed, Processes
from ..errors import InputError, one_line_errors
from ..io import OutputFolder, check_replaceable, check_writable, missing_folders, remove_created_folders, write_text
from ..paths import user_path
from ..pipeline import DiffewSPipeline
from ..pipeline.pipeline import label_maps_at_sizes
from ..processing.images import MASK_NEAREST, working_image_to_array
from ..processing.overlay import overlay_mask
from ..processing.thresholds import masks_at_sizes
from ..signals import until_stopped
from .metrics import NWayMeter, SegmentationMeter
from .predictors import ModelPredictor, OtherClassSupport, Predictor, class_mask_images

logger = logging.getLogger("diffews")

DEFAULT_SCORE_SIZE = 512


@dataclass(frozen=True)
class EvaluationSettings:
    """Everything that determines the numbers of an evaluation (recorded in its report).

    Attributes:
        benchmark, root, split: the data (split "val", or "test" for FSS-1000).
        shots: support images per episode.
        episodes: per fold; ``"all"``: every image of the split once (`diffews.data.EVERY_IMAGE`); None = the
            benchmark's default (1000; FSS-1000: every test image once).
        seed: episode seed.
        resolution: working resolution of the model.
        score_size: side of the square scoring size, or "original".
        threshold, threshold_mode: binarisation (see `diffews.processing.thresholds`); None: the
            model's (`DiffewSConfig.thresholding`).
        splits: folder of split lists, "hsnet" (published lists), or None (generated; FSS-1000: HSNet's).
        trust_pickle: allow pickle split lists in `splits`.
        support: "same-class" (the protocol), or "other-class": every support set comes from
            another class (`OtherClassSupport`), the control that a few-shot segmenter must fail.
        preprocessing: how images and masks are resized, "diffews" or "authors" (see
            `diffews.processing.images`).
        ways: classes per episode; more than 1 runs N-way episodes (`diffews.data.NWayEpisodeDataset`)
            scored by `NWayMeter` (mIoU over classes, FB-IoU of any class vs background).
    """

    benchmark: str
    root: str
    split: str
    shots: int = 1
    episodes: int | str | None = None
    seed: int = 0
    resolution: int = 512
    score_size: int | str = DEFAULT_SCORE_SIZE
    threshold: float | None = None
    threshold_mode: str | None = None
    splits: str | None = None
    trust_pickle: bool = False
    support: str = "same-class"
    preprocessing: str = "diffews"
    ways: int = 1

    def dataset(self, fold: int | None) -> EpisodeDataset | OtherClassSupport:
        """The episodes of `fold` (with other-class supports if `support` says so); `InputError` for bad data."""
        if self.ways > 1 and self.support != "same-class":
            raise InputError("--ways: N-way episodes take each class's supports from that class; leave --support out")
        episodes = build_episode_dataset(
            self.benchmark, self.root, self.split, fold, self.shots, self.resolution, self.episodes, self.seed,
            splits=self.splits, trust_pickle=self.trust_pickle, target_size=self.score_size,
            preprocessing=self.preprocessing, ways=self.ways,
        )
        if self.support == "same-class":
            return episodes
        try:
            return OtherClassSupport(episodes)
        except ValueError as error:
            raise InputError(str(error)) from None


AUTHORS_PROTOCOL = {
    "resolution": 512, "score_size": 512, "threshold": 0.25, "threshold_mode": "authors", "preprocessing": "authors",
}
"""What the authors' evaluation fixes besides the data: 512 x 512 inputs resized in 8 bits by PIL,
scores at 512 x 512, their 8-bit thresholding at 0.25 (with t = 1 and VAE posterior means, which
every diffews model uses)."""


def authors_protocol(settings: EvaluationSettings) -> EvaluationSettings:
    """`settings` with everything the authors' evaluation fixes (`AUTHORS_PROTOCOL`) set to theirs."""
    return replace(settings, **AUTHORS_PROTOCOL)


@torch.no_grad()
def predict(
    predictor: Predictor,
    batch: dict[str, Any],
    threshold: float,
    threshold_mode: str,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> list[torch.Tensor]:
    """Binary predictions ``(H_i, W_i)`` bool of a collated batch of episodes, on the CPU, each at
    ``sizes[i]`` (default: the size of its ``"query_target"``).

    Each episode uses its own support set (for a model: a support context with S = B).
    """
    mask_images = predictor.mask_images(batch)
    sizes = sizes if sizes is not None else [tuple(target.shape) for target in batch["query_target"]]
    return [torch.from_numpy(mask) for mask, _, _ in masks_at_sizes(mask_images, list(sizes), threshold, threshold_mode)]


@torch.no_grad()
def predict_labels(predictor: Predictor, batch: dict[str, Any], threshold: float, threshold_mode: str) -> list[torch.Tensor]:
    """Label maps ``(H_i, W_i)`` uint8 of a collated batch of N-way episodes, each at the size of its
    ``"query_target"``: every class binarised alone, then `diffews.processing.labels.label_map`."""
    mask_images = class_mask_images(predictor, batch)
    sizes = [tuple(target.shape) for target in batch["query_target"]]
    rules = [(threshold, threshold_mode)] * mask_images.shape[1]
    return [torch.from_numpy(labels) for labels, _, _, _ in label_maps_at_sizes(mask_images, sizes, rules)]


def score_batch(predictor: Predictor, batch: dict[str, Any], settings: EvaluationSettings, meter: SegmentationMeter | NWayMeter) -> int:
    """Predict a collated batch of episodes (1-way or N-way), add it to `meter`; returns its episode count."""
    if "class_ids" in batch:
        predictions, classes = predict_labels(predictor, batch, settings.threshold, settings.threshold_mode), batch["class_ids"]
    else:
        predictions, classes = predict(predictor, batch, settings.threshold, settings.threshold_mode), batch["class_id"]
    for prediction, target, class_id in zip(predictions, batch["query_target"], classes):
        meter.update(prediction[None], target[None], class_id[None])
    return len(classes)


def new_meter(dataset: EpisodeDataset | OtherClassSupport) -> SegmentationMeter | NWayMeter:
    """The meter that scores `dataset`'s episodes."""
    kind = NWayMeter if isinstance(dataset, NWayEpisodeDataset) else SegmentationMeter
    return kind(dataset.split.class_ids)


def evaluate_fold(
    predictor: Predictor,
    dataset: EpisodeDataset | OtherClassSupport,
    settings: EvaluationSettings,
    meter: SegmentationMeter | NWayMeter,
    start: int = 0,
    batch_size: int = 4,
    workers: int = 0,
    on_batch=None,
    progress: bool = True,
    description: str = "evaluating",
    episodes: range | None = None,
) -> None:
    """Score `episodes` (default: all of `dataset`) from their ``start``-th on into `meter`, calling
    ``on_batch(episodes_done)`` after each batch.

    `settings` must hold the threshold and mode to use (see `resolved`)."""
    episodes = range(len(dataset)) if episodes is None else episodes
    loader = DataLoader(Subset(dataset, episodes[start:]), batch_size=batch_size, num_workers=workers, collate_fn=collate_episodes)
    with tqdm(total=len(episodes), initial=start, desc=description, unit="episode", disable=not progress) as bar:
        for batch in until_stopped(one_line_errors(loader)):  # a worker's InputError arrives with its traceback in the message
            bar.update(score_batch(predictor, batch, settings, meter))
            bar.set_postfix(mIoU=f"{meter.compute()['miou']:.2f}")
            if on_batch is not None:
                on_batch(meter.episodes)


def run_evaluation(
    predictor: Predictor | DiffewSPipeline,
    settings: EvaluationSettings,
    folds: Sequence[int | None],
    report_path: str | Path,
    model_name: str,
    batch_size: int = 4,
    workers: int = 0,
    save_vis: int = 0,
    progress: bool = True,
    processes: Processes = Processes(),
) -> dict[str, Any]:
    """Evaluate `folds` with `predictor` (a pipeline, with its mask decoder and speed options, or any
    `Predictor`), write the JSON report (and `save_vis` panels), return the report.

    All folds' data are checked before anything is written. Resumes from ``<report>.partial.json``
    when it exists and was written with the same settings and model. With several `processes`
    (every one of them calls this), each scores its shard of the episodes and resumes from its own
    progress file; the main process writes the report and the panels; every process returns the report.
    """
    report_path = user_path(report_path)
    if isinstance(predictor, DiffewSPipeline):
        predictor = ModelPredictor(predictor, pad_to=batch_size)
    settings = resolved(settings, predictor)
    datasets = {fold: settings.dataset(fold) for fold in folds}
    header = {
        "settings": _settings_record(settings),
        "model": model_name,
        "device": predictor.device,
        "dtype": predictor.dtype,
        **predictor.record,
        "folds": [_fold_name(f) for f in folds],
    }
    partial_path = progress_path(report_path, processes)
    check_report_target(report_path, save_vis)
    state = _resume_state(report_path, header, processes, batch_size)
    created = missing_folders(report_path.parent)
    resumed = partial_path.is_file()
    try:
        report_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{report_path.parent}: cannot create the report's folder ({error.strerror or error})") from None

    try:
        results = {}
        for fold, dataset in datasets.items():
            name = _fold_name(fold)
            fold_state = state["progress"].setdefault(name, {"done": 0, "elapsed_s": 0.0, "meter": None})
            meter = new_meter(dataset)
            if fold_state["meter"] is not None:
                meter.load_state_dict(fold_state["meter"])
            prior, run_start, first = fold_state["elapsed_s"], time.perf_counter(), fold_state["done"]

            def save_progress(done: int) -> None:
                fold_state.update(done=done, elapsed_s=prior + time.perf_counter() - run_start, meter=meter.state_dict())
                try:
                    write_text(partial_path, json.dumps(state))
                except FileNotFoundError:
                    if report_path.parent.is_dir():
                        raise
                    raise InputError(  # a failed peer removed the folder it made, still empty, before this process wrote in it
                        f"{report_path.parent}: the report's folder disappeared during the run (another process of the run "
                        "stopped and removed it, or it was deleted)"
                    ) from None

            shard = processes.shard(len(dataset), batch_size)
            evaluate_fold(
                predictor, dataset, settings, meter, first, batch_size, workers, save_progress, progress and processes.is_main,
                f"{settings.benchmark} fold {name}" + (f" ({processes})" if processes.count > 1 else ""), shard,
            )
            elapsed = processes.max(prior + time.perf_counter() - run_start)
            meter = meter.merged(processes.sum)
            scores = meter.compute()
            if scores["unscored"] and processes.is_main:
                logger.warning(
                    "%s fold %s: %d of %d classes got no episode and count as IoU 0 in mIoU; score more episodes "
                    "(--episodes all: one per image of the split, %d)", settings.benchmark, name, len(scores["unscored"]),
                    len(scores["per_class_iou"]), len(dataset.split.pairs),
                )
            results[name] = {
                "miou": scores["miou"],
                "fbiou": scores["fbiou"],
                "per_class_iou": {dataset.split.class_names[c]: v for c, v in scores["per_class_iou"].items()},
                "unscored_classes": [dataset.split.class_names[c] for c in scores["unscored"]],
                "episodes": meter.episodes,
                "elapsed_s": elapsed,
                "episodes_per_s": meter.episodes / max(elapsed, 1e-9),
            }
        report = {
            **header,
            "results": results,
            "mean": {key: float(np.mean([r[key] for r in results.values()])) for key in ("miou", "fbiou")},
        }
        if processes.is_main:
            write_text(report_path, json.dumps(report, indent=2) + "\n")
    except BaseException as error:
        if isinstance(error, InputError) and not isinstance(error, PeerFailed) and not resumed:
            partial_path.unlink(missing_ok=True)  # bad input met mid-run (a corrupt image): this run's progress goes
        remove_created_folders(created)  # only while empty: saved progress (an interrupt, a full disk, a stopped peer) stays
        raise
    processes.barrier()  # every shard's progress stays until the report is written
    partial_path.unlink(missing_ok=True)
    if save_vis and processes.is_main:
        fold = folds[0]
        save_visualisations(predictor, datasets[fold], settings, save_vis, visualisation_folder(report_path))
    return report


def resolved(settings: EvaluationSettings, predictor: Predictor) -> EvaluationSettings:
    """`settings` with the predictor's threshold and mode (a model's: its config's) in place of None; checked."""
    threshold, mode = predictor.config.thresholding(settings.threshold, settings.threshold_mode)
    return replace(settings, threshold=threshold, threshold_mode=mode)


def check_report_target(report_path: Path, save_vis: int = 0) -> None:
    """`InputError` unless the report (and the `save_vis` panels beside it) may be written: its folder
    accepts files; the report is new or an earlier diffews evaluation report, never a folder or a
    user's file; the panels' folder is new, or holds nothing by those names but diffews panels."""
    check_writable(report_path.parent, "choose another --out")
    if report_path.is_dir():
        raise InputError(f"{report_path}: is a folder; the report is a JSON file, give --out a file name")
    if report_path.exists() and not _is_evaluation_report(report_path):
        raise InputError(f"{report_path}: already exists and is not a diffews evaluation report; choose another --out or move the file")
    if save_vis:
        folder = visualisation_folder(report_path)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder}: is a file, where the evaluation puts its panels; choose another --out or move the file")
        check_replaceable(folder, [_panel_name(index) for index in range(save_vis)])


def _is_evaluation_report(path: Path) -> bool:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and {"settings", "model", "results"} <= content.keys()


def visualisation_folder(report_path: Path) -> Path:
    """Where `--save-vis` panels of the report go: ``<report stem>_vis`` beside it."""
    return report_path.with_name(f"{report_path.stem}_vis")


def _panel_name(index: int) -> str:
    return f"episode_{index:05d}.png"


def progress_path(report_path: Path, processes: Processes = Processes()) -> Path:
    """Where an evaluation writing `report_path` keeps its progress: ``<report>.partial.json``;
    with several processes, each its own: ``<report>.partial.<rank>-of-<count>.json``."""
    suffix = ".partial.json" if processes.count == 1 else f".partial.{processes.rank}-of-{processes.count}.json"
    return report_path.with_name(report_path.name + suffix)


def _progress_process_count(report_path: Path, path: Path) -> int | None:
    """The process count of the run that wrote the progress file `path` of `report_path`, None if it is not one."""
    rest = path.name.removeprefix(report_path.name)
    if rest == ".partial.json":
        return 1
    match = re.fullmatch(r"\.partial\.\d+-of-(\d+)\.json", rest)
    return int(match.group(1)) if match else None


def _fold_name(fold: int | None) -> str:
    return "all" if fold is None else str(fold)


def _settings_record(settings: EvaluationSettings) -> dict[str, Any]:
    record = asdict(settings)
    record["root"] = str(user_path(settings.root).resolve())
    record["scoring"] = (
        "original image size" if settings.score_size == ORIGINAL
        else f"{settings.score_size}x{settings.score_size}, ground truth resized with {MASK_NEAREST[settings.preprocessing]}"
    )
    return record


def _resume_state(report_path: Path, header: dict[str, Any], processes: Processes, batch_size: int) -> dict[str, Any]:
    """This process's saved progress for the same settings, model and process count (and with
    several processes, batch size: it decides the shards), or a fresh state."""
    for path in sorted(report_path.parent.glob(f"{glob.escape(report_path.name)}.partial.*json")):
        count = _progress_process_count(report_path, path)
        if count is not None and count != processes.count:
            raise InputError(
                f"{path}: saved progress of this evaluation run with {_processes(count)}, now run with {_processes(processes.count)}; "
                f"rerun it with {_processes(count)} to continue, or delete it to start over"
            )
    partial_path = progress_path(report_path, processes)
    header = {**header, "shards": {"processes": processes.count, "batch_size": batch_size}} if processes.count > 1 else header
    if partial_path.exists() and not partial_path.is_file():
        raise InputError(f"{partial_path}: is not a file, where this evaluation keeps its progress; move it or choose another --out")
    if not partial_path.is_file():
        return {**header, "progress": {}}
    try:
        state = json.loads(partial_path.read_text())
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        state = None
    if not isinstance(state, dict) or not isinstance(state.get("progress"), dict):
        raise InputError(f"{partial_path}: unreadable saved progress; delete it to start over")
    if {k: state.get(k) for k in header} != header:
        raise InputError(
            f"{partial_path}: saved progress of an evaluation with other settings, model"
            + (" or --batch-size" if processes.count > 1 else "") + "; delete it or choose another --out"
        )
    return state


def _processes(count: int) -> str:
    return "1 process" if count == 1 else f"{count} processes"


def save_visualisations(predictor: Predictor, dataset: EpisodeDataset | OtherClassSupport, settings: EvaluationSettings, count: int, folder: Path) -> list[Path]:
    """Write panels of the first `count` episodes: supports with masks | query | prediction | ground truth."""
    settings = resolved(settings, predictor)
    written = []
    with OutputFolder(folder) as out:
        for index in range(min(count, len(dataset))):
            item = dataset[index]
            batch = collate_episodes([{**item, "query_target": item["query_mask"][0].to(torch.uint8)}])
            prediction = predict(predictor, batch, settings.threshold, settings.threshold_mode)[0].numpy()
            panels = [
                overlay_mask(_to_pil(image), mask[0].numpy() > 0.5) for image, mask in zip(item["support_images"], item["support_masks"])
            ]
            query = _to_pil(item["query_image"])
            truth = item["query_mask"][0].numpy() > 0.5
            panels += [query, overlay_mask(query, prediction, color=(40, 200, 40)), overlay_mask(query, truth)]
            written.append(out.save_image(_side_by_side(panels), _panel_name(index)))
    return written


def _to_pil(image: torch.Tensor) -> Image.Image:
    """``(3, H, W)`` in [-1, 1] -> RGB PIL image."""
    return Image.fromarray(working_image_to_array(image))


def _side_by_side(images: list[Image.Image], gap: int = 4) -> Image.Image:
    width = sum(i.width for i in images) + gap * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(i.height for i in images)), (255, 255, 255))
    x = 0
    for image in images:
        canvas.paste(image, (x, 0))
        x += image.width + gap
    return canvas


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table, with the settings that define the numbers."""
    s, m = report["settings"], report.get("model_settings")
    lines = [
        f"{s['benchmark']} {s['split']}, " + (f"{s['ways']}-way " if s.get("ways", 1) > 1 else "") + f"{s['shots']}-shot, seed {s['seed']}, model {report['model']}"
        + (" with its distilled mask decoder" if report.get("mask_decoder") else "")
        + f" ({report['device']}, {report['dtype']})"
        + (", supports of another class" if s["support"] == "other-class" else ""),
        f"scored at {s['scoring']}; threshold {s['threshold']} ({s['threshold_mode']}); working resolution {s['resolution']}, "
        f"{s['preprocessing']} preprocessing"
        + (f"; t = {m['timestep']}, prompt {m['prompt']} ({m['prompt_tokens']} tokens)" if m else "")
        + ("; queries averaged with their mirror image" if m and m.get("flip_queries") else "")
        + ("; each support predicts alone, masks averaged" if m and m.get("shot_fusion") == "mean" and s["shots"] > 1 else ""),
        f"{'fold':>5} {'mIoU':>7} {'FB-IoU':>7} {'episodes':>9} {'episodes/s':>11}",
    ]
    for name, r in report["results"].items():
        lines.append(f"{name:>5} {r['miou']:7.2f} {r['fbiou']:7.2f} {r['episodes']:9d} {r['episodes_per_s']:11.2f}")
    if len(report["results"]) > 1:
        lines.append(f"{'mean':>5} {report['mean']['miou']:7.2f} {report['mean']['fbiou']:7.2f}")
    return "\n".join(lines)
