"""Baselines and other-class supports, scored by the same evaluator as models."""

from __future__ import annotations

import json

import pytest
import torch

from diffews.cli.main import main
from diffews.data import build_episode_dataset
from diffews.evaluation import OtherClassSupport
from diffews.evaluation.predictors import AllForeground, ColourHistogram, SupportMask

RED, BLUE, GREEN = (1.0, -1.0, -1.0), (-1.0, -1.0, 1.0), (-1.0, 1.0, -1.0)


def _paint(colours: list[tuple[float, float, float]], width: int = 4) -> torch.Tensor:
    """``(3, 4, 4 * len(colours))``: vertical stripes of the given colours."""
    return torch.cat([torch.tensor(c).view(3, 1, 1).expand(3, 4, width) for c in colours], dim=2)


def test_colour_histogram_back_projects_the_support_colours():
    support = _paint([RED, BLUE, BLUE])  # red object on blue: foreground share 1/3
    mask = torch.zeros(1, 4, 12)
    mask[..., :4] = 1
    query = _paint([BLUE, RED, GREEN])
    batch = {"support_images": support[None, None], "support_masks": mask[None, None], "query_image": query[None]}
    probabilities = ColourHistogram(bins=4, prior=1.0).mask_images(batch)
    assert probabilities.shape == (1, 1, 4, 12)
    red, blue, green = (probabilities[0, 0, 0, 4 * i].item() for i in (1, 0, 2))
    assert red == pytest.approx((16 + 1 / 3) / 17)
    assert blue == pytest.approx((0 + 1 / 3) / 33)
    assert green == pytest.approx(1 / 3)  # never seen in the support: the support's foreground share


def test_simple_baselines_are_what_they_say():
    masks = torch.zeros(2, 3, 1, 8, 8)
    masks[:, 0, :, :4] = 1
    masks[:, 1, :, :2] = 1
    batch = {"support_masks": masks, "query_image": torch.zeros(2, 3, 8, 8)}
    assert torch.equal(SupportMask().mask_images(batch), masks.mean(dim=1))
    assert torch.equal(AllForeground().mask_images(batch), torch.ones(2, 1, 8, 8))


def test_other_class_supports_come_from_another_class_and_are_fixed(benchmarks):
    root, _ = benchmarks
    episodes = build_episode_dataset("pascal", root, "val", 0, 1, resolution=64, episodes=12, seed=3)
    swapped = OtherClassSupport(episodes)
    drawn = set()
    for index in range(len(swapped)):
        item, original = swapped[index], episodes[index]
        other = item["support_class_id"]
        drawn.add(other)
        assert other != item["class_id"] and set(item["support_keys"]) <= set(episodes.split.images_of_class[other])
        image, mask = episodes.working_pair(item["support_keys"][0], other)
        assert torch.equal(item["support_images"][0], image) and torch.equal(item["support_masks"][0], mask) and mask.any()
        assert torch.equal(item["query_image"], original["query_image"]) and torch.equal(item["query_target"], original["query_target"])
        assert item["support_keys"] == swapped[index]["support_keys"]
    assert len(drawn) > 1


