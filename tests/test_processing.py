"""Inputs to tensors: the mask binarisation rule, image types, EXIF, resizing."""

from __future__ import annotations

import numpy as np
import pytest
import authors_reference
import torch
from helpers import random_image
from PIL import Image

from diffews import InputError
from diffews.processing.images import (
    MASK_NEAREST, image_to_tensor, load_image, load_mask, open_image_file, prepare_support, preprocess_image, resize_mask,
)
from diffews.processing.masks import mask_to_image, to_binary_mask
from diffews.processing.overlay import overlay_mask
from diffews.data.custom import read_target

# ---------------------------------------------------------------- mask rule


def test_palette_mask_uses_indices_and_ignores_255():
    index = np.array([[0, 1, 255], [15, 0, 255]], np.uint8)
    mask = Image.fromarray(index, mode="P")
    mask.putpalette([0, 0, 0] + [128, 0, 0] * 255)
    assert to_binary_mask(mask, "m").tolist() == [[False, True, False], [True, False, False]]


def test_palette_mask_messages_say_what_the_index_rule_did(caplog):
    """Only index-255 pixels was just 'is empty'; a white-first palette was read inverted without a word."""
    ignored = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8), mode="P")
    ignored.putpalette([0, 0, 0] * 255 + [255, 255, 255])
    with pytest.raises(InputError, match=r"^m is empty: its only labelled pixels have palette index 255, which marks pixels to ignore"):
        to_binary_mask(ignored, "m")
    with pytest.raises(InputError, match=r"^m is empty$"):
        to_binary_mask(Image.fromarray(np.zeros((2, 2), np.uint8), mode="P"), "m")
    white_first = Image.fromarray(np.array([[0, 1], [1, 1]], np.uint8), mode="P")
    white_first.putpalette([255, 255, 255, 0, 0, 0])
    with caplog.at_level("WARNING", logger="diffews.processing.masks"):
        assert to_binary_mask(white_first, "m").tolist() == [[False, True], [True, True]]  # the rule is unchanged
        black_first = Image.fromarray(np.array([[0, 1], [1, 1]], np.uint8), mode="P")
        black_first.putpalette([0, 0, 0, 255, 255, 255])
        to_binary_mask(black_first, "m2")
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["m"]
    assert "background (index 0) is drawn light and whose labels are dark" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    "values, expected",
    [
        ([[0, 255], [255, 0]], [[False, True], [True, False]]),  # 0/255
        ([[0, 1], [1, 0]], [[False, True], [True, False]]),  # 0/1
        ([[0, 127], [128, 200]], [[False, False], [True, True]]),  # anti-aliased 8-bit edge
    ],
)
def test_grayscale_masks(values, expected):
    assert to_binary_mask(Image.fromarray(np.array(values, np.uint8), mode="L"), "m").tolist() == expected


def test_rgb_mask_foreground_is_any_bright_channel():
    pixels = np.array([[[255, 255, 255], [0, 0, 0]], [[200, 0, 0], [60, 60, 60]]], np.uint8)
    assert to_binary_mask(Image.fromarray(pixels, mode="RGB"), "m").tolist() == [[True, False], [True, False]]


@pytest.mark.parametrize("mode", ["CMYK", "YCbCr", "LAB", "HSV"])
def test_masks_in_other_colour_modes_are_read_as_they_look(mode):
    pixels = np.array([[[255, 255, 255], [0, 0, 0]], [[200, 0, 0], [60, 60, 60]]], np.uint8)
    assert to_binary_mask(Image.fromarray(pixels, mode="RGB").convert(mode), "m").tolist() == [[True, False], [True, False]]


def test_rgba_mask_uses_a_varying_alpha_else_the_colour():
    pixels = np.zeros((1, 2, 4), np.uint8)
    pixels[0, 0, 3] = 255  # opaque black = foreground, transparent = background
    assert to_binary_mask(Image.fromarray(pixels, mode="RGBA"), "m").tolist() == [[True, False]]
    pixels[..., 3] = 255
    pixels[0, 1, :3] = 255  # constant alpha: fall back to the colour rule
    assert to_binary_mask(Image.fromarray(pixels, mode="RGBA"), "m").tolist() == [[False, True]]


