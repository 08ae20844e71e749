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


@pytest.mark.parametrize(
    "character, name",
    [
        ("\U0001F355", "slice-of-pizza"),                   # SLICE OF PIZZA: the head comes before "of"
        ("\U0001F600", "face-grinning"),                    # GRINNING FACE
        ("\U0001F607", "face-smiling-with-halo"),           # SMILING FACE WITH HALO
        ("\U0001F499", "heart-blue"),                       # BLUE HEART
        ("\U0001F44B", "hand-waving-sign"),                 # WAVING HAND SIGN: "sign" is not the head
        ("\u25B6", "triangle-black-right-pointing"),        # BLACK RIGHT-POINTING TRIANGLE
        ("\U0001F558", "clock-face-nine-oclock"),           # a numbered series keeps its order
        ("\u2708", "airplane"),
        ("\ue000", None),                                   # private use: no name
    ],
)
def test_class_names_put_the_unicode_names_head_noun_first(character, name):
    assert class_name(character) == name


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


@pytest.mark.parametrize(
    "text",
    ["[1, 2]", '{"a": {"unicode": "zz"}}', '{"a": {"unicode": null}}', '{"a": {"unicode": "110000"}}', '{"a": 3}', "{"],
)
def test_a_bad_catalogue_is_one_error(tmp_path, text):
    path = tmp_path / "index.json"
    path.write_text(text)
    with pytest.raises(emoji.InputError, match="index.json: not an EmojiOne index"):
        read_catalogue(path)


def test_licence_of_the_artwork_paragraph(tmp_path, monkeypatch):
    doc = tmp_path / "gem"
    doc.mkdir()
    (doc / "copyright").write_text(
        "Format: x\n\nFiles: *\nCopyright: a\nLicense: Expat\n Permission is hereby granted\n\n"
        "Files: fonts/*\n assets/*\nCopyright: b\nLicense: CC-BY-SA-4.0\n By exercising the Licensed Rights\n"
    )
    monkeypatch.setattr("diffews.data.debian.DOC_ROOT", tmp_path)
    assert package_licence("gem") == "Expat"
    assert package_licence("gem", "assets/*") == "CC-BY-SA-4.0"
    assert package_licence("gem", "other/*") == "Expat"


@pytest.mark.parametrize("grant, expected", [
    ("GNU General Public License as published by\n   the Free Software Foundation; either version 2 of the License, or\n"
     "   (at your option) any later version.", "GPL-2+"),
    ("GNU Lesser General Public License as published by the Free Software Foundation; version 2.1 of the License.", "LGPL-2.1"),
    ("GNU Library General Public License as published by the Free Software Foundation; either version 2 of the\n"
     "License, or (at your option) any later version.", "LGPL-2+"),
    ("GNU General Public License, as published by the Free Software Foundation, version 3.", "GPL-3"),
    ("Permission is hereby granted, free of charge, to any person obtaining a copy", None),
])
def test_licence_of_a_free_form_copyright_file(tmp_path, monkeypatch, grant, expected):
    # older packages (e.g. the nuovo and yasis icon themes) have no License: field, only the grant's wording
    doc = tmp_path / "theme"
    doc.mkdir()
    (doc / "copyright").write_text(
        "This package was debianized by someone.\n\nCopyright Holders: an artist\n\nLicense:\n\n"
        f"   This package is free software; you can redistribute it and/or modify\n   it under the terms of the {grant}\n\n"
        "The Debian packaging is licensed under the GPL, see `/usr/share/common-licenses/GPL'.\n"
    )
    monkeypatch.setattr("diffews.data.debian.DOC_ROOT", tmp_path)
    assert package_licence("theme") == expected


# Fake sets: each draws a rectangle of its own colour (emojione's tall, the others' wide); emojione lacks the airplane.
COLOURS = {"noto": (200, 30, 30), "emojione": (30, 200, 30), "symbola": (0, 0, 0)}


def fake_drawer(set_name: str, missing: tuple[str, ...] = ()):
    def draw(character: str, size: int) -> Image.Image | None:
        if character in missing:
            return None
        image = Image.new("RGBA", (size, size))
        box = (4, 4, size // 2, size - 5) if set_name == "emojione" else (4, 4, size - 5, size // 2)
        ImageDraw.Draw(image).rectangle(box, fill=(*COLOURS[set_name], 255))
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
        (["--min-sets", "4"], "--min-sets must be 1 to the 3 set(s) asked for; got 4"),
        (["--sets", "noto,symbola", "--min-sets", "3"], "--min-sets must be 1 to the 2 set(s) asked for; got 3"),
        (["--size", "0"], "--size must be at least 16 px; got 0"),
        (["--min-silhouette-iou", "0.99"], "none of the 2 classes is left after cleaning: their silhouettes agree less than"),
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
