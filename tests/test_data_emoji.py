"""`diffews data emoji`: catalogue, line-art filling, the written layout (fake sets), and the real fonts where installed."""

from __future__ import annotations

import json
from collections import deque

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cutout_data import error_line, tree_files
from diffews.cli.main import main
from diffews.data import emoji
from diffews.data.debian import package_licence
from diffews.data.emoji import class_name, fill_enclosed, line_art_cutout, read_catalogue


def flood_outside(strokes: np.ndarray) -> np.ndarray:
    """Reference: breadth-first search from every free border pixel over 4-connected free pixels."""
    height, width = strokes.shape
    outside = np.zeros_like(strokes)
    queue = deque((y, x) for y in range(height) for x in range(width) if (y in (0, height - 1) or x in (0, width - 1)) and not strokes[y, x])
    for y, x in queue:
        outside[y, x] = True
    while queue:
        y, x = queue.popleft()
        for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= ny < height and 0 <= nx < width and not strokes[ny, nx] and not outside[ny, nx]:
                outside[ny, nx] = True
                queue.append((ny, nx))
    return outside


@pytest.mark.parametrize("seed", range(6))
def test_fill_enclosed_matches_a_flood_fill_from_the_border(seed):
    rng = np.random.default_rng(seed)
    strokes = rng.random((23, 31)) < [0.3, 0.4, 0.45, 0.5, 0.55, 0.6][seed]
    assert np.array_equal(fill_enclosed(strokes), ~flood_outside(strokes))


def test_fill_enclosed_fills_a_ring_and_not_an_open_arc():
    canvas, disk = Image.new("L", (40, 40)), Image.new("L", (40, 40))
    ImageDraw.Draw(canvas).ellipse((5, 5, 34, 34), outline=255, width=3)
    ImageDraw.Draw(disk).ellipse((5, 5, 34, 34), fill=255)
    ring = np.asarray(canvas) > 0
    assert np.array_equal(fill_enclosed(ring), np.asarray(disk) > 0)
    arc = ring.copy()
    arc[18:23, 30:] = False
    assert np.array_equal(fill_enclosed(arc), arc)


def test_line_art_becomes_a_sticker_black_strokes_on_white():
    glyph = Image.new("RGBA", (30, 30))
    ImageDraw.Draw(glyph).rectangle((0, 0, 29, 29), outline=(0, 0, 0, 255), width=2)
    pixels = np.asarray(line_art_cutout(glyph))
    assert (pixels[..., 3] == 255).all()
    assert (pixels[15, 15] == (255, 255, 255, 255)).all() and (pixels[0, 15, :3] == 0).all()


def test_class_names_come_from_unicode_names():
    assert class_name("\U0001F355") == "slice-of-pizza"
    assert class_name("\u2708") == "airplane"
    assert class_name("\U0001F9D2") == "child"
    assert class_name("\ue000") is None


def test_the_catalogue_keeps_named_single_code_points_once(tmp_path):
    index = {
        "pizza": {"unicode": "1f355", "category": "food"},
        "pizza_alias": {"unicode": "1F355", "category": "food"},
        "thumbs_tone1": {"unicode": "1F44D-1F3FB", "category": "people"},
        "flag_be": {"unicode": "1F1E7-1F1EA", "category": "flags"},
        "tone1": {"unicode": "1F3FB", "category": "modifier"},
        "private": {"unicode": "E000", "category": "symbols"},
        "plane": {"unicode": "2708", "category": "travel"},
    }
    path = tmp_path / "index.json"
    path.write_text(json.dumps(index))
    entries = read_catalogue(path)
    assert [(e.code, e.class_name) for e in entries] == [("2708", "airplane"), ("1F355", "slice-of-pizza")]


def test_a_bad_catalogue_is_one_error(tmp_path):
    path = tmp_path / "index.json"
    path.write_text("[1, 2]")
    with pytest.raises(emoji.InputError, match="index.json: not an EmojiOne index"):
        read_catalogue(path)


def test_licence_of_the_artwork_paragraph(tmp_path, monkeypatch):
    doc = tmp_path / "gem"
    doc.mkdir()
    (doc / "copyright").write_text(
        "Format: x\n\nFiles: *\nCopyright: a\nLicense: Expat\n\nFiles: assets/* fonts/*\nCopyright: b\nLicense: CC-BY-SA-4.0\n"
    )
    monkeypatch.setattr("diffews.data.debian.DOC_ROOT", tmp_path)
    assert package_licence("gem") == "Expat"
    assert package_licence("gem", "assets/*") == "CC-BY-SA-4.0"
    assert package_licence("gem", "other/*") == "Expat"


# Fake sets: each draws a square of its own colour; 'thin' lacks the airplane, 'blank' draws nothing at all.
COLOURS = {"noto": (200, 30, 30), "emojione": (30, 200, 30), "symbola": (0, 0, 0)}


