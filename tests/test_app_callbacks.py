"""The web app's callbacks, without a browser: support panels, queries, segmentation, re-thresholding."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffews import DiffewSPipeline, InputError
from diffews.app import callbacks
from diffews.processing.images import load_image, load_mask
from diffews.processing.thresholds import masks_at_sizes

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SUPPORT_IMAGE = EXAMPLES / "support" / "gnome_dev_cdrom_audio_support_1.jpg"
SUPPORT_MASK = EXAMPLES / "support" / "gnome_dev_cdrom_audio_support_1_mask.png"
QUERIES = [EXAMPLES / "query" / "gnome_dev_cdrom_audio_query_1.jpg", EXAMPLES / "query" / "gnome_dev_cdrom_audio_query_2.jpg", EXAMPLES / "query" / "gnome_dev_cdrom_audio_query_3.jpg"]


@pytest.fixture
def pipe(tiny_pipeline) -> DiffewSPipeline:
    """The session's tiny pipeline (conftest); these tests only read it."""
    return tiny_pipeline


@pytest.fixture(scope="module")
def pair() -> callbacks.SupportPair:
    return callbacks.support_pair(1, Image.open(SUPPORT_IMAGE), [], str(SUPPORT_MASK))


def layer(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    """A transparent RGBA brush layer with an opaque red rectangle (x0, y0, x1, y1), end exclusive."""
    pixels = np.zeros((size[1], size[0], 4), np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = (255, 40, 40, 255)
    return Image.fromarray(pixels, "RGBA")


def test_model_notice_names_random_weights_only_for_the_tiny_model():
    assert "random weights" in callbacks.model_notice("tiny-random")
    assert "meaningless" in callbacks.model_notice("tiny-random")
    assert callbacks.model_notice("./diffews-coco") is None


def test_painted_mask_is_the_union_of_painted_pixels():
    expected = np.zeros((20, 30), bool)
    expected[2:5, 3:9] = True
    expected[10:18, 20:25] = True
    mask = callbacks.painted_mask([layer((30, 20), (3, 2, 9, 5)), None, layer((30, 20), (20, 10, 25, 18))])
    np.testing.assert_array_equal(mask, expected)


def test_painted_mask_is_none_when_nothing_is_painted():
    assert callbacks.painted_mask([]) is None
    assert callbacks.painted_mask([None, Image.new("RGBA", (8, 8), (255, 0, 0, 0))]) is None


def test_support_pair_uses_the_uploaded_mask_file(pair):
    np.testing.assert_array_equal(pair.mask, load_mask(SUPPORT_MASK))
    assert pair.image.mode == "RGB"
    assert pair.source == "Example 1, gnome_dev_cdrom_audio_support_1_mask.png"


def test_support_pair_prefers_an_uploaded_mask_over_painting():
    image = Image.open(SUPPORT_IMAGE)
    result = callbacks.support_pair(2, image, [layer(image.size, (0, 0, 5, 5))], str(SUPPORT_MASK))
    np.testing.assert_array_equal(result.mask, load_mask(SUPPORT_MASK))


def test_support_pair_from_painting():
    image = Image.new("RGBA", (40, 30), (0, 120, 0, 255))
    result = callbacks.support_pair(3, image, [layer((40, 30), (10, 5, 20, 15))], None)
    assert result.mask.sum() == 100 and result.mask[5:15, 10:20].all()
    assert result.source == "Example 3, painted"
    assert result.image.mode == "RGB" and result.image.size == (40, 30)


def test_a_transparent_support_reads_as_the_same_picture_given_as_a_query(tmp_path):
    """The editor hands the app a support whose transparent pixels are black; the query file keeps whatever
    its author left under them: both are flattened onto white, so one picture reads the same either way."""
    pixels = np.zeros((30, 40, 4), np.uint8)
    pixels[..., :3] = (250, 250, 250)  # hidden under alpha 0
    pixels[8:20, 10:30] = (30, 90, 200, 255)
    pixels[20:24, 10:30, 3] = 100
    Image.fromarray(pixels, "RGBA").save(tmp_path / "icon.png")
    from_editor = pixels.copy()
    from_editor[pixels[..., 3] == 0, :3] = 0
    support = callbacks.support_pair(1, Image.fromarray(from_editor, "RGBA"), [layer((40, 30), (10, 8, 30, 20))], None)
    query = load_image(tmp_path / "icon.png")
    np.testing.assert_array_equal(np.asarray(support.image), np.asarray(query))
    assert np.asarray(query)[0, 0].tolist() == [255, 255, 255]


def test_messages_of_another_class_panel_name_the_class():
    image = Image.new("RGB", (40, 30))
    with pytest.raises(InputError, match=r"^class 2, support pair 1: no mask; upload a mask or paint the object on the image$"):
        callbacks.support_pair(1, image, [], None, "class 2")
    result = callbacks.support_pair(1, image, [layer((40, 30), (10, 5, 20, 15))], None, "class 2")
    assert result.source == "class 2, Example 1, painted"


def test_empty_support_panel_is_skipped():
    assert callbacks.support_pair(4, None, [], None) is None


@pytest.mark.parametrize(
    ("image", "mask", "message"),
    [
        (None, str(SUPPORT_MASK), "support pair 2: a mask but no image; add the image it belongs to"),
        (Image.new("RGB", (8, 8)), None, "support pair 2: no mask; upload a mask or paint the object on the image"),
    ],
)
def test_incomplete_support_pair_is_an_error(image, mask, message):
    with pytest.raises(InputError) as error:
        callbacks.support_pair(2, image, [], mask)
    assert str(error.value) == message


def test_empty_and_unreadable_mask_files_are_errors(tmp_path):
    Image.new("L", (16, 16), 0).save(tmp_path / "blank.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    image = Image.new("RGB", (16, 16))
    with pytest.raises(InputError) as error:
        callbacks.support_pair(1, image, [], str(tmp_path / "blank.png"))
    assert str(error.value) == "support mask 1 (blank.png) is empty"
    with pytest.raises(InputError, match=r"broken\.png: cannot read image"):
        callbacks.support_pair(1, image, [], str(tmp_path / "broken.png"))


def test_support_set_errors_name_the_pair_and_its_source(pipe):
    speck = callbacks.support_pair(2, Image.new("RGB", (640, 640)), [layer((640, 640), (3, 3, 5, 5))], None)
    with pytest.raises(InputError) as error:
        callbacks.segment(pipe, callbacks.Session(), [speck], QUERIES[:1])
    assert str(error.value) == "support mask 1 (Example 2, painted) is empty after resizing to 64x64 (object too small)"


def test_collect_support_keeps_filled_panels_in_order(pair):
    other = callbacks.SupportPair(pair.image, pair.mask, "other.png")
    assert callbacks.collect_support([None, pair, None, other]) == [pair, other]


def test_collect_support_needs_one_to_five_pairs(pair):
    with pytest.raises(InputError) as error:
        callbacks.collect_support([None, None])
    assert str(error.value) == "no support example: add at least one image with its mask (uploaded or painted)"
    with pytest.raises(InputError) as error:
        callbacks.collect_support([pair] * 6)
    assert str(error.value) == "6 support examples; the app takes at most 5"


def test_query_paths_keeps_images_and_skips_other_files(tmp_path):
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "._photo.jpg").write_bytes(b"\0\5\26\7")  # macOS metadata beside a copied photo: refused as unreadable before
    (tmp_path / "notes.txt").write_text("x")
    uploads = [QUERIES[1], None, tmp_path / ".DS_Store", tmp_path / "._photo.jpg", tmp_path / "notes.txt", QUERIES[0], QUERIES[1]]
    assert callbacks.query_paths([str(p) if p else None for p in uploads]) == [QUERIES[1], QUERIES[0]]


def test_query_paths_errors(tmp_path):
    with pytest.raises(InputError) as error:
        callbacks.query_paths([str(tmp_path / "notes.txt")])
    assert str(error.value) == "no query images: upload image files or a folder of images (.bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp)"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(InputError, match=r"broken\.jpg: cannot read image"):
        callbacks.query_paths([str(QUERIES[0]), str(broken)])
    half = tmp_path / "half.jpg"  # a real JPEG cut in half: its header is fine, decoding it is not
    half.write_bytes(QUERIES[0].read_bytes()[: QUERIES[0].stat().st_size // 2])
    with pytest.raises(InputError, match=r"half\.jpg: cannot read image \(image file is truncated"):
        callbacks.query_paths([str(half), str(QUERIES[0])])
    (tmp_path / "sub").mkdir()
    twin = tmp_path / "sub" / QUERIES[0].name
    twin.write_bytes(QUERIES[0].read_bytes())
    with pytest.raises(InputError, match="would both write outputs named 'gnome_dev_cdrom_audio_query_1_\\*'"):
        callbacks.query_paths([str(QUERIES[0]), str(twin)])


def test_support_key_changes_with_pixels_masks_order_and_resolution(pair):
    other_mask = callbacks.SupportPair(pair.image, ~pair.mask, pair.source)
    keys = {
        callbacks.support_key([pair], 64),
        callbacks.support_key([pair], 128),
        callbacks.support_key([other_mask], 64),
        callbacks.support_key([pair, other_mask], 64),
        callbacks.support_key([other_mask, pair], 64),
    }
    assert len(keys) == 5
    copy = callbacks.SupportPair(pair.image.copy(), pair.mask.copy(), "another.png")
    assert callbacks.support_key([copy], 64) == callbacks.support_key([pair], 64)


def test_segment_matches_the_pipeline_and_encodes_the_support_once(pipe, pair):
    reference = pipe([load_image(q) for q in QUERIES], [load_image(SUPPORT_IMAGE)], [load_mask(SUPPORT_MASK)], batch_size=2,
                     output_mask_images=True)
    session = callbacks.Session()
    steps = []
    callbacks.segment(pipe, session, [pair], QUERIES, batch_size=2, progress=lambda f, d: steps.append((f, d)))
    assert session.support_encodings == 1
    assert [r.stem for r in session.results] == ["gnome_dev_cdrom_audio_query_1", "gnome_dev_cdrom_audio_query_2", "gnome_dev_cdrom_audio_query_3"]
    for result, mask_image in zip(session.results, reference.mask_images):
        np.testing.assert_allclose(result.mask_image, mask_image, atol=1e-6)
    assert [f for f, _ in steps] == [0.0, 0.0, 2 / 3, 1.0]
    assert steps[0][1] == "encoding the support set" and steps[-1][1] == "done"

    callbacks.segment(pipe, session, [callbacks.SupportPair(pair.image.copy(), pair.mask.copy(), "x")], QUERIES[:1])
    assert session.support_encodings == 1, "an unchanged support set must not be encoded again"
    assert [r.stem for r in session.results] == ["gnome_dev_cdrom_audio_query_1"]
    # A batch of 1 instead of 2 sums in another order: equal up to float32 rounding.
    np.testing.assert_allclose(session.results[0].mask_image, reference.mask_images[0], atol=1e-5)

    flipped = callbacks.SupportPair(pair.image.transpose(Image.FLIP_LEFT_RIGHT), np.ascontiguousarray(pair.mask[:, ::-1]), "flipped")
    callbacks.segment(pipe, session, [flipped], QUERIES[:1])
    assert session.support_encodings == 2


def test_render_equals_the_pipeline_masks_and_writes_pngs_and_zip(pipe, pair, tmp_path):
    session = callbacks.segment(pipe, callbacks.Session(), [pair], QUERIES[:2])
    for threshold, mode in [(0.25, "relative"), (0.5, "absolute"), (0.9, "relative"), (0.25, "authors"), (0.6, "authors")]:
        reference = pipe([load_image(q) for q in QUERIES[:2]], [load_image(SUPPORT_IMAGE)], [load_mask(SUPPORT_MASK)],
                         threshold=threshold, threshold_mode=mode)
        folder = tmp_path / f"{mode}-{threshold}"
        shown = callbacks.render(session, threshold, mode, folder)
        assert [p.name for p in shown.mask_files] == ["gnome_dev_cdrom_audio_query_1_mask.png", "gnome_dev_cdrom_audio_query_2_mask.png"]
        with zipfile.ZipFile(shown.zip_file) as archive:
            assert archive.namelist() == ["gnome_dev_cdrom_audio_query_1_mask.png", "gnome_dev_cdrom_audio_query_2_mask.png"]
            zipped = [np.asarray(Image.open(io.BytesIO(archive.read(p.name)))) for p in shown.mask_files]
        for path, inside, expected, (overlay, caption), query in zip(shown.mask_files, zipped, reference.masks, shown.gallery, QUERIES):
            written = np.asarray(Image.open(path))
            np.testing.assert_array_equal(written, expected.astype(np.uint8) * 255)
            np.testing.assert_array_equal(inside, written)
            assert overlay.size == Image.open(query).size
            assert caption == f"{query.stem} ({expected.mean():.1%} foreground)"


def test_render_at_the_extremes(pipe, pair, tmp_path):
    session = callbacks.segment(pipe, callbacks.Session(), [pair], QUERIES[:1])
    result = session.results[0]
    _, probability, _ = masks_at_sizes(result.mask_image[None], [(result.image.height, result.image.width)], 0.0, "absolute")[0]
    everything = callbacks.render(session, 0.0, "absolute", tmp_path / "a")
    np.testing.assert_array_equal(np.asarray(Image.open(everything.mask_files[0])) > 0, probability > 0)
    nothing = callbacks.render(session, 1.0, "relative", tmp_path / "b")
    assert not np.asarray(Image.open(nothing.mask_files[0])).any()
    assert np.asarray(Image.open(callbacks.render(session, 0.25, "relative", tmp_path / "c").mask_files[0])).any(), (
        "the default threshold keeps at least the maximum's neighbourhood"
    )


def test_the_session_folder_holds_only_the_last_run(pipe, pair, tmp_path):
    """A run of 3 queries then one of 1 left the 3 earlier masks beside the new one (the zip was right)."""
    session = callbacks.Session()
    callbacks.segment(pipe, session, [pair], QUERIES, batch_size=3)
    callbacks.render(session, 0.25, "relative", tmp_path)
    assert len(list(tmp_path.iterdir())) == 4
    callbacks.segment(pipe, session, [pair], QUERIES[1:2], batch_size=1)
    shown = callbacks.render(session, 0.25, "relative", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["gnome_dev_cdrom_audio_query_2_mask.png", "masks.zip"])
    assert shown.mask_files == [tmp_path / "gnome_dev_cdrom_audio_query_2_mask.png"]


def test_render_needs_results_and_a_valid_threshold(pipe, pair, tmp_path):
    with pytest.raises(InputError) as error:
        callbacks.render(callbacks.Session(), 0.5, "absolute", tmp_path)
    assert str(error.value) == "nothing to show yet: click Segment first"
    session = callbacks.segment(pipe, callbacks.Session(), [pair], QUERIES[:1])
    with pytest.raises(ValueError, match="threshold must lie in"):
        callbacks.render(session, 1.5, "absolute", tmp_path)


def test_sessions_get_distinct_keys():
    assert callbacks.Session().key != callbacks.Session().key


SECOND_IMAGE = EXAMPLES / "support" / "gnome_dev_cdrom_audio_support_2.jpg"
SECOND_MASK = EXAMPLES / "support" / "gnome_dev_cdrom_audio_support_2_mask.png"


@pytest.fixture(scope="module")
def second_pair() -> callbacks.SupportPair:
    return callbacks.support_pair(1, Image.open(SECOND_IMAGE), [], str(SECOND_MASK))


def test_collect_classes_is_none_for_one_panel_and_names_every_class(pair, second_pair):
    assert callbacks.collect_classes([("", [pair, None]), ("", [None]), (None, [])]) is None
    assert callbacks.collect_classes([("bug", [pair]), (" leaf ", [None, second_pair]), ("", [])]) == {"bug": [pair], "leaf": [second_pair]}


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("bug", ["pair"]), ("", ["pair"])], "class 2: give the class a name (needed with several classes)"),
        ([("bug", ["pair"]), ("leaf", [None])], "class 'leaf': no support example; add an image with its mask"),
        ([("bug", ["pair"]), ("Bug", ["pair"])], "classes: class 'Bug' is given twice (as 'bug' and 'Bug')"),
        ([("bug", ["pair"]), ("a/b", ["pair"])], "classes: class name 'a/b' is not a valid file-name part"),
    ],
)
def test_collect_classes_errors(pair, entries, message):
    entries = [(name, [pair if p == "pair" else p for p in pairs]) for name, pairs in entries]
    with pytest.raises(InputError) as error:
        callbacks.collect_classes(entries)
    assert str(error.value) == message


