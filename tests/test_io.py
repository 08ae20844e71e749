"""The I/O layer: atomic writes, transactions that roll back exactly, output folders, file modes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import dead_writers_path
from PIL import Image

from diffews.errors import InputError
from diffews.io import (
    BACKUP_SUFFIX, COMMITTING_SUFFIX, OutputFolder, Transaction, atomic_write, new_folder, replace_folder, temporary_path, write_text,
)


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


def state(folder) -> dict[str, object]:
    """Every entry below `folder`, hidden ones too: relative path -> (content or "dir", mode, inode)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else "dir", p.stat().st_mode, p.stat().st_ino)
        for p in sorted(folder.rglob("*"))
    }


def test_rollback_restores_replaced_files_and_folders_exactly(tmp_path):
    (tmp_path / "old.txt").write_text("earlier run")
    os.chmod(tmp_path / "old.txt", 0o640)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights").write_bytes(b"earlier weights")
    before = state(tmp_path)
    transaction = Transaction()
    with transaction.write(tmp_path / "old.txt") as staged:
        staged.write_text("this run")
    with transaction.write(tmp_path / "old.txt") as staged:  # the same file twice
        staged.write_text("this run, again")
    with transaction.write(tmp_path / "new.txt") as staged:
        staged.write_text("new")
    with transaction.write(tmp_path / "model", folder=True) as staged:
        (staged / "weights").write_bytes(b"new weights")
    assert (tmp_path / "old.txt").read_text() == "this run, again"
    assert (tmp_path / "model" / "weights").read_bytes() == b"new weights"
    transaction.rollback()
    assert state(tmp_path) == before


def test_commit_keeps_the_new_files_and_drops_the_originals(tmp_path):
    (tmp_path / "old.txt").write_text("earlier run")
    transaction = Transaction()
    with transaction.write(tmp_path / "old.txt") as staged:
        staged.write_text("this run")
    transaction.commit()
    assert [p.name for p in tmp_path.iterdir()] == ["old.txt"]
    assert (tmp_path / "old.txt").read_text() == "this run"


@pytest.mark.parametrize("folder", [False, True])
def test_failed_atomic_write_leaves_the_target_untouched(tmp_path, folder):
    target = tmp_path / "target"
    if folder:
        target.mkdir()
        (target / "inside").write_text("earlier")
    else:
        target.write_text("earlier")
    before = state(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target, folder=folder) as staged:
            (staged / "inside" if folder else staged).write_text("half")
            raise KeyboardInterrupt
    assert state(tmp_path) == before
    with atomic_write(target, folder=folder) as staged:
        (staged / "inside" if folder else staged).write_text("whole")
    assert (target / "inside" if folder else target).read_text() == "whole"
    assert [p.name for p in tmp_path.iterdir()] == ["target"]


def test_failed_output_folder_run_restores_what_it_replaced(tmp_path):
    (tmp_path / "a.png").write_bytes(b"earlier run")
    before = state(tmp_path)
    with pytest.raises(InputError):
        with OutputFolder(tmp_path) as out:
            out.save_image(image(1), "a.png")
            out.save_image_later(lambda: image(2), "b.png")
            raise InputError("query 2: bad")
    assert state(tmp_path) == before


