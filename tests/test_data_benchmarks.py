"""Benchmark readers, split generation and episodes on tiny datasets in the real on-disk formats."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from benchmark_data import COCO_CATEGORY_IDS, HEIGHT, WIDTH, Written, object_boxes, write_lvis
from PIL import Image

from diffews.data import build_episode_dataset, open_split
from diffews.data.lvis import lvis_folds
from diffews.data.splits import write_pair_lists
from diffews.processing.images import preprocess_image
from diffews.errors import InputError


def expected_pascal_target(written: Written, key: str, class_id: int) -> np.ndarray:
    """The writer's label image seen for one class: 1 inside its box, 255 on every object's border ring."""
    target = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    for other in written.classes_of[key]:
        for x0, y0, x1, y1 in written.boxes[(key, other)]:
            target[y0 - 1 : y1 + 1, x0 - 1 : x1 + 1] = 255
            target[y0:y1, x0:x1] = 1 if other == class_id else 0
    return target


# PASCAL-5i


def test_pascal_pairs_generated_from_the_class_masks(benchmarks):
    root, written = benchmarks
    val = open_split("pascal", root, "val", 0)
    assert val.class_ids == [1, 2, 3, 4, 5]
    assert val.pairs == written["pascal"]["val"].pairs({1, 2, 3, 4, 5})
    trn = open_split("pascal", root, "trn", 0)  # training on fold 0 uses the other folds' classes
    assert trn.class_ids == list(range(6, 21))
    assert trn.pairs == written["pascal"]["trn"].pairs(set(range(6, 21)))
    assert {key for key, _ in trn.pairs}.isdisjoint(key for key, _ in val.pairs)


def test_pascal_target_keeps_the_255_borders(benchmarks):
    root, written = benchmarks
    split = open_split("pascal", root, "val", 1)
    for key, class_id in split.pairs:
        target = split.target(key, class_id)
        np.testing.assert_array_equal(target, expected_pascal_target(written["pascal"]["val"], key, class_id))
    assert split.class_names[7] == "car"


def test_pascal_split_lists_from_a_folder(benchmarks, tmp_path):
    root, written = benchmarks
    chosen = written["pascal"]["val"].pairs({1, 2, 3, 4, 5})[:6]
    write_pair_lists({0: chosen}, tmp_path / "lists" / "val")
    split = open_split("pascal", root, "val", 0, splits=tmp_path / "lists")
    assert split.pairs == chosen
    with pytest.raises(InputError, match=r"fold1\.txt: split list not found"):
        open_split("pascal", root, "val", 1, splits=tmp_path / "lists")


# COCO-20i


def test_coco_folds_pairs_and_masks_from_polygons_rle_and_crowds(benchmarks):
    root, written = benchmarks
    split = open_split("coco", root, "val", 0)
    fold_classes = [4 * k + 1 for k in range(20)]
    assert split.class_ids == fold_classes
    assert split.pairs == written["coco"]["val"].pairs(set(fold_classes))
    for key, class_id in split.pairs:
        np.testing.assert_array_equal(split.target(key, class_id), written["coco"]["val"].mask(key, class_id))
        assert split.image_path(key).is_file()
    # Class ids number the 80 categories in id order (COCO's ids have gaps).
    assert split.class_names[13] == f"category {COCO_CATEGORY_IDS[12]}" == "category 14"
    assert open_split("coco", root, "trn", 0).class_ids == [c for c in range(1, 81) if c not in fold_classes]


# LVIS-92i


def test_lvis_folds_interleave_the_classes_with_two_images(benchmarks):
    root, written = benchmarks
    folds = [open_split("lvis", root, "val", fold) for fold in range(10)]
    # Classes 21..25 have one val image each: not eligible. The 20 others interleave into 10 folds.
    assert [split.class_ids for split in folds] == [[i + 1, i + 11] for i in range(10)]
    split = folds[3]
    assert split.pairs == written["lvis"]["val"].pairs({4, 14})
    for key, class_id in split.pairs:
        assert split.image_path(key).is_file()  # val images live in both COCO 2017 folders
        np.testing.assert_array_equal(split.target(key, class_id), written["lvis"]["val"].mask(key, class_id))
    assert {key.split("/")[0] for key, _ in open_split("lvis", root, "val", None).pairs} == {"train2017", "val2017"}


def test_lvis_folds_of_k_shots_hold_the_classes_with_more_than_k_val_images(tmp_path):
    write_lvis(tmp_path)
    path = tmp_path / "LVIS" / "annotations" / "lvis_v1_val.json"
    document = json.loads(path.read_text())
    for class_id in range(1, 11):  # classes 1-10 get a third val image (each eligible class has two)
        shown = {a["image_id"] for a in document["annotations"] if a["category_id"] == class_id}
        image = next(i["id"] for i in document["images"] if i["id"] not in shown)
        document["annotations"].append({**document["annotations"][0], "id": 10_000 + class_id, "image_id": image, "category_id": class_id})
    path.write_text(json.dumps(document))
    assert [open_split("lvis", tmp_path, "val", fold).class_ids for fold in range(10)] == [[i + 1, i + 11] for i in range(10)]
    assert [open_split("lvis", tmp_path, "val", fold, shots=2).class_ids for fold in range(10)] == [[i + 1] for i in range(10)]
    episodes = build_episode_dataset("lvis", tmp_path, "val", 3, shots=2, episodes=2)
    assert {episodes[i]["class_id"] for i in range(2)} == {4} and len(episodes[0]["support_images"]) == 2
    training = open_split("lvis", tmp_path, "trn", 3, shots=2)  # training: the other 1-shot folds' classes
    assert training.class_ids == [c for c in range(1, 21) if c not in (4, 14)]
    with pytest.raises(InputError, match=r"LVIS-92i split lists hold the 1-shot folds, .* leave --splits out$"):
        open_split("lvis", tmp_path, "val", 3, splits=tmp_path, shots=2)


def test_lvis_folds_are_equal_and_leave_the_remainder_out():
    assert lvis_folds(list(range(1, 24))) == {fold: [fold + 1, fold + 11] for fold in range(10)}  # 21-23 in no fold
    assert lvis_folds(list(range(1, 10))) == {fold: [] for fold in range(10)}


# FSS-1000 and custom folders


def test_fss_classes_from_the_split_lists(benchmarks):
    root, written = benchmarks
    split = open_split("fss", root, "test", None, splits=written["fss_splits"])
    assert split.class_names == {1: "dog", 2: "egg", 3: "fig"}
    assert split.pairs == sorted((f"{name}/{n}", c) for c, name in split.class_names.items() for n in (1, 2, 3))
    box_mask = Written(boxes={("k", 1): object_boxes([1])}).mask("k", 1)
    np.testing.assert_array_equal(split.target("egg/2", 2), box_mask)
    dataset = build_episode_dataset("fss", root, "test", None, 1, resolution=32, splits=written["fss_splits"])
    assert len(dataset) == 9  # every test image once
    assert sorted(dataset.episode(i)[:2] for i in range(9)) == split.pairs


@pytest.mark.parametrize("folder", ["custom", "custom_parallel"])
def test_custom_folders_in_both_layouts(benchmarks, folder):
    root, _ = benchmarks
    split = open_split("custom", root / folder, "val", None)
    assert split.class_names == {1: "cat", 2: "dog"}
    assert split.pairs == [(f"cat/photo{i}", 1) for i in range(3)] + [(f"dog/photo{i}", 2) for i in range(4)]
    box_mask = Written(boxes={("k", 1): object_boxes([1])}).mask("k", 1)
    np.testing.assert_array_equal(split.target("dog/photo3", 2), box_mask)
    assert len(build_episode_dataset("custom", root / folder, "val", None, 2, resolution=32)) == 7


def test_custom_palette_mask_255_is_ignored(benchmarks, tmp_path):
    root, _ = benchmarks
    shutil.copytree(root / "custom", tmp_path / "custom")
    palette = Image.fromarray(np.array([[0, 1, 255], [2, 0, 255]], dtype=np.uint8).repeat(10, 0).repeat(10, 1), mode="P")
    palette.putpalette([0, 0, 0, 255, 255, 255] * 128)
    palette.save(tmp_path / "custom" / "cat" / "photo0_mask.png")
    target = open_split("custom", tmp_path / "custom", "val", None).target("cat/photo0", 1)
    expected = np.array([[0, 1, 255], [1, 0, 255]], dtype=np.uint8).repeat(10, 0).repeat(10, 1)
    np.testing.assert_array_equal(target, expected)


def tag_rotate_90(path) -> None:
    """Rewrite a JPEG with the same stored pixels and an EXIF "rotate 90 degrees to display" tag."""
    exif = Image.Exif()
    exif[0x0112] = 6
    with Image.open(path) as image:
        pixels = np.asarray(image)
    Image.fromarray(pixels).save(path, quality=95, exif=exif.tobytes())


@pytest.mark.parametrize(
    "benchmark, split_name, folder, key, oriented",
    [("fss", "test", "", "egg/2", False), ("pascal", "val", "", "2008_000003", False), ("custom", "val", "custom", "dog/photo3", True)],
)
def test_exif_orientation_only_for_the_custom_layout(benchmarks, tmp_path, benchmark, split_name, folder, key, oriented):
    """Published benchmarks' masks index the pixels as stored (the reference evaluation ignores EXIF), so
    a tagged photo is read as stored and its episode pair barely changes; the custom layout turns it, as
    `diffews segment` does."""
    root, written = benchmarks
    shutil.copytree(root, tmp_path / "data", ignore=shutil.ignore_patterns("coco*", "lvis*", "custom_parallel"))
    splits = written["fss_splits"] if benchmark == "fss" else None

    def episodes(data_root):
        return build_episode_dataset(benchmark, data_root / folder, split_name, None, 1, resolution=32, splits=splits)

    untagged = episodes(root)
    class_id = next(c for k, c in untagged.split.pairs if k == key)
    tagged_path = tmp_path / "data" / untagged.split.image_path(key).relative_to(root)
    tag_rotate_90(tagged_path)
    with Image.open(tagged_path) as image:
        stored = np.asarray(image.convert("RGB"))
    tagged = episodes(tmp_path / "data")
    expected = np.rot90(stored, k=-1) if oriented else stored  # tag 6: turn clockwise to display
    np.testing.assert_array_equal(np.asarray(tagged.split.open_image(key)), expected)
    if not oriented:  # what the model sees: the stored picture, and the mask of the untagged file
        image, mask = tagged.working_pair(key, class_id)
        assert torch.equal(image, preprocess_image(Image.fromarray(stored), (32, 32), "diffews"))
        assert torch.equal(mask, untagged.working_pair(key, class_id)[1])


# Episodes


def test_episodes_are_deterministic_distinct_and_of_one_class(benchmarks):
    root, _ = benchmarks
    dataset = build_episode_dataset("coco", root, "val", 2, 1, resolution=32, episodes=50, seed=3)
    again = build_episode_dataset("coco", root, "val", 2, 1, resolution=32, episodes=50, seed=3)
    other_seed = build_episode_dataset("coco", root, "val", 2, 1, resolution=32, episodes=50, seed=4)
    episodes = [dataset.episode(i) for i in range(50)]
    assert episodes == [again.episode(i) for i in range(50)]
    assert episodes != [other_seed.episode(i) for i in range(50)]
    split = dataset.split
    for query, class_id, supports in episodes:
        assert class_id in split.class_ids and query in split.images_of_class[class_id]
        assert query not in supports and set(supports) <= set(split.images_of_class[class_id])
    # COCO episodes draw the class uniformly (HSNet): with 50 draws over 20 classes most appear.
    assert len({class_id for _, class_id, _ in episodes}) >= 15
    first, repeat = dataset[7], again[7]
    assert all(torch.equal(first[k], repeat[k]) for k in ("query_image", "support_images", "query_target"))


def test_pascal_episodes_walk_through_the_pairs_with_distinct_supports(benchmarks):
    root, _ = benchmarks
    split = open_split("pascal", root, "val", 3)
    dataset = build_episode_dataset("pascal", root, "val", 3, 1, resolution=32, episodes=25)
    assert [dataset.episode(i)[:2] for i in range(25)] == [split.pairs[i % len(split.pairs)] for i in range(25)]
    assert len(build_episode_dataset("pascal", root, "val", 3, 1, resolution=32)) == 1000


def test_episode_item_tensors(benchmarks):
    root, written = benchmarks
    dataset = build_episode_dataset("pascal", root, "val", 0, 1, resolution=32, episodes=4)
    item = dataset[2]
    assert item["query_image"].shape == (3, 32, 32) and item["query_image"].dtype == torch.float32
    assert -1 <= item["query_image"].min() and item["query_image"].max() <= 1
    assert item["support_images"].shape == (1, 3, 32, 32) and item["support_masks"].shape == (1, 1, 32, 32)
    assert set(item["query_mask"].unique().tolist()) <= {0.0, 1.0}
    assert set(item["support_masks"].unique().tolist()) == {0.0, 1.0}
    key, class_id = item["query_key"], item["class_id"]
    full = expected_pascal_target(written["pascal"]["val"], key, class_id)
    rows = ((np.arange(32) + 0.5) * HEIGHT / 32).astype(int)  # nearest-neighbour ("exact") sample positions
    cols = ((np.arange(32) + 0.5) * WIDTH / 32).astype(int)
    np.testing.assert_array_equal(item["query_target"].numpy(), full[np.ix_(rows, cols)])
    np.testing.assert_array_equal(item["query_mask"][0].numpy(), (full[np.ix_(rows, cols)] == 1).astype(np.float32))
    original = build_episode_dataset("pascal", root, "val", 0, 1, resolution=32, episodes=4, target_size="original")[2]
    np.testing.assert_array_equal(original["query_target"].numpy(), full)


def test_the_authors_preprocessing_reaches_the_episodes(benchmarks):
    """PIL's 8-bit bilinear resize for images; F.interpolate's "nearest" (source floor(i x in / out)) for masks and targets."""
    root, written = benchmarks
    dataset = build_episode_dataset("pascal", root, "val", 0, 1, resolution=32, episodes=4, preprocessing="authors")
    item = dataset[2]
    full = expected_pascal_target(written["pascal"]["val"], item["query_key"], item["class_id"])
    rows, cols = (np.arange(32) * HEIGHT / 32).astype(int), (np.arange(32) * WIDTH / 32).astype(int)
    np.testing.assert_array_equal(item["query_target"].numpy(), full[np.ix_(rows, cols)])
    np.testing.assert_array_equal(item["query_mask"][0].numpy(), (full[np.ix_(rows, cols)] == 1).astype(np.float32))
    image = Image.open(dataset.split.image_path(item["query_key"])).convert("RGB").resize((32, 32), Image.BILINEAR)
    expected = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255 * 2 - 1
    assert torch.equal(item["query_image"], expected)


def test_five_shot_supports_are_distinct(benchmarks):
    root, _ = benchmarks
    dataset = build_episode_dataset("custom", root / "custom", "val", None, 2, resolution=32)
    for index in range(len(dataset)):
        query, _, supports = dataset.episode(index)
        assert len(set(supports)) == 2 and query not in supports


# Bad input: one line naming what is missing and how to fix it


def copy_benchmark(root, tmp_path, folder):
    shutil.copytree(root / folder, tmp_path / folder)
    return tmp_path


@pytest.mark.parametrize(
    ("benchmark", "split", "fold", "message"),
    [
        ("pascal", "val", 4, r"pascal has folds 0\.\.3; got fold 4"),
        ("coco", "test", 0, r"coco has splits trn, val; got 'test'"),
        ("lvis", "val", -1, r"lvis has folds 0\.\.9"),
        ("fss", "test", 0, r"fss has no folds; got fold 0 \(leave the fold out\)"),
        ("custom", "val", 1, r"custom has no folds; got fold 1"),
        ("imagenet", "val", 0, r"unknown benchmark 'imagenet'; choose one of pascal, coco, lvis, fss, custom"),
    ],
)
def test_unknown_benchmark_split_or_fold(benchmarks, benchmark, split, fold, message):
    root, _ = benchmarks
    with pytest.raises(InputError, match=message):
        open_split(benchmark, root / "custom" if benchmark == "custom" else root, split, fold)


@pytest.mark.parametrize(
    ("benchmark", "message"),
    [
        ("pascal", r"VOC2012: folder not found; PASCAL-5i needs VOC2012/JPEGImages"),
        ("coco", r"COCO2014/val2014: folder not found; COCO-20i needs"),
        ("lvis", r"lvis_v1_val\.json: file not found; LVIS-92i needs"),
        ("custom", r"no class folders"),
    ],
)
def test_missing_dataset_folders(tmp_path, benchmark, message):
    with pytest.raises(InputError, match=message):
        open_split(benchmark, tmp_path, "val", None if benchmark == "custom" else 0)


def test_missing_pascal_image_is_counted(benchmarks, tmp_path):
    root, written = benchmarks
    data = copy_benchmark(root, tmp_path, "VOC2012")
    key = written["pascal"]["val"].pairs({1})[0][0]
    (data / "VOC2012" / "JPEGImages" / f"{key}.jpg").unlink()
    with pytest.raises(InputError, match=rf"1 of 10 PASCAL val images are missing \(first: .*{key}\.jpg\)"):
        open_split("pascal", data, "val", 0)


def test_coco_annotation_that_is_not_json(benchmarks, tmp_path):
    root, _ = benchmarks
    data = copy_benchmark(root, tmp_path, "COCO2014")
    (data / "COCO2014" / "annotations" / "instances_val2014.json").write_text("{not json")
    with pytest.raises(InputError, match=r"instances_val2014\.json: not a JSON annotation file"):
        open_split("coco", data, "val", 0)


@pytest.mark.parametrize(
    "content", ['{"images": [1], "annotations": [], "categories": []}', '{"images": [], "annotations": [], "categories": [{"name": "x"}]}'],
    ids=["image-not-an-object", "category-without-id"],
)
def test_coco_annotation_of_the_wrong_shape_is_one_line(benchmarks, tmp_path, content):
    """Each was pycocotools' TypeError / KeyError traceback."""
    root, _ = benchmarks
    data = copy_benchmark(root, tmp_path, "COCO2014")
    (data / "COCO2014" / "annotations" / "instances_val2014.json").write_text(content)
    with pytest.raises(InputError, match=r"instances_val2014\.json: not COCO-format annotations \(images, annotations and categories"):
        open_split("coco", data, "val", 0)