def fake_drawer(set_name: str, missing: tuple[str, ...] = ()):
    def draw(character: str, size: int) -> Image.Image | None:
        if character in missing:
            return None
        image = Image.new("RGBA", (size, size))
        ImageDraw.Draw(image).rectangle((4, 4, size - 5, size // 2), fill=(*COLOURS[set_name], 255))
        return image

    return draw


@pytest.fixture
def fake_sets(tmp_path, monkeypatch):
    gem = tmp_path / "gems" / "gemojione-9.9"
    (gem / "assets" / "svg").mkdir(parents=True)
    (gem / "config").mkdir()
    (gem / "config" / "index.json").write_text(json.dumps({
        "pizza": {"unicode": "1F355", "category": "food"},
        "plane": {"unicode": "2708", "category": "travel"},
        "rocket": {"unicode": "1F680", "category": "travel"},
    }))
    fonts = {name: tmp_path / f"{name}.ttf" for name in ("noto", "symbola")}
    for path in fonts.values():
        path.write_bytes(b"")
    monkeypatch.setattr(emoji, "EMOJIONE_ROOT", tmp_path / "gems")
    monkeypatch.setattr(emoji, "require_rasteriser", lambda path: None)
    monkeypatch.setattr(emoji, "svg_drawer", lambda folder: fake_drawer("emojione", missing=("\u2708",)))
    monkeypatch.setattr(emoji, "FontDrawer", lambda path, pixels, colour: fake_drawer("noto" if colour else "symbola"))
    return ["--noto-font", str(fonts["noto"]), "--symbola-font", str(fonts["symbola"])]


def test_gather_writes_classes_drawn_by_enough_sets(fake_sets, tmp_path, capsys):
    out = tmp_path / "emoji"
    assert main(["data", "emoji", "--out", str(out), "--size", "32", *fake_sets]) == 0
    assert "wrote 6 cut-outs of 2 classes from the sets noto, emojione, symbola" in capsys.readouterr().out
    files = sorted(tree_files(out))
    assert files == [
        "classes.json", "manifest.jsonl",
        "rocket/emojione__1F680.png", "rocket/noto__1F680.png", "rocket/symbola__1F680.png",
        "slice-of-pizza/emojione__1F355.png", "slice-of-pizza/noto__1F355.png", "slice-of-pizza/symbola__1F355.png",
    ]
    cutout = Image.open(out / "rocket" / "noto__1F680.png")
    assert cutout.mode == "RGBA" and cutout.size == (24, 13)
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {(r["class"], r["theme"], r["name"]) for r in rows} >= {("rocket", "symbola", "1F680")}
    assert json.loads((out / "classes.json").read_text())["rocket"]["themes"] == ["noto", "emojione", "symbola"]

    assert main(["data", "emoji", "--out", str(tmp_path / "two"), "--size", "32", "--min-sets", "2", *fake_sets]) == 0
    assert (tmp_path / "two" / "airplane" / "noto__2708.png").is_file()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--sets", "noto,apple"], "unknown emoji set(s) apple; choose from noto, emojione, symbola"),
        (["--noto-font", "/nowhere/noto.ttf"], "/nowhere/noto.ttf: not found; the 'noto' set needs it"),
        (["--min-sets", "4"], "no emoji of the 3 in the catalogue is drawn by 4 of the sets noto, emojione, symbola"),
    ],
)
def test_bad_requests_exit_2_and_write_nothing(fake_sets, tmp_path, capsys, extra, message):
    out = tmp_path / "emoji"
    assert main(["data", "emoji", "--out", str(out), *fake_sets, *extra]) == 2
    assert message in error_line(capsys)
    assert not out.exists()


def test_without_the_catalogue_the_package_is_named(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(emoji, "EMOJIONE_ROOT", tmp_path)
    assert main(["data", "emoji", "--out", str(tmp_path / "emoji")]) == 2
    assert "no gemojione-*/config/index.json (the emoji catalogue); apt-get install ruby-gemojione" in error_line(capsys)


@pytest.mark.skipif(not (emoji.NOTO_FONT.is_file() and emoji.SYMBOLA_FONT.is_file()), reason="needs fonts-noto-color-emoji and fonts-symbola")
def test_the_installed_fonts_draw_colour_and_filled_line_art():
    noto = emoji.FontDrawer(emoji.NOTO_FONT, emoji.NOTO_PIXELS, colour=True)
    symbola = emoji.FontDrawer(emoji.SYMBOLA_FONT, None, colour=False)
    pizza = np.asarray(noto("\U0001F355", 96))
    assert max(pizza.shape[:2]) == 96 and len(np.unique(pizza[..., :3].reshape(-1, 3), axis=0)) > 50
    line = np.asarray(symbola("\U0001F355", 96))
    opaque = line[..., 3] == 255
    assert (line[opaque][:, :3] >= 240).all(axis=1).mean() > 0.15
    assert noto("\ue000", 96) is None and symbola("\ue000", 96) is None
