"""`diffews segment` end to end on the tiny model, and every bad input."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import box_mask, random_image
from PIL import Image

from diffews import DiffewSPipeline
from diffews._testing import build_tiny_model
from diffews.io import OutputFolder
from diffews.cli.main import main
from diffews.processing.images import load_image, load_mask

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def files(tmp_path, rng):
    """Two support pairs and three query images of different sizes and modes."""
    (tmp_path / "queries").mkdir()
    random_image(rng, 60, 80).save(tmp_path / "s1.jpg")
    Image.fromarray(box_mask(60, 80).astype(np.uint8) * 255).save(tmp_path / "s1.png")
    random_image(rng, 50, 50).save(tmp_path / "s2.png")
    Image.fromarray(box_mask(25, 25).astype(np.uint8)).save(tmp_path / "s2_mask.png")  # 0/1 mask, half size
    random_image(rng, 40, 30).save(tmp_path / "queries/a.jpg")
    random_image(rng, 33, 47).convert("L").save(tmp_path / "queries/b.png")
    Image.fromarray(rng.integers(0, 256, (20, 24, 4), dtype=np.uint8), mode="RGBA").save(tmp_path / "queries/c.png")
    return tmp_path


def segment_args(root: Path, *extra: str, out: str = "out") -> list[str]:
    return [
        "segment", "--model", "tiny-random",
        "--support", str(root / "s1.jpg"), str(root / "s1.png"),
        "--support", str(root / "s2.png"), str(root / "s2_mask.png"),
        "--query", str(root / "queries"), "--out", str(root / out), *extra,
    ]


def output_files(root: Path) -> list[Path]:
    out = root / "out"
    return sorted(out.iterdir()) if out.is_dir() else []


def test_segment_writes_masks_and_overlays_matching_the_python_api(files, capsys):
    assert main(segment_args(files)) == 0
    out = files / "out"
    assert sorted(p.name for p in out.iterdir()) == [f"{n}_{kind}.png" for n in "abc" for kind in ("mask", "overlay")]
    pipe = DiffewSPipeline(build_tiny_model())
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(
        [load_image(files / "queries" / n) for n in ("a.jpg", "b.png", "c.png")],
        [load_image(files / "s1.jpg"), load_image(files / "s2.png")],
        [load_mask(files / "s1.png"), load_mask(files / "s2_mask.png")],
    )
    for name, mask in zip("abc", expected.masks):
        written = np.asarray(Image.open(out / f"{name}_mask.png"))
        assert set(np.unique(written)) <= {0, 255}
        assert np.array_equal(written == 255, mask)
        assert Image.open(out / f"{name}_overlay.png").size == (mask.shape[1], mask.shape[0])
    assert "wrote 3 masks and overlays" in capsys.readouterr().out


def test_segment_options_and_globs(files):
    args = segment_args(files, "--threshold", "0.6", "--threshold-mode", "absolute", "--resolution", "32", "--batch-size", "1")
    args[args.index("--query") + 1] = str(files / "queries" / "*.png")
    assert main(args) == 0
    assert sorted(p.name for p in (files / "out").glob("*_mask.png")) == ["b_mask.png", "c_mask.png"]


def test_shipped_examples_segment(tmp_path):
    args = [
        "segment", "--model", "tiny-random",
        "--support", str(EXAMPLES / "support/gnome_dev_cdrom_audio_support_1.jpg"), str(EXAMPLES / "support/gnome_dev_cdrom_audio_support_1_mask.png"),
        "--query", str(EXAMPLES / "query"), "--out", str(tmp_path / "out"),
    ]
    assert main(args) == 0
    assert len(list((tmp_path / "out").glob("*_mask.png"))) == 3


def expect_error(capsys, args: list[str], message: str) -> None:
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and message in errors[0], lines


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda root: Image.new("L", (80, 60)).save(root / "s1.png"), "support mask 1 ({root}/s1.png) is empty"),
        (lambda root: (root / "queries/b.png").write_bytes(b"\x89PNG broken"), "{root}/queries/b.png: cannot read image"),
        (lambda root: (root / "s2.png").unlink(), "{root}/s2.png: no such file"),
        (lambda root: (root / "s1.png").write_text("text"), "{root}/s1.png: cannot read image"),
        (lambda root: shutil.copy(root / "queries/a.jpg", root / "queries/a.png"), "would both write outputs named 'a_*'"),
        (lambda root: shutil.copy(root / "queries/a.jpg", root / "queries/A.jpeg"), "would both write outputs named 'a_*'"),
        (lambda root: [p.unlink() for p in (root / "queries").iterdir()], "{root}/queries: folder has no image files"),
        (lambda root: (root / "out").write_text("a file"), "{root}/out: output folder is an existing file"),
    ],
    ids=["empty-mask", "corrupt-query", "missing-support", "unreadable-mask", "name-clash", "name-clash-in-case", "empty-folder", "out-is-file"],
)
def test_bad_inputs_exit_2_with_one_line_and_write_nothing(files, capsys, mutate, message):
    mutate(files)
    expect_error(capsys, segment_args(files), message.format(root=files))
    assert output_files(files) == []


def test_truncated_query_jpeg_is_found_before_the_model_runs(files, capsys, monkeypatch):
    """A JPEG cut in half passes a header check (PIL's verify); the pre-check decodes every image."""
    data = (files / "queries/a.jpg").read_bytes()
    (files / "queries/z.jpg").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr("diffews.cli.segment.load_inference_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    expect_error(capsys, segment_args(files), f"{files}/queries/z.jpg: cannot read image (image file is truncated")
    assert not (files / "out").exists()


def test_a_support_mask_that_does_not_fit_its_image_is_found_before_the_model_loads(files, capsys, monkeypatch):
    Image.fromarray(box_mask(80, 60).astype(np.uint8) * 255).save(files / "s1.png")  # s1.jpg is 80 wide, 60 high
    monkeypatch.setattr("diffews.cli.segment.load_inference_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    expect_error(capsys, segment_args(files), f"support mask 1 ({files}/s1.png): 60x80 does not fit its image, 80x60")
    class_args = ["segment", "--model", "tiny-random", "--class", "cat", str(files / "s1.jpg"), str(files / "s1.png"),
                  "--class", "dog", str(files / "s2.png"), str(files / "s2_mask.png"), "--query", str(files / "queries"), "--out", str(files / "out")]
    expect_error(capsys, class_args, "60x80 does not fit its image, 80x60")
    assert not (files / "out").exists()


def test_output_folder_that_cannot_be_created(files, capsys):
    (files / "blocker").write_text("a file")
    expect_error(capsys, segment_args(files, out="blocker/sub"), "cannot write to output folder")


def test_bad_option_values(files, capsys):
    expect_error(capsys, segment_args(files, "--resolution", "30"), "--resolution: resolution must be a multiple of 8 from 8 to 2048, got 30")
    expect_error(capsys, segment_args(files, "--threshold", "2"), "threshold must lie in [0, 1]")
    assert not (files / "out").exists()


def test_missing_support_is_a_usage_error(files, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", "--model", "tiny-random", "--query", str(files / "queries"), "--out", str(files / "out")])
    assert exit_info.value.code == 2
    assert "--support" in capsys.readouterr().err


def test_failure_mid_run_removes_what_this_run_wrote(files, capsys):
    # A truncated JPEG passes the quick header check but fails to decode once its batch is reached.
    data = (files / "queries/a.jpg").read_bytes()
    (files / "queries/z.jpg").write_bytes(data[: len(data) // 2])
    expect_error(capsys, segment_args(files, "--batch-size", "1"), "queries/z.jpg: cannot read image")
    assert output_files(files) == []
    assert not (files / "out").exists()


def test_hidden_files_of_a_query_folder_are_skipped(files):
    (files / "queries" / "._a.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble metadata")
    assert main(segment_args(files)) == 0
    assert sorted(p.name for p in (files / "out").iterdir()) == [f"{n}_{kind}.png" for n in "abc" for kind in ("mask", "overlay")]


def test_a_rerun_replaces_its_own_outputs_but_never_a_users_file(files, capsys):
    assert main(segment_args(files)) == 0
    assert main(segment_args(files, "--threshold", "0.9")) == 0  # diffews' own outputs: replaced
    Image.new("L", (4, 4), 255).save(files / "out" / "b_mask.png")  # the user's file of that name
    before = folder_state(files / "out")
    expect_error(capsys, segment_args(files), f"{files / 'out' / 'b_mask.png'}: already exists and was not written by diffews")
    assert folder_state(files / "out") == before


def test_an_input_is_never_an_output(files, capsys):
    """A mask written by diffews, used as a support mask of a run that writes into its folder."""
    assert main(segment_args(files)) == 0
    args = [
        "segment", "--model", "tiny-random", "--support", str(files / "queries/a.jpg"), str(files / "out/a_mask.png"),
        "--query", str(files / "queries/a.jpg"), "--out", str(files / "out"),
    ]
    before = folder_state(files / "out")
    expect_error(capsys, args, f"{files / 'out' / 'a_mask.png'}: is an input of this run and would be replaced by an output")
    assert folder_state(files / "out") == before


def test_a_failed_run_removes_the_parent_folders_it_created(files, capsys):
    expect_error(capsys, segment_args(files, "--model", "no-such-model", out="new/deeper/out"), "no-such-model")
    assert not (files / "new").exists()
    expect_error(capsys, segment_args(files, "--threshold", "2", out="new/out"), "--threshold")
    assert not (files / "new").exists()


def test_output_folder_keeps_files_written_before_the_run(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        with OutputFolder(tmp_path) as out:
            out.save_image(Image.new("L", (2, 2)), "x.png")
            assert (tmp_path / "x.png").exists()
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_console_script_is_installed():
    result = subprocess.run([shutil.which("diffews") or "diffews", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("diffews ")


@pytest.mark.parametrize("args", [["--help"], ["segment", "--help"]])
def test_help_reads_well(capsys, args):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: diffews")
    expected = ["segment", "few-shot"] if args == ["--help"] else [
        "--model", "--support IMG MASK", "--query", "--out", "--device", "--dtype", "--threshold", "--resolution", "examples:",
    ]
    assert all(word in text for word in expected)


def folder_state(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every entry of `folder` (hidden ones too): name -> (content, mode, modification time)."""
    return {p.name: (p.read_bytes(), p.stat().st_mode, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def signal_after_writes(monkeypatch, signum: int, writes: int) -> None:
    """Send `signum` to this process once the run has written `writes` files (the writer thread sends it)."""
    from diffews import io

    save_image, count = io.OutputFolder.save_image, []

    def save_then_signal(self, image, name):
        path = save_image(self, image, name)
        count.append(name)
        if len(count) == writes:
            os.kill(os.getpid(), signum)
        return path

    monkeypatch.setattr(io.OutputFolder, "save_image", save_then_signal)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_during_a_rerun_restores_the_earlier_run_exactly(files, monkeypatch, capsys, signum):
    """Ctrl-C, SIGTERM or SIGHUP while re-running into a folder holding a finished run: afterwards
    the folder is exactly as that run left it (no file lost or changed, no temporary file)."""
    assert main(segment_args(files)) == 0
    (files / "out" / "notes.txt").write_text("the user's own file")
    before = folder_state(files / "out")
    signal_after_writes(monkeypatch, signum, writes=3)  # some files replaced, others not yet
    assert main(segment_args(files, "--threshold", "0.9", "--batch-size", "1")) == 128 + signum
    assert folder_state(files / "out") == before
    name = "interrupted" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})"
    assert capsys.readouterr().err.strip().splitlines()[-1] == name


def test_a_second_signal_during_the_clean_up_is_ignored(files, monkeypatch, capsys):
    """Ctrl-C, then SIGTERM while the run puts the earlier run back (a scheduler's follow-up, or a
    user pressing Ctrl-C twice): the clean-up still finishes and the folder is as the earlier run left it."""
    from diffews import io

    assert main(segment_args(files)) == 0
    before = folder_state(files / "out")
    rollback = io.Transaction.rollback

    def signal_then_rollback(self):
        os.kill(os.getpid(), signal.SIGTERM)
        rollback(self)

    monkeypatch.setattr(io.Transaction, "rollback", signal_then_rollback)
    signal_after_writes(monkeypatch, signal.SIGINT, writes=3)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)  # SIGINT is ignored under `cmd &`
    assert main(segment_args(files, "--threshold", "0.9", "--batch-size", "1")) == 130
    assert folder_state(files / "out") == before
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2:] == ["SIGTERM ignored: cleaning up", "interrupted"]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # put back as they were


class SignalsWhenCollected:
    """Sends this process SIGTERM from its finaliser, where Python drops the exception the handler raises."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(10))  # the handler runs here, inside the finaliser


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped exception, as intended
@pytest.mark.parametrize("rerun", [False, True])
def test_a_signal_that_lands_in_a_finaliser_still_stops_the_run(files, monkeypatch, capsys, rerun):
    """SIGTERM handled while Python runs an object's finaliser (``__del__``: a progress bar's, say), where the
    exception it raises is dropped with "Exception ignored in ...": the run must still stop, exit 143, and
    leave the output folder as it found it (missing, or the earlier run's files exactly)."""
    from diffews import io

    if rerun:
        assert main(segment_args(files)) == 0
    before = folder_state(files / "out") if rerun else None

    save_image_later, calls = io.OutputFolder.save_image_later, []

    def collect_then_save(self, render, name):
        calls.append(name)
        if len(calls) == 2:
            SignalsWhenCollected()  # collected at once, on the main thread
        save_image_later(self, render, name)

    monkeypatch.setattr(io.OutputFolder, "save_image_later", collect_then_save)
    assert main(segment_args(files, "--batch-size", "1")) == 143
    assert len(calls) < 6  # stopped at the next query, not after all of them
    assert capsys.readouterr().err.strip().splitlines()[-1] == "terminated (SIGTERM)"
    if rerun:
        assert folder_state(files / "out") == before
    else:
        assert not (files / "out").exists()
    monkeypatch.undo()
    assert main(segment_args(files, out="next")) == 0  # the stop ended with its run: the next one in this process runs


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped exception, as intended
def test_a_swallowed_signal_decides_the_exit_status_over_a_later_error(files, monkeypatch, capsys):
    """SIGTERM lost in a finaliser, then the run fails on bad input before any check: exit 143, not 2."""
    from diffews.cli import segment
    from diffews.errors import InputError

    def signal_then_fail(*args, **kwargs):
        SignalsWhenCollected()
        raise InputError("a bad input met after the signal")

    monkeypatch.setattr(segment, "load_inference_pipeline", signal_then_fail)
    assert main(segment_args(files)) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == "terminated (SIGTERM)"
    assert not (files / "out").exists()


def test_sigterm_from_outside_cleans_up_a_fresh_run(files, tmp_path):
    """A real SIGTERM sent by another process (as `timeout` or a scheduler does) mid-run: exit 143,
    no output folder, no partial or temporary file."""
    marker, sent = tmp_path / "written-3", tmp_path / "signal-sent"
    # The writer holds the run mid-way until the signal is on its way, then a while longer, so that the
    # run cannot finish first however loaded the machine is.
    script = f"""
import pathlib, sys, time
from diffews import io
from diffews.cli.main import main
save_image, count = io.OutputFolder.save_image, []
def slow_save(self, image, name):
    path = save_image(self, image, name)
    count.append(name)
    if len(count) == 3:
        pathlib.Path({str(marker)!r}).touch()
        while not pathlib.Path({str(sent)!r}).exists():
            time.sleep(0.01)
        time.sleep(5)
    return path
io.OutputFolder.save_image = slow_save
sys.exit(main({segment_args(files, "--batch-size", "1")!r}))
"""
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), process.communicate()[1]
    assert sorted(p.name for p in (files / "out").iterdir()) == ["a_mask.png", "a_overlay.png", "b_mask.png"]
    sent.touch()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == "terminated (SIGTERM)"
    assert not (files / "out").exists()
