"""Few-shot segmentation benchmarks: PASCAL-5i, COCO-20i, LVIS-92i, FSS-1000 and custom folders.

One reader module per benchmark, all behind `open_split` (a benchmark split of a fold) and
`build_episode_dataset` (its episodes as a torch Dataset). Folder layouts: 'Benchmark data' in the README.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from torch.utils.data import Dataset

from ..errors import InputError
from . import coco, custom, fss, lvis, pascal
from .episodes import ORIGINAL, EpisodeDataset, collate_episodes
from .published import PUBLISHED, published_splits
from .source import CheckItem, FewShotSplit, check_fold, check_split_name

BENCHMARKS: dict[str, ModuleType] = {"pascal": pascal, "coco": coco, "lvis": lvis, "fss": fss, "custom": custom}
DEFAULT_TEST_EPISODES = 1000

__all__ = [
    "BENCHMARKS",
    "ORIGINAL",
    "PUBLISHED",
    "CheckItem",
    "EpisodeDataset",
    "FewShotSplit",
    "benchmark_module",
    "build_episode_dataset",
    "collate_episodes",
    "default_episodes",
    "num_folds",
    "open_split",
]


def benchmark_module(benchmark: str) -> ModuleType:
    """The reader module of a benchmark name; `InputError` for an unknown one."""
    if benchmark not in BENCHMARKS:
        raise InputError(f"unknown benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[benchmark]


def num_folds(benchmark: str) -> int:
    """Folds of a benchmark (0 for FSS-1000 and custom folders, which have none)."""
    return getattr(benchmark_module(benchmark), "NUM_FOLDS", 0)


def open_split(
    benchmark: str,
    root: str | Path,
    split: str,
    fold: int | None,
    splits: str | Path | None = None,
    trust_pickle: bool = False,
) -> FewShotSplit:
    """One split of a benchmark restricted to a fold (None: all classes).

    Args:
        splits: a folder of split lists (HSNet layout, see `diffews.data.splits`; FSS-1000: the
            class lists), or ``"hsnet"`` for the lists published with HSNet (PASCAL-5i, FSS-1000;
            downloaded once, see `diffews.data.published`). By default PASCAL/COCO/LVIS lists are
            generated from the annotations and FSS-1000 uses HSNet's.
        trust_pickle: allow HSNet's pickle split lists in `splits` (read with a warning).

    Raises:
        InputError: unknown benchmark, split or fold; missing folders, files or masks.
    """
    module = benchmark_module(benchmark)
    check_split_name(benchmark, split, module.SPLITS)
    if num_folds(benchmark):
        check_fold(benchmark, fold, num_folds(benchmark))
    if splits == PUBLISHED:
        folder = published_splits(benchmark)
    else:
        folder = Path(splits).expanduser() if splits else None
    return module.open_split(Path(root).expanduser(), split, fold, folder, trust_pickle)


def default_episodes(split: FewShotSplit) -> int:
    """HSNet's episode counts: 1000 per test fold; FSS-1000, custom folders and training: every pair once."""
    if split.benchmark in ("fss", "custom") or split.split == "trn":
        return len(split.pairs)
    return DEFAULT_TEST_EPISODES


def build_episode_dataset(
    benchmark: str,
    root: str | Path,
    split: str,
    fold: int | None,
    shots: int,
    resolution: int = 512,
    episodes: int | None = None,
    seed: int = 0,
    *,
    splits: str | Path | None = None,
    trust_pickle: bool = False,
    target_size: int | str | None = None,
) -> Dataset:
    """Episodes of a benchmark split as a torch Dataset (item i a pure function of (seed, i)).

    Args:
        benchmark: "pascal", "coco", "lvis", "fss" or "custom".
        root: the data root (see 'Benchmark data' in the README; for "custom", the class folders' parent).
        split: "trn", "val" or "test" (FSS-1000 only).
        fold: the fold; None = all classes (in-context training, FSS-1000, custom folders).
        shots: support images per episode, K.
        resolution: working resolution R (images and masks are resized to R x R).
        episodes: number of episodes; default 1000 for test folds, every pair once for FSS-1000,
            custom folders and training.
        seed: episode seed.
        splits, trust_pickle: see `open_split`.
        target_size: size of the ``"query_target"`` scoring mask: an int, ``"original"``, or R.

    Items: see `EpisodeDataset`.
    """
    fewshot = open_split(benchmark, root, split, fold, splits, trust_pickle)
    if episodes is None:
        episodes = default_episodes(fewshot)
    try:
        return EpisodeDataset(fewshot, shots, resolution, episodes, seed, target_size)
    except ValueError as error:
        raise InputError(str(error)) from None
