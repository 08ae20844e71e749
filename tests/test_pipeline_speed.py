"""Speed options keep the reference path's outputs (within tolerance) and validate their settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffews import DiffewSPipeline, SpeedOptions
from diffews._testing import build_tiny_model

SIZE = 64


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(7)
    queries = [rng.integers(0, 256, (SIZE, SIZE + 8 * i, 3), dtype=np.uint8) for i in range(3)]
    support = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)]
    mask = np.zeros((SIZE, SIZE), bool)
    mask[10:40, 20:50] = True
    return queries, support, [mask]


def segment(speed: SpeedOptions | None, inputs, batch_size: int = 2) -> list[np.ndarray]:
    queries, support, masks = inputs
    pipe = DiffewSPipeline(build_tiny_model(seed=0), speed)
    pipe.set_progress_bar_config(disable=True)
    return pipe(queries, support, masks, batch_size=batch_size).probabilities


@pytest.fixture(scope="module")
def reference(inputs) -> list[np.ndarray]:
    return segment(None, inputs)


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


@pytest.mark.parametrize(
    "speed",
    [
        SpeedOptions(channels_last=True),
        SpeedOptions(sdpa_backend="math"),
        SpeedOptions(sdpa_backend="flash"),
        SpeedOptions(static_batch=True),
        SpeedOptions(compile=True, compile_backend="eager", static_batch=True),
    ],
    ids=["channels_last", "sdpa-math", "sdpa-flash", "static-batch", "compile-eager"],
)
def test_exact_options_match_reference(speed, inputs, reference):
    assert max_diff(segment(speed, inputs), reference) <= 1e-5


def test_static_batch_pads_the_last_batch_and_drops_the_padding(inputs, reference):
    # 3 queries in batches of 2: the second call is padded to 2 and returns one result.
    probabilities = segment(SpeedOptions(static_batch=True), inputs, batch_size=2)
    assert len(probabilities) == 3
    assert max_diff(probabilities, reference) <= 1e-5


def test_bfloat16_autocast_stays_close_to_float32(inputs, reference):
    assert max_diff(segment(SpeedOptions(autocast="bfloat16"), inputs), reference) < 0.1


def test_compile_keeps_state_dict_keys():
    model = build_tiny_model(seed=0)
    keys = set(model.state_dict())
    DiffewSPipeline(model, SpeedOptions(compile=True, compile_backend="eager"))
    assert set(model.state_dict()) == keys


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"sdpa_backend": "fast"}, "sdpa_backend must be one of"), ({"autocast": "float32"}, "autocast must be one of")],
)
def test_invalid_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpeedOptions(**kwargs)


def test_model_dtype_follows_the_weights():
    model = build_tiny_model(seed=0).to(torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model.vae_dtype == torch.bfloat16
    model.vae.to(torch.float32)
    assert model.dtype == torch.bfloat16 and model.vae_dtype == torch.float32


def test_inference_and_training_choose_from_one_list_of_attention_kernels():
    from diffews.modeling.kernels import SDPA_KERNELS
    from diffews.training.config import load_config

    for name in SDPA_KERNELS:
        assert SpeedOptions(sdpa_backend=name).sdpa_backend == name
        assert load_config(None, {"sdpa_backend": name}).precision.sdpa_backend == name


def test_static_batch_pads_per_episode_support_sets_too():
    """A short batch of episodes (one support set per query, as in evaluation) padded to the full
    batch: the padding repeats the last query with its own support set and its outputs are dropped."""
    from helpers import random_batch, random_masks

    model = build_tiny_model(seed=0)
    images, masks = random_batch(1, (3, 2, 3, SIZE, SIZE)), random_masks(2, (3, 2, 1, SIZE, SIZE))
    queries = random_batch(3, (3, 3, SIZE, SIZE))
    plain, padded = DiffewSPipeline(model), DiffewSPipeline(model, SpeedOptions(static_batch=True))
    context = plain.encode_support_tensors(images, masks)
    calls = []
    hook = model.unet.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    expected = plain.predict(queries, context, pad_to=5).mask_images
    result = padded.predict(queries, context, pad_to=5).mask_images
    hook.remove()
    assert calls == [3, 5]
    assert result.shape == expected.shape and float((result - expected).abs().max()) <= 1e-5


def test_a_forced_kernel_that_cannot_run_here_is_a_one_line_error():
    from diffews.errors import InputError
    from diffews.modeling.kernels import attention_kernel

    query = torch.randn(1, 2, 4, 8)
    with pytest.raises(InputError, match=r"^sdpa_backend 'efficient' cannot run this model's attention here .*; use auto$"):
        with attention_kernel("efficient"):  # no CPU kernel
            torch.nn.functional.scaled_dot_product_attention(query, query, query)
    with pytest.raises(RuntimeError, match="another failure"):
        with attention_kernel("efficient"):
            raise RuntimeError("another failure")
    with attention_kernel("math"):
        torch.nn.functional.scaled_dot_product_attention(query, query, query)
