"""`diffews data composite` and the composite benchmark: determinism, exact masks, folds, episodes, bad input."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from cutout_data import error_line, CLASSES, SOURCES, tree_files, write_backgrounds, write_cutouts
from diffews.cli.main import main
from diffews.data import build_episode_dataset, open_split
from diffews.data.composite import FIX, source_of
from diffews.data.paste import OPAQUE, Pasted, paste_all
from diffews.data.synthesize import assign_folds, deal_into, first_word, folds_like
from diffews.errors import InputError

SMALL = ["--size", "32", "--images-per-class", "4", "--eval-images-per-class", "3"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cutouts")
    return write_cutouts(root / "objects"), write_backgrounds(root / "backgrounds")


def composite(inputs, out, *extra: str) -> int:
    objects, backgrounds = inputs
    return main(["data", "composite", "--objects", str(objects), "--backgrounds", str(backgrounds), "--out", str(out), *SMALL, *extra])


BUILT = ["--max-rotation", "0", "--distractors", "1-3", "--seed", "3"]


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "bench"
    assert composite(inputs, out, *BUILT) == 0
    return out


def manifest(root) -> list[dict]:
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]


def test_same_seed_writes_the_same_bytes_whatever_the_workers(inputs, built, tmp_path):
    assert composite(inputs, tmp_path / "same", *BUILT, "--workers", "2") == 0
    assert composite(inputs, tmp_path / "other", *BUILT[:-1], "4") == 0
    same, other, first = tree_files(tmp_path / "same"), tree_files(tmp_path / "other"), tree_files(built)
    assert same == first
    images = [name for name in first if name.endswith(".jpg")]
    assert len(images) == len(CLASSES) * (4 + 3 + 3)
    assert sum(first[name] != other.get(name) for name in images) > len(images) // 2


@pytest.fixture(scope="module")
def labelled(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("labelled") / "bench"
    assert composite(inputs, out, *BUILT, "--label-distractors") == 0
    return out


def footprint(row: dict, shape: tuple[int, int]) -> np.ndarray:
    """Opaque rectangles, no rotation: the index of the object each pixel shows (-1: background)."""
    owner = np.full(shape, -1)
    for index, obj in enumerate(row["objects"]):
        top, left = max(obj["top"], 0), max(obj["left"], 0)
        owner[top : obj["top"] + obj["height"], left : obj["left"] + obj["width"]] = index
    return owner


@pytest.mark.parametrize("bench", ["built", "labelled"])
def test_mask_is_the_visible_footprint_of_the_targets(bench, request):
    """Each object covers its recorded box, later ones on top; in labelled copies the targets are the copy's class."""
    built = request.getfixturevalue(bench)
    occluded = 0
    for row in manifest(built):
        mask = np.asarray(Image.open(built / row["mask"]))
        owner = footprint(row, mask.shape)
        targets = [i for i, obj in enumerate(row["objects"]) if obj["role"] == "target"]
        np.testing.assert_array_equal(mask == 255, np.isin(owner, targets), err_msg=row["image"])
        assert set(np.unique(mask)) <= {0, 255}
        roles = [obj["role"] for obj in row["objects"]]
        occluded += any(
            _overlap(row["objects"][t], row["objects"][d]) for t in targets for d in range(t + 1, len(roles)) if roles[d] == "distractor"
        )
    assert occluded >= 3  # the check above covered distractors hiding targets


def _overlap(a: dict, b: dict) -> bool:
    return a["top"] < b["top"] + b["height"] and b["top"] < a["top"] + a["height"] and a["left"] < b["left"] + b["width"] and b["left"] < a["left"] + a["width"]