@pytest.fixture(params=[0o022, 0o077], ids=["umask022", "umask077"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_a_folder_written_into_an_empty_one_keeps_it_and_a_link_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    inode = out.stat().st_ino
    replace_folder(out, lambda folder: (folder / "a.txt").write_text("new"), "write here")
    assert out.stat().st_ino == inode and (out / "a.txt").read_text() == "new"
    replace_folder(out, lambda folder: (folder / "b.txt").write_text("newer"), "write here")  # contents: replaced whole
    assert [p.name for p in out.iterdir()] == ["b.txt"]
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(InputError, match="is a symbolic link"):
        replace_folder(tmp_path / "link", lambda folder: (folder / "a.txt").write_text("new"), "write here")
    assert (tmp_path / "link").is_symlink() and list((tmp_path / "real").iterdir()) == []
    (tmp_path / "real" / "old.txt").write_text("old")  # a link to a full folder was dropped for a new folder
    with pytest.raises(InputError, match="is a symbolic link"):
        replace_folder(tmp_path / "link", lambda folder: (folder / "a.txt").write_text("new"), "write here")
    assert (tmp_path / "link").is_symlink() and [p.name for p in (tmp_path / "real").iterdir()] == ["old.txt"]


def test_a_folder_that_cannot_be_written_leaves_no_parent_folders_behind(tmp_path):
    """A full disk or an interrupt while `convert` / `download` wrote a model left the parents it had made."""
    target = tmp_path / "new" / "deeper" / "model"

    def full_disk(folder: Path) -> None:
        (folder / "a.txt").write_text("partial")
        raise OSError(28, "No space left on device")

    def interrupted(folder: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(InputError, match=r"model: cannot write here \(No space left on device\)$"):
        replace_folder(target, full_disk, "write here")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):
        replace_folder(target, interrupted, "write here")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "mine.txt").write_text("kept")
    with pytest.raises(InputError):
        replace_folder(target, full_disk, "write here")
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["mine.txt"]


def test_every_written_file_respects_the_umask(tmp_path, umask, tiny_model):
    """Outputs, reports, weights and checkpoints get 0666 / 0777 & ~umask, as any program's files."""
    from diffews.modeling.convert import save_new_folder
    from diffews.modeling.mask_decoder import MaskDecoder, MaskDecoderConfig, save_mask_decoder
    from diffews.training.checkpoints import STATE_NAME, write_checkpoint

    with OutputFolder(tmp_path / "out") as out:
        out.save_image(image(1), "a_mask.png")
        out.save_image_later(lambda: image(2), "a_overlay.png")
    write_text(tmp_path / "report.json", "{}")
    save_mask_decoder(MaskDecoder(MaskDecoderConfig(widths=(4, 4, 4))), tmp_path / "decoder.safetensors")
    write_checkpoint(tmp_path / "run", 1, lambda folder: (folder / STATE_NAME).write_text("{}"), keep=1)
    save_new_folder(tiny_model, tmp_path / "model")
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    expected = {name: (0o777 if (tmp_path / name).is_dir() else 0o666) & ~umask for name in modes}
    assert modes == expected
    assert {"out/a_mask.png", "report.json", "decoder.safetensors", "run/checkpoints/step-00000001/trainer_state.json",
            "model/unet/diffusion_pytorch_model.safetensors"} <= set(modes)


KILLED_MID_RUN = """
import os, signal, sys
from diffews.io import OutputFolder
with OutputFolder(sys.argv[1]) as out:
    with out.write("replaced.txt") as staged:
        staged.write_text("new")
    with out.write("created.txt") as staged:
        staged.write_text("new")
    with out.write("half.txt") as staged:
        staged.write_text("half of it")
        os.kill(os.getpid(), signal.SIGKILL)  # no rollback can run
"""


def test_the_next_write_undoes_what_a_killed_run_left(tmp_path, caplog):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "replaced.txt").write_text("original")
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_RUN, str(folder)])
    assert killed.returncode == -9
    assert (folder / "replaced.txt").read_text() == "new"
    hidden = sorted(p.name for p in folder.iterdir() if p.name.startswith("."))
    assert [name.rsplit(".", 1)[1] for name in hidden] == ["tmp", "orig"]  # .half.txt.*.tmp, .replaced.txt.*.orig

    with caplog.at_level(logging.WARNING, logger="diffews"):
        write_text(folder / "report.json", "{}")
    assert (folder / "replaced.txt").read_text() == "original"
    assert sorted(p.name for p in folder.iterdir()) == ["created.txt", "replaced.txt", "report.json"]
    assert "restored 1 file(s) that an interrupted run had replaced" in caplog.text and "replaced.txt" in caplog.text