def test_two_classes_give_the_pipelines_label_maps_a_coco_file_and_a_legend(pipe, pair, second_pair, tmp_path):
    from pycocotools.coco import COCO

    classes = {"bug": [pair], "leaf": [second_pair]}
    session = callbacks.segment_classes(pipe, callbacks.Session(), classes, QUERIES[:2], batch_size=2)
    assert session.support_encodings == 2 and session.class_names == ["bug", "leaf"]
    reference = pipe.segment_classes(
        [load_image(q) for q in QUERIES[:2]],
        {"bug": ([load_image(SUPPORT_IMAGE)], [load_mask(SUPPORT_MASK)]), "leaf": ([load_image(SECOND_IMAGE)], [load_mask(SECOND_MASK)])},
        threshold=0.5, threshold_mode="absolute",
    )
    shown = callbacks.render_results(session, 0.5, "absolute", tmp_path / "out")
    assert [p.name for p in shown.mask_files] == ["gnome_dev_cdrom_audio_query_1_labels.png", "gnome_dev_cdrom_audio_query_2_labels.png"]
    assert [name for name, _ in shown.legend] == ["bug", "leaf"] and shown.legend[0][1] != shown.legend[1][1]
    coco = COCO(str(shown.coco_file))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["bug", "leaf"]
    for path, expected, image in zip(shown.mask_files, reference.labels, coco.dataset["images"]):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), expected)
        painted = np.zeros_like(expected)
        for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            painted[coco.annToMask(annotation).astype(bool)] = annotation["category_id"]
        np.testing.assert_array_equal(painted, expected)
    assert [image["file_name"] for image in coco.dataset["images"]] == ["gnome_dev_cdrom_audio_query_1.jpg", "gnome_dev_cdrom_audio_query_2.jpg"]
    with zipfile.ZipFile(shown.zip_file) as archive:
        assert archive.namelist() == ["gnome_dev_cdrom_audio_query_1_labels.png", "gnome_dev_cdrom_audio_query_2_labels.png", "annotations.json"]

    callbacks.segment_classes(pipe, session, {"bug": [pair], "moss": [second_pair]}, QUERIES[:1])
    assert session.support_encodings == 3, "only the new class is encoded"
    assert list(session.class_contexts) == ["bug", "moss"]
    callbacks.segment(pipe, session, [pair], QUERIES[:1])
    assert callbacks.render_results(session, 0.5, "absolute", tmp_path / "binary").mask_files[0].name == "gnome_dev_cdrom_audio_query_1_mask.png"
