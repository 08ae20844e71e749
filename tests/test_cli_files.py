"""OutputFolder's writer thread: files land atomically, and a failure leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffews.cli.files import OutputFolder
from diffews.errors import InputError


def image(value: int) -> Image.Image:
    return Image.fromarray(np.full((4, 5), value, np.uint8))


def test_save_image_later_writes_every_file(tmp_path):
    with OutputFolder(tmp_path / "out") as out:
        for i in range(40):  # more than the queue bound
            out.save_image_later(lambda i=i: image(i), f"{i}.png")
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == sorted(f"{i}.png" for i in range(40))
    assert np.asarray(Image.open(tmp_path / "out" / "7.png")).max() == 7


def test_failed_background_write_removes_this_runs_files(tmp_path):
    def broken() -> Image.Image:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with OutputFolder(tmp_path / "out") as out:
            out.save_image_later(lambda: image(1), "a.png")
            out.save_image_later(broken, "b.png")
    assert not (tmp_path / "out").exists()


def test_error_in_the_run_waits_for_queued_writes_then_cleans_up(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.png").write_bytes(b"earlier run")
    with pytest.raises(InputError):
        with OutputFolder(tmp_path / "out") as out:
            out.save_image_later(lambda: image(1), "a.png")
            raise InputError("query 2: bad")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.png"]
