"""What every benchmark provides: a `Benchmark` (what the CLI, the trainer's config and `data check`
need), and its splits: one split of one fold, as (image, class) pairs and masks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..processing.images import open_image_file, rgb_image

SPLITS = ("trn", "val", "test")


@dataclass(frozen=True)
class CheckItem:
    """One line of `diffews data check`: what was looked for, how many were found, what is missing."""

    what: str
    found: int
    missing: str | None = None

    def __str__(self) -> str:
        status = f"MISSING {self.missing}" if self.missing else "ok"
        return f"{self.what}: {self.found} found, {status}"


@dataclass(frozen=True)
class Benchmark:
    """One few-shot segmentation dataset, as every caller sees it (no caller tests which one it is).

    Each reader module defines one (``BENCHMARK``) and `diffews.data.BENCHMARKS` lists them; adding
    a dataset is one object and one line there.

    Attributes:
        name: the name users type (``--benchmark``, ``data.benchmark``), e.g. "pascal".
        title: the published name, e.g. "PASCAL-5i".
        splits: split names it has.
        num_folds: class folds (0: none, every class is used).
        default_split: the split ``diffews evaluate`` scores by default.
        test_episodes: episodes of a default evaluation; None: every (image, class) pair once.
        open_split: ``(root, split, fold, splits, trust_pickle) -> FewShotSplit``, called with a
            checked split name and fold; `splits` is a folder of split lists or None. With
            `folds_depend_on_shots`, a sixth argument follows: the episodes' K.
        check: ``(root, splits) -> [CheckItem]``: what ``diffews data check`` reports.
        write_split_lists: ``(root, out) -> [line]``: write split lists into `out` for `splits`
            later, returning a summary; None where the benchmark has no split lists.
        folds_depend_on_shots: whether a fold's classes depend on the episodes' K (LVIS-92i's hold the
            classes with more than K val images); then `open_split` takes K.
    """

    name: str
    title: str
    splits: tuple[str, ...]
    num_folds: int
    open_split: Callable[..., FewShotSplit]
    check: Callable[[Path, Path | None], list[CheckItem]]
    write_split_lists: Callable[[Path, Path], list[str]] | None = None
    default_split: str = "val"
    test_episodes: int | None = 1000
    folds_depend_on_shots: bool = False

    def check_split(self, split: str, fold: int | None) -> None:
        """`InputError` unless `split` is one of its splits and `fold` None or one of its folds."""
        check_split_name(self.name, split, self.splits)
        if fold is not None and not self.num_folds:
            raise InputError(f"{self.name} has no folds; got fold {fold} (leave the fold out)")
        check_fold(self.name, fold, self.num_folds)

    def default_episodes(self, split: FewShotSplit) -> int:
        """Episodes of a default run: `test_episodes`, or every pair once (training splits always)."""
        if self.test_episodes is None or split.split == "trn":
            return len(split.pairs)
        return self.test_episodes


class FewShotSplit(ABC):
    """One split of a benchmark restricted to a fold: the classes episodes use and their images.

    Attributes:
        benchmark: "pascal", "coco", "lvis", "fss", "custom" or "composite".
        split: "trn", "val" or "test".
        fold: the fold, or None for all classes.
        class_ids: the classes of this fold (sorted); the metrics average over them.
        class_names: class id -> human-readable name.
        pairs: sorted (image key, class id) pairs: every image that shows a class, once per class.
        class_balanced: episodes draw their class uniformly, then a query image of it (HSNet's
            COCO-20i sampling), instead of walking through `pairs` in order.
        exif_orientation: images and masks are read with their EXIF orientation applied. False for the
            published benchmarks: their masks index the pixels as stored, and the reference evaluation
            reads images without it (a photo tagged "rotate 90" would otherwise be scored against a
            mask stretched across the turned picture).
        strict_mask_shapes: a mask whose aspect ratio is not its image's is refused (users' folders and
            composites: it was drawn on another picture). False for the published benchmarks: a few of
            their masks have another shape, and their reference evaluations resize every mask to its image.
    """

    class_balanced = False
    exif_orientation = False
    strict_mask_shapes = False

    def __init__(
        self,
        benchmark: str,
        split: str,
        fold: int | None,
        class_ids: Sequence[int],
        class_names: dict[int, str],
        pairs: Iterable[tuple[str, int]],
    ) -> None:
        self.benchmark = benchmark
        self.split = split
        self.fold = fold
        self.class_ids = sorted(class_ids)
        self.class_names = class_names
        wanted = set(self.class_ids)
        self.pairs = sorted({(key, c) for key, c in pairs if c in wanted})
        self.images_of_class: dict[int, list[str]] = {c: [] for c in self.class_ids}
        for key, class_id in self.pairs:
            self.images_of_class[class_id].append(key)

    @abstractmethod
    def image_path(self, key: str) -> Path:
        """The image file of `key`."""

    def open_image(self, key: str) -> Image.Image:
        """The RGB image of `key`, oriented by the split's rule (`exif_orientation`)."""
        return rgb_image(open_image_file(self.image_path(key), orient=self.exif_orientation))

    @abstractmethod
    def target(self, key: str, class_id: int) -> np.ndarray:
        """Ground truth of `class_id` in image `key` at the image's size: ``(H, W)`` uint8 in {0, 1, 255 = ignore}."""

    def support_pools(self, query: str, class_id: int, rng: np.random.Generator) -> list[list[str]]:
        """Candidate supports of an episode, in pools drawn in order: here one pool, the class's other images.

        `rng` is the episode's generator; a split that ranks candidates may draw from it.
        """
        return [[key for key in self.images_of_class[class_id] if key != query]]

    def subsample(self, count: int, seed: int = 0) -> None:
        """Keep at most `count` images of every class, in place: a fixed random choice per class
        (generator seeded with (seed, class id)), so a smaller training set is reproducible."""
        for class_id, keys in self.images_of_class.items():
            if len(keys) > count:
                chosen = np.random.default_rng([seed, class_id]).choice(len(keys), size=count, replace=False)
                self.images_of_class[class_id] = [keys[i] for i in sorted(chosen.tolist())]
        kept = {(key, class_id) for class_id, keys in self.images_of_class.items() for key in keys}
        self.pairs = [pair for pair in self.pairs if pair in kept]

    def describe(self) -> str:
        """e.g. "pascal val fold 0"."""
        fold = "all classes" if self.fold is None else f"fold {self.fold}"
        return f"{self.benchmark} {self.split} {fold}"

    def require_shots(self, shots: int) -> None:
        """Raise `InputError` unless every class has at least ``shots + 1`` images (query + distinct supports)."""
        for class_id in self.class_ids:
            count = len(self.images_of_class[class_id])
            if count < shots + 1:
                raise InputError(
                    f"{self.describe()}: class {self.class_names.get(class_id, class_id)!r} (id {class_id}) has "
                    f"{count} image(s); {shots}-shot episodes need at least {shots + 1} (use fewer --shots or add images)"
                )


