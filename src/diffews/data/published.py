"""The split lists published with HSNet (Min et al., ICCV 2021), downloaded once into a cache.

PASCAL-5i's pair lists (``trn|val/fold<i>.txt``, derived from OSLSM's) and FSS-1000's class lists
(``trn|val|test.txt``) are the ones published results use. They are fetched on first use into
``$DIFFEWS_HOME/splits/hsnet/<benchmark>/`` (default ``~/.cache/diffews``); offline, the error
says which files to put where. COCO-20i's published lists are pickles and are never downloaded.
"""

from __future__ import annotations

import logging
import urllib.error
from pathlib import Path
from urllib.request import urlopen

from ..errors import InputError
from ..home import diffews_home
from ..io import write_text

PUBLISHED = "hsnet"
SOURCE = "https://raw.githubusercontent.com/juhongm999/hsnet/main/data/splits"
FILES = {
    "pascal": tuple(f"{split}/fold{fold}.txt" for split in ("trn", "val") for fold in range(4)),
    "fss": ("trn.txt", "val.txt", "test.txt"),
}
TIMEOUT_S = 30

logger = logging.getLogger("diffews")


def cache_dir() -> Path:
    """Where downloaded split lists live: ``$DIFFEWS_HOME/splits`` (default ``~/.cache/diffews/splits``)."""
    return diffews_home() / "splits"


def published_splits(benchmark: str) -> Path:
    """The folder of HSNet's published split lists of `benchmark`, downloading missing files once.

    Raises:
        InputError: no published lists for this benchmark, or a download failed (offline).
    """
    if benchmark not in FILES:
        raise InputError(
            f"no published split lists are downloaded for {benchmark} (only {', '.join(FILES)}); "
            "generate them with 'diffews data splits' or pass --splits DIR"
        )
    folder = cache_dir() / PUBLISHED / benchmark
    missing = [name for name in FILES[benchmark] if not (folder / name).is_file()]
    if missing:
        logger.warning("%s: downloading %d split list(s) published with HSNet into %s", benchmark, len(missing), folder)
    for name in missing:
        url = f"{SOURCE}/{benchmark}/{name}"
        try:
            with urlopen(url, timeout=TIMEOUT_S) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError, UnicodeDecodeError) as error:
            raise InputError(
                f"cannot download {url} ({getattr(error, 'reason', error)}); put HSNet's data/splits/{benchmark}/ "
                f"files ({', '.join(FILES[benchmark])}) into {folder}, or pass --splits DIR"
            ) from None
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        write_text(folder / name, text)
    return folder
