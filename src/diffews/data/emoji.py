"""Cut-out objects from emoji artwork: one class per emoji drawn by several emoji sets.

`diffews data emoji` draws every emoji of a catalogue with each installed emoji set (the same
object by different artists) and writes the layout of `diffews data icons`, so its folder can be
passed to `diffews data composite --objects` on its own or beside an icon folder::

    <out>/<class>/<set>__<code point>.png      RGBA, cropped to the visible object, alpha = its mask
    <out>/manifest.jsonl                        one line per cut-out: file, class, theme (the set), source, package, licence
    <out>/classes.json                          per class: sets, silhouette agreement

Sets (Debian packages in brackets):

- ``noto``: Noto Color Emoji (fonts-noto-color-emoji), the font's colour bitmaps;
- ``emojione``: EmojiOne 2 (ruby-gemojione), its SVG files (needs ``pip install 'diffews[icons]'``);
- ``symbola``: Symbola (fonts-symbola), black line art: the areas the strokes enclose are filled
  white, so a cut-out's mask is the object's silhouette, not its strokes.

The catalogue is EmojiOne's index (ruby-gemojione's ``config/index.json``). Only single code points
are classes (skin tones, flags, keycaps and other sequences are left out); a class is named after
the code point's Unicode name (``U+1F355 SLICE OF PIZZA`` -> ``slice-of-pizza``), so its first word
is its family for `diffews data composite`'s folds and distractors. A class needs `min_sets` sets
that draw it; cleaning as for icons (`diffews.data.icons.clean_cutouts`). Cut-outs are fitted to
`size` on their longer side (Noto's 136 x 128 bitmaps and Symbola's glyphs, drawn at 160 px, are
upscaled at the default 192; EmojiOne's SVG files are drawn at that size).
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from ..errors import InputError
from ..io import check_new_folder, new_folder
from ..processing.images import IMAGE_READ_ERRORS
from .debian import owning_packages, package_licence
from .icons import CutoutSummary, clean_cutouts, crop_to_object, rasterise, require_rasteriser, silhouette, write_description
from .paste import fit_longer_side

logger = logging.getLogger("diffews")

NOTO_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
SYMBOLA_FONT = Path("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf")
EMOJIONE_ROOT = Path("/usr/share/rubygems-integration/all/gems")
"""Searched for ``gemojione-*/config/index.json`` and ``assets/svg``."""
SETS = ("noto", "emojione", "symbola")
ARTWORK_FILES = {"emojione": "assets/*"}
"""The copyright file's ``Files:`` pattern of a set's artwork, where it is not the package's main files."""
STATED_LICENCES = {"symbola": "free for any use (fonts-symbola copyright: fonts may be opened, edited, modified, regenerated, packaged and redistributed)"}
"""A set's licence where its package's copyright file is not machine-readable."""
LEFT_OUT_CATEGORIES = frozenset({"flags", "modifier", "regional"})
PREPOSITIONS = frozenset({"with", "of", "in", "on", "for", "and", "without", "from", "to", "at", "over", "under"})
GENERIC_HEADS = frozenset({"sign", "symbol"})
KEPT_ORDER = ("clock face ", "squared ", "negative squared ", "circled ")
MIN_SIZE = 16
NOTO_PIXELS = 109
"""The only size at which Noto Color Emoji's bitmap strikes load (136 x 128 px glyphs)."""
LINE_ART_PIXELS = 160
"""Font size line-art glyphs are drawn at before fitting (large enough that thin strokes stay closed)."""
MISSING = "\U0010fffd"
"""A private-use code point no font draws: its rendering is a font's 'missing glyph' box."""

Drawer = Callable[[str, int], "Image.Image | None"]
"""(emoji character, size) -> the set's RGBA drawing, or None when the set does not draw it."""


@dataclass(frozen=True)
class Emoji:
    """A catalogue entry: its character, code point (hex, upper case) and class name."""

    character: str
    code: str
    class_name: str


def class_name(character: str) -> str | None:
    """``"😀"`` -> ``"face-grinning"``: the Unicode name, head noun first, lower case, words joined by ``-``.

    The head noun is the last word before the first preposition (``SMILING FACE WITH HALO`` ->
    ``face-smiling-with-halo``), skipping a trailing "sign" / "symbol" (``WAVING HAND SIGN`` ->
    ``hand-waving-sign``); names of a numbered series (`KEPT_ORDER`: clock faces, squared and circled
    characters) keep their order. So a name's first word is its family, as in icon names (`face-smile`):
    variants of one object (``heart-blue``, ``heart-green``) share a fold and are never each other's
    distractors. None if the character has no name.
    """
    words = unicodedata.name(character, "").lower().replace("-", " ").split()
    if not words or " ".join(words).startswith(KEPT_ORDER):
        return "-".join(words) or None
    phrase = next((i for i in range(1, len(words)) if words[i] in PREPOSITIONS), len(words))
    head = phrase - 1
    while head > 0 and words[head] in GENERIC_HEADS:
        head -= 1
    return "-".join([words[head], *words[:head], *words[head + 1 :]])