@pytest.mark.parametrize(
    "array",
    [
        np.array([[False, True]]),
        np.array([[0.0, 0.9]], np.float32),
        np.array([[0, 255]], np.uint8),
        torch.tensor([[[0, 1]]]),
    ],
)
def test_array_masks(array):
    assert to_binary_mask(array, "m").tolist() == [[False, True]]


def test_rgba_arrays_and_tensors_follow_the_rgba_image_rule():
    pixels = np.zeros((2, 3, 4), np.uint8)
    pixels[0, :2, 3] = 255  # opaque black object on a transparent background
    expected = to_binary_mask(Image.fromarray(pixels, mode="RGBA"), "m").tolist()
    assert expected == [[True, True, False], [False, False, False]]
    assert to_binary_mask(pixels, "m").tolist() == expected
    assert to_binary_mask(torch.from_numpy(pixels), "m").tolist() == expected
    assert to_binary_mask(pixels / 255.0, "m").tolist() == expected  # float alpha in [0, 1]


def _pascal_label_png(tmp_path):
    """A PASCAL VOC-style palette label: class 15 inside a 255 ("ignore") border, saved and read back."""
    labels = np.zeros((8, 8), np.uint8)
    labels[2:6, 2:6] = 255
    labels[3:5, 3:5] = 15
    image = Image.fromarray(labels, mode="P")
    image.putpalette([0, 0, 0] * 15 + [192, 128, 128] + [0, 0, 0] * 239 + [224, 224, 192])
    image.save(tmp_path / "label.png")
    return Image.open(tmp_path / "label.png")


def test_label_maps_given_as_arrays_are_refused_not_misread(tmp_path):
    palette = _pascal_label_png(tmp_path)
    assert to_binary_mask(palette, "m").sum() == 4  # the palette image: class 15, the border ignored
    for array in (np.asarray(palette), torch.from_numpy(np.asarray(palette).copy()), Image.fromarray(np.asarray(palette), "L")):
        with pytest.raises(InputError, match=r"^m: its values \(0, 15, 255\) read as a label map, not a mask: .*labels == 15"):
            to_binary_mask(array, "m")
    with pytest.raises(InputError, match=r"^m: its values \(0, 1, 2\) read as a label map, not a mask: every value is below 128"):
        to_binary_mask(np.array([[0, 1], [2, 2]], np.uint8), "m")
    with pytest.raises(InputError, match=r"^m: its values \(0, 15, 255\) read as a label map"):
        to_binary_mask(np.asarray(palette).astype(np.float32), "m")  # whole numbers as floats
    assert to_binary_mask(np.array([[0, 3.5], [255, 0]], np.float32), "m").tolist() == [[False, False], [True, False]]


def test_a_benchmark_mask_that_reads_as_a_label_map_is_named(tmp_path):
    Image.fromarray(np.array([[0, 15], [255, 0]], np.uint8)).save(tmp_path / "cat_mask.png")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'cat_mask.png'}: its values \(0, 15, 255\) read as a label map"):
        read_target(tmp_path / "cat_mask.png", orient=False)


def test_colour_masks_are_judged_as_they_look_as_arrays_too():
    pixels = np.zeros((2, 3, 3), np.uint8)
    pixels[0, 0] = (255, 0, 0)
    pixels[0, 1] = (60, 60, 60)  # dark grey: background, never a label
    expected = to_binary_mask(Image.fromarray(pixels, mode="RGB"), "m").tolist()
    assert expected == [[True, False, False], [False, False, False]] and to_binary_mask(pixels, "m").tolist() == expected
    rgba = np.concatenate([np.full((2, 3, 3), 255, np.uint8), np.array([[[1], [0], [1]]] * 2, np.uint8)], axis=2)
    with pytest.raises(InputError, match="is empty"):  # an 8-bit alpha of 0 and 1 draws nothing, as in a PIL image
        to_binary_mask(Image.fromarray(rgba, mode="RGBA"), "m")
    with pytest.raises(InputError, match="is empty"):
        to_binary_mask(rgba, "m")


