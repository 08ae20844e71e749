"""Which Debian package installed a file, and that package's licence (for manifests of gathered artwork)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

DPKG_INFO = Path("/var/lib/dpkg/info")
DOC_ROOT = Path("/usr/share/doc")


def owning_packages(paths: Sequence[Path]) -> dict[Path, str]:
    """Debian package that installed each of `paths` (from dpkg's file lists in `DPKG_INFO`; empty off Debian)."""
    wanted = {str(p): p for p in paths}
    owners: dict[Path, str] = {}
    info = DPKG_INFO
    if not info.is_dir():
        return owners
    for listing in sorted(info.glob("*.list")):
        text = "\n" + listing.read_text(errors="replace")
        for line, path in wanted.items():
            if path not in owners and f"\n{line}\n" in text:
                owners[path] = listing.stem.split(":")[0]
    return owners


def package_licence(package: str | None, files: str = "*") -> str | None:
    """Licence of a package's files from its machine-readable copyright file, if it has one.

    The ``License:`` of the paragraph whose ``Files:`` lists the pattern `files` (default ``*``: the
    main files; e.g. ``assets/*`` for a gem's artwork), else the first non-empty ``License:``.
    """
    if package is None:
        return None
    path = DOC_ROOT / package / "copyright"
    if not path.is_file():
        return None
    first = None
    for paragraph in re.split(r"\n\s*\n", path.read_text(errors="replace")):
        fields = _fields(paragraph)
        licence = fields.get("license", "").split("\n")[0].strip()
        if not licence:
            continue
        if files in fields.get("files", "").split():
            return licence
        first = first or licence
    return first


def _fields(paragraph: str) -> dict[str, str]:
    """A copyright-file paragraph's fields by lower-case name; continuation lines (indented) kept, after a newline."""
    fields: dict[str, str] = {}
    key = None
    for line in paragraph.splitlines():
        match = re.match(r"^([A-Za-z-]+):(.*)$", line)
        if match:
            key = match[1].lower()
            fields[key] = match[2]
        elif key is not None and line[:1] in (" ", "\t"):
            fields[key] += "\n" + line
    return fields