def test_manifest_names_every_pasted_file_and_its_class(built, inputs):
    objects, _ = inputs
    rows = manifest(built)
    assert len(rows) == len(CLASSES) * 10
    for row in rows:
        assert (built / row["image"]).is_file() and row["image"].startswith(f"{row['split']}/{row['class']}/{row['source']}__")
        for obj in row["objects"]:
            assert obj["file"] == str(objects / obj["class"] / f"{obj['file'].rsplit('/', 1)[1]}")
            source = obj["file"].rsplit("/", 1)[1].split("__")[0]
            if obj["role"] == "target":
                assert obj["class"] == row["class"] and source == row["source"]
            else:  # distractors: another family, the image's source
                assert first_word(obj["class"]) != first_word(row["class"]) and source == row["source"]
        assert 1 <= sum(o["role"] == "target" for o in row["objects"]) <= 3
    per_source = Counter((row["split"], row["class"], row["source"]) for row in rows)
    assert set(per_source.values()) == {2, 3}  # trn: 4 images from 2 sources; val, test: 3 images from 1
    assert Counter(split for split, _, _ in per_source) == {"trn": 2 * len(CLASSES), "val": len(CLASSES), "test": len(CLASSES)}


def test_label_distractors_files_trn_images_under_their_visible_distractor_classes(built, labelled):
    plain, files = tree_files(built), tree_files(labelled)
    assert all(files[name] == data for name, data in plain.items() if not name.endswith(".json") and not name.endswith(".jsonl"))
    rows = manifest(labelled)
    copies = [row for row in rows if "copy_of" in row]
    originals = {row["image"]: row for row in rows if "copy_of" not in row}
    assert len(originals) == len(plain) // 2 - 1 and len(copies) >= len(CLASSES)
    for row in copies:
        original = originals[row["copy_of"]]
        assert row["split"] == "trn" and files[row["image"]] == files[row["copy_of"]]
        assert row["image"] == f"trn/{row['class']}/{original['source']}__{original['class']}-{row['copy_of'][-8:]}"
    hidden = 0
    for row in originals.values():
        owner = footprint(row, (32, 32))
        distractors = {obj["class"] for obj in row["objects"] if obj["role"] == "distractor"}
        kept = {
            name for name in distractors
            if all((owner == i).sum() >= 0.4 * o["height"] * o["width"] for i, o in enumerate(row["objects"]) if o["class"] == name)
        }
        assert {c["class"] for c in copies if c["copy_of"] == row["image"]} == (kept if row["split"] == "trn" else set())
        hidden += row["split"] == "trn" and kept != distractors
    assert hidden >= 1  # a distractor hidden below --min-visible gets no copy
    description = json.loads((labelled / "benchmark.json").read_text())
    assert description["labelled_copies"] == len(copies) and description["images"]["trn"] == 4 * len(CLASSES) + len(copies)
    train = open_split("composite", labelled, "trn", None)
    assert len(train.pairs) == description["images"]["trn"]
    folds = description["folds"]
    fold0_train = {key for key, _ in open_split("composite", labelled, "trn", 0).pairs}
    expected = {
        row["image"][len("trn/"):-len(".jpg")] for row in rows
        if row["split"] == "trn" and row["class"] not in folds[0] and originals[row.get("copy_of", row["image"])]["class"] not in folds[0]
    }
    assert fold0_train == expected and any("copy_of" in row for row in rows if row["image"][4:-4] in expected)
    assert any(originals[row["copy_of"]]["class"] in folds[0] and row["class"] not in folds[0] for row in copies)  # left out above


def test_folds_are_disjoint_cover_every_class_and_keep_families_together(built):
    folds = json.loads((built / "benchmark.json").read_text())["folds"]
    assert len(folds) == 4 and sorted(c for fold in folds for c in fold) == sorted(CLASSES)
    assert len({first_word(c) for fold in folds for c in fold if c.startswith("go-")}) == 1
    assert [fold for fold in folds if "go-left" in fold][0].count("go-right") == 1
    names = [f"c{i:03d}" for i in range(103)]
    sizes = sorted(len(f) for f in assign_folds(names, seed=1))
    assert sizes == [25, 26, 26, 26]


def test_splits_read_the_folds(built):
    folds = json.loads((built / "benchmark.json").read_text())["folds"]
    train = open_split("composite", built, "trn", 0)
    test = open_split("composite", built, "test", 0)
    assert sorted(train.class_names.values()) == sorted(c for f in folds[1:] for c in f)
    assert sorted(test.class_names.values()) == sorted(folds[0])
    assert len(test.pairs) == 3 * len(folds[0]) and test.describe() == "composite test fold 0"
    assert len(open_split("composite", built, "val", None).class_names) == len(CLASSES)


