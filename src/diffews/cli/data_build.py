"""`diffews data icons | emoji | backgrounds | composite`: build a few-shot benchmark from cut-out objects."""

from __future__ import annotations

import argparse

from ..data.backgrounds import WALLPAPER_ROOTS, gather_backgrounds
from ..data.emoji import NOTO_FONT, SYMBOLA_FONT, gather_emoji
from ..data.emoji import SETS as EMOJI_SETS
from ..data.icons import EXCLUDED_CONTEXTS, ICON_ROOT, RESERVED_THEMES, gather_icons
from ..data.synthesize import LAYOUT_TRIES, CompositeOptions, build_composite
from ..errors import InputError
from ..paths import user_path
from .common import count, output_path

DEFAULTS = CompositeOptions()


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the build commands (icons, emoji, backgrounds, composite) to `diffews data`."""
    icons = commands.add_parser(
        "icons",
        help="gather cut-out objects from installed icon themes: one class per icon name drawn by several themes",
        description="Gather cut-outs from freedesktop icon themes (Debian: the *-icon-theme packages). "
        f"Themes {', '.join(RESERVED_THEMES)} are reserved for independent evaluation: used only when named in --themes.",
    )
    icons.add_argument("--out", type=output_path, required=True, metavar="DIR", help="new folder: <class>/<theme>__<name>.png, manifest.jsonl, classes.json")
    icons.add_argument("--icon-root", default=str(ICON_ROOT), metavar="DIR", help="folder of icon themes (default %(default)s)")
    icons.add_argument("--themes", default=None, metavar="A,B", help="theme folders to use (default: one theme per installed package)")
    icons.add_argument("--size", type=count(8), default=192, metavar="PX", help="longest side of a cut-out before cropping (default %(default)s)")
    icons.add_argument(
        "--min-size", type=count(1), default=32, metavar="PX", help="skip icons designed smaller than this, or whose object is under half of it (default %(default)s)"
    )
    icons.add_argument("--min-themes", type=count(1), default=3, metavar="N", help="themes that must draw a name for it to be a class (default %(default)s)")
    icons.add_argument(
        "--min-silhouette-iou", type=float, default=0.0, metavar="X",
        help="remove cut-outs whose silhouette agrees less than this mean IoU with the rest of their class, least typical "
        "first; a class left with fewer than --min-themes is dropped (default %(default)s: keep all)",
    )
    icons.add_argument(
        "--exclude-contexts", default=",".join(EXCLUDED_CONTEXTS), metavar="A,B",
        help="icon contexts to skip (default %(default)s; empty: none)",
    )
    icons.add_argument("--workers", type=count(1), default=1, metavar="N", help="rasterising processes (default %(default)s)")
    icons.set_defaults(run=run_icons)

    emoji = commands.add_parser(
        "emoji",
        help="gather cut-out objects from installed emoji sets: one class per emoji drawn by several sets",
        description="Gather emoji cut-outs (Debian: fonts-noto-color-emoji, ruby-gemojione, fonts-symbola) in the layout of "
        "'diffews data icons'; pass the folder to 'diffews data composite --objects' beside an icon folder or alone.",
    )
    emoji.add_argument("--out", type=output_path, required=True, metavar="DIR", help="new folder: <class>/<set>__<code point>.png, manifest.jsonl, classes.json")
    emoji.add_argument("--sets", default=",".join(EMOJI_SETS), metavar="A,B", help="emoji sets to draw with (default %(default)s)")
    emoji.add_argument("--size", type=int, default=192, metavar="PX", help="longest side of a cut-out (default %(default)s)")
    emoji.add_argument("--min-sets", type=int, default=3, metavar="N", help="sets that must draw an emoji for it to be a class (default %(default)s)")
    emoji.add_argument(
        "--min-silhouette-iou", type=float, default=0.0, metavar="X",
        help="remove cut-outs whose silhouette agrees less than this with the rest of their class (default %(default)s: keep all)",
    )
    emoji.add_argument("--emojione", default=None, metavar="DIR", help="the gemojione gem folder (default: found under the Ruby gem folders)")
    emoji.add_argument("--noto-font", default=str(NOTO_FONT), metavar="FILE", help="Noto Color Emoji font (default %(default)s)")
    emoji.add_argument("--symbola-font", default=str(SYMBOLA_FONT), metavar="FILE", help="Symbola font (default %(default)s)")
    emoji.set_defaults(run=run_emoji)

    backgrounds = commands.add_parser(
        "backgrounds", help="gather background photos from wallpaper folders and generate textures",
        description="Background images for 'diffews data composite': wallpapers (Debian: gnome-backgrounds, ...) and generated textures.",
    )
    backgrounds.add_argument("--out", type=output_path, required=True, metavar="DIR", help="new folder of JPEG backgrounds with manifest.jsonl")
    backgrounds.add_argument(
        "--wallpapers", default=",".join(map(str, WALLPAPER_ROOTS)), metavar="A,B",
        help="folders searched for wallpapers (default %(default)s; empty: none)",
    )
    backgrounds.add_argument("--textures", type=count(0), default=200, metavar="N", help="generated textures to add (default %(default)s)")
    backgrounds.add_argument("--size", type=count(8), default=512, metavar="PX", help="shorter side of the written images: larger wallpapers are scaled down to it, none up (default %(default)s)")
    backgrounds.add_argument("--seed", type=count(0, 2**32 - 1), default=0, help="texture seed (default %(default)s)")
    backgrounds.set_defaults(run=run_backgrounds)

    composite = commands.add_parser(
        "composite", help="build a few-shot benchmark by pasting cut-out objects onto backgrounds",
        description="Paste cut-outs (<objects>/<class>/<source>__<name>.png, RGBA) onto backgrounds: a benchmark with "
        "trn/val/test images, masks, 4 class folds and a manifest, read by --benchmark composite.",
    )
    composite.add_argument(
        "--objects", required=True, nargs="+", metavar="DIR",
        help="cut-outs: <class>/<source>__<name>.png (RGBA; alpha = mask); several folders (icons and emoji) add up",
    )
    composite.add_argument("--backgrounds", required=True, metavar="DIR", help="folder of background images")
    composite.add_argument("--out", type=output_path, required=True, metavar="DIR", help="new folder for the benchmark")
    composite.add_argument("--seed", type=count(0), default=DEFAULTS.seed, help="the same seed writes the same bytes (default %(default)s)")
    composite.add_argument("--size", type=int, default=DEFAULTS.size, metavar="PX", help="image side (default %(default)s)")
    composite.add_argument("--images-per-class", type=int, default=DEFAULTS.images_per_class, metavar="N", help="trn images per class (default %(default)s)")
    composite.add_argument("--eval-images-per-class", type=int, default=DEFAULTS.eval_images_per_class, metavar="N", help="val and test images per class, each (default %(default)s)")
    composite.add_argument("--instances", default=_span(DEFAULTS.instances), metavar="LOW-HIGH", help="instances of the class per image (default %(default)s)")
    composite.add_argument("--distractors", default=_span(DEFAULTS.distractors), metavar="LOW-HIGH", help="objects of other classes per image (default %(default)s)")
    composite.add_argument("--scale", default=_span(DEFAULTS.scale), metavar="LOW-HIGH", help="a lone instance's longer side, as a fraction of the image side; n instances: divided by sqrt(n) (default %(default)s)")
    composite.add_argument("--max-rotation", type=float, default=DEFAULTS.max_rotation, metavar="DEG", help="rotation drawn from +-DEG (default %(default)s)")
    composite.add_argument("--min-visible", type=float, default=DEFAULTS.min_visible, metavar="X", help=f"share of each instance that must stay unoccluded: a layout is drawn again up to {LAYOUT_TRIES} times, then the last is kept (default %(default)s)")
    composite.add_argument("--any-source-distractors", action="store_true", help="draw distractors from any source (default: the image's source where it has other classes)")
    composite.add_argument(
        "--min-images-per-source", type=int, default=DEFAULTS.min_images_per_source, metavar="N",
        help="a split draws a class from only as many of its sources as give each N images, so same-source supports exist (default %(default)s)",
    )
    composite.add_argument(
        "--label-distractors", action="store_true",
        help="also file each trn image under every distractor class that stays visible, with that class's mask (one picture, several targets: the support decides)",
    )
    composite.add_argument("--same-source-fraction", type=float, default=DEFAULTS.same_source_fraction, metavar="X", help="share of episodes whose supports come from the query's source (default %(default)s)")
    composite.add_argument(
        "--folds-from", default=None, metavar="DIR",
        help="reuse the class folds of this composite benchmark (classes it lacks are left out): score the same held-out classes on other art",
    )
    composite.add_argument(
        "--deal-new-classes", action="store_true",
        help="with --folds-from: add the classes it lacks to its folds (a name family it has keeps its fold) instead of leaving them out",
    )
    composite.add_argument("--workers", type=count(1), default=1, metavar="N", help="compositing processes (default %(default)s)")
    composite.set_defaults(run=run_composite)


def _span(pair: tuple) -> str:
    return f"{pair[0]}-{pair[1]}"


def _parse_span(text: str, option: str, kind: type) -> tuple:
    low, sep, high = text.partition("-")
    try:
        if not sep:
            raise ValueError
        return kind(low), kind(high)
    except ValueError:
        raise InputError(f"{option} {text!r}: expected LOW-HIGH, e.g. {'1-3' if kind is int else '0.3-0.6'}") from None


def _names(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def run_icons(args: argparse.Namespace) -> int:
    summary = gather_icons(
        user_path(args.out), user_path(args.icon_root), _names(args.themes) or None, args.size, args.min_size,
        args.min_themes, args.min_silhouette_iou, _names(args.exclude_contexts), args.workers,
    )
    print(
        f"wrote {summary.cutouts} cut-outs of {summary.classes} classes from {len(summary.sources)} themes "
        f"({', '.join(summary.sources)}) to {args.out}; removed {summary.outliers} silhouette outliers, "
        f"which dropped {summary.dropped_disagreeing} classes"
    )
    return 0


def run_emoji(args: argparse.Namespace) -> int:
    summary = gather_emoji(
        user_path(args.out), _names(args.sets), args.size, args.min_sets, args.min_silhouette_iou,
        user_path(args.emojione) if args.emojione else None, user_path(args.noto_font), user_path(args.symbola_font),
    )
    print(
        f"wrote {summary.cutouts} cut-outs of {summary.classes} classes from the sets {', '.join(summary.sources)} to {args.out}; "
        f"removed {summary.outliers} silhouette outliers, which dropped {summary.dropped_disagreeing} classes"
    )
    return 0


def run_backgrounds(args: argparse.Namespace) -> int:
    roots = [user_path(p) for p in _names(args.wallpapers)]
    summary = gather_backgrounds(user_path(args.out), roots, args.textures, args.size, args.seed)
    print(f"wrote {summary.wallpapers} wallpapers and {summary.textures} textures to {args.out}")
    return 0


def run_composite(args: argparse.Namespace) -> int:
    options = CompositeOptions(
        size=args.size, images_per_class=args.images_per_class, eval_images_per_class=args.eval_images_per_class,
        instances=_parse_span(args.instances, "--instances", int), distractors=_parse_span(args.distractors, "--distractors", int),
        scale=_parse_span(args.scale, "--scale", float), max_rotation=args.max_rotation, min_visible=args.min_visible,
        same_source_distractors=not args.any_source_distractors, same_source_fraction=args.same_source_fraction,
        min_images_per_source=args.min_images_per_source, label_distractors=args.label_distractors, seed=args.seed,
    )
    if args.deal_new_classes and not args.folds_from:
        raise InputError("--deal-new-classes adds classes to the folds of --folds-from DIR; give that too")
    folds_from = user_path(args.folds_from) if args.folds_from else None
    summary = build_composite(
        [user_path(p) for p in args.objects], user_path(args.backgrounds), user_path(args.out), options,
        args.workers, folds_from, args.deal_new_classes,
    )
    counts = ", ".join(f"{split} {n}" for split, n in summary.images.items())
    print(f"wrote {summary.classes} classes ({counts} images; folds of {', '.join(map(str, summary.folds))} classes) to {args.out}")
    return 0
