"""Split lists: which classes form each fold, and which (image, class) pairs each split holds.

On disk (the HSNet text format, which PASCAL-5i's published lists use): a folder with
``<split>/fold<i>.txt``, one ``<image key>__<class id, 2+ digits>`` per line, listing the pairs of
``<split>`` whose class belongs to fold i. Training on fold i reads the *other* folds' files;
testing on fold i reads its own.

HSNet's COCO-20i lists are pickles (``<split>/fold<i>.pkl``: 0-based class index -> image paths).
Pickles can run code when loaded, so they are read only when the caller opts in (`trust_pickle`),
with a warning, and through an unpickler that refuses every global (plain containers only).
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..errors import InputError
from ..io import write_text
from .source import read_text_lines

Pair = tuple[str, int]

logger = logging.getLogger("diffews")


def pascal_fold_classes(fold: int) -> list[int]:
    """PASCAL-5i: fold i holds classes 5i+1 .. 5i+5 of the 20 VOC classes."""
    return list(range(5 * fold + 1, 5 * fold + 6))


def coco_fold_classes(fold: int) -> list[int]:
    """COCO-20i: fold i holds classes {4k + i + 1 : k = 0..19} of the 80 classes (1-based, in category-id order)."""
    return [4 * k + fold + 1 for k in range(20)]


def interleaved_folds(class_ids: Sequence[int], num_folds: int) -> dict[int, list[int]]:
    """Fold i = every `num_folds`-th class of the sorted ids, starting at position i (LVIS-92i)."""
    ordered = sorted(class_ids)
    return {fold: ordered[fold::num_folds] for fold in range(num_folds)}


def format_pair(key: str, class_id: int) -> str:
    """``("2007_000033", 1)`` -> ``"2007_000033__01"``."""
    return f"{key}__{class_id:02d}"


def parse_pair(line: str, source: Path) -> Pair:
    """Inverse of `format_pair`; `InputError` naming `source` on a malformed line."""
    key, sep, class_text = line.rpartition("__")
    if not sep or not key or not (class_text.isascii() and class_text.isdigit()):
        raise InputError(f"{source}: malformed line {line!r}, expected '<image>__<class>'")
    return key, int(class_text)


def write_pair_lists(pairs_by_fold: dict[int, list[Pair]], folder: Path) -> list[Path]:
    """Write ``folder/fold<i>.txt`` for every fold, atomically; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fold, pairs in sorted(pairs_by_fold.items()):
        text = "".join(format_pair(key, c) + "\n" for key, c in sorted(pairs))
        written.append(write_text(folder / f"fold{fold}.txt", text))
    return written


def write_generated_lists(generate: Callable[[str], dict[int, list[Pair]]], splits: Sequence[str], out: Path) -> list[str]:
    """Write ``out/<split>/fold<i>.txt`` for every split from ``generate(split) -> {fold: pairs}``;
    returns one summary line per split. Every split is generated before anything is written, so a
    bad annotation file leaves no partial set of lists."""
    generated = {split: generate(split) for split in splits}
    for split, pairs in generated.items():
        write_pair_lists(pairs, out / split)
    return [f"{split}: " + ", ".join(f"fold{f} {len(p)} pairs" for f, p in sorted(pairs.items())) for split, pairs in generated.items()]


def list_files(folder: Path, splits: Sequence[str], num_folds: int) -> list[Path]:
    """The text pair lists a split-list folder holds for every split and fold."""
    return [folder / split / f"fold{fold}.txt" for split in splits for fold in range(num_folds)]


def read_pair_lists(folder: Path, split: str, folds: Iterable[int], trust_pickle: bool = False) -> list[Pair]:
    """Pairs of `split` listed for `folds` under a split folder (``<split>/fold<i>.txt`` or ``.pkl``)."""
    pairs: list[Pair] = []
    for fold in folds:
        text_file = folder / split / f"fold{fold}.txt"
        pickle_file = text_file.with_suffix(".pkl")
        if text_file.is_file():
            pairs.extend(parse_pair(line, text_file) for line in read_text_lines(text_file, "split list"))
        elif pickle_file.is_file():
            if not trust_pickle:
                raise InputError(
                    f"{pickle_file}: refusing to read a pickle split list by default (pickles can run code); "
                    "pass --trust-pickle-splits if you trust this file"
                )
            pairs.extend(read_hsnet_coco_pickle(pickle_file))
        else:
            raise InputError(f"{text_file}: split list not found; write the lists with 'diffews data splits' or fix --splits")
    return pairs


def read_hsnet_coco_pickle(path: Path) -> list[Pair]:
    """HSNet's COCO-20i pickle (0-based class index -> ``"<dir>/<name>.jpg"`` paths) as pairs.

    Keys become 1-based class ids; paths become image keys ``"<dir>/<name>"`` (no suffix).
    """
    logger.warning("%s: reading a pickle split list because it was explicitly trusted", path)
    try:
        table = _ContainersOnly(io.BytesIO(path.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise InputError(f"{path}: not a readable split pickle ({error})") from None
    wrong_shape = InputError(f"{path}: expected a dict of class index -> lists of image paths")
    if not isinstance(table, dict) or not all(isinstance(names, (list, tuple)) for names in table.values()):
        raise wrong_shape
    try:
        return [(str(Path(name).with_suffix("")), int(index) + 1) for index, names in table.items() for name in names]
    except (TypeError, ValueError):
        raise wrong_shape from None


class _ContainersOnly(pickle.Unpickler):
    """Unpickler for plain data: any global (class, function) is refused, so loading cannot run code."""

    def find_class(self, module: str, name: str) -> None:
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a split list")


def folds_used(split: str, fold: int | None, num_folds: int) -> list[int]:
    """The folds whose classes a split uses: testing on fold i uses fold i, training on it uses the others.

    ``fold=None`` (in-context training, or all classes) uses every fold.
    """
    if fold is None:
        return list(range(num_folds))
    if split == "trn":
        return [f for f in range(num_folds) if f != fold]
    return [fold]


def load_pairs(
    folder: Path | None, split: str, folds: list[int], generate, trust_pickle: bool = False
) -> list[Pair]:
    """Pairs of `folds` from split lists in `folder`, or, without one, from ``generate() -> {fold: pairs}``."""
    if folder is not None:
        return read_pair_lists(folder, split, folds, trust_pickle)
    generated = generate()
    return [pair for fold in folds for pair in generated[fold]]