@pytest.mark.parametrize(
    "values",
    [[0, 255, 255, 0], [0, 40, 200, 255], [0, 100, 130, 0], [0, 1, 1, 0]],
    ids=["binary", "soft-edges", "soft-dim", "zero-one"],
)
def test_grey_masks_are_not_taken_for_label_maps(values):
    array = np.array(values, np.uint8).reshape(2, 2)
    expected = array >= (1 if array.max() == 1 else 128)
    assert to_binary_mask(array, "m").tolist() == expected.tolist()


def test_premultiplied_alpha_modes_are_read_by_their_alpha(rng):
    pixels = np.zeros((1, 2, 2), np.uint8)
    pixels[0, 0] = (255, 255)  # white, opaque; the other pixel transparent
    la = Image.fromarray(pixels, mode="LA").convert("La")
    assert to_binary_mask(la, "m").tolist() == [[True, False]]
    assert image_to_tensor(la).shape == (3, 1, 2)


def test_colour_array_mask_is_channels_last():
    colour = np.zeros((2, 2, 3), np.uint8)
    colour[1, 0] = (0, 220, 0)
    assert to_binary_mask(colour, "m").tolist() == [[False, False], [True, False]]


def test_empty_mask_error_names_it():
    with pytest.raises(InputError, match=r"^support mask 2 is empty$"):
        to_binary_mask(np.zeros((4, 4)), "support mask 2")
    with pytest.raises(InputError, match=r"expected a \(H, W\) mask"):
        to_binary_mask(np.zeros((2, 4, 4, 4)), "m")


def test_mask_resize_is_nearest_and_stays_binary():
    mask = np.zeros((3, 3), bool)
    mask[1, 1] = True
    resized = resize_mask(mask, (9, 9))
    assert set(resized.unique().tolist()) == {0.0, 1.0}
    assert resized[0].tolist() == torch.from_numpy(np.kron(mask, np.ones((3, 3), bool))).float().tolist()


def test_flipped_array_masks_resize():
    mask = np.zeros((4, 6), bool)
    mask[:, :2] = True
    assert resize_mask(mask[:, ::-1], (4, 6))[0, :, -2:].all()


def test_support_mask_of_another_size_than_its_image_is_resized(rng):
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    mask = np.zeros((10, 15), bool)
    mask[2:8, 3:12] = True
    image_tensor, mask_tensor = prepare_support(image, mask, 64, index=1)
    assert image_tensor.shape == (3, 64, 64) and mask_tensor.shape == (1, 64, 64)
    assert -1 <= image_tensor.min() and image_tensor.max() <= 1


def test_support_mask_lost_in_resizing_is_reported(rng):
    mask = np.zeros((1000, 1000), bool)
    mask[500, 500] = True
    with pytest.raises(InputError, match=r"support mask 3 \(a\.png\) is empty after resizing to 64x64"):
        prepare_support(np.zeros((1000, 1000, 3), np.uint8), mask, 64, index=3, source="a.png")


# ---------------------------------------------------------------- images


def test_image_types_give_the_same_tensor(rng):
    pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    for image in (Image.fromarray(pixels), pixels, pixels.astype(np.float32) / 255, expected.clone(), torch.from_numpy(pixels).permute(2, 0, 1)):
        torch.testing.assert_close(image_to_tensor(image), expected)


def test_grayscale_and_rgba_images_become_rgb(rng):
    gray = Image.fromarray(rng.integers(0, 256, (5, 7), dtype=np.uint8), mode="L")
    tensor = image_to_tensor(gray)
    assert tensor.shape == (3, 5, 7) and torch.equal(tensor[0], tensor[2])
    pixels = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    rgba = Image.fromarray(pixels, mode="RGBA")
    torch.testing.assert_close(image_to_tensor(rgba), image_to_tensor(rgba.convert("RGB")))