@pytest.mark.parametrize("fraction", [1.0, 0.0])
def test_supports_share_the_query_source_as_asked(built, fraction):
    dataset = build_episode_dataset("composite", built, "trn", None, shots=1, resolution=32, episodes=40)
    dataset.split.same_source_fraction = fraction
    same = [source_of(q) == source_of(s[0]) for q, _, s in map(dataset.episode, range(40))]
    # 4 trn images per class: 2 sources of 2 images each, so every query has a same-source and an other-source image
    assert all(same) if fraction == 1.0 else not any(same)


def test_paste_blends_colour_and_only_opaque_pixels_claim_the_mask():
    background = np.full((4, 4, 3), 100, np.uint8)
    faint = np.zeros((2, 2, 4), np.uint8)
    faint[...] = (200, 0, 0, OPAQUE - 1)
    solid = np.zeros((2, 4, 4), np.uint8)
    solid[...] = (0, 50, 0, 255)
    image, owner = paste_all(background, [Pasted(solid, 1, 0), Pasted(faint, 0, -1)])
    expected_owner = np.array([[0] * 4, [1] * 4, [1] * 4, [0] * 4])
    np.testing.assert_array_equal(owner, expected_owner)
    a = (OPAQUE - 1) / 255
    assert tuple(image[0, 0]) == tuple(np.rint([200 * a + 100 * (1 - a), 100 * (1 - a), 100 * (1 - a)]).astype(int))
    assert tuple(image[1, 0]) == tuple(np.rint([200 * a, 50 * (1 - a), 0]).astype(int))
    assert tuple(image[2, 3]) == (0, 50, 0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda o, b: (o / "nowhere", b), "nowhere: folder not found; --objects needs"),
        (lambda o, b: (o / "apple", b), "0 class folder(s) with PNG cut-outs; at least 4"),
        (lambda o, b: (o, o / "apple" / "ink__apple.png"), "ink__apple.png: folder not found; --backgrounds"),
    ],
)
def test_bad_folders_exit_2_with_one_line_and_write_nothing(inputs, tmp_path, capsys, change, message):
    assert composite(change(*inputs), tmp_path / "out") == 2
    assert message in error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--instances", "3-1"], "--instances must be LOW-HIGH with 1 <= LOW <= HIGH; got (3, 1)"),
        (["--scale", "big"], "--scale 'big': expected LOW-HIGH, e.g. 0.3-0.6"),
        (["--size", "30"], "--size must be a multiple of 8, at least 32; got 30"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(inputs, tmp_path, capsys, extra, message):
    assert composite(inputs, tmp_path / "out", *extra) == 2
    assert error_line(capsys) == f"error: {message}"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra", [["--seed", "-1"], ["--workers", "0"]])
def test_a_negative_seed_or_no_workers_is_refused_by_the_parser(inputs, tmp_path, capsys, extra):
    with pytest.raises(SystemExit) as raised:
        composite(inputs, tmp_path / "out", *extra)
    assert raised.value.code == 2 and f"argument {extra[0]}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_negative_seed_is_refused_by_the_library_too(inputs, tmp_path):
    from diffews.data.synthesize import CompositeOptions, build_composite

    with pytest.raises(InputError, match=r"^--seed must be at least 0; got -1$"):
        build_composite(*inputs, tmp_path / "out", CompositeOptions(seed=-1))


def test_missing_parent_folders_of_the_output_are_created(inputs, built, tmp_path):
    out = tmp_path / "new" / "deeper" / "bench"
    assert composite(inputs, out, *BUILT) == 0
    assert tree_files(out) == tree_files(built)


def test_a_failed_build_removes_the_parent_folders_it_created(inputs, tmp_path, monkeypatch):
    from diffews.data import synthesize

    monkeypatch.setattr(synthesize, "_write_one", lambda job: (_ for _ in ()).throw(KeyboardInterrupt))
    assert composite(inputs, tmp_path / "new" / "bench") == 130
    assert list(tmp_path.iterdir()) == []


def test_the_output_folder_is_refused_before_the_cutouts_are_read(inputs, tmp_path, capsys, monkeypatch):
    from diffews.data import synthesize

    monkeypatch.setattr(synthesize, "find_cutouts", lambda objects: pytest.fail("read the cut-outs before checking --out"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert composite(inputs, tmp_path / "out") == 2
    assert "already exists and is not an empty folder" in error_line(capsys)


def test_hidden_backgrounds_are_skipped_and_a_non_image_is_refused_before_the_build(inputs, built, tmp_path, capsys, monkeypatch):
    import shutil

    objects, backgrounds = inputs
    shutil.copytree(backgrounds, tmp_path / "backgrounds")
    (tmp_path / "backgrounds" / "._bg0.png").write_bytes(b"macOS metadata")  # AppleDouble files, as a copy from a Mac leaves
    (tmp_path / "backgrounds" / ".thumbs").mkdir()
    (tmp_path / "backgrounds" / ".thumbs" / "bg9.png").write_bytes(b"not an image either")
    assert composite((objects, tmp_path / "backgrounds"), tmp_path / "out", *BUILT) == 0
    assert tree_files(tmp_path / "out") == {
        name: data.replace(str(backgrounds).encode(), str(tmp_path / "backgrounds").encode()) for name, data in tree_files(built).items()
    }
    bad = tmp_path / "backgrounds" / "bg1.png"
    bad.write_bytes(b"not an image")
    from diffews.data import synthesize

    monkeypatch.setattr(synthesize, "_write_one", lambda job: pytest.fail("started the build"))
    assert composite((objects, tmp_path / "backgrounds"), tmp_path / "out2") == 2
    assert error_line(capsys).startswith(f"error: {bad}: cannot read image")


def test_a_manifest_that_is_not_utf8_is_one_line(inputs, tmp_path, capsys):
    import shutil

    objects, backgrounds = inputs
    shutil.copytree(objects, tmp_path / "objects")
    (tmp_path / "objects" / "manifest.jsonl").write_bytes('{"file": "apple/ink__apple.png", "licence": "\xa9 ink"}\n'.encode("cp1252"))
    assert composite((tmp_path / "objects", backgrounds), tmp_path / "out") == 2
    assert error_line(capsys).startswith(f"error: {tmp_path / 'objects' / 'manifest.jsonl'}: cannot read it (")
    assert not (tmp_path / "out").exists()


def test_existing_output_is_refused_and_left_alone(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert composite(inputs, out) == 2
    assert "already exists and is not an empty folder" in error_line(capsys)
    assert tree_files(tmp_path) == {"out/keep.txt": b"mine"}


def test_an_empty_output_folder_is_kept_and_filled_and_a_link_is_refused(inputs, built, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    inode = out.stat().st_ino
    assert composite(inputs, out, *BUILT) == 0
    assert out.stat().st_ino == inode  # the user's folder itself, not a replacement
    assert tree_files(out) == tree_files(built)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert composite(inputs, tmp_path / "link") == 2
    assert "is a symbolic link; give the folder it points to" in error_line(capsys)
    assert (tmp_path / "link").is_symlink() and list((tmp_path / "real").iterdir()) == []


def test_a_failed_build_into_an_empty_folder_leaves_it_empty(inputs, tmp_path, monkeypatch, capsys):
    from diffews.data import synthesize

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(synthesize, "_write_one", lambda job: (_ for _ in ()).throw(KeyboardInterrupt))
    assert composite(inputs, out) == 130
    assert list(out.iterdir()) == []


def test_a_full_disk_is_one_line_and_leaves_nothing(inputs, tmp_path, monkeypatch, capsys):
    import errno

    from diffews.data import synthesize

    def full(job):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "x.png"))

    monkeypatch.setattr(synthesize, "_write_one", full)
    assert composite(inputs, tmp_path / "out") == 2
    assert error_line(capsys) == f"error: {tmp_path / 'out'}: cannot write (No space left on device)"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_corrupt_cutout_is_one_line_naming_it_and_leaves_nothing(inputs, tmp_path, capsys, workers):
    import shutil

    objects, backgrounds = inputs
    shutil.copytree(objects, tmp_path / "objects")
    bad = sorted((tmp_path / "objects").glob("*/*.png"))[0]
    bad.write_bytes(b"not a png")
    assert composite((tmp_path / "objects", backgrounds), tmp_path / "out", "--workers", workers) == 2
    assert error_line(capsys).startswith(f"error: {bad}: cannot read image")
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("RGB", "cut-out without an alpha channel"),
        ("transparent", "cut-out with no visible pixel"),
        ("faint", "cut-out with no visible pixel (its alpha is below 128 everywhere"),  # pasted, but its masks were empty
    ],
)
def test_a_cutout_without_a_usable_alpha_is_one_line(inputs, tmp_path, capsys, damage, message):
    import shutil

    objects, backgrounds = inputs
    shutil.copytree(objects, tmp_path / "objects")
    for bad in sorted((tmp_path / "objects").glob("*/*.png")):  # every cut-out, so the build must meet one
        with Image.open(bad) as image:
            rgba = image.convert("RGBA")
        if damage == "faint":
            rgba.putalpha(OPAQUE - 1)
        (rgba.convert("RGB") if damage == "RGB" else rgba if damage == "faint" else Image.new("RGBA", rgba.size)).save(bad)
    assert composite((tmp_path / "objects", backgrounds), tmp_path / "out", "--workers", "1") == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("folds", [[1, 2, 3, 4], [["a"], ["b"], ["c"], [["d"]]], [["a"], ["b"], ["c"], ["d", 5]], [[], ["b"], ["c"], ["d"]]])
def test_a_malformed_description_is_one_line(tmp_path, capsys, folds):
    (tmp_path / "benchmark.json").write_text(json.dumps({"format": "diffews-composite", "folds": folds}))
    assert main(["data", "check", "composite", str(tmp_path)]) == 2
    assert error_line(capsys) == f"error: {tmp_path / 'benchmark.json'}: each fold must be a non-empty list of class names; " + FIX


@pytest.mark.parametrize("options", [None, {"same_source_fraction": "half"}, {"same_source_fraction": 7}, {"same_source_fraction": True}])
def test_malformed_description_options_are_one_line(tmp_path, capsys, options):
    folds = [["a"], ["b"], ["c"], ["d"]]
    (tmp_path / "benchmark.json").write_text(json.dumps({"format": "diffews-composite", "folds": folds, "options": options}))
    assert main(["data", "check", "composite", str(tmp_path)]) == 2
    assert error_line(capsys).startswith(f"error: {tmp_path / 'benchmark.json'}: options.same_source_fraction must be a number from 0 to 1")


def test_interrupted_build_leaves_nothing(inputs, tmp_path, monkeypatch, capsys):
    from diffews.data import synthesize

    calls = []

    def interrupted(job):
        calls.append(job)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return original(job)

    original = synthesize._write_one
    monkeypatch.setattr(synthesize, "_write_one", interrupted)
    assert composite(inputs, tmp_path / "out") == 130
    assert list(tmp_path.iterdir()) == []


def test_the_benchmark_is_checked_and_each_split_is_a_custom_root(built, capsys):
    assert main(["data", "check", "composite", str(built)]) == 0
    out = capsys.readouterr().out
    assert f"trn images: {4 * len(CLASSES)} found, ok" in out and f"test images: {3 * len(CLASSES)} found, ok" in out
    assert len(open_split("custom", built / "trn", "trn", None).pairs) == 4 * len(CLASSES)
    assert {source_of(key) for key, _ in open_split("custom", built / "val", "val", None).pairs} == set(SOURCES)


def test_training_configs_know_the_composite_folds():
    from diffews.errors import InputError
    from diffews.training.config import load_config

    assert load_config(None, {"benchmark": "composite", "fold": "3"}).data.fold == 3
    with pytest.raises(InputError, match=r"fold must be null or 0\.\.3 for cut-out composite, got 4"):
        load_config(None, {"benchmark": "composite", "fold": "4"})


def test_several_object_folders_add_up_and_folds_from_keeps_the_reference_folds(inputs, built, tmp_path):
    """A second cut-out folder adds sources to shared classes and new classes; --folds-from keeps the folds it knows."""
    objects, backgrounds = inputs
    extra = write_cutouts(tmp_path / "extra", classes=("apple", "go-up", "hat", "ink-pot", "jar"), sources=("chalk",))
    reference = json.loads((built / "benchmark.json").read_text())["folds"]
    args = ["data", "composite", "--objects", str(objects), str(extra), "--backgrounds", str(backgrounds), *SMALL, "--folds-from", str(built)]

    assert main([*args, "--out", str(tmp_path / "same")]) == 0
    same = json.loads((tmp_path / "same" / "benchmark.json").read_text())
    assert same["folds"] == reference
    assert same["sources"]["apple"] == sorted([*SOURCES, "chalk"])

    assert main([*args, "--deal-new-classes", "--out", str(tmp_path / "dealt")]) == 0
    dealt = json.loads((tmp_path / "dealt" / "benchmark.json").read_text())["folds"]
    assert [[c for c in fold if c in CLASSES] for fold in dealt] == reference
    assert sorted(c for fold in dealt for c in fold) == sorted({*CLASSES, "go-up", "hat", "ink-pot", "jar"})
    go_fold = [i for i, fold in enumerate(reference) if "go-left" in fold][0]
    assert "go-up" in dealt[go_fold]
    new_sizes = sorted(len(d) - len(r) for d, r in zip(dealt, reference))
    assert sum(new_sizes) == 4 and new_sizes[-1] <= 2


def test_a_family_keeps_its_reference_fold_even_when_its_reference_classes_are_missing(tmp_path):
    reference = [["apple", "cup", "go-left"], ["boat"], ["drum"], ["egg"]]
    (tmp_path / "benchmark.json").write_text(json.dumps({"format": "diffews-composite", "folds": reference}))
    classes = {name: [] for name in ("apple", "boat", "cup", "drum", "egg", "go-up", "go-down", "hat")}
    kept, folds = folds_like(classes, tmp_path, deal_new_classes=True)
    assert folds[0] == ["apple", "cup", "go-down", "go-up"]  # not the smallest fold: go's reference fold
    assert folds[1:] == [["boat", "hat"], ["drum"], ["egg"]]
    assert set(kept) == set(classes)
    assert folds_like(classes, tmp_path)[1] == [["apple", "cup"], ["boat"], ["drum"], ["egg"]]


def test_an_objects_folder_given_twice_is_refused(inputs, tmp_path, capsys):
    objects, backgrounds = inputs
    args = ["--objects", str(objects), f"{objects}/.", "--backgrounds", str(backgrounds), "--out", str(tmp_path / "out")]
    assert main(["data", "composite", *args]) == 2
    assert error_line(capsys).endswith(": given twice in --objects (its cut-outs would count twice)")
    assert list(tmp_path.iterdir()) == []


def test_deal_new_classes_needs_folds_from(inputs, tmp_path, capsys):
    assert composite(inputs, tmp_path / "out", "--deal-new-classes") == 2
    assert error_line(capsys) == "error: --deal-new-classes adds classes to the folds of --folds-from DIR; give that too"
    assert list(tmp_path.iterdir()) == []


def test_deal_into_fills_the_smallest_folds_and_assign_folds_deals_as_before():
    names = [f"c{i:03d}-x" for i in range(10)] + ["d-1", "d-2", "d-3", "e-1", "f-1", "f-2"]
    expected = [  # assign_folds of the release before deal_into: the same seed keeps its folds
        ["c000-x", "d-1", "d-2", "d-3"], ["c002-x", "e-1", "f-1", "f-2"],
        ["c003-x", "c004-x", "c005-x", "c009-x"], ["c001-x", "c006-x", "c007-x", "c008-x"],
    ]
    assert assign_folds(names, seed=5) == expected
    folds = deal_into([["a-1", "a-2", "a-3"], ["b-1"], [], ["d-0"]], ["a-4", "d-9", "e-1", "f-1"], seed=0)
    assert folds[0] == ["a-1", "a-2", "a-3", "a-4"] and folds[3] == ["d-0", "d-9"]
    assert sorted(len(f) for f in folds[1:3]) == [1, 2] and sorted(folds[1] + folds[2]) == ["b-1", "e-1", "f-1"]
