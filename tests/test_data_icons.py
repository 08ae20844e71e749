"""`diffews data icons` and `diffews data backgrounds` on fake theme and wallpaper folders made here."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cutout_data import error_line, tree_files
from diffews.cli.main import main
from diffews.data.icons import SCALABLE, mean_pairwise_iou, parse_location, silhouette_outliers


def icon(path, colour, box=(10, 8, 40, 28), size=48) -> np.ndarray:
    """A `size` px icon: an opaque rectangle (left, top, right, bottom) with a faint halo around it."""
    pixels = np.zeros((size, size, 4), np.uint8)
    left, top, right, bottom = box
    pixels[top - 2 : bottom + 2, left - 2 : right + 2] = (*colour, 60)
    pixels[top:bottom, left:right] = (*colour, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "RGBA").save(path)
    return pixels[top:bottom, left:right]


@pytest.fixture
def themes(tmp_path):
    """alpha/beta/gamma draw cat; cow is a link to cat in beta; dog has two usable themes; epsilon copies alpha's cat."""
    root = tmp_path / "icons"
    crops = {
        "alpha": icon(root / "alpha/48x48/apps/cat.png", (200, 0, 0)),
        "beta": icon(root / "beta/apps/64/cat.png", (0, 200, 0), box=(4, 4, 60, 30), size=64),
        "gamma": icon(root / "gamma/48/devices/cat.png", (0, 0, 200), box=(5, 5, 25, 45)),
    }
    icon(root / "alpha/16x16/apps/cat.png", (9, 9, 9), box=(2, 2, 14, 14), size=16)
    icon(root / "alpha/48x48/apps/cat-symbolic.png", (1, 1, 1))
    icon(root / "alpha/48x48/mimetypes/cat.png", (2, 2, 2))
    icon(root / "alpha/48x48/apps/dog.png", (3, 3, 3))
    icon(root / "beta/apps/64/dog.png", (4, 4, 4))
    icon(root / "gamma/48/apps/dog.png", (8, 8, 8), box=(20, 20, 27, 27))  # a speck: skipped, so dog has 2 themes
    icon(root / "alpha/48x48/apps/cow.png", (5, 5, 5))
    os.symlink("cat.png", root / "beta/apps/64/cow.png")
    icon(root / "gamma/48/apps/cow.png", (6, 6, 6))
    shutil.copytree(root / "alpha/48x48", root / "epsilon/48x48")
    icon(root / "oxygen/48x48/apps/dog.png", (7, 7, 7))
    return root, crops


@pytest.fixture(autouse=True)
def debian(tmp_path, monkeypatch):
    """A fake dpkg database: package alpha-icons installed the alpha theme, its copyright file names the licence."""
    from diffews.data import debian

    info, docs = tmp_path / "dpkg", tmp_path / "doc"
    info.mkdir()
    (info / "alpha-icons.list").write_text(f"/.\n{tmp_path / 'icons'}\n{tmp_path / 'icons' / 'alpha'}\n")
    (docs / "alpha-icons").mkdir(parents=True)
    (docs / "alpha-icons" / "copyright").write_text(
        "Format: https://example.invalid/dep5\n\nFiles: debian/*\nLicense: GPL-2+\n\nFiles: *\nCopyright: artists\nLicense: CC0-1.0\n"
    )
    monkeypatch.setattr(debian, "DPKG_INFO", info)
    monkeypatch.setattr(debian, "DOC_ROOT", docs)


def gather(root, out, *extra):
    return main(["data", "icons", "--icon-root", str(root), "--out", str(out), *extra])


def test_classes_need_three_distinct_themes_and_no_shared_picture(themes, tmp_path, capsys):
    root, crops = themes
    out = tmp_path / "out"
    assert gather(root, out) == 0
    assert "1 classes from 4 themes (alpha, beta, epsilon, gamma)" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r["file"], r["source"], r["package"], r["licence"]) for r in rows] == [
        ("cat/alpha__cat.png", str(root / "alpha/48x48/apps/cat.png"), "alpha-icons", "CC0-1.0"),
        ("cat/beta__cat.png", str(root / "beta/apps/64/cat.png"), None, None),
        ("cat/gamma__cat.png", str(root / "gamma/48/devices/cat.png"), None, None),
    ]
    for theme, crop in crops.items():
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"cat/{theme}__cat.png")), crop)
    info = json.loads((out / "classes.json").read_text())
    assert list(info) == ["cat"] and info["cat"]["themes"] == ["alpha", "beta", "gamma"]
    assert sorted(p.name for p in out.iterdir()) == ["cat", "classes.json", "manifest.jsonl"]


