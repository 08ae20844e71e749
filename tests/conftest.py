"""Shared fixtures: the tiny random model and its pipeline."""

from __future__ import annotations

import os

# Tests never reach a model hub: fail fast instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny models run fastest on one thread, and spinning OpenMP workers of concurrent processes
# (subprocess tests, parallel jobs) would otherwise slow each other down many times over.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from diffews import DiffewSPipeline  # noqa: E402
from diffews._testing import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model():
    """One tiny random DiffewS model for the session; tests must not modify it."""
    return build_tiny_model(seed=0)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model):
    pipe = DiffewSPipeline(tiny_model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def benchmarks(tmp_path_factory):
    """Tiny PASCAL-5i, COCO-20i, LVIS-92i, FSS-1000 and custom datasets in their real on-disk formats.

    Returns ``(root, written)``: the data root and, per benchmark, what the writers put there.
    Tests must not modify these files (copy them first).
    """
    from benchmark_data import write_coco, write_custom, write_fss, write_lvis, write_pascal

    root = tmp_path_factory.mktemp("benchmarks")
    written = {"pascal": write_pascal(root), "coco": write_coco(root), "lvis": write_lvis(root)}
    written["fss_splits"] = write_fss(root, {"trn": ["apple", "bee"], "val": ["cup"], "test": ["dog", "egg", "fig"]})
    write_custom(root / "custom", {"cat": 3, "dog": 4})
    write_custom(root / "custom_parallel", {"cat": 3, "dog": 4}, parallel=True)
    return root, written
