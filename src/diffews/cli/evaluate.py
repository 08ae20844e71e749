"""`diffews evaluate`: the few-shot segmentation benchmark protocol (HSNet/Matcher convention)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from ..data import BENCHMARKS, EVERY_IMAGE, ORIGINAL, get_benchmark
from ..distributed import launched_processes
from ..errors import InputError
from ..evaluation.evaluate import (
    AUTHORS_PROTOCOL,
    DEFAULT_SCORE_SIZE,
    EvaluationSettings,
    authors_protocol,
    check_report_target,
    format_table,
    progress_path,
    run_evaluation,
)
from ..evaluation.predictors import BASELINES, SUPPORT_KINDS, CachedLatentsPredictor
from ..modeling import DiffewSConfig
from ..modeling.builtin import DEFAULT_MODEL
from ..modeling.config import MAX_RESOLUTION
from ..modeling.oi2m import OI2M_TIMESTEP
from ..paths import user_path
from ..processing.images import PREPROCESSING
from .common import (
    add_inference_options, add_model_options, add_prediction_options, add_threshold_options, check_resolution_flag, count,
    load_inference_pipeline, output_path,
)

DESCRIPTION = """\
Evaluate a model on a few-shot segmentation benchmark: per-class IoU accumulated over the
episodes of a fold, mIoU over the fold's classes, FB-IoU; pixels labelled 255 are ignored.
Prints a table and writes a JSON report. Rerun with the same --out to continue an interrupted run.
Under `accelerate launch` (or torchrun) the episodes are shared among the processes and the report is
the one a single process writes; see docs/scaling.md.
Data layouts and split lists: 'Benchmark data' in the README.

--protocol authors sets everything the authors' evaluation fixes: 512x512 inputs resized in 8 bits
with PIL's bilinear filter (masks: nearest), their thresholding (8-bit truncation, channel mean
> 0.25 x the largest channel value), scores at 512x512, t = 1, and the empty prompt unpadded (a model
trained with 'diffews train' from Stable Diffusion, which stores it padded to 77 tokens as the authors
trained, is conditioned on its first 2 rows, as their evaluation is). With a model converted by
'diffews convert' (default --prompt authors-eval) it computes what their evaluation computes.
"""

EPILOG = """\
examples:
  diffews evaluate --model ./diffews-coco --benchmark pascal --root data --fold 0 --shots 1
  diffews evaluate --model ./diffews-coco --benchmark coco --root data --fold all --shots 5 --out coco5.json
  diffews evaluate --model ./diffews-coco --benchmark fss --root data --shots 1 --save-vis 8
  diffews evaluate --model ./diffews-coco --benchmark pascal --root data --fold 0 --ways 2 --shots 1
  diffews evaluate --model models/coco20i-fold0 --benchmark coco --root data --fold 0 --protocol authors
  accelerate launch --multi_gpu --num_processes 4 -m diffews evaluate --model ./diffews-coco --benchmark coco --root data --fold all
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="mIoU / FB-IoU on a few-shot benchmark", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser, default=None)
    add_prediction_options(parser)
    parser.add_argument(
        "--baseline", choices=list(BASELINES), default=None,
        help="score a baseline instead of a model: all-foreground, support-mask (the support masks pasted), "
        "colour-histogram (support colour statistics back-projected)",
    )
    parser.add_argument(
        "--support", choices=SUPPORT_KINDS, default="same-class",
        help="same-class (the protocol, default) or other-class: every support set shows another class, "
        "the control that a few-shot segmenter must fail",
    )
    parser.add_argument("--benchmark", required=True, choices=list(BENCHMARKS), help="which benchmark")
    parser.add_argument("--root", required=True, metavar="DIR", help="data root (custom: the folder of class folders)")
    parser.add_argument(
        "--fold", default=None, metavar="F",
        help="fold number, or 'all' (every fold, reported with their mean); required for pascal, coco and lvis",
    )
    parser.add_argument("--shots", type=int, default=1, metavar="K", help="support images per episode (default 1)")
    parser.add_argument(
        "--ways", type=int, default=1, metavar="N",
        help="classes per episode (default 1): N > 1 runs N-way K-shot episodes (N distinct classes in the supports, "
        "the query annotated for all of them), scored by mIoU over classes and FB-IoU",
    )
    parser.add_argument("--split", default=None, help="split to evaluate: default the benchmark's test split (val; FSS-1000 and composite: test)")
    parser.add_argument(
        "--episodes", type=episode_count, default=None, metavar="N",
        help="episodes per fold, or 'all': one per image of the split (each image once, so every class is scored; "
        "COCO and LVIS draw each episode's class) (default 1000; FSS-1000 and custom folders: all)",
    )
    parser.add_argument("--seed", type=count(0), default=0, help="episode seed (default 0, as the authors)")
    parser.add_argument(
        "--protocol", choices=["diffews", "authors"], default="diffews",
        help="authors: the authors' evaluation exactly (fixes --resolution, --score-size, --threshold, --threshold-mode "
        "and --preprocessing; see above; refuses --flip-queries, --shot-fusion mean and --mask-decoder, and a model's own "
        "flip_queries is off and its shot_fusion attention); "
        "diffews (default): the options below",
    )
    parser.add_argument(
        "--score-size", default=None, metavar="S",
        help=f"score at SxS against the ground truth nearest-resized as --preprocessing says (default {DEFAULT_SCORE_SIZE}, the authors' choice), "
        "or 'original' for each image's own size",
    )
    add_threshold_options(parser)
    parser.add_argument(
        "--preprocessing", choices=PREPROCESSING, default=None,
        help="diffews (default): antialiased bilinear resize of float images, masks nearest-exact; "
        "authors: PIL bilinear on 8-bit images, masks nearest",
    )
    parser.add_argument("--resolution", type=int, default=None, metavar="R", help=f"working resolution (multiple of 8, at most {MAX_RESOLUTION}); default: the model's")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="episodes per model call (default 4)")
    add_inference_options(parser)
    parser.add_argument("--workers", type=int, default=2, metavar="N", help="data loading processes (default 2; 0 = in process)")
    parser.add_argument(
        "--splits", default=None, metavar="DIR",
        help="folder of split lists, or 'hsnet' for the lists published with HSNet (PASCAL-5i, FSS-1000; downloaded once). "
        "Default: generated from the annotations (FSS-1000: HSNet's class lists)",
    )
    parser.add_argument(
        "--trust-pickle-splits", action="store_true",
        help="allow HSNet's COCO-20i pickle lists (fold<i>.pkl) in --splits; read with a warning, plain containers only",
    )
    parser.add_argument("--out", type=output_path, default=None, metavar="FILE", help="JSON report (default evaluation-<benchmark>-fold<F>-<K>shot.json; -<N>way<K>shot with --ways N)")
    parser.add_argument(
        "--cache-latents", action="store_true",
        help="encode every distinct image and support mask once and reuse the latents across episodes "
        "(same numbers up to rounding; much faster where test images recur as supports)",
    )
    parser.add_argument("--save-vis", type=count(0), default=0, metavar="N", help="also write N side-by-side panels into <report>_vis/")
    parser.set_defaults(run=run, model_only_defaults={name: parser.get_default(name) for name in MODEL_ONLY_FLAGS})


