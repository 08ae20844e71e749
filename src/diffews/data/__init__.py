"""Few-shot segmentation benchmarks: PASCAL-5i, COCO-20i, LVIS-92i, FSS-1000, custom folders, composites.

Each reader module defines one `Benchmark` object; `BENCHMARKS` registers them by name, and
`open_split` (a benchmark split of a fold) and `build_episode_dataset` (its episodes as a torch
Dataset) work for any of them. Folder layouts: 'Benchmark data' in the README.
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from ..errors import InputError
from ..paths import user_path
from . import coco, composite, custom, fss, lvis, pascal
from .episodes import ORIGINAL, EpisodeDataset, NWayEpisodeDataset, collate_episodes
from .published import PUBLISHED, published_splits
from .source import Benchmark, CheckItem, FewShotSplit

BENCHMARKS: dict[str, Benchmark] = {
    benchmark.name: benchmark
    for benchmark in (pascal.BENCHMARK, coco.BENCHMARK, lvis.BENCHMARK, fss.BENCHMARK, custom.BENCHMARK, composite.BENCHMARK)
}
"""Every benchmark by name; a new dataset registers here with one line."""

__all__ = [
    "BENCHMARKS",
    "EVERY_IMAGE",
    "ORIGINAL",
    "PUBLISHED",
    "Benchmark",
    "CheckItem",
    "EpisodeDataset",
    "NWayEpisodeDataset",
    "FewShotSplit",
    "build_episode_dataset",
    "collate_episodes",
    "get_benchmark",
    "open_split",
]


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark called `name`; `InputError` for an unknown one."""
    if name not in BENCHMARKS:
        raise InputError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def split_lists_folder(benchmark: Benchmark, splits: str | Path | None) -> Path | None:
    """``--splits`` value -> a folder: None, ``"hsnet"`` (the published lists, downloaded once) or a path."""
    if splits == PUBLISHED:
        return published_splits(benchmark.name)
    return user_path(splits) if splits else None


def open_split(
    benchmark: str,
    root: str | Path,
    split: str,
    fold: int | None,
    splits: str | Path | None = None,
    trust_pickle: bool = False,
    shots: int = 1,
) -> FewShotSplit:
    """One split of a benchmark restricted to a fold (None: all classes).

    Args:
        benchmark: a name in `BENCHMARKS`.
        splits: a folder of split lists (HSNet layout, see `diffews.data.splits`; FSS-1000: the
            class lists), or ``"hsnet"`` for the lists published with HSNet (PASCAL-5i, FSS-1000;
            downloaded once, see `diffews.data.published`). By default PASCAL/COCO/LVIS lists are
            generated from the annotations and FSS-1000 uses HSNet's.
        trust_pickle: allow HSNet's pickle split lists in `splits` (read with a warning).
        shots: the K of the episodes it will serve, for benchmarks whose folds depend on it
            (`Benchmark.folds_depend_on_shots`: LVIS-92i's hold the classes with more than K val
            images, as Matcher defines them); others ignore it.

    Raises:
        InputError: unknown benchmark, split or fold; missing folders, files or masks.
    """
    found = get_benchmark(benchmark)
    found.check_split(split, fold)
    by_shots = (shots,) if found.folds_depend_on_shots else ()
    return found.open_split(user_path(root), split, fold, split_lists_folder(found, splits), trust_pickle, *by_shots)


EVERY_IMAGE = "all"
"""`build_episode_dataset`'s episode count of one episode per (image, class) pair of the split."""


def build_episode_dataset(
    benchmark: str,
    root: str | Path,
    split: str,
    fold: int | None,
    shots: int,
    resolution: int = 512,
    episodes: int | str | None = None,
    seed: int = 0,
    *,
    splits: str | Path | None = None,
    trust_pickle: bool = False,
    target_size: int | str | None = None,
    preprocessing: str = "diffews",
    ways: int = 1,
    images_per_class: int | None = None,
) -> Dataset:
    """Episodes of a benchmark split as a torch Dataset (item i a pure function of (seed, i)).

    Args:
        benchmark: a name in `BENCHMARKS` ("pascal", "coco", "lvis", "fss", "custom", "composite").
        root: the data root (see 'Benchmark data' in the README; for "custom", the class folders' parent).
        split: "trn", "val" or "test" (FSS-1000 only).
        fold: the fold; None = all classes (in-context training, FSS-1000, custom folders).
        shots: support images per episode, K.
        resolution: working resolution R (images and masks are resized to R x R).
        episodes: number of episodes; `EVERY_IMAGE` (``"all"``): one per (image, class) pair of the
            split, which takes every pair once as the query (every class scored) except on
            class-balanced splits (COCO, LVIS: each episode draws its class); default the benchmark's
            `test_episodes` (1000 for PASCAL, COCO and LVIS folds), every pair once for FSS-1000,
            custom folders and training.
        seed: episode seed.
        splits, trust_pickle: see `open_split`.
        target_size: size of the ``"query_target"`` scoring mask: an int, ``"original"``, or R.
        preprocessing: how images and masks are resized, ``"diffews"`` or ``"authors"`` (see
            `diffews.processing.images`).
        ways: classes per episode, N; 1 gives `EpisodeDataset`, more `NWayEpisodeDataset`.
        images_per_class: use at most this many images of each class (`FewShotSplit.subsample`, seed 0).

    Items: see `EpisodeDataset` and `NWayEpisodeDataset`.
    """
    fewshot = open_split(benchmark, root, split, fold, splits, trust_pickle, shots)
    if images_per_class is not None:
        fewshot.subsample(images_per_class)
    if episodes == EVERY_IMAGE:
        episodes = len(fewshot.pairs)
    elif episodes is None:
        episodes = get_benchmark(benchmark).default_episodes(fewshot)
    try:
        if ways > 1:
            return NWayEpisodeDataset(fewshot, ways, shots, resolution, episodes, seed, target_size, preprocessing)
        return EpisodeDataset(fewshot, shots, resolution, episodes, seed, target_size, preprocessing)
    except ValueError as error:
        raise InputError(str(error)) from None
