"""`diffews distill-decoder` and `diffews segment --mask-decoder` end to end on the tiny model."""

from __future__ import annotations

from pathlib import Path

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