def check_split_name(benchmark: str, split: str, allowed: Sequence[str]) -> None:
    """`InputError` unless `split` is one of the benchmark's splits."""
    if split not in allowed:
        raise InputError(f"{benchmark} has splits {', '.join(allowed)}; got {split!r}")


def check_fold(benchmark: str, fold: int | None, num_folds: int) -> None:
    """`InputError` unless `fold` is None or in ``0..num_folds-1``."""
    if fold is not None and not 0 <= fold < num_folds:
        raise InputError(f"{benchmark} has folds 0..{num_folds - 1}; got fold {fold}")


def require_dir(path: Path, fix: str) -> Path:
    """`path` if it is a folder; else `InputError` saying it is missing and how to fix it."""
    if not path.is_dir():
        raise InputError(f"{path}: folder not found; {fix}")
    return path


def require_file(path: Path, fix: str) -> Path:
    """`path` if it is a file; else `InputError` saying it is missing and how to fix it."""
    if not path.is_file():
        raise InputError(f"{path}: file not found; {fix}")
    return path


def read_text_lines(path: Path, what: str, fix: str = "") -> list[str]:
    """The stripped, non-empty lines of UTF-8 text file `path`; `InputError` naming `what` (and `fix`)
    when it cannot be read or is not UTF-8 text (a list saved as UTF-16, say)."""
    advice = f"; {fix}" if fix else ""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a leading byte-order mark (Notepad's UTF-8) is not text
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text {what}{advice}") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read this {what} ({error.strerror}){advice}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def require_all(paths: Sequence[Path], what: str, fix: str) -> None:
    """`InputError` naming the first missing file and the count, if any of `paths` is missing."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} of {len(paths)} {what} are missing (first: {missing[0]}); {fix}")


def count_missing(paths: Sequence[Path], what: str) -> CheckItem:
    """A `CheckItem` for a list of expected files."""
    missing = [p for p in paths if not p.is_file()]
    problem = f"{len(missing)} (first: {missing[0]})" if missing else None
    return CheckItem(what, len(paths) - len(missing), problem)


def check_path(path: Path, what: str, count: int | None = None) -> CheckItem:
    """A `CheckItem` for one expected file or folder (count: entries found in it, if known)."""
    if not path.exists():
        return CheckItem(what, 0, str(path))
    return CheckItem(what, count if count is not None else 1)