def test_transparency_is_flattened_onto_white_whatever_lies_under_it(rng):
    pixels = rng.integers(0, 256, (6, 8, 4), dtype=np.uint8)
    pixels[..., 3] = [0, 255, 128, 0, 255, 64, 0, 200]
    hidden_black = pixels.copy()
    hidden_black[pixels[..., 3] == 0, :3] = 0  # what a browser canvas keeps of a transparent pixel
    alpha = pixels[..., 3:].astype(np.float64) / 255
    expected = torch.from_numpy(np.round(pixels[..., :3] * alpha + 255 * (1 - alpha)) / 255).permute(2, 0, 1).float()
    for variant in (pixels, hidden_black):
        torch.testing.assert_close(image_to_tensor(Image.fromarray(variant, "RGBA")), expected, atol=1 / 255, rtol=0)
        torch.testing.assert_close(image_to_tensor(variant), expected, atol=0.5 / 255, rtol=0)
        torch.testing.assert_close(image_to_tensor(variant.astype(np.float32) / 255), expected, atol=0.5 / 255, rtol=0)
    assert torch.equal(image_to_tensor(Image.fromarray(pixels, "RGBA")), image_to_tensor(Image.fromarray(hidden_black, "RGBA")))
    palette = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), "P")
    palette.putpalette([10, 20, 30, 40, 50, 60])
    palette.info["transparency"] = 0
    assert (image_to_tensor(palette) * 255).round().int().tolist() == [[[255, 40]], [[255, 50]], [[255, 60]]]


def test_exif_orientation_is_applied(tmp_path, rng):
    pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    assert load_image(tmp_path / "rotated.jpg").size == (20, 30)


def test_pil_masks_and_overlays_are_upright_as_their_images_are(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    stored = np.zeros((20, 30), np.uint8)
    stored[:5] = 255  # the top rows as stored: the right-hand columns as shown
    Image.fromarray(stored).save(tmp_path / "mask.png", exif=exif.tobytes())
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "image.png", exif=exif.tobytes())
    from_path = load_mask(tmp_path / "mask.png")
    assert from_path.shape == (30, 20) and from_path[:, -5:].all() and not from_path[:, :-5].any()
    assert (to_binary_mask(Image.open(tmp_path / "mask.png"), "m") == from_path).all()
    shown = overlay_mask(Image.open(tmp_path / "image.png"), from_path)
    assert shown.size == (20, 30) and np.asarray(shown)[0, -1, 0] > 0 and np.asarray(shown)[0, 0, 0] == 0
    with pytest.raises(ValueError, match=r"^mask of 30x20 \(width x height\) does not match the image's 20x30$"):
        overlay_mask(Image.open(tmp_path / "image.png"), from_path.T)