KILLED_FILLING = """
import os, signal, sys
from diffews.io import new_folder
with new_folder(sys.argv[1]) as staged:
    (staged / "half.txt").write_text("half of it")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_empty_folder_a_killed_run_was_filling_is_empty_again_for_the_next(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert subprocess.run([sys.executable, "-c", KILLED_FILLING, str(out)]).returncode == -9
    assert [p.name.rsplit(".", 1)[1] for p in out.iterdir()] == ["tmp"]  # its hidden staging folder
    with new_folder(out) as staged:
        (staged / "data").mkdir()
        (staged / "data" / "a.txt").write_text("a")
        (staged / "benchmark.json").write_text("{}")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["benchmark.json", "data", "data/a.txt"]

def test_leftovers_of_a_running_process_or_another_host_are_kept(tmp_path):
    (tmp_path / "a.txt").write_text("new")
    running = temporary_path(tmp_path / "a.txt", BACKUP_SUFFIX)  # this process: still running
    running.write_text("original")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = running.name.split(".")[-2].split("-")[0]
    other_host = tmp_path / f".b.txt.{'1' if host == '000000' else '0'}00000-{dead.stdout.strip()}-abcdef12.orig"
    other_host.write_text("original")  # a process of another machine sharing the folder: its pid says nothing here
    write_text(tmp_path / "c.txt", "x")
    assert running.read_text() == "original" and other_host.exists()
    assert (tmp_path / "a.txt").read_text() == "new"


def test_a_run_killed_while_committing_is_finished_not_undone(tmp_path):
    for name in ("x.txt", "y.txt"):
        (tmp_path / name).write_text("new")
    kept = dead_writers_path(tmp_path / "y.txt", BACKUP_SUFFIX)  # x's original already deleted by the commit
    kept.write_text("original")
    marker = kept.with_name(kept.name.replace(".y.txt.", ".diffews-commit.").replace(BACKUP_SUFFIX, COMMITTING_SUFFIX))
    marker.touch()
    write_text(tmp_path / "z.txt", "z")
    assert (tmp_path / "x.txt").read_text() == (tmp_path / "y.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt", "y.txt", "z.txt"]


def test_a_file_changed_after_the_killed_run_is_kept_with_its_earlier_version(tmp_path, caplog):
    kept = dead_writers_path(tmp_path / "a.txt", BACKUP_SUFFIX)
    kept.write_text("original")
    os.utime(kept, ns=(0, 0))  # utime moves ctime to now: the rename aside is the file's last change
    (tmp_path / "a.txt").write_text("edited by the user after the crash")
    with caplog.at_level(logging.WARNING, logger="diffews"):
        write_text(tmp_path / "b.txt", "b")
    assert (tmp_path / "a.txt").read_text() == "edited by the user after the crash" and kept.read_text() == "original"
    assert "changed after an interrupted run wrote it; kept" in caplog.text


def test_tree_snapshot_removes_only_what_appeared(tmp_path):
    from diffews.io import TreeSnapshot

    kept = tmp_path / "run"
    (kept / "logs").mkdir(parents=True)
    (kept / "logs" / "old.txt").write_text("old")
    snapshot = TreeSnapshot(kept)
    (kept / "logs" / "new").mkdir()
    (kept / "logs" / "new" / "events").write_text("new")
    (kept / "logs" / "link").symlink_to(kept / "logs" / "old.txt")
    snapshot.remove_new()
    assert sorted(p.relative_to(kept).as_posix() for p in kept.rglob("*")) == ["logs", "logs/old.txt"]

    fresh = tmp_path / "a" / "b" / "run"
    snapshot = TreeSnapshot(fresh)
    (fresh / "logs").mkdir(parents=True)
    (fresh / "logs" / "events").write_text("new")
    (tmp_path / "a" / "other").write_text("not the run's")  # a created parent that is no longer empty stays
    snapshot.remove_new()
    assert not (tmp_path / "a" / "b").exists() and (tmp_path / "a" / "other").is_file()


def test_a_full_disk_while_writing_names_the_output_file(tmp_path):
    """PIL and json write through file objects, so their OSError names no file: the output is named."""
    import errno

    from diffews.io import atomic_write

    target = tmp_path / "mask.png"
    with pytest.raises(OSError) as raised:
        with atomic_write(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert raised.value.filename == str(target) and not list(tmp_path.iterdir())


def test_one_image_named_twice_is_one_query(tmp_path, monkeypatch):
    from diffews.io import expand_image_paths

    (tmp_path / "q.jpg").write_bytes(b"")
    (tmp_path / "link.jpg").symlink_to(tmp_path / "q.jpg")
    monkeypatch.chdir(tmp_path)
    assert [str(p) for p in expand_image_paths(["q.jpg", str(tmp_path / "q.jpg"), "./q.jpg", "link.jpg"])] == ["q.jpg", "link.jpg"]


def test_new_folder_creates_missing_parents_and_removes_them_on_failure(tmp_path):
    with new_folder(tmp_path / "a" / "b" / "out") as staged:
        (staged / "x.txt").write_text("x")
    assert (tmp_path / "a" / "b" / "out" / "x.txt").read_text() == "x"
    with pytest.raises(KeyboardInterrupt):
        with new_folder(tmp_path / "c" / "d" / "out") as staged:
            (staged / "x.txt").write_text("x")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_an_output_folder_that_cannot_be_written_leaves_no_folders(tmp_path, monkeypatch):
    import errno
    import tempfile

    def refused(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refused)
    with pytest.raises(InputError, match=r"out: cannot write to output folder \(Permission denied\)$"):
        OutputFolder(tmp_path / "new" / "out").__enter__()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raising KeyboardInterrupt, whatever this process inherited (a shell's `cmd &` ignores it)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_signal_held_back_is_delivered_when_the_block_ends(ctrl_c_raises):
    import signal

    from diffews.signals import deferred

    finished = False
    with pytest.raises(KeyboardInterrupt):
        with deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time_to_deliver = [i for i in range(100_000)]  # Python code runs: a pending handler would run here
            finished = bool(time_to_deliver)
    assert finished and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ctrl_c_while_a_failed_run_is_undone_lets_the_undo_finish(tmp_path, monkeypatch, ctrl_c_raises):
    """A second signal mid-undo (a launcher's SIGTERM after a failure) stopped the rollback part-way."""
    import signal

    from diffews import io

    out = tmp_path / "out"
    with OutputFolder(out) as folder:
        folder.save_image(image(1), "a.png")
    earlier = (out / "a.png").read_bytes()
    real_remove = io.remove

    def interrupted_remove(path):
        os.kill(os.getpid(), signal.SIGINT)
        real_remove(path)

    with pytest.raises(KeyboardInterrupt):
        with OutputFolder(out) as folder:
            folder.save_image(image(2), "a.png")
            folder.save_image(image(3), "b.png")
            monkeypatch.setattr(io, "remove", interrupted_remove)
            raise RuntimeError("the run failed")
    assert [p.name for p in out.iterdir()] == ["a.png"] and (out / "a.png").read_bytes() == earlier


def test_an_existing_name_with_glob_characters_is_taken_as_it_is(tmp_path, monkeypatch):
    from diffews.io import expand_image_paths

    for name in ("img[1].png", "img1.png"):
        image(0).save(tmp_path / name)
    (tmp_path / "photos [2023]").mkdir()
    image(0).save(tmp_path / "photos [2023]" / "q.png")
    monkeypatch.chdir(tmp_path)
    assert [str(p) for p in expand_image_paths(["img[1].png", "photos [2023]", "img[0-9].png"])] == [
        "img[1].png", str(Path("photos [2023]") / "q.png"), "img1.png",
    ]


def test_a_name_too_long_to_stage_is_refused_before_the_run(tmp_path):
    from diffews.io import NAME_MAX, check_replaceable

    longest = NAME_MAX - len(temporary_path(tmp_path / "x", BACKUP_SUFFIX).name.encode()) + 1
    check_replaceable(tmp_path, ["x" * longest])
    with pytest.raises(InputError, match=r"name too long to write \(.* bytes.*give the input a shorter name$"):
        check_replaceable(tmp_path, ["x" * (longest + 1)])
