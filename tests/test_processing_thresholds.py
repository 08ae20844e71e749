"""Thresholding rules: relative, absolute and the authors' 8-bit rule, at each query's size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from authors_reference import binarize_like_the_authors

from diffews.processing.masks import decoded_to_mask_image
from diffews.processing.thresholds import (
    authors_binarize,
    binarize,
    channel_mean,
    check_threshold,
    masks_at_sizes,
    threshold_mask_images,
    to_eight_bit,
)


def test_decoded_mask_image_is_clipped_and_mapped_and_its_probability_averages_the_channels():
    decoded = torch.tensor([[[[2.0]], [[0.0]], [[-0.5]]]])  # channels: clipped to 1, 0, -0.5
    image = decoded_to_mask_image(decoded)
    assert image.flatten().tolist() == [1.0, 0.5, 0.25]
    assert channel_mean(image).item() == pytest.approx((1.0 + 0.5 + 0.25) / 3)


def test_relative_threshold_is_a_fraction_of_each_maps_maximum():
    probabilities = torch.tensor([[0.1, 0.2, 0.8], [0.05, 0.1, 0.4]])
    masks, cuts = binarize(probabilities, 0.25, "relative")
    assert cuts.tolist() == pytest.approx([0.2, 0.1])
    assert masks.tolist() == [[False, False, True], [False, False, True]]  # strictly greater than the cut


def test_absolute_threshold():
    masks, cuts = binarize(torch.tensor([[0.1, 0.5, 0.8]]), 0.5, "absolute")
    assert masks.tolist() == [[False, False, True]] and cuts.tolist() == [0.5]


def test_modes_are_checked():
    with pytest.raises(ValueError, match="threshold mode must be one of relative, absolute, authors, got 'median'"):
        check_threshold(0.5, "median")
    with pytest.raises(ValueError, match="binarize thresholds probabilities by 'relative' or 'absolute', got 'authors'"):
        binarize(torch.zeros(1, 4), 0.25, "authors")


def test_authors_rule_truncates_to_eight_bits_and_compares_the_mean_with_the_largest_channel():
    # Three pixels, channels (R, G, B) in [0, 1]. x 255 and truncated:
    #   pixel 0: (0.9999, 0, 0)     -> (254, 0, 0)    mean 84.67   (rounding would give 255)
    #   pixel 1: (0.26, 0.26, 0.26) -> (66, 66, 66)   mean 66      (0.26 x 255 = 66.3)
    #   pixel 2: (0.2, 0.3, 0.2)    -> (51, 76, 51)   mean 59.33
    # Largest single channel value: 254, cut 0.25 x 254 = 63.5 -> pixels 0 and 1 are foreground.
    # The float rule on the channel means (max mean 84.66 -> cut 21.2) would also take pixel 2.
    image = torch.tensor([[0.9999, 0.26, 0.2], [0.0, 0.26, 0.3], [0.0, 0.26, 0.2]]).view(1, 3, 1, 3)
    eight_bit = to_eight_bit(image)
    assert eight_bit[0, :, 0].T.tolist() == [[254, 0, 0], [66, 66, 66], [51, 76, 51]]
    masks, probabilities, cuts = authors_binarize(eight_bit, 0.25)
    assert masks[0, 0].tolist() == [True, True, False]
    assert probabilities[0, 0].tolist() == pytest.approx([254 / 3 / 255, 66 / 255, 178 / 3 / 255])
    assert cuts.tolist() == pytest.approx([0.25 * 254 / 255])
    assert threshold_mask_images(image, 0.25, "relative")[0][0, 0].tolist() == [True, True, True]


@pytest.mark.parametrize("size", [(16, 16), (37, 23), (7, 40)])
def test_authors_rule_at_query_sizes_matches_the_reference_statement_of_it(size):
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(3, 3, 16, 16, generator=generator) ** 3  # skewed, so the channel maxima differ
    results = masks_at_sizes(images, [size] * 3, 0.25, "authors")
    expected = binarize_like_the_authors(images.permute(0, 2, 3, 1).numpy(), size, 0.25)
    for (mask, probability, cut), expected_mask, expected_probability, expected_cut in zip(results, *expected):
        assert mask.shape == size and probability.dtype == np.float32
        np.testing.assert_array_equal(mask, expected_mask)
        np.testing.assert_allclose(probability, expected_probability, rtol=0, atol=1e-7)
        assert cut == pytest.approx(expected_cut)


def test_batched_postprocessing_matches_per_query_reference():
    generator = torch.Generator().manual_seed(0)
    mask_images = torch.rand(4, 3, 16, 16, generator=generator)
    sizes = [(20, 30), (11, 7), (20, 30), (16, 16)]
    results = masks_at_sizes(mask_images, sizes, 0.25, "relative")
    for image, size, (mask, full, cut) in zip(mask_images, sizes, results):
        probability = image.mean(dim=0, keepdim=True)
        expected = F.interpolate(probability[None], size=size, mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)
        expected_mask, expected_cut = binarize(expected[None], 0.25, "relative")
        np.testing.assert_allclose(full, expected.numpy(), rtol=0, atol=1e-7)
        np.testing.assert_array_equal(mask, expected_mask[0].numpy())
        assert cut == pytest.approx(float(expected_cut[0]))


def test_a_one_channel_image_is_read_as_grey():
    generator = torch.Generator().manual_seed(1)
    grey = torch.rand(2, 1, 8, 8, generator=generator)
    for mode in ("relative", "absolute", "authors"):
        ours = threshold_mask_images(grey, 0.3, mode)
        rgb = threshold_mask_images(grey.expand(-1, 3, -1, -1), 0.3, mode)
        for a, b in zip(ours, rgb):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
