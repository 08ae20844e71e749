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
    """Licence of a package's files from its copyright file.

    In a machine-readable file: the ``License:`` of the paragraph whose ``Files:`` lists the pattern
    `files` (default ``*``: the main files; e.g. ``assets/*`` for a gem's artwork), else the first
    non-empty ``License:``. In a free-form one (older packages): the first GNU licence grant it quotes,
    e.g. "version 2 of the License, or (at your option) any later version" as ``GPL-2+``.
    """
    if package is None:
        return None
    path = DOC_ROOT / package / "copyright"
    if not path.is_file():
        return None
    text = path.read_text(errors="replace")
    first = None
    for paragraph in re.split(r"\n\s*\n", text):
        fields = _fields(paragraph)
        licence = fields.get("license", "").split("\n")[0].strip()
        if not licence:
            continue
        if files in fields.get("files", "").split():
            return licence
        first = first or licence
    return first or _quoted_gnu_licence(text)


_GNU_GRANT = re.compile(
    r"GNU (?P<lesser>Lesser |Library )?General Public License,? as published by the Free Software Foundation;?"
    r",? (?:either )?version (?P<version>\d(?:\.\d)?)(?: of the License)?(?P<later>,? or \(at your option\) any later version)?",
    re.IGNORECASE,
)


def _quoted_gnu_licence(text: str) -> str | None:
    """SPDX-style name of the first GNU (L)GPL grant quoted in free text ("GPL-2+", "LGPL-2.1"), if any."""
    match = _GNU_GRANT.search(" ".join(text.split()))
    if match is None:
        return None
    name = "LGPL" if match["lesser"] else "GPL"
    return f"{name}-{match['version']}{'+' if match['later'] else ''}"


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