def test_all_foreground_scores_the_share_of_foreground(benchmarks, tmp_path, capsys):
    """Its per-class IoU is (foreground pixels) / (valid pixels) over the class's episodes, computed here directly."""
    root, _ = benchmarks
    out = tmp_path / "report.json"
    args = ["evaluate", "--baseline", "all-foreground", "--resolution", "64", "--benchmark", "pascal", "--root", str(root),
            "--fold", "0", "--episodes", "8", "--workers", "0", "--out", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["model"] == "baseline all-foreground" and report["device"] == "cpu"
    episodes = build_episode_dataset("pascal", root, "val", 0, 1, resolution=64, episodes=8, target_size=512)
    foreground, valid = {}, {}
    for item in (episodes[i] for i in range(8)):
        name = episodes.split.class_names[item["class_id"]]
        target = item["query_target"].numpy()
        foreground[name] = foreground.get(name, 0) + int((target == 1).sum())
        valid[name] = valid.get(name, 0) + int((target != 255).sum())
    for name, iou in report["results"]["0"]["per_class_iou"].items():
        assert iou == pytest.approx(100 * foreground[name] / valid[name] if name in valid else 0.0)
    assert main([*args[:-1], str(tmp_path / "other.json"), "--support", "other-class"]) == 0
    other = json.loads((tmp_path / "other.json").read_text())
    assert other["settings"]["support"] == "other-class"
    assert other["results"]["0"]["miou"] == pytest.approx(report["results"]["0"]["miou"])  # supports do not matter to it
    assert "supports of another class" in capsys.readouterr().out
    without_resolution = args[:3] + args[5:-1]  # the authors' protocol sets it (512)
    assert main([*without_resolution, str(tmp_path / "authors.json"), "--protocol", "authors"]) == 0
    authors = json.loads((tmp_path / "authors.json").read_text())
    assert authors["settings"]["resolution"] == 512 and authors["settings"]["threshold_mode"] == "authors"
    assert "model_settings" not in authors and "prompt" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--baseline", "support-mask"], "--baseline needs --resolution"),
        (["--baseline", "support-mask", "--model", "tiny-random", "--resolution", "64"], "give either --model or --baseline, not both"),
        (["--baseline", "support-mask", "--resolution", "64", "--flip-queries"], "--flip-queries: a baseline has no model to run"),
        (["--baseline", "support-mask", "--resolution", "64", "--shot-fusion", "mean"], "--shot-fusion: a baseline has no model to run"),
        (["--baseline", "colour-histogram", "--resolution", "64", "--cache-latents"], "--cache-latents: a baseline has no model to run"),
        (["--baseline", "all-foreground", "--resolution", "64", "--dtype", "float16"], "--dtype: a baseline has no model to run"),
    ],
)
def test_baseline_argument_errors(benchmarks, tmp_path, capsys, args, message):
    root, _ = benchmarks
    assert main(["evaluate", "--benchmark", "pascal", "--root", str(root), "--fold", "0", "--out", str(tmp_path / "r.json"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())



@pytest.mark.parametrize("shots", [1, 2])
def test_cached_latents_give_the_model_predictor_numbers(benchmarks, tiny_pipeline, shots):
    from diffews.data import collate_episodes
    from diffews.evaluation.predictors import CachedLatentsPredictor, ModelPredictor

    root, _ = benchmarks
    episodes = build_episode_dataset("custom", root / "custom", "val", None, shots, resolution=64, episodes=6, seed=1)
    cached, plain = CachedLatentsPredictor(tiny_pipeline), ModelPredictor(tiny_pipeline)
    for start in (0, 3, 0):  # the second pass over episodes 0-2 reads every latent from the cache
        batch = collate_episodes([episodes[i] for i in range(start, start + 3)])
        torch.testing.assert_close(cached.mask_images(batch), plain.mask_images(batch), atol=1e-5, rtol=1e-4)
    assert len([key for key in cached.latents if key[0] == "image"]) == 7
    swapped = OtherClassSupport(episodes)
    batch = collate_episodes([swapped[i] for i in range(3)])
    torch.testing.assert_close(cached.mask_images(batch), plain.mask_images(batch), atol=1e-5, rtol=1e-4)


def test_cached_latents_run_under_the_pipelines_speed_options(benchmarks, tiny_model):
    from diffews import DiffewSPipeline
    from diffews.data import collate_episodes
    from diffews.evaluation.predictors import CachedLatentsPredictor
    from diffews.pipeline import SpeedOptions

    root, _ = benchmarks
    episodes = build_episode_dataset("custom", root / "custom", "val", None, 1, resolution=64, episodes=3, seed=1)
    batch = collate_episodes([episodes[i] for i in range(3)])
    cached = CachedLatentsPredictor(DiffewSPipeline(tiny_model, speed=SpeedOptions(autocast="bfloat16")))
    calls = []  # (module, autocast on?) for every VAE encoder, UNet and VAE decoder call
    hooks = [
        module.register_forward_pre_hook(lambda m, args, name=name: calls.append((name, torch.is_autocast_enabled("cpu"))))
        for name, module in [("encoder", tiny_model.vae.encoder), ("unet", tiny_model.unet), ("decoder", tiny_model.vae.decoder)]
    ]
    try:
        cached.mask_images(batch)
    finally:
        for hook in hooks:
            hook.remove()
    assert {name for name, _ in calls} == {"encoder", "unet", "decoder"}
    assert all(autocast for _, autocast in calls), calls
    assert cached.record["cache_latents"] is True