def test_an_icon_the_user_may_not_read_is_skipped_not_the_build(themes, tmp_path, capsys, caplog, monkeypatch):
    """Its PermissionError stopped the whole gathering (a traceback, later one line); the backgrounds
    builder already skipped such files. epsilon only copies alpha, so the classes are the usual ones."""
    root, _ = themes
    locked = root / "epsilon"
    real_read_bytes = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if locked in path.parents:  # chmod 000 does not stop root, who runs the tests in CI
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with caplog.at_level("WARNING", logger="diffews"):
        assert gather(root, tmp_path / "out") == 0
    assert "wrote 3 cut-outs of 1 classes from 4 themes (alpha, beta, epsilon, gamma)" in capsys.readouterr().out
    skipped = sorted(r.getMessage() for r in caplog.records if "skipped, cannot read it" in r.getMessage())
    assert skipped == [f"{locked / '48x48/apps' / name}: skipped, cannot read it (Permission denied)" for name in ("cat.png", "cow.png", "dog.png")]


def test_reserved_theme_only_when_named(themes, tmp_path):
    root, _ = themes
    assert gather(root, tmp_path / "out", "--themes", "oxygen", "--min-themes", "1") == 0
    assert sorted(tree_files(tmp_path / "out")) == ["classes.json", "dog/oxygen__dog.png", "manifest.jsonl"]


def test_silhouette_outliers_are_removed_and_their_class_dropped_below_three_themes(themes, tmp_path, capsys):
    root, _ = themes  # cat: two wide rectangles (alpha, beta) and a tall one (gamma)
    assert gather(root, tmp_path / "out", "--min-silhouette-iou", "0.4") == 2
    assert "none of the 2 classes is left after cleaning (1 lost themes to silhouettes agreeing less than" in error_line(capsys)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    assert gather(root, tmp_path / "out", "--min-silhouette-iou", "0.3") == 0
    assert "removed 0 silhouette outliers, which dropped 0 classes" in capsys.readouterr().out


def test_the_least_typical_silhouette_goes_first():
    square = np.zeros((8, 8), bool)
    square[2:6, 2:6] = True
    shifted = np.roll(square, 1, axis=1)  # IoU 12/20 with the square
    bar = np.zeros((8, 8), bool)
    bar[:, 0] = True  # IoU 0 with both
    # mean IoU with the others: square 0.53, shifted 0.4, bar 0; without bar: square 0.8, shifted 0.6
    assert silhouette_outliers([square, shifted, bar, square], 0.5) == [2]
    assert silhouette_outliers([square, shifted, bar, square], 0.7) == [2, 1]
    assert silhouette_outliers([square, shifted, bar, square], 0.0) == []
    assert silhouette_outliers([square, bar], 0.9) == []


def test_svg_icons_are_rasterised(themes, tmp_path):
    pytest.importorskip("resvg_py", reason="the SVG rasteriser (pip install 'diffews[icons]') is not installed")
    root, _ = themes
    for name, colour in (("cat", "#00ff00"), ("dog", "#0000ff")):
        path = root / f"delta/scalable/apps/{name}.svg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><rect x="4" y="2" width="8" height="12" fill="{colour}"/></svg>')
    out = tmp_path / "out"
    assert gather(root, out, "--size", "64") == 0
    assert sorted(p.name for p in (out / "dog").iterdir()) == ["alpha__dog.png", "beta__dog.png", "delta__dog.png"]
    dog = np.asarray(Image.open(out / "dog/delta__dog.png"))
    assert dog.shape == (48, 32, 4) and (dog == (0, 0, 255, 255)).all()


class PanicException(BaseException):
    """What pyo3 raises when the Rust rasteriser panics: not an `Exception`."""


def test_an_svg_that_crashes_the_rasteriser_is_skipped_not_the_build(themes, tmp_path, monkeypatch, caplog):
    def svg_to_bytes(svg_path: str, width: int, skip_system_fonts: bool) -> bytes:
        if svg_path.endswith("dog.svg"):
            raise PanicException("called `Option::unwrap()` on a `None` value")
        drawn = io.BytesIO()
        Image.new("RGBA", (width, width), (0, 255, 0, 255)).save(drawn, format="PNG")
        return drawn.getvalue()

    monkeypatch.setitem(sys.modules, "resvg_py", types.SimpleNamespace(svg_to_bytes=svg_to_bytes))
    root, _ = themes
    for name in ("cat", "dog"):
        path = root / f"delta/scalable/apps/{name}.svg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16"><title>{name}</title></svg>')  # distinct files
    out = tmp_path / "out"
    assert gather(root, out, "--size", "64", "--workers", "1") == 0
    assert (out / "cat/delta__cat.png").is_file() and not (out / "dog/delta__dog.png").exists()
    assert f"{root / 'delta/scalable/apps/dog.svg'}: skipped, cannot draw it (the SVG rasteriser crashed: called `Option::unwrap()` on a `None` value)" in caplog.text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--themes", "alpha,zeta"], "zeta: icon theme not found under"),
        (["--themes", "alpha,beta"], "no icon name is drawn by 3 of the themes alpha, beta; add themes"),
    ],
)
def test_bad_icon_input_exits_2_and_writes_nothing(themes, tmp_path, capsys, args, message):
    root, _ = themes
    assert gather(root, tmp_path / "out", *args) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_location_parsing_and_pairwise_iou():
    assert parse_location(__import__("pathlib").Path("48x48@2x/apps/x.png")) == ("apps", 96)
    assert parse_location(__import__("pathlib").Path("apps/scalable/x.svg")) == ("apps", SCALABLE)
    assert parse_location(__import__("pathlib").Path("symbolic/apps/x.svg")) is None
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[:, :2] = True
    assert mean_pairwise_iou([a, a, b]) == pytest.approx((1 + 1 / 3 + 1 / 3) / 3)


