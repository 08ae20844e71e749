"""`diffews evaluate` and `diffews data` end to end on the tiny model and tiny benchmark datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from dataclasses import replace

import pytest
import torch
from PIL import Image

import diffews.evaluation.evaluate as evaluate_module
from diffews import DiffewSPipeline, SpeedOptions
from diffews._testing import build_tiny_model
from diffews.cli.main import main
from diffews.data import collate_episodes, open_split
from diffews.data.splits import read_pair_lists
from diffews.evaluation import EvaluationSettings, ModelPredictor
from diffews.modeling.mask_decoder import MaskDecoder, MaskDecoderConfig, save_mask_decoder

FAST = ["--model", "tiny-random", "--workers", "0", "--batch-size", "2"]


def evaluate(root, out, *args):
    return main(["evaluate", *FAST, "--root", str(root), "--out", str(out), *args])


def error_lines(capsys) -> list[str]:
    """The ``error:`` lines printed to stderr (progress bars aside)."""
    return [line.strip("\r ") for line in capsys.readouterr().err.splitlines() if line.strip("\r ").startswith("error:")]


@pytest.mark.parametrize(
    ("benchmark", "args", "episodes", "classes"),
    [
        ("pascal", ["--fold", "2", "--episodes", "6"], 6, 5),
        ("coco", ["--fold", "1", "--episodes", "5"], 5, 20),
        ("lvis", ["--fold", "0", "--episodes", "3"], 3, 2),
        ("fss", [], 9, 3),
        ("custom", ["--shots", "2"], 7, 2),
    ],
)
def test_evaluate_every_benchmark(benchmarks, tmp_path, capsys, benchmark, args, episodes, classes):
    root, written = benchmarks
    if benchmark == "fss":
        args = ["--splits", str(written["fss_splits"])]
    data = root / "custom" if benchmark == "custom" else root
    out = tmp_path / "report.json"
    assert evaluate(data, out, "--benchmark", benchmark, *args) == 0
    report = json.loads(out.read_text())
    (fold,) = report["results"].values()
    assert fold["episodes"] == episodes and len(fold["per_class_iou"]) == classes
    assert 0 <= fold["miou"] <= 100 and 0 <= fold["fbiou"] <= 100 and fold["episodes_per_s"] > 0
    assert report["mean"]["miou"] == fold["miou"]
    assert report["settings"]["benchmark"] == benchmark and report["settings"]["threshold_mode"] == "relative"
    assert report["settings"]["scoring"] == "512x512, ground truth resized with nearest-exact"
    printed = capsys.readouterr().out
    assert f"{fold['miou']:7.2f}" in printed and f"wrote {out}" in printed
    assert not list(tmp_path.glob("*.partial.json"))


def perfect_predictions(pipe, batch, *options, **named_options):
    """Stand-in for the model: the ground truth itself (255 pixels predicted foreground)."""
    return [target != 0 for target in batch["query_target"]]


def inverted_predictions(pipe, batch, *options, **named_options):
    return [target == 0 for target in batch["query_target"]]


@pytest.mark.parametrize(("predict", "miou", "fbiou"), [(perfect_predictions, 100.0, 100.0), (inverted_predictions, 0.0, 0.0)])
@pytest.mark.parametrize("score_size", ["512", "original"])
def test_scores_line_up_with_the_ground_truth(benchmarks, tmp_path, monkeypatch, predict, miou, fbiou, score_size):
    root, _ = benchmarks
    monkeypatch.setattr(evaluate_module, "predict", predict)
    out = tmp_path / "report.json"
    assert evaluate(root, out, "--benchmark", "pascal", "--fold", "0", "--episodes", "10", "--score-size", score_size) == 0
    result = json.loads(out.read_text())["results"]["0"]
    assert result["miou"] == miou and result["fbiou"] == fbiou
    assert set(result["per_class_iou"].values()) == {miou} and result["unscored_classes"] == []


def test_classes_without_an_episode_are_reported_and_warned_about(benchmarks, tmp_path, monkeypatch, caplog):
    root, _ = benchmarks
    monkeypatch.setattr(evaluate_module, "predict", perfect_predictions)
    out = tmp_path / "report.json"
    assert evaluate(root, out, "--benchmark", "coco", "--fold", "1", "--episodes", "5") == 0
    result = json.loads(out.read_text())["results"]["1"]
    unscored = result["unscored_classes"]
    scored = [name for name in result["per_class_iou"] if name not in unscored]
    assert 1 <= len(scored) <= 5 and len(unscored) == 20 - len(scored)
    assert {result["per_class_iou"][name] for name in scored} == {100.0}
    assert {result["per_class_iou"][name] for name in unscored} == {0.0}
    assert result["miou"] == pytest.approx(100 * len(scored) / 20)
    assert f"{len(unscored)} of 20 classes got no episode and count as IoU 0" in caplog.text


def test_episodes_all_takes_every_image_once(benchmarks, tmp_path, monkeypatch, caplog):
    root, _ = benchmarks
    monkeypatch.setattr(evaluate_module, "predict", perfect_predictions)
    out = tmp_path / "report.json"
    assert evaluate(root, out, "--benchmark", "pascal", "--fold", "2", "--episodes", "all") == 0
    result = json.loads(out.read_text())["results"]["2"]
    assert result["episodes"] == len(open_split("pascal", root, "val", 2).pairs) > 6
    assert result["unscored_classes"] == [] and result["miou"] == 100.0 and "no episode" not in caplog.text


@pytest.mark.parametrize("value", ["0", "-3", "every"])
def test_bad_episode_counts_are_one_line_errors(benchmarks, tmp_path, capsys, value):
    root, _ = benchmarks
    with pytest.raises(SystemExit) as stopped:
        evaluate(root, tmp_path / "report.json", "--benchmark", "coco", "--fold", "1", "--episodes", value)
    assert stopped.value.code == 2
    assert f"expected a positive number or 'all', got '{value}'" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


def test_fold_all_reports_every_fold_and_their_mean(benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    out = tmp_path / "all.json"
    assert evaluate(root, out, "--benchmark", "pascal", "--fold", "all", "--episodes", "4") == 0
    report = json.loads(out.read_text())
    assert list(report["results"]) == ["0", "1", "2", "3"]
    assert report["mean"]["miou"] == pytest.approx(sum(r["miou"] for r in report["results"].values()) / 4)
    assert "mean" in capsys.readouterr().out.splitlines()[-2]


def test_interrupted_evaluation_resumes_to_the_same_numbers(benchmarks, tmp_path, monkeypatch, capsys):
    root, _ = benchmarks
    args = ["--benchmark", "coco", "--fold", "all", "--episodes", "6"]
    assert evaluate(root, tmp_path / "straight.json", *args) == 0

    real_predict, calls = evaluate_module.predict, []

    def interrupted(*predict_args, **named):
        calls.append(1)
        if len(calls) == 6:  # fold 0 done (3 batches), fold 1 two batches in
            raise KeyboardInterrupt
        return real_predict(*predict_args, **named)

    monkeypatch.setattr(evaluate_module, "predict", interrupted)
    out = tmp_path / "resumed.json"
    assert evaluate(root, out, *args) == 130
    assert not out.exists() and "rerun the same command to continue" in capsys.readouterr().err
    progress = json.loads((tmp_path / "resumed.json.partial.json").read_text())["progress"]
    assert {fold: state["done"] for fold, state in progress.items()} == {"0": 6, "1": 4}

    calls.clear()
    monkeypatch.setattr(evaluate_module, "predict", lambda *a, **k: calls.append(1) or real_predict(*a, **k))
    assert evaluate(root, out, *args) == 0
    assert len(calls) == 1 + 3 + 3  # only what was left: fold 1's last batch, folds 2 and 3
    straight, resumed = json.loads((tmp_path / "straight.json").read_text()), json.loads(out.read_text())
    for fold in ("0", "1", "2", "3"):
        for key in ("miou", "fbiou", "per_class_iou", "episodes"):
            assert resumed["results"][fold][key] == straight["results"][fold][key]
    assert not (tmp_path / "resumed.json.partial.json").exists()


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(28, "No space left on device")], ids=["interrupt", "full-disk"])
def test_a_run_stopped_before_any_progress_leaves_no_folders(benchmarks, tmp_path, monkeypatch, capsys, failure):
    """Stopped in its first batch, a run created the report's folders and left them behind, empty."""
    root, _ = benchmarks

    def stopped(*predict_args, **named):
        raise failure

    monkeypatch.setattr(evaluate_module, "predict", stopped)
    code = evaluate(root, tmp_path / "new" / "dir" / "r.json", "--benchmark", "pascal", "--fold", "0", "--episodes", "2")
    assert code == (130 if isinstance(failure, KeyboardInterrupt) else 2)
    assert list(tmp_path.iterdir()) == []