def parse_folds(benchmark: str, fold: str | None) -> list[int | None]:
    """``--fold`` -> the folds to run; `InputError` for a missing or unknown fold."""
    count = get_benchmark(benchmark).num_folds
    if count == 0:
        if fold not in (None, "all"):
            raise InputError(f"{benchmark} has no folds; leave --fold out")
        return [None]
    if fold is None:
        raise InputError(f"{benchmark} needs --fold (0..{count - 1} or all)")
    if fold == "all":
        return list(range(count))
    if not fold.isdecimal() or int(fold) >= count:  # isdigit() takes "²", which int() refuses
        raise InputError(f"{benchmark} has folds 0..{count - 1} (or all); got --fold {fold}")
    return [int(fold)]


def parse_score_size(text: str) -> int | str:
    if text == ORIGINAL:
        return ORIGINAL
    if not text.isdecimal() or int(text) < 1:
        raise InputError(f"--score-size must be a positive number of pixels or 'original', got {text!r}")
    return int(text)


def check_protocol(args: argparse.Namespace) -> None:
    """`InputError` when --protocol authors meets an option it fixes, set to something else."""
    if args.protocol != "authors":
        return
    given = {
        "resolution": args.resolution,
        "score_size": None if args.score_size is None else parse_score_size(args.score_size),
        "threshold": args.threshold,
        "threshold_mode": args.threshold_mode,
        "preprocessing": args.preprocessing,
    }
    for name, value in given.items():
        if value is not None and value != AUTHORS_PROTOCOL[name]:
            option = "--" + name.replace("_", "-")
            raise InputError(f"{option} {value}: --protocol authors uses {option} {AUTHORS_PROTOCOL[name]}; leave {option} out")
    for option, value in (("--flip-queries", args.flip_queries), ("--mask-decoder", args.mask_decoder)):
        if value:
            raise InputError(f"{option}: --protocol authors evaluates as the authors did, without it; leave {option} out")
    if args.shot_fusion not in (None, "attention"):
        raise InputError(f"--shot-fusion {args.shot_fusion}: --protocol authors fuses shots by attention, as the authors did; leave it out")


