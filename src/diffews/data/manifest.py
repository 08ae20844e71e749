"""``manifest.jsonl``, which the data builders write beside their files: one JSON object per line for
each file, naming it by its path relative to the folder (``"file"``) with where it came from (source,
package, licence, ...)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputError

MANIFEST = "manifest.jsonl"


def write_manifest(folder: Path, rows: Iterable[dict]) -> None:
    """``folder/manifest.jsonl``: one row per line, keys sorted, so that the same rows give the same bytes."""
    (folder / MANIFEST).write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))


def read_manifest(folder: Path) -> dict[str, dict]:
    """``folder/manifest.jsonl`` rows by their ``"file"`` (relative path); {} when there is none."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read it ({error})") from None
    rows = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows[str(row["file"])] = row
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}: line {number} is not a JSON object with a \"file\"") from None
    return rows