def read_catalogue(index: Path) -> list[Emoji]:
    """The single-code-point emoji of EmojiOne's ``index.json`` (no flags, skin tones, keycaps), sorted by code point."""
    try:
        entries = json.loads(index.read_text())
        codes = {str(e["unicode"]).upper() for e in entries.values() if str(e.get("category", "")) not in LEFT_OUT_CATEGORIES}
        points = sorted(int(code, 16) for code in codes if "-" not in code)
        characters = [chr(point) for point in points]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError) as error:
        raise InputError(f"{index}: not an EmojiOne index ({error})") from None
    named = [(character, class_name(character)) for character in characters]
    return [Emoji(character, f"{ord(character):04X}", name) for character, name in named if name]


def find_emojione(root: Path) -> Path | None:
    """The installed ``gemojione-*`` folder of the highest version under `root` (with an index and SVG files), or None."""
    found = [p.parent.parent for p in root.glob("gemojione-*/config/index.json") if (p.parent.parent / "assets" / "svg").is_dir()]
    return max(found, key=lambda p: [int(part) if part.isdecimal() else -1 for part in re.split(r"[.-]", p.name)[1:]], default=None)


def fill_enclosed(strokes: np.ndarray) -> np.ndarray:
    """``strokes`` (bool, H x W) plus every area they enclose: what is not reachable from the border without crossing them.

    Reachability spreads along whole runs of free pixels, rows and columns in turn, until nothing changes.
    """
    free = ~strokes
    outside = np.zeros_like(free)
    outside[[0, -1], :] = free[[0, -1], :]
    outside[:, [0, -1]] |= free[:, [0, -1]]
    while True:
        spread = _spread_along_rows(outside, free)
        spread = _spread_along_rows(spread.T, free.T).T
        if np.array_equal(spread, outside):
            return ~outside
        outside = spread


def _spread_along_rows(reached: np.ndarray, free: np.ndarray) -> np.ndarray:
    """`reached` grown to every free pixel of a row-wise run of free pixels that holds a reached one."""
    padded = np.pad(free, ((0, 0), (0, 1))).ravel()
    starts = padded & ~np.concatenate(([False], padded[:-1]))
    run = np.cumsum(starts) * padded
    hit = np.zeros(int(run.max()) + 1, bool)
    hit[run[np.pad(reached, ((0, 0), (0, 1))).ravel() & padded]] = True
    hit[0] = False
    return hit[run].reshape(free.shape[0], free.shape[1] + 1)[:, :-1]


class FontDrawer:
    """Draws emoji with a font: colour glyphs as they are, or (`colour` False) black line art as a sticker (`line_art_cutout`)."""

    def __init__(self, path: Path, pixels: int | None, colour: bool) -> None:
        try:
            self.font = ImageFont.truetype(str(path), pixels or LINE_ART_PIXELS)
        except OSError as error:
            raise InputError(f"{path}: cannot load the font ({error})") from None
        self.colour = colour
        self.missing = self._draw_glyph(MISSING)

    def __call__(self, character: str, size: int) -> Image.Image | None:
        glyph = self._draw_glyph(character)
        if glyph is None or (self.missing is not None and glyph.size == self.missing.size and glyph.tobytes() == self.missing.tobytes()):
            return None
        return fit_longer_side(glyph if self.colour else line_art_cutout(glyph), size)

    def _draw_glyph(self, character: str) -> Image.Image | None:
        left, top, right, bottom = self.font.getbbox(character)
        canvas = Image.new("RGBA", (right - left + 4, bottom - top + 4))
        ink = {"embedded_color": True} if self.colour else {"fill": (0, 0, 0, 255)}
        ImageDraw.Draw(canvas).text((2 - left, 2 - top), character, font=self.font, **ink)
        return crop_to_object(canvas)


def line_art_cutout(glyph: Image.Image) -> Image.Image:
    """A black line-art glyph (RGBA) as a sticker: black strokes on white, opaque over everything they enclose."""
    ink = np.asarray(glyph.getchannel("A"), np.float32) / 255
    inside = fill_enclosed(np.pad(ink >= 0.5, 1))[1:-1, 1:-1]
    alpha = np.maximum(inside, ink)
    white = np.where(inside, 1 - ink, 0.0)
    pixels = np.dstack([white, white, white, alpha]) * 255
    return Image.fromarray(np.round(pixels).astype(np.uint8), "RGBA")


