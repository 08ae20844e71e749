"""`diffews distill-decoder` and `diffews segment --mask-decoder` end to end on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffews.cli.main import main
from diffews.modeling.mask_decoder import load_mask_decoder

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_distill_then_segment_with_the_mask_decoder(tmp_path, capsys):
    out = tmp_path / "decoder.safetensors"
    status = main(["distill-decoder", "--model", "tiny-random", "--device", "cpu", "--out", str(out),
                   "--steps", "3", "--batch-size", "2", "--widths", "8", "8", "8", "--resolution", "32", "--eval-masks", "4"])
    assert status == 0
    assert "IoU vs the full VAE decoder" in capsys.readouterr().out
    _, metrics = load_mask_decoder(out)
    assert metrics["eval_masks"] == 4 and 0 <= metrics["iou_vs_vae_decoder"] <= 1 and metrics["decode_speedup"] > 0

    status = main(["segment", "--model", "tiny-random", "--device", "cpu", "--mask-decoder", str(out),
                   "--support", str(EXAMPLES / "support/gnome_dev_cdrom_audio_support_1.jpg"), str(EXAMPLES / "support/gnome_dev_cdrom_audio_support_1_mask.png"),
                   "--query", str(EXAMPLES / "query/gnome_dev_cdrom_audio_query_1.jpg"), "--out", str(tmp_path / "masks")])
    assert status == 0
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["gnome_dev_cdrom_audio_query_1_mask.png", "gnome_dev_cdrom_audio_query_1_overlay.png"]


def test_wrong_number_of_stages_is_an_input_error(tmp_path, capsys):
    status = main(["distill-decoder", "--model", "tiny-random", "--device", "cpu",
                   "--out", str(tmp_path / "d.safetensors"), "--widths", "8", "8"])
    assert status == 2
    assert "error: --widths: give 3 stages for this VAE (downsampling x8), got 2" in capsys.readouterr().err
    assert not (tmp_path / "d.safetensors").exists()


def test_missing_mask_decoder_file_writes_nothing(tmp_path, capsys):
    status = main(["segment", "--model", "tiny-random", "--device", "cpu", "--mask-decoder", str(tmp_path / "nope.safetensors"),
                   "--support", str(EXAMPLES / "support/gnome_dev_cdrom_audio_support_1.jpg"), str(EXAMPLES / "support/gnome_dev_cdrom_audio_support_1_mask.png"),
                   "--query", str(EXAMPLES / "query/gnome_dev_cdrom_audio_query_1.jpg"), "--out", str(tmp_path / "masks")])
    assert status == 2
    assert "nope.safetensors: no such mask decoder file" in capsys.readouterr().err
    assert not (tmp_path / "masks").exists()


DISTILL = ["distill-decoder", "--model", "tiny-random", "--device", "cpu", "--steps", "1", "--batch-size", "1",
           "--widths", "8", "8", "8", "--resolution", "32", "--eval-masks", "1"]


def run_error(capsys, *flags: str) -> str:
    """`diffews distill-decoder` with `flags` exits 2, its last stderr line the only error line, no traceback; that line."""
    assert main([*DISTILL, *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line for line in lines if line.startswith("error: ")] == lines[-1:], lines
    assert not any("Traceback" in line for line in lines)
    return lines[-1]


def test_out_never_replaces_what_diffews_did_not_write(tmp_path, capsys):
    """--out named a folder of the user's (deleted with its files) or a file of theirs (overwritten): both
    are refused before the model loads. A decoder an earlier run wrote is still replaced."""
    folder = tmp_path / "notes.safetensors"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    assert run_error(capsys, "--out", str(folder)) == f"error: {folder}: is a folder; name a .safetensors file to write"
    assert (folder / "keep.txt").read_text() == "mine"
    foreign = tmp_path / "weights.safetensors"
    foreign.write_bytes(b"user data")
    assert "already exists and is not a mask decoder written by diffews" in run_error(capsys, "--out", str(foreign))
    assert foreign.read_bytes() == b"user data"
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert run_error(capsys, "--out", str(afile / "d.safetensors")) == f"error: {afile}: is a file, not a folder; cannot write {afile / 'd.safetensors'} inside it"
    ours = tmp_path / "ours.safetensors"
    assert main([*DISTILL, "--out", str(ours)]) == 0
    first = ours.read_bytes()
    assert main([*DISTILL, "--seed", "1", "--out", str(ours)]) == 0
    assert ours.read_bytes() != first
    load_mask_decoder(ours)


def test_bad_learning_rate_and_widths_are_one_line(tmp_path, capsys):
    out = tmp_path / "d.safetensors"
    assert run_error(capsys, "--lr", "-1", "--out", str(out)) == "error: --lr must be a positive number, got -1.0"
    assert run_error(capsys, "--lr", "nan", "--out", str(out)) == "error: --lr must be a positive number, got nan"
    assert run_error(capsys, "--widths", "0", "8", "8", "--out", str(out)) == "error: --widths must be at least 1 channel each, got 0 8 8"
    assert not out.exists()


def test_a_seed_out_of_range_is_refused_before_training(tmp_path, capsys):
    """2**64 - 1 trained, then crashed seeding the evaluation with seed + 1 (a RuntimeError traceback)."""
    with pytest.raises(SystemExit) as stopped:
        main(["distill-decoder", "--model", "tiny-random", "--seed", str(2**64 - 1), "--out", str(tmp_path / "d.safetensors")])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().endswith(f"argument --seed: must be in 0..{2**32 - 1}, got {2**64 - 1}")


def test_a_failed_write_is_one_line_and_removes_the_folders_it_created(tmp_path, capsys, monkeypatch):
    """safetensors reports a full disk as its own error (not OSError): it was a traceback, after all the
    training, with the new output folder left behind."""
    from safetensors import SafetensorError

    import diffews.modeling.weights as weights

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(weights, "save_file", full_disk)
    out = tmp_path / "new" / "deeper" / "d.safetensors"
    assert run_error(capsys, "--out", str(out)) == (
        f"error: {out}: cannot write (Error while serializing: I/O error: No space left on device (os error 28))")
    assert list(tmp_path.iterdir()) == []