def test_pascal_split_list_that_is_not_text_is_one_line(benchmarks, tmp_path):
    root, _ = benchmarks
    data = copy_benchmark(root, tmp_path, "VOC2012")
    (data / "VOC2012" / "ImageSets" / "Segmentation" / "val.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match=r"val\.txt: not a UTF-8 text list of image ids; PASCAL-5i needs"):
        open_split("pascal", data, "val", 0)


def test_custom_image_without_mask(benchmarks, tmp_path):
    root, _ = benchmarks
    data = copy_benchmark(root, tmp_path, "custom")
    (data / "custom" / "dog" / "photo1_mask.png").unlink()
    with pytest.raises(InputError, match=r"dog/photo1\.jpg: image without a mask \(expected .*photo1\.png or .*photo1_mask\.png\)"):
        open_split("custom", data / "custom", "val", None)


@pytest.mark.parametrize("orphan", ["photo1_mask.png", "photo1.png"], ids=["named-as-a-mask", "named-as-its-image"])
def test_custom_mask_without_its_image_is_named_as_such(benchmarks, tmp_path, orphan):
    root, _ = benchmarks
    data = copy_benchmark(root, tmp_path, "custom")
    dog = data / "custom" / "dog"
    (dog / "photo1.jpg").unlink()
    (dog / "photo1_mask.png").rename(dog / orphan)
    message = r"photo1_mask\.png: mask without an image" if orphan == "photo1_mask.png" else r"photo1\.png: image without a mask .*\(if it is a mask, its image is missing\)"
    with pytest.raises(InputError, match=message):
        open_split("custom", data / "custom", "val", None)


def test_too_few_images_for_the_shots(benchmarks):
    root, _ = benchmarks
    with pytest.raises(InputError, match=r"class 'aeroplane' \(id 1\) has 2 image\(s\); 2-shot episodes need at least 3"):
        build_episode_dataset("pascal", root, "val", 0, 2, resolution=32)


def test_fss_class_folder_missing(benchmarks, tmp_path):
    root, written = benchmarks
    lists = tmp_path / "lists"
    shutil.copytree(written["fss_splits"], lists)
    (lists / "test.txt").write_text("dog\nzebra\n")
    with pytest.raises(InputError, match=r"1 of 2 test class folders are missing \(first: zebra\)"):
        open_split("fss", root, "test", None, splits=lists)


def test_subsample_keeps_a_fixed_random_choice_of_images_per_class(benchmarks):
    from diffews.data import open_split

    root, _ = benchmarks
    splits = [open_split("custom", root / "custom", "trn", None) for _ in range(2)]
    full = open_split("custom", root / "custom", "trn", None)
    for split in splits:
        split.subsample(2)
    first, second = splits
    assert {c: len(keys) for c, keys in first.images_of_class.items()} == {1: 2, 2: 2}
    assert first.pairs == second.pairs == sorted(first.pairs)
    assert {key for key, _ in first.pairs} == {key for keys in first.images_of_class.values() for key in keys}
    assert set(first.pairs) < set(full.pairs)
