"""`diffews segment`: segment query images from a few annotated support images."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from ..distributed import launched_processes
from ..errors import InputError
from ..io import OutputFolder, check_replaceable, expand_image_paths, output_stems
from ..modeling import DiffewSConfig
from ..modeling.config import MAX_RESOLUTION
from ..paths import user_path
from ..processing.images import check_image_file, check_support_shapes, load_image, load_mask, support_label
from ..pipeline import DiffewSPipeline
from ..processing.coco_export import CocoWriter, require_pycocotools
from ..processing.labels import label_image
from ..processing.overlay import mask_image, overlay_labels, overlay_mask
from .class_supports import ClassFiles, add_class_options, add_names_option, read_classes
from .common import (
    add_inference_options, add_model_options, add_prediction_options, add_threshold_options, check_resolution_flag, load_inference_pipeline,
    output_path,
)

DESCRIPTION = """\
Segment the class shown by the support images in every query image, or several named classes.

One class: each --support gives one example image and its binary mask (white = the class; see the
README for palette, 0/1 and RGBA masks). For every query, writes <name>_mask.png (0/255) and
<name>_overlay.png into --out.

Several classes (--class, --supports or --support-labels): for every query, writes
<name>_labels.png (palette PNG: 0 = background, i = the i-th class) and <name>_overlay.png with a
legend; --format coco also writes annotations.json (COCO, RLE masks) for all queries.

A support mask need not match its image's size, only its aspect ratio: it is resized with nearest
neighbour (a --support-labels label map must match its image exactly). Nothing is
written if any input is bad. Under `accelerate launch` (or torchrun) the queries are shared among the
processes; see docs/scaling.md.
"""

EPILOG = """\
examples:
  diffews segment --model ./diffews-coco --support dog.jpg dog_mask.png --query photos/ --out masks/
  diffews segment --model ./diffews-coco --support a.jpg a.png --support b.jpg b.png --query 'shots/*.jpg' --out out/
  diffews segment --model ./diffews-coco --class cat c.jpg c.png --class dog d.jpg d.png --query photos/ --out out/
  diffews segment --model ./diffews-coco --supports examples/ --query photos/ --out out/ --format coco --instances
  diffews segment --model ./diffews-coco --support-labels s.jpg s_labels.png --names names.txt --query photos/ --out out/
  accelerate launch --multi_gpu --num_processes 4 -m diffews segment --model ./diffews-coco --support dog.jpg dog_mask.png --query photos/ --out masks/
