"""FSS-1000: 1000 classes of 10 images, ``<class>/<n>.jpg`` with ``<class>/<n>.png`` masks.

Layout (HSNet convention), under the data root::

    FSS-1000/<class>/<n>.jpg
    FSS-1000/<class>/<n>.png

Splits are class lists (trn 520, val 240, test 240), published with HSNet. They are read from a
folder the user gives (`splits`), else from HSNet's lists, downloaded once into the cache (see
`diffews.data.published`). There are no folds; episodes of "test" use every image once.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..io import write_text
from .custom import FolderSplit, scan_class
from .source import Benchmark, CheckItem, check_path, check_split_name, read_text_lines, require_dir
from .published import published_splits

NAME = "fss"
SPLITS = ("trn", "val", "test")
FIX = "FSS-1000 needs FSS-1000/<class>/<n>.jpg and <n>.png under the root (see 'Benchmark data' in the README)"


def class_list(split: str, splits: Path | None = None) -> list[str]:
    """The class names of an FSS-1000 split, from ``splits/<split>.txt`` or HSNet's published lists."""
    check_split_name(NAME, split, SPLITS)
    path = Path(splits or published_splits(NAME)) / f"{split}.txt"
    if not path.is_file():
        raise InputError(f"{path}: FSS-1000 class list not found; --splits must hold trn.txt, val.txt and test.txt")
    names = read_text_lines(path, "class list")
    if not names:
        raise InputError(f"{path}: empty FSS-1000 class list")
    return names


def open_split(root: Path, split: str, fold: int | None, splits: Path | None = None, trust_pickle: bool = False) -> FolderSplit:
    """The classes of an FSS-1000 split, every image of each (FSS-1000 has no folds: `fold` is None)."""
    base = require_dir(Path(root) / "FSS-1000", FIX)
    names = class_list(split, splits)
    missing = [name for name in names if not (base / name).is_dir()]
    if missing:
        raise InputError(f"{base}: {len(missing)} of {len(names)} {split} class folders are missing (first: {missing[0]}); {FIX}")
    return FolderSplit(NAME, split, base, base, names)


def check(root: Path, splits: Path | None = None) -> list[CheckItem]:
    """What `diffews data check fss` reports."""
    base = Path(root) / "FSS-1000"
    folders = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    items = [check_path(base, "FSS-1000 class folders", len(folders))]
    for split in SPLITS:
        names = class_list(split, splits)
        missing = [n for n in names if not (base / n).is_dir()]
        items.append(CheckItem(f"{split} classes", len(names) - len(missing), f"{len(missing)} (first: {missing[0]})" if missing else None))
    images = sum(len(scan_class(folder, folder)) for folder in folders)
    items.append(CheckItem("images with masks", images))
    return items


def write_split_lists(root: Path, out: Path) -> list[str]:
    """`diffews data splits fss`: HSNet's class lists (``<split>.txt``), which FSS-1000 results use."""
    lists = {split: class_list(split) for split in SPLITS}
    out.mkdir(parents=True, exist_ok=True)
    for split, names in lists.items():
        write_text(out / f"{split}.txt", "".join(f"{n}\n" for n in names))
    return [f"FSS-1000 class lists: {', '.join(f'{s} {len(n)}' for s, n in lists.items())}"]


BENCHMARK = Benchmark(NAME, "FSS-1000", SPLITS, 0, open_split, check, write_split_lists, default_split="test", test_episodes=None)