def svg_drawer(folder: Path) -> Drawer:
    """Draws the emoji ``<folder>/<CODE>.svg`` (EmojiOne's layout)."""

    def draw(character: str, size: int) -> Image.Image | None:
        path = folder / f"{ord(character):04X}.svg"
        return rasterise(path, size) if path.is_file() else None

    return draw


def gather_emoji(
    out: Path,
    sets: Sequence[str] = SETS,
    size: int = 192,
    min_sets: int = 3,
    min_silhouette_iou: float = 0.0,
    emojione: Path | None = None,
    noto_font: Path = NOTO_FONT,
    symbola_font: Path = SYMBOLA_FONT,
) -> CutoutSummary:
    """Write emoji cut-outs to the new folder `out` (layout: module docstring); nothing is left on failure.

    Args:
        sets: which of `SETS` to draw with.
        size: longest side of a cut-out in pixels.
        min_sets: sets that must draw an emoji for it to be a class.
        min_silhouette_iou: remove cut-outs whose silhouettes agree less than this with their class (0 keeps all).
        emojione: the ruby-gemojione gem folder (``config/index.json``, ``assets/svg``); default: found under `EMOJIONE_ROOT`.
    """
    unknown = sorted(set(sets) - set(SETS))
    if unknown:
        raise InputError(f"unknown emoji set(s) {', '.join(unknown)}; choose from {', '.join(SETS)}")
    if size < MIN_SIZE:
        raise InputError(f"--size must be at least {MIN_SIZE} px; got {size}")
    if not 1 <= min_sets <= len(sets):
        raise InputError(f"--min-sets must be 1 to the {len(sets)} set(s) asked for; got {min_sets}")
    check_new_folder(Path(out))
    emojione = emojione or find_emojione(EMOJIONE_ROOT)
    if emojione is None:
        raise InputError(f"{EMOJIONE_ROOT}: no gemojione-*/config/index.json (the emoji catalogue); apt-get install ruby-gemojione")
    catalogue = read_catalogue(emojione / "config" / "index.json")
    files = {"noto": noto_font, "emojione": emojione / "assets" / "svg", "symbola": symbola_font}
    for name in sets:
        if not files[name].exists():
            raise InputError(f"{files[name]}: not found; the {name!r} set needs it (see docs/cutouts.md)")
    if "emojione" in sets:
        require_rasteriser(files["emojione"])
    makers: dict[str, Callable[[Path], Drawer]] = {
        "noto": lambda path: FontDrawer(path, NOTO_PIXELS, colour=True),
        "emojione": svg_drawer,
        "symbola": lambda path: FontDrawer(path, None, colour=False),
    }
    drawers = {name: makers[name](files[name]) for name in sets}
    owners = owning_packages([files[name] for name in sets])
    packages = {name: owners.get(files[name]) for name in sets}
    licences = {name: package_licence(package, ARTWORK_FILES.get(name, "*")) or STATED_LICENCES.get(name) for name, package in packages.items()}
    with new_folder(Path(out)) as staging:
        entries, silhouettes = [], []
        for emoji in tqdm(catalogue, desc="drawing emoji", unit="emoji"):
            drawn = {name: image for name in sets if (image := _draw(drawers[name], emoji, size, name)) is not None}
            if len(drawn) < min_sets:
                continue
            (staging / emoji.class_name).mkdir()
            for name, image in drawn.items():
                file = f"{emoji.class_name}/{name}__{emoji.code}.png"
                image.save(staging / file, format="PNG")
                silhouettes.append(silhouette(image))
                entries.append({
                    "file": file, "class": emoji.class_name, "theme": name, "name": emoji.code, "source": str(files[name]),
                    "package": packages[name], "licence": licences[name],
                })
        classes = list(dict.fromkeys(entry["class"] for entry in entries))
        if not classes:
            raise InputError(f"no emoji of the {len(catalogue)} in the catalogue is drawn by {min_sets} of the sets {', '.join(sets)}")
        kept, outliers, dropped, info = clean_cutouts(staging, classes, entries, silhouettes, min_sets, min_silhouette_iou)
        if not info:
            raise InputError(
                f"none of the {len(classes)} classes is left after cleaning: their silhouettes agree less than --min-silhouette-iou {min_silhouette_iou}"
            )
        write_description(staging, kept, info)
    return CutoutSummary(list(sets), len(info), len(kept), outliers, dropped)


def _draw(drawer: Drawer, emoji: Emoji, size: int, set_name: str) -> Image.Image | None:
    """The set's drawing of `emoji` cropped to its object; None (with a warning for a broken file) if there is none."""
    try:
        image = drawer(emoji.character, size)
    except IMAGE_READ_ERRORS as error:
        logger.warning("U+%s: skipped in the %r set, cannot draw it (%s)", emoji.code, set_name, error)
        return None
    return None if image is None else crop_to_object(image)