MODEL_ONLY_FLAGS = ("flip_queries", "shot_fusion", "mask_decoder", "cache_latents", "compile", "channels_last", "dtype", "device")
"""Flags that set how a model runs: a baseline has no model, so `--baseline` refuses them."""


def check_baseline_flags(args: argparse.Namespace) -> None:
    """`InputError` when --baseline meets a flag that only a model uses (it would be silently ignored);
    `args.model_only_defaults` holds the parser's defaults of `MODEL_ONLY_FLAGS`."""
    for name, default in args.model_only_defaults.items():
        if getattr(args, name) != default:
            option = "--" + name.replace("_", "-")
            raise InputError(f"{option}: a baseline has no model to run; leave {option} out with --baseline")


def episode_count(text: str) -> int | str:
    """``--episodes``: a positive count or ``"all"``."""
    if text == EVERY_IMAGE:
        return text
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number or '{EVERY_IMAGE}', got {text!r}")
    return count


def run(args: argparse.Namespace) -> int:
    folds = parse_folds(args.benchmark, args.fold)
    check_protocol(args)
    score_size = parse_score_size(args.score_size or str(DEFAULT_SCORE_SIZE))
    if args.ways > 1 and args.save_vis:
        raise InputError("--save-vis: panels show 1-way episodes; leave it out with --ways")
    if args.ways > 1 and args.cache_latents:
        raise InputError("--cache-latents: cached latents score 1-way episodes; leave it out with --ways")
    for name in ("ways", "shots", "batch_size"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.workers < 0:
        raise InputError(f"--workers must be 0 or more, got {args.workers}")
    check_resolution_flag(args.resolution)
    if args.model is not None and args.baseline is not None:
        raise InputError("give either --model or --baseline, not both")
    try:  # before the model loads; a model's own defaults are checked when it is read
        DiffewSConfig().thresholding(args.threshold, args.threshold_mode)
    except ValueError as error:
        raise InputError(f"--threshold: {error}") from None
    fold_label = args.fold if args.fold is not None else "all"
    ways = f"{args.ways}way" if args.ways > 1 else ""
    out = user_path(args.out or f"evaluation-{args.benchmark}-fold{fold_label}-{ways}{args.shots}shot.json")
    check_report_target(out, args.save_vis)  # before the model loads
    processes = launched_processes()
    if args.baseline is not None:
        check_baseline_flags(args)
        if args.resolution is None and args.protocol != "authors":
            raise InputError("--baseline needs --resolution (the working resolution of the model it is compared with)")
        predictor, name = BASELINES[args.baseline](), f"baseline {args.baseline}"
        resolution = args.resolution or AUTHORS_PROTOCOL["resolution"]
    else:
        args.model = args.model or DEFAULT_MODEL
        pipe = load_inference_pipeline(args, processes)
        if args.protocol == "authors":  # their OI2M step, prompt and shot fusion, none of ours: a model's own flip_queries is off
            pipe.model.config = replace(pipe.model.config, timestep=OI2M_TIMESTEP, flip_queries=False, shot_fusion="attention")
            pipe.model.use_authors_eval_prompt()
        predictor = CachedLatentsPredictor(pipe) if args.cache_latents else pipe
        name, resolution = args.model, args.resolution or pipe.resolution
    split = args.split or get_benchmark(args.benchmark).default_split
    settings = EvaluationSettings(
        args.benchmark, args.root, split, args.shots, args.episodes, args.seed, resolution, score_size,
        args.threshold, args.threshold_mode, args.splits, args.trust_pickle_splits, args.support, args.preprocessing or "diffews",
        ways=args.ways,
    )
    if args.protocol == "authors":
        settings = authors_protocol(settings)
    try:
        report = run_evaluation(
            predictor, settings, folds, out, name, args.batch_size, args.workers, args.save_vis, processes=processes
        )
    except KeyboardInterrupt:
        if progress_path(out, processes).is_file():
            print(f"progress saved in {progress_path(out, processes)}: rerun the same command to continue", file=sys.stderr)
        raise
    if processes.is_main:
        print(format_table(report))
        print(f"wrote {out}")
    return 0