"""

COCO_FILE = "annotations.json"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "segment",
        help="segment query images from a few examples",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    add_prediction_options(parser)
    supports = parser.add_mutually_exclusive_group(required=True)
    supports.add_argument(
        "--support", nargs=2, action="append", metavar=("IMG", "MASK"),
        help="a support image and its mask; repeat for K shots (one class: writes binary masks)",
    )
    add_class_options(supports)
    add_names_option(parser)
    parser.add_argument("--query", nargs="+", required=True, metavar="PATH", help="query image files, folders or glob patterns")
    parser.add_argument("--out", type=output_path, required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument(
        "--format", choices=["png", "coco"], default="png",
        help=f"several classes: png writes label maps and overlays; coco also writes {COCO_FILE} (default png)",
    )
    parser.add_argument("--instances", action="store_true", help="with --format coco: one annotation per connected component of a class")
    add_threshold_options(parser)
    parser.add_argument("--resolution", type=int, default=None, metavar="R", help=f"working resolution (multiple of 8, at most {MAX_RESOLUTION}); default: the model's (256 for the built-in model, 512 at Stable Diffusion 2.1 size)")
    parser.add_argument("--batch-size", type=int, default=4, metavar="N", help="queries per model call (default 4)")
    add_inference_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_resolution_flag(args.resolution)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    queries = expand_image_paths(args.query)
    stems = output_stems(queries)
    classes = read_classes(args)
    processes = launched_processes()
    writer = BinaryOutputs(args) if classes is None else ClassOutputs(args, classes, queries, processes.count)
    for path in queries:
        check_image_file(path)
    try:  # before the model loads and any folder is made; the model's own defaults are checked once it is read
        DiffewSConfig().thresholding(args.threshold, args.threshold_mode)
    except ValueError as error:
        raise InputError(f"--threshold: {error}") from None
    check_replaceable(args.out, writer.output_names(stems), [*queries, *input_files(args)])

    mine = processes.shard(len(queries), args.batch_size)  # whole batches: the batches of a one-process run
    with OutputFolder(args.out, processes) as out:
        pipe = load_inference_pipeline(args, processes)
        pipe.set_progress_bar_config(disable=True)
        try:
            pipe.model.config.thresholding(args.threshold, args.threshold_mode)
            writer.encode_support(pipe)
        except ValueError as error:
            raise InputError(str(error)) from None
        with tqdm(total=len(mine), desc="segmenting", unit="img", disable=not processes.is_main) as bar:
            for start in range(mine.start, mine.stop, args.batch_size):
                paths = queries[start : start + args.batch_size]
                images = [load_image(path) for path in paths]
                try:
                    writer.segment(pipe, out, paths, stems[start : start + len(paths)], images)
                except ValueError as error:
                    raise InputError(str(error)) from None
                bar.update(len(paths))
        writer.finish(out)
    if processes.is_main:
        print(f"wrote {len(queries)} {writer.kind} to {out.path}")
    return 0


def input_files(args: argparse.Namespace) -> list[Path]:
    """The support files named on the command line (a --supports folder's files are checked by content)."""
    named = [*(args.support or []), *(files for _, *files in args.classes or []), *(args.support_labels or [])]
    return [user_path(file) for pair in named for file in pair] + ([user_path(args.names)] if args.names else [])


def output_name(stem: str, kind: str) -> str:
    """The file a query's output of `kind` (one of a writer's ``OUTPUTS``) goes to: ``<stem>_<kind>.png``."""
    return f"{stem}_{kind}.png"


def query_output_names(stems: list[str], kinds: tuple[str, ...]) -> list[str]:
    """Every per-query output file of the queries `stems`."""
    return [output_name(stem, kind) for stem in stems for kind in kinds]


class BinaryOutputs:
    """One class from --support: `<name>_mask.png` (0/255) and `<name>_overlay.png` per query."""

    kind = "masks and overlays"
    OUTPUTS = ("mask", "overlay")

    def __init__(self, args: argparse.Namespace) -> None:
        if args.format != "png" or args.instances:
            raise InputError("--format coco and --instances need named classes (--class, --supports or --support-labels)")
        self.args = args
        self.images = [load_image(image) for image, _ in args.support]
        self.masks = [load_mask(mask, support_label(i, mask)) for i, (_, mask) in enumerate(args.support, 1)]
        check_support_shapes(self.images, self.masks, [mask for _, mask in args.support])
        self.support = None

    def output_names(self, stems: list[str]) -> list[str]:
        return query_output_names(stems, self.OUTPUTS)

    def encode_support(self, pipe: DiffewSPipeline) -> None:
        sources = [mask for _, mask in self.args.support]
        self.support = pipe.encode_support(self.images, self.masks, sources=sources, resolution=self.args.resolution)

    def segment(self, pipe: DiffewSPipeline, out: OutputFolder, paths: list[Path], stems: list[str], images: list[Image.Image]) -> None:
        args = self.args
        result = pipe(
            images, support=self.support, threshold=args.threshold, threshold_mode=args.threshold_mode,
            resolution=args.resolution, batch_size=args.batch_size,
        )
        for stem, image, mask in zip(stems, images, result.masks):
            out.save_image_later(lambda mask=mask: mask_image(mask), output_name(stem, "mask"))
            out.save_image_later(lambda image=image, mask=mask: overlay_mask(image, mask), output_name(stem, "overlay"))

    def finish(self, out: OutputFolder) -> None:
        """Nothing is written after the last query."""


class ClassOutputs:
    """Several classes: `<name>_labels.png` and `<name>_overlay.png` per query; `annotations.json`
    for all queries with --format coco."""

    kind = "label maps and overlays"
    OUTPUTS = ("labels", "overlay")

    def __init__(self, args: argparse.Namespace, classes: ClassFiles, queries: list[Path], processes: int = 1) -> None:
        if args.instances and args.format != "coco":
            raise InputError("--instances: only used with --format coco")
        if args.format == "coco" and processes > 1:
            raise InputError(f"--format coco: {COCO_FILE} collects every query; run it in one process, not {processes}")
        self.args = args
        self.classes = classes
        for images, masks, sources in classes.values():
            check_support_shapes(images, masks, sources)
        self.contexts: dict = {}
        self.coco = None
        self.coco_names: dict[Path, str] = {}
        if args.format == "coco":
            require_pycocotools()
            # file names relative to the queries' common folder: queries of several folders keep their
            # sub-folders; names as given (a link keeps its own name, not its target's)
            resolved = {path: Path(os.path.abspath(path)) for path in queries}
            root = Path(os.path.commonpath([str(full.parent) for full in resolved.values()]))
            self.coco_names = {path: full.relative_to(root).as_posix() for path, full in resolved.items()}
            target = user_path(args.out) / COCO_FILE
            if target.exists() and not target.is_file() or target.is_symlink():
                raise InputError(f"{target}: cannot write the COCO file (something other than a file is in the way)")
            self.coco = CocoWriter(list(classes), instances=args.instances)
            self.kind += f" and {COCO_FILE}"

    def output_names(self, stems: list[str]) -> list[str]:
        return query_output_names(stems, self.OUTPUTS) + ([COCO_FILE] if self.coco is not None else [])

    def encode_support(self, pipe: DiffewSPipeline) -> None:
        given = {name: (images, masks) for name, (images, masks, _) in self.classes.items()}
        sources = {name: labels for name, (_, _, labels) in self.classes.items()}
        self.contexts = pipe.encode_classes(given, sources=sources, resolution=self.args.resolution)

    def segment(self, pipe: DiffewSPipeline, out: OutputFolder, paths: list[Path], stems: list[str], images: list[Image.Image]) -> None:
        args = self.args
        result = pipe.segment_classes(
            images, self.contexts, threshold=args.threshold, threshold_mode=args.threshold_mode,
            resolution=args.resolution, batch_size=args.batch_size,
        )
        names = result.class_names
        for path, stem, image, labels, probabilities in zip(paths, stems, images, result.labels, result.probabilities):
            out.save_image_later(lambda labels=labels: label_image(labels, len(names)), output_name(stem, "labels"))
            out.save_image_later(lambda image=image, labels=labels: overlay_labels(image, labels, names), output_name(stem, "overlay"))
            if self.coco is not None:
                self.coco.add(self.coco_names[path], labels, probabilities)

    def finish(self, out: OutputFolder) -> None:
        """Write the COCO file once every query is in it."""
        if self.coco is not None:
            with out.write(COCO_FILE) as staged:
                staged.write_text(json.dumps(self.coco.to_dict()))