def test_backgrounds_are_deduplicated_resized_and_textures_added(tmp_path, capsys):
    walls = tmp_path / "walls"
    walls.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)).save(walls / "sea.png")
    shutil.copy(walls / "sea.png", walls / "same_sea.png")
    Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(walls / "tiny.png")
    out = tmp_path / "bg"
    assert main(["data", "backgrounds", "--out", str(out), "--wallpapers", str(walls), "--textures", "3", "--size", "40"]) == 0
    assert "wrote 1 wallpapers and 3 textures" in capsys.readouterr().out
    files = tree_files(out)
    assert sorted(files) == ["manifest.jsonl", "same_sea.jpg", "texture_0000.jpg", "texture_0001.jpg", "texture_0002.jpg"]
    assert Image.open(out / "same_sea.jpg").size == (60, 40)
    again = tmp_path / "again"
    assert main(["data", "backgrounds", "--out", str(again), "--wallpapers", "", "--textures", "3", "--size", "40"]) == 0
    assert tree_files(again)["texture_0002.jpg"] == files["texture_0002.jpg"]


def test_backgrounds_skip_unreadable_wallpapers_and_keep_one_named_like_a_texture(tmp_path, capsys, caplog):
    """A truncated wallpaper was a traceback half-way through; a wallpaper named texture_0000 was
    overwritten by the texture of that name while the summary counted both."""
    walls = tmp_path / "walls"
    walls.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)).save(walls / "texture_0000.jpg")
    Image.fromarray(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)).save(walls / "whole.jpg")
    data = (walls / "whole.jpg").read_bytes()
    (walls / "cut.jpg").write_bytes(data[: len(data) // 3])
    out = tmp_path / "bg"
    with caplog.at_level("WARNING", logger="diffews.data.backgrounds"):
        assert main(["data", "backgrounds", "--out", str(out), "--wallpapers", str(walls), "--textures", "1", "--size", "40"]) == 0
    assert "wrote 2 wallpapers and 1 textures" in capsys.readouterr().out
    assert sorted(tree_files(out)) == ["manifest.jsonl", "texture_0000.jpg", "texture_0000_2.jpg", "whole.jpg"]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [str(walls / "cut.jpg")]


def test_backgrounds_skip_a_wallpaper_they_may_not_read_and_create_the_output_parents(tmp_path, capsys, caplog, monkeypatch):
    walls = tmp_path / "walls"
    walls.mkdir()
    rng = np.random.default_rng(2)
    for name in ("open", "locked"):
        Image.fromarray(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8)).save(walls / f"{name}.png")
    real_read_bytes = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path.name == "locked.png":  # chmod 000 does not stop root, who runs the tests in CI
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    out = tmp_path / "cutouts" / "backgrounds"  # docs/cutouts.md's commands, in a fresh checkout
    with caplog.at_level("WARNING", logger="diffews.data.backgrounds"):
        assert main(["data", "backgrounds", "--out", str(out), "--wallpapers", str(walls), "--textures", "1", "--size", "40"]) == 0
    assert sorted(tree_files(out)) == ["manifest.jsonl", "open.jpg", "texture_0000.jpg"]
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [str(walls / "locked.png")]


def test_an_output_folder_in_use_is_refused_before_the_themes_are_scanned(tmp_path, capsys, monkeypatch):
    from diffews.data import icons

    monkeypatch.setattr(icons, "choose_themes", lambda *args: pytest.fail("scanned the themes before checking --out"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["data", "icons", "--out", str(tmp_path / "out")]) == 2
    assert "already exists and is not an empty folder" in error_line(capsys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backgrounds", "--size", "0"], "argument --size: must be at least 8, got 0"),
        (["backgrounds", "--textures", "-3"], "argument --textures: must be at least 0, got -3"),
        (["backgrounds", "--seed", "-1"], "argument --seed: must be in 0..4294967295, got -1"),
        (["icons", "--size", "-4"], "argument --size: must be at least 8, got -4"),
        (["icons", "--workers", "0"], "argument --workers: must be at least 1, got 0"),
    ],
)
def test_builder_options_out_of_range_are_refused_before_any_work(tmp_path, capsys, args, message):
    """Each was a traceback (numpy, resvg), or ran the whole job (--size 0), or wrote '-3 textures'."""
    with pytest.raises(SystemExit) as exit_status:
        main(["data", *args, "--out", str(tmp_path / "out")])
    assert exit_status.value.code == 2 and capsys.readouterr().err.strip().endswith(message)
    assert not (tmp_path / "out").exists()

