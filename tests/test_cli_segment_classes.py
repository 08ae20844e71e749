"""`diffews segment` with several classes: label maps, overlays with a legend, COCO files, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import box_mask, random_image
from PIL import Image
from pycocotools.coco import COCO

from diffews import DiffewSPipeline
from diffews._testing import build_tiny_model
from diffews.cli.main import main
from diffews.processing.images import load_image
from diffews.processing.labels import connected_components

RESOLUTION = "32"


@pytest.fixture
def files(tmp_path, rng):
    """Supports of two classes (cat: two shots, dog: one), a label image of both, three queries."""
    (tmp_path / "queries").mkdir()
    for name, (height, width) in {"c1": (48, 64), "c2": (40, 40), "d1": (56, 32)}.items():
        random_image(rng, height, width).save(tmp_path / f"{name}.jpg")
    Image.fromarray(box_mask(48, 64).astype(np.uint8) * 255).save(tmp_path / "c1.png")
    Image.fromarray(box_mask(40, 40, 0.0, 0.5).astype(np.uint8) * 255).save(tmp_path / "c2.png")
    Image.fromarray(box_mask(56, 32, 0.5, 1.0).astype(np.uint8) * 255).save(tmp_path / "d1.png")
    random_image(rng, 40, 30).save(tmp_path / "queries/a.jpg")
    random_image(rng, 33, 47).save(tmp_path / "queries/b.png")
    return tmp_path


def class_args(root: Path, *extra: str, out: str = "out") -> list[str]:
    return [
        "segment", "--model", "tiny-random", "--resolution", RESOLUTION,
        "--class", "cat", str(root / "c1.jpg"), str(root / "c1.png"),
        "--class", "dog", str(root / "d1.jpg"), str(root / "d1.png"),
        "--class", "cat", str(root / "c2.jpg"), str(root / "c2.png"),
        "--query", str(root / "queries"), "--out", str(root / out), *extra,
    ]


def api_result(root: Path, classes: dict, threshold_mode: str | None = None):
    pipe = DiffewSPipeline(build_tiny_model())
    pipe.set_progress_bar_config(disable=True)
    queries = [load_image(root / "queries" / name) for name in ("a.jpg", "b.png")]
    return pipe.segment_classes(queries, classes, resolution=int(RESOLUTION), threshold_mode=threshold_mode)


def read_labels(path: Path) -> np.ndarray:
    image = Image.open(path)
    assert image.mode == "P"
    return np.asarray(image)


def coco_label_maps(path: Path) -> dict[str, np.ndarray]:
    """Label maps painted back from a COCO file with pycocotools, by file name."""
    coco = COCO(str(path))
    maps = {}
    for image in coco.dataset["images"]:
        labels = np.zeros((image["height"], image["width"]), dtype=np.uint8)
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            mask = coco.annToMask(annotation).astype(bool)
            assert not labels[mask].any()  # annotations never overlap
            labels[mask] = annotation["category_id"]
        maps[image["file_name"]] = labels
    return maps


def test_label_maps_and_overlays_match_the_python_api(files, capsys):
    assert main(class_args(files)) == 0
    out = files / "out"
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.png", "a_overlay.png", "b_labels.png", "b_overlay.png"]
    shots = {"cat": ([load_image(files / "c1.jpg"), load_image(files / "c2.jpg")], [files / "c1.png", files / "c2.png"]),
             "dog": ([load_image(files / "d1.jpg")], [files / "d1.png"])}
    expected = api_result(files, shots)
    for stem, labels in zip("ab", expected.labels):
        assert np.array_equal(read_labels(out / f"{stem}_labels.png"), labels)
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert overlay.height > labels.shape[0] and overlay.width >= labels.shape[1]  # the legend strip below
    palette = Image.open(out / "a_labels.png").getpalette()[:9]
    assert palette[:3] == [0, 0, 0] and palette[3:6] != palette[6:9]
    assert "wrote 2 label maps and overlays" in capsys.readouterr().out


@pytest.mark.parametrize("instances", [False, True])
def test_coco_file_reproduces_the_label_maps(files, instances):
    extra = ["--format", "coco", "--threshold-mode", "absolute", "--threshold", "0.3"] + (["--instances"] if instances else [])
    assert main(class_args(files, *extra)) == 0
    out = files / "out"
    content = json.loads((out / "annotations.json").read_text())
    assert [c["name"] for c in content["categories"]] == ["cat", "dog"]
    painted = coco_label_maps(out / "annotations.json")
    assert sorted(painted) == ["a.jpg", "b.png"]
    for stem, name in zip("ab", ("a.jpg", "b.png")):
        labels = read_labels(out / f"{stem}_labels.png")
        assert np.array_equal(painted[name], labels)
        image_id = next(i["id"] for i in content["images"] if i["file_name"] == name)
        annotations = [a for a in content["annotations"] if a["image_id"] == image_id]
        expected_count = sum(
            connected_components(labels == label)[1] if instances else 1 for label in np.unique(labels) if label
        )
        assert len(annotations) == expected_count
        for annotation in annotations:
            mask = COCO_mask(annotation)
            ys, xs = np.nonzero(mask)
            assert annotation["area"] == mask.sum()
            assert annotation["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert 0 <= annotation["score"] <= 1
            if instances:
                assert connected_components(mask)[1] == 1


def COCO_mask(annotation: dict) -> np.ndarray:
    from pycocotools import mask as coco_mask

    rle = dict(annotation["segmentation"], counts=annotation["segmentation"]["counts"].encode())
    return coco_mask.decode(rle).astype(bool)


def test_supports_folder_equals_class_flags(files):
    for name, shots in {"cat": ("c1", "c2"), "dog": ("d1",)}.items():
        (files / "classes" / name).mkdir(parents=True)
        for shot in shots:
            for suffix in (".jpg", ".png"):
                (files / "classes" / name / f"{shot}{suffix}").write_bytes((files / f"{shot}{suffix}").read_bytes())
    assert main(class_args(files, out="flags")) == 0
    args = ["segment", "--model", "tiny-random", "--resolution", RESOLUTION, "--supports", str(files / "classes"),
            "--query", str(files / "queries"), "--out", str(files / "folder")]
    assert main(args) == 0
    for stem in "ab":
        assert np.array_equal(read_labels(files / "folder" / f"{stem}_labels.png"), read_labels(files / "flags" / f"{stem}_labels.png"))


@pytest.mark.parametrize("mode", ["P", "L"])
def test_support_label_image_equals_binary_masks_per_class(files, mode):
    labels = np.zeros((48, 64), dtype=np.uint8)
    labels[5:20, 5:30] = 1
    labels[25:45, 30:60] = 2
    labels[20:25, :] = 255  # ignored: in neither class
    image = Image.fromarray(labels, mode="L")
    if mode == "P":
        image = image.convert("P")
        image.putpalette([0, 0, 0, 200, 0, 0, 0, 200, 0] + [255, 255, 255] * 253)
    image.save(files / "labels.png")
    (files / "names.txt").write_text("car\nroad\n")
    args = ["segment", "--model", "tiny-random", "--resolution", RESOLUTION,
            "--support-labels", str(files / "c1.jpg"), str(files / "labels.png"), "--names", str(files / "names.txt"),
            "--query", str(files / "queries"), "--out", str(files / "out")]
    assert main(args) == 0
    support = load_image(files / "c1.jpg")
    expected = api_result(files, {"car": ([support], [labels == 1]), "road": ([support], [labels == 2])})
    assert expected.class_names == ["car", "road"]
    for stem, expected_labels in zip("ab", expected.labels):
        assert np.array_equal(read_labels(files / "out" / f"{stem}_labels.png"), expected_labels)


def expect_error(capsys, args: list[str], message: str, out: Path) -> None:
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == f"error: {message}", lines
    assert not any("Traceback" in line for line in lines)
    assert not out.exists()


def test_bad_class_inputs_exit_2_and_write_nothing(files, capsys):
    out = files / "out"
    args = class_args(files)
    args[args.index("dog")] = "Cat"
    expect_error(capsys, args, "--class: class 'Cat' is given twice (as 'cat' and 'Cat')", out)
    args = class_args(files)
    args[args.index("dog")] = "a/b"
    expect_error(capsys, args, "--class: class name 'a/b' is not a valid file-name part", out)
    Image.fromarray(np.zeros((56, 32), dtype=np.uint8)).save(files / "empty.png")
    args = class_args(files)
    args[args.index(str(files / "d1.png"))] = str(files / "empty.png")
    expect_error(capsys, args, f"class 'dog': every support mask is empty at 32x32 ({files / 'empty.png'})", out)


def test_bad_label_image_inputs(files, capsys):
    out = files / "out"
    labels = np.zeros((48, 64), dtype=np.uint8)
    labels[5:20, 5:30] = 1
    labels[30:40, 30:40] = 3
    Image.fromarray(labels).save(files / "labels.png")
    (files / "names.txt").write_text("car\nroad\n")
    args = ["segment", "--model", "tiny-random", "--support-labels", str(files / "c1.jpg"), str(files / "labels.png"),
            "--names", str(files / "names.txt"), "--query", str(files / "queries"), "--out", str(out)]
    expect_error(capsys, args, f"{files / 'labels.png'}: label(s) 3 have no name in {files / 'names.txt'} (2 names)", out)
    labels[labels == 3] = 0
    Image.fromarray(labels).save(files / "labels.png")
    expect_error(capsys, args, f"class 'road': every support mask is empty at 64x64 ({files / 'labels.png'} label 2)", out)
    (files / "names.txt").write_text("car\nCAR\n")
    expect_error(capsys, args, f"{files / 'names.txt'}: class 'CAR' is given twice (as 'car' and 'CAR')", out)
    (files / "names.txt").write_text("car\nro:ad\n")
    expect_error(capsys, args, f"{files / 'names.txt'}: class name 'ro:ad' is not a valid file-name part", out)


def test_coco_file_that_cannot_be_written(files, capsys):
    (files / "out" / "annotations.json").mkdir(parents=True)
    assert main(class_args(files, "--format", "coco")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {files / 'out' / 'annotations.json'}: cannot write the COCO file (something other than a file is in the way)"
    )
    assert [p.name for p in (files / "out").iterdir()] == ["annotations.json"]


def test_binary_run_rejects_class_only_options(files, capsys):
    args = ["segment", "--model", "tiny-random", "--support", str(files / "c1.jpg"), str(files / "c1.png"),
            "--query", str(files / "queries"), "--out", str(files / "out"), "--format", "coco"]
    expect_error(capsys, args, "--format coco and --instances need named classes (--class, --supports or --support-labels)", files / "out")


def test_coco_file_names_keep_the_sub_folders_of_queries_from_several_folders(files):
    (files / "queries" / "more").mkdir()
    (files / "queries" / "b.png").rename(files / "queries" / "more" / "b.png")
    args = class_args(files, "--format", "coco")
    args[args.index("--query") + 1 : args.index("--out")] = [str(files / "queries" / "a.jpg"), str(files / "queries" / "more")]
    assert main(args) == 0
    content = json.loads((files / "out" / "annotations.json").read_text())
    assert [image["file_name"] for image in content["images"]] == ["a.jpg", "more/b.png"]


def test_coco_file_names_are_the_names_given_not_their_links_targets(files, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (files / "queries" / "b.png").rename(elsewhere / "img.png")
    (files / "queries" / "b.png").symlink_to(elsewhere / "img.png")  # a link into another folder tree
    assert main(class_args(files, "--format", "coco")) == 0
    content = json.loads((files / "out" / "annotations.json").read_text())
    assert [image["file_name"] for image in content["images"]] == ["a.jpg", "b.png"]


def test_names_file_with_a_byte_order_mark(tmp_path):
    from diffews.cli.class_supports import read_names

    (tmp_path / "names.txt").write_text("\ufeffcar\nroad\n", encoding="utf-8")  # as Windows Notepad saves it
    assert read_names(tmp_path / "names.txt") == ["car", "road"]