def test_a_report_folder_removed_mid_run_is_one_line_and_its_parents_go(benchmarks, tmp_path, monkeypatch, capsys):
    """The folder a run created vanishes before its first progress is saved (in a multi-process run, a failed peer
    removes it while still empty): one line naming it, not a missing-file error, and the parent it made goes too."""
    import shutil

    root, _ = benchmarks
    real_predict = evaluate_module.predict

    def folder_removed(*predict_args, **named):
        shutil.rmtree(tmp_path / "new" / "dir", ignore_errors=True)
        return real_predict(*predict_args, **named)

    monkeypatch.setattr(evaluate_module, "predict", folder_removed)
    code = evaluate(root, tmp_path / "new" / "dir" / "r.json", "--benchmark", "pascal", "--fold", "0", "--episodes", "2")
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'new' / 'dir'}: the report's folder disappeared during the run (another process of the run "
        "stopped and removed it, or it was deleted)"
    )
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_progress_of_other_settings(benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    partial = tmp_path / "report.json.partial.json"
    partial.write_text(json.dumps({"settings": {"shots": 5}, "progress": {}}))
    assert evaluate(root, tmp_path / "report.json", "--benchmark", "pascal", "--fold", "0", "--episodes", "2") == 2
    assert "saved progress of an evaluation with other settings" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


def test_save_vis_writes_side_by_side_panels(benchmarks, tmp_path):
    root, _ = benchmarks
    out = tmp_path / "report.json"
    assert evaluate(root, out, "--benchmark", "pascal", "--fold", "0", "--episodes", "4", "--shots", "1", "--save-vis", "3") == 0
    panels = sorted((tmp_path / "report_vis").iterdir())
    assert [p.name for p in panels] == ["episode_00000.png", "episode_00001.png", "episode_00002.png"]
    with Image.open(panels[0]) as panel:
        assert panel.size == (4 * 64 + 3 * 4, 64)  # support | query | prediction | ground truth at 64 px


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--benchmark", "pascal"], "pascal needs --fold (0..3 or all)"),
        (["--benchmark", "pascal", "--fold", "7"], "pascal has folds 0..3 (or all); got --fold 7"),
        (["--benchmark", "fss", "--fold", "0"], "fss has no folds; leave --fold out"),
        (["--benchmark", "pascal", "--fold", "0", "--shots", "0"], "--shots must be at least 1"),
        (["--benchmark", "pascal", "--fold", "0", "--score-size", "big"], "--score-size must be a positive number"),
        (["--benchmark", "pascal", "--fold", "\u00b2"], "pascal has folds 0..3 (or all); got --fold \u00b2"),  # was a ValueError traceback
        (["--benchmark", "pascal", "--fold", "0", "--score-size", "\u00b2"], "--score-size must be a positive number"),
        (["--benchmark", "pascal", "--fold", "0", "--shots", "2"], "2-shot episodes need at least 3"),
        (["--benchmark", "coco", "--fold", "0", "--root", "/nonexistent"], "COCO2014/val2014: folder not found"),
    ],
)
def test_bad_evaluation_input_exits_2_and_writes_nothing(benchmarks, tmp_path, capsys, args, message):
    root, _ = benchmarks
    out = tmp_path / "out" / "report.json"
    assert main(["evaluate", *FAST, "--root", str(root), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (tmp_path / "out").exists()


def test_unknown_benchmark_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--model", "tiny-random", "--benchmark", "imagenet", "--root", "."])
    assert exit_info.value.code == 2 and "invalid choice: 'imagenet'" in capsys.readouterr().err


# diffews data


def test_data_check_reports_counts(benchmarks, capsys):
    root, _ = benchmarks
    assert main(["data", "check", "pascal", str(root)]) == 0
    out = capsys.readouterr().out
    assert "VOC2012/JPEGImages: 40 found, ok" in out and "val masks: 20 found, ok" in out and "complete" in out


def test_data_check_finds_custom_masks_that_do_not_fit_their_images(benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    shutil.copytree(root / "custom", tmp_path / "custom")
    mask = tmp_path / "custom" / "dog" / "photo2_mask.png"
    with Image.open(mask.with_name("photo2.jpg")) as image:
        width, height = image.size
    Image.new("L", (height, width), 255).save(mask)  # drawn on the picture turned a quarter
    photo = tmp_path / "custom" / "cat" / "photo0.jpg"  # a photo shown turned (EXIF), its mask drawn as shown: fits
    with Image.open(photo) as image:
        exif = image.getexif()
        exif[0x0112] = 6
        image.save(photo, exif=exif)
    Image.new("L", (height, width), 255).save(photo.with_name("photo0_mask.png"))
    assert main(["data", "check", "custom", str(tmp_path / "custom")]) == 2
    out = capsys.readouterr().out
    assert "class cat: 3 found, ok" in out
    assert f"class dog: 3 found, MISSING 1 mask(s) that do not fit their images (first: {mask}: {height}x{width} does not fit its image, {width}x{height}" in out


def test_data_check_names_what_is_missing(benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    shutil.copytree(root / "COCO2014", tmp_path / "COCO2014")
    for image in sorted((tmp_path / "COCO2014" / "val2014").glob("*.jpg"))[:3]:
        image.unlink()
    (tmp_path / "COCO2014" / "annotations" / "instances_train2014.json").unlink()
    assert main(["data", "check", "coco", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "COCO2014/val2014: 77 found, ok" in captured.out
    assert "val images listed in instances_val2014.json: 77 found, MISSING 3 (first: " in captured.out
    assert f"COCO2014/annotations/instances_train2014.json: 0 found, MISSING {tmp_path}" in captured.out
    assert "coco at" in captured.err and "2 problem(s)" in captured.err


def test_data_splits_writes_the_generated_lists(benchmarks, tmp_path, capsys):
    root, written = benchmarks
    assert main(["data", "splits", "lvis", str(root), "--out", str(tmp_path / "lists")]) == 0
    assert "wrote lvis split lists" in capsys.readouterr().out
    for fold in range(10):
        classes = {fold + 1, fold + 11}
        assert read_pair_lists(tmp_path / "lists", "val", [fold]) == written["lvis"]["val"].pairs(classes)
    out = tmp_path / "report.json"
    assert evaluate(root, out, "--benchmark", "lvis", "--fold", "3", "--episodes", "2", "--splits", str(tmp_path / "lists")) == 0


def test_evaluation_predicts_what_the_pipeline_computes(benchmarks):
    """Evaluation runs `DiffewSPipeline`'s computation, mask decoder and speed options included: its
    masks for an episode are those `pipe(query, supports, masks)` gives for the same inputs."""
    root, _ = benchmarks
    settings = EvaluationSettings("custom", str(root / "custom"), "val", shots=2, resolution=64, score_size=64)
    torch.manual_seed(0)
    decoder = MaskDecoder(MaskDecoderConfig(widths=(8, 8, 8)))  # random weights: a decoder unlike the VAE's
    pipe = DiffewSPipeline(build_tiny_model(), SpeedOptions(channels_last=True, static_batch=True), decoder)
    pipe.set_progress_bar_config(disable=True)
    dataset = settings.dataset(None)
    for index in range(3):
        batch = collate_episodes([dataset[index]])
        (mask,) = evaluate_module.predict(ModelPredictor(pipe, pad_to=4), batch, 0.5, "relative")

        def unit(images):  # the episode's tensors in [-1, 1] as the pipeline's float image inputs in [0, 1]
            return [(image + 1) / 2 for image in images]

        output = pipe(
            unit(batch["query_image"]), unit(batch["support_images"][0]), list(batch["support_masks"][0, :, 0]),
            threshold=0.5, threshold_mode="relative", batch_size=4,
        )
        assert torch.equal(mask, torch.from_numpy(output.masks[0]))


def test_evaluate_uses_the_models_threshold_and_the_inference_options(benchmarks, tmp_path, monkeypatch):
    root, _ = benchmarks
    model_dir = tmp_path / "model"
    model = build_tiny_model()
    model.config = replace(model.config, threshold=0.6, threshold_mode="absolute")
    model.save_pretrained(model_dir)
    decoder_file = save_mask_decoder(MaskDecoder(MaskDecoderConfig(widths=(8, 8, 8))), tmp_path / "decoder.safetensors")
    decoded = []
    forward = MaskDecoder.forward
    monkeypatch.setattr(MaskDecoder, "forward", lambda self, latents: decoded.append(len(latents)) or forward(self, latents))
    out = tmp_path / "report.json"
    args = ["--benchmark", "pascal", "--fold", "0", "--episodes", "5", "--mask-decoder", str(decoder_file), "--channels-last"]
    assert main(["evaluate", "--model", str(model_dir), "--workers", "0", "--batch-size", "2",
                 "--root", str(root), "--out", str(out), *args]) == 0
    report = json.loads(out.read_text())
    assert (report["settings"]["threshold"], report["settings"]["threshold_mode"]) == (0.6, "absolute")
    assert report["mask_decoder"] is True and report["speed"]["channels_last"] is True
    assert decoded == [2, 2, 1]  # every batch decoded by the mask decoder


def test_evaluate_refuses_a_mask_decoder_that_does_not_fit_the_model(benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    decoder_file = save_mask_decoder(MaskDecoder(MaskDecoderConfig(latent_channels=3, widths=(8, 8, 8))), tmp_path / "d.safetensors")
    out = tmp_path / "out" / "report.json"
    status = main(["evaluate", *FAST, "--root", str(root), "--out", str(out), "--benchmark", "pascal", "--fold", "0",
                   "--mask-decoder", str(decoder_file)])
    assert status == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {decoder_file}: mask decoder takes 3 latent channels but the model's VAE has 4"
    )
    assert not (tmp_path / "out").exists()


def test_data_splits_writes_nothing_when_a_split_cannot_be_generated(benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    shutil.copytree(root / "COCO2014", tmp_path / "data" / "COCO2014")
    (tmp_path / "data" / "COCO2014" / "annotations" / "instances_val2014.json").unlink()  # trn generates, val cannot
    assert main(["data", "splits", "coco", str(tmp_path / "data"), "--out", str(tmp_path / "lists")]) == 2
    assert "instances_val2014.json: file not found" in capsys.readouterr().err
    assert not (tmp_path / "lists").exists()


def test_data_splits_never_writes_over_a_folder_or_file_of_the_user(benchmarks, tmp_path, capsys):
    """It wrote each list over whatever was there (a user's notes in trn/fold0.txt), and an --out that is a
    file, or holds a file where a split folder goes, was a traceback with some lists left behind."""
    root, _ = benchmarks
    mine = tmp_path / "mine"
    (mine / "trn").mkdir(parents=True)
    (mine / "trn" / "fold0.txt").write_text("my notes")
    assert main(["data", "splits", "lvis", str(root), "--out", str(mine)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {mine}: already exists and is not an empty folder; split lists go into a new or empty --out"
    assert (mine / "trn" / "fold0.txt").read_text() == "my notes" and [p.name for p in (mine / "trn").iterdir()] == ["fold0.txt"]
    (tmp_path / "afile").write_text("x")
    assert main(["data", "splits", "lvis", str(root), "--out", str(tmp_path / "afile" / "lists")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'afile'}: is a file, not a folder; cannot write {tmp_path / 'afile' / 'lists'} inside it"
    (tmp_path / "empty").mkdir()
    assert main(["data", "splits", "lvis", str(root), "--out", str(tmp_path / "empty")]) == 0
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["trn", "val"]


def test_authors_protocol_sets_their_evaluation(benchmarks, tmp_path, monkeypatch, capsys, tiny_model):
    root, _ = benchmarks
    tiny_model.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model/diffews_config.json").read_text())
    (tmp_path / "model/diffews_config.json").write_text(json.dumps({**config, "timestep": 5, "threshold": 0.6, "flip_queries": True, "shot_fusion": "mean"}))
    seen = []

    def record(predictor, batch, threshold, threshold_mode, sizes=None):
        model_config = predictor.pipe.model.config
        seen.append((model_config.timestep, model_config.flip_queries or model_config.shot_fusion != "attention", threshold_mode,
                     batch["query_image"].shape[-1], batch["query_target"].shape[-1]))
        return perfect_predictions(predictor, batch, threshold, threshold_mode)

    monkeypatch.setattr(evaluate_module, "predict", record)
    out = tmp_path / "authors.json"
    args = ["evaluate", "--model", str(tmp_path / "model"), "--workers", "0", "--root", str(root), "--out", str(out)]
    assert main([*args, "--benchmark", "pascal", "--fold", "0", "--episodes", "2", "--protocol", "authors"]) == 0
    settings = json.loads(out.read_text())["settings"]
    expected = {
        "resolution": 512, "score_size": 512, "threshold": 0.25, "threshold_mode": "authors", "preprocessing": "authors",
        "scoring": "512x512, ground truth resized with nearest",
    }
    assert {key: settings[key] for key in expected} == expected
    model_settings = json.loads(out.read_text())["model_settings"]
    assert model_settings["prompt"] == "authors-eval" and model_settings["prompt_tokens"] == 2  # the tiny model's is padded
    timestep, our_options, mode, image_size, target_size = seen[0]
    assert timestep == 1 and not our_options and mode == "authors" and image_size == 512 and target_size == 512
    assert "threshold 0.25 (authors); working resolution 512, authors preprocessing; t = 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--resolution", "256"], "--resolution 256: --protocol authors uses --resolution 512; leave --resolution out"),
        (["--threshold-mode", "relative"], "--threshold-mode relative: --protocol authors uses --threshold-mode authors"),
        (["--score-size", "original"], "--score-size original: --protocol authors uses --score-size 512"),
        (["--flip-queries"], "--flip-queries: --protocol authors evaluates as the authors did, without it"),
        (["--shot-fusion", "mean"], "--shot-fusion mean: --protocol authors fuses shots by attention, as the authors did"),
        (["--mask-decoder", "decoder.safetensors"], "--mask-decoder: --protocol authors evaluates as the authors did, without it"),
    ],
)
def test_authors_protocol_refuses_options_it_fixes(benchmarks, tmp_path, capsys, option, message):
    root, _ = benchmarks
    assert evaluate(root, tmp_path / "r.json", "--benchmark", "pascal", "--fold", "0", "--protocol", "authors", *option) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("kind", ["folder", "user-file", "user-panel", "file-for-panels"])
def test_the_report_and_panels_never_replace_what_the_user_made(benchmarks, tmp_path, capsys, kind):
    root, _ = benchmarks
    out = tmp_path / "report.json"
    if kind == "folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        expected, kept = f"{out}: is a folder; the report is a JSON file", out / "notes.txt"
    elif kind == "user-file":
        out.write_text("my notes")
        expected, kept = f"{out}: already exists and is not a diffews evaluation report", out
    elif kind == "user-panel":
        (tmp_path / "report_vis").mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / "report_vis" / "episode_00001.png")
        expected, kept = f"{tmp_path / 'report_vis' / 'episode_00001.png'}: already exists and was not written by diffews", tmp_path / "report_vis" / "episode_00001.png"
    else:
        (tmp_path / "report_vis").write_text("mine")
        expected, kept = f"{tmp_path / 'report_vis'}: is a file, where the evaluation puts its panels", tmp_path / "report_vis"
    before = kept.read_bytes()
    assert evaluate(root, out, "--benchmark", "pascal", "--fold", "0", "--episodes", "2", "--save-vis", "2") == 2
    assert error_lines(capsys)[0].startswith(f"error: {expected}")
    assert kept.read_bytes() == before
    assert not list(tmp_path.glob("*.partial.json"))
    # a report an earlier evaluation wrote may be replaced
    if kind == "user-file":
        out.unlink()
        assert evaluate(root, out, "--benchmark", "pascal", "--fold", "0", "--episodes", "2") == 0
        assert evaluate(root, out, "--benchmark", "pascal", "--fold", "0", "--episodes", "2") == 0


def test_a_corrupt_image_read_by_a_worker_process_is_one_line(benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    data = tmp_path / "custom"
    shutil.copytree(root / "custom", data)
    broken = data / "dog" / "photo2.jpg"
    broken.write_bytes(broken.read_bytes()[:200])
    assert main(["evaluate", "--model", "tiny-random", "--workers", "2", "--batch-size", "1", "--benchmark", "custom",
                 "--root", str(data), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {broken}") and "Traceback" not in err, err


@pytest.mark.parametrize("content", [b"[]", b'"x"', b'{"progress": 3}', b"\xff\xfe\x00 not text"])
def test_saved_progress_that_is_not_a_state_is_one_line(benchmarks, tmp_path, capsys, content):
    root, _ = benchmarks
    (tmp_path / "report.json.partial.json").write_bytes(content)
    assert evaluate(root, tmp_path / "report.json", "--benchmark", "pascal", "--fold", "0", "--episodes", "2") == 2
    assert error_lines(capsys) == [f"error: {tmp_path / 'report.json.partial.json'}: unreadable saved progress; delete it to start over"]


def test_a_corrupt_image_met_mid_run_leaves_no_progress_or_folders(benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    data = tmp_path / "custom"
    shutil.copytree(root / "custom", data)
    broken = sorted(data.glob("dog/*.jpg"))[-1]
    broken.write_bytes(broken.read_bytes()[:200])
    out = tmp_path / "new" / "sub" / "r.json"
    assert evaluate(data, out, "--benchmark", "custom", "--batch-size", "1") == 2
    assert error_lines(capsys)[0].startswith(f"error: {broken}")
    assert not (tmp_path / "new").exists()


def test_a_folder_where_the_progress_goes_is_refused_and_kept(benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    progress = tmp_path / "report.json.partial.json"
    progress.mkdir()
    (progress / "notes.txt").write_text("mine")
    assert evaluate(root, tmp_path / "report.json", "--benchmark", "pascal", "--fold", "0", "--episodes", "2") == 2
    assert error_lines(capsys) == [f"error: {progress}: is not a file, where this evaluation keeps its progress; move it or choose another --out"]
    assert (progress / "notes.txt").read_text() == "mine" and not (tmp_path / "report.json").exists()


def test_an_unwritable_report_folder_is_refused_before_the_model_loads(benchmarks, tmp_path, monkeypatch, capsys):
    import tempfile

    import diffews.cli.evaluate as evaluate_cli

    root, _ = benchmarks
    folder = tmp_path / "reports"
    folder.mkdir()
    real = tempfile.TemporaryFile

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == folder:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    monkeypatch.setattr(evaluate_cli, "load_inference_pipeline", lambda *args: pytest.fail("the model loaded"))
    assert evaluate(root, folder / "sub" / "r.json", "--benchmark", "pascal", "--fold", "0", "--episodes", "2") == 2
    assert error_lines(capsys) == [f"error: {folder}: cannot write there (Permission denied); choose another --out"]
    assert list(folder.iterdir()) == []


def test_a_mask_that_does_not_fit_its_image_is_refused_not_stretched(benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    data = tmp_path / "custom"
    shutil.copytree(root / "custom", data)
    with Image.open(data / "cat" / "photo1.jpg") as image:
        width, height = image.size
    Image.new("L", (width * 2, height // 2), 255).save(data / "cat" / "photo1_mask.png")
    assert evaluate(tmp_path / "custom", tmp_path / "r.json", "--benchmark", "custom") == 2
    expected = f"error: {data / 'cat' / 'photo1.jpg'}: its mask of class 'cat': {width * 2}x{height // 2} does not fit its image, {width}x{height}"
    assert error_lines(capsys) == [expected]
    assert not (tmp_path / "r.json").exists()


def test_a_published_benchmarks_mask_of_another_shape_is_resized_onto_its_image(benchmarks, tmp_path):
    """FSS-1000 ships a few masks that are not its images' 224x224; its reference evaluation resizes them."""
    from diffews.data import build_episode_dataset

    root, written = benchmarks
    shutil.copytree(root / "FSS-1000", tmp_path / "FSS-1000")
    dataset = build_episode_dataset(
        "fss", str(tmp_path), "test", None, 1, resolution=64, episodes=None, seed=0, splits=str(written["fss_splits"])
    )
    key, class_id = dataset.split.pairs[0]
    image_path, mask_path = dataset.split.files[key]
    with Image.open(image_path) as image, Image.open(mask_path) as mask:
        mask.resize((image.width * 2, image.height)).save(mask_path)
    assert dataset.working_pair(key, class_id)[1].shape == (1, 64, 64)


@pytest.mark.parametrize("args", [["--seed", "-1"], ["--save-vis", "-2"]])
def test_negative_counts_are_argument_errors(benchmarks, tmp_path, capsys, args):
    root, _ = benchmarks
    with pytest.raises(SystemExit) as exit_info:
        evaluate(root, tmp_path / "r.json", "--benchmark", "pascal", "--fold", "0", *args)
    assert exit_info.value.code == 2 and "must be at least 0" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