def test_bad_images_get_one_line_errors(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"junk\.png: cannot read image"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(InputError, match=r"missing\.png: no such file"):
        load_mask(tmp_path / "missing.png")
    with pytest.raises(InputError, match=r"float images must lie in \[0, 1\]"):
        image_to_tensor(np.full((4, 4, 3), 2.0, np.float32))
    with pytest.raises(InputError, match=r"float images must be finite"):
        image_to_tensor(np.full((4, 4, 3), np.nan, np.float32))
    with pytest.raises(InputError, match=r"numpy images must be"):
        image_to_tensor(np.zeros((4, 4, 2), np.uint8))


# ---------------------------------------------------------------- masks as images, probabilities, thresholds


def test_mask_image_is_white_foreground_on_black():
    image = mask_to_image(torch.tensor([[[[0.0, 1.0]]]]))
    assert image.shape == (1, 3, 1, 2)
    assert image[0, :, 0, 0].tolist() == [-1, -1, -1] and image[0, :, 0, 1].tolist() == [1, 1, 1]




def test_the_authors_preprocessing_is_pils_8_bit_bilinear_resize_and_nearest_masks(rng):
    image = random_image(rng, 37, 53)
    mask = rng.random((37, 53)) < 0.5
    ours = preprocess_image(image, (64, 64), "authors")
    assert torch.equal(ours, authors_reference.preprocess_image(image, 64))
    assert torch.equal(resize_mask(mask, (64, 64), MASK_NEAREST["authors"]), authors_reference.preprocess_mask(mask, 64))
    float_path = preprocess_image(image, (64, 64))
    assert (ours - float_path).abs().max() > 1 / 255, "the two preprocessings must differ, or choosing one means nothing"


@pytest.mark.parametrize("instances", [False, True])
def test_coco_annotations_equal_pycocotools_encoding_of_each_full_size_mask(instances):
    """The RLEs are built from each component's pixels; the reference encodes a full-size mask per component."""
    from pycocotools import mask as coco_mask

    from diffews.processing.coco_export import CocoWriter
    from diffews.processing.labels import connected_components

    rng = np.random.default_rng(0)
    for height, width in [(1, 1), (7, 58), (31, 17), (40, 40)]:
        labels = ((rng.random((height, width)) < 0.6) * rng.integers(1, 4, (height, width))).astype(np.uint8)
        labels[-1, -1] = 1  # a run that ends at the last pixel
        probabilities = rng.random((3, height, width)).astype(np.float32)
        writer = CocoWriter(["a", "b", "c"], instances=instances)
        writer.add("x.png", labels, probabilities)
        expected = []
        for label in np.unique(labels)[np.unique(labels) > 0]:
            parts, count = connected_components(labels == label) if instances else ((labels == label).astype(np.int32), 1)
            for part in range(1, count + 1):
                rle = coco_mask.encode(np.asfortranarray((parts == part).astype(np.uint8)))
                score = probabilities[label - 1][parts == part].astype(np.float64).mean()
                expected.append((int(label), rle["counts"].decode(), int(coco_mask.area(rle)), list(coco_mask.toBbox(rle)), score))
        got = [(a["category_id"], a["segmentation"]["counts"], a["area"], a["bbox"], a["score"]) for a in writer.annotations]
        assert [g[:4] for g in got] == [e[:4] for e in expected]
        assert np.allclose([g[4] for g in got], [e[4] for e in expected], atol=1e-6)


@pytest.mark.parametrize(
    ("mode", "values"),
    [("I;16", lambda g: g.astype(np.uint16) * 257), ("I", lambda g: g.astype(np.int32) * 257), ("F", lambda g: g.astype(np.float32) / 255)],
    ids=["16-bit", "32-bit-integer", "float"],
)
def test_greyscale_of_more_than_8_bits_is_scaled_not_clipped(tmp_path, mode, values):
    """PIL's own RGB conversion clips these at 255 (a 16-bit picture turned almost white)."""
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))
    deep = Image.fromarray(values(grey))
    assert deep.mode == mode
    expected = np.asarray(Image.fromarray(grey, "L").convert("RGB"))
    assert np.array_equal(np.asarray(image_to_tensor(deep).permute(1, 2, 0) * 255).round().astype(np.uint8), expected)
    if mode == "I;16":
        deep.save(tmp_path / "deep.png")
        assert np.array_equal(np.asarray(load_image(tmp_path / "deep.png")), expected)


def test_a_multi_frame_file_is_read_by_its_first_frame_with_a_warning(tmp_path, caplog):
    """An animated GIF or a multi-page TIFF: the first frame, and a warning that says so (it was silent)."""
    first, second = (Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255)))
    first.save(tmp_path / "moving.gif", save_all=True, append_images=[second])
    first.save(tmp_path / "pages.tif", save_all=True, append_images=[second, second])
    with caplog.at_level("WARNING", logger="diffews.processing.images"):
        assert np.asarray(load_image(tmp_path / "moving.gif"))[0, 0].tolist() == [255, 0, 0]
        assert np.asarray(load_image(tmp_path / "pages.tif"))[0, 0].tolist() == [255, 0, 0]
        load_image(tmp_path / "moving.gif").save(tmp_path / "still.png")
        load_image(tmp_path / "still.png")
    for name in ("moving.gif", "pages.tif"):  # as stored (benchmark pictures, masks): the pixels are loaded too
        assert open_image_file(tmp_path / name, orient=False).convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / name}: has {frames} frames (an animation or a multi-page file); only the first is used"
        for name, frames in (("moving.gif", 2), ("pages.tif", 3), ("moving.gif", 2), ("moving.gif", 2), ("pages.tif", 3))
    ]


def test_a_support_mask_of_another_shape_than_its_image_is_refused(rng):
    image = random_image(rng, 64, 80)  # 80 wide, 64 high
    prepare_support(image, np.ones((32, 40), dtype=bool), 64, 1)  # another scale, the same shape: resized onto it
    with pytest.raises(InputError, match=r"^support mask 1 \(m.png\): 64x80 does not fit its image, 80x64 \(the image is shown turned by its EXIF"):
        prepare_support(image, np.ones((80, 64), dtype=bool), 64, 1, source="m.png")
    with pytest.raises(InputError, match=r"^support mask 2: 80x80 does not fit its image, 80x64$"):
        prepare_support(image, np.ones((80, 80), dtype=bool), 64, 2)
