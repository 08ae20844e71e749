"""The benchmark scripts run end to end in their quick modes (CI checks they work; it does not time them)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def benchmarks():
    sys.path.insert(0, str(BENCHMARKS))
    yield lambda name: importlib.import_module(name)
    sys.path.remove(str(BENCHMARKS))


def test_bench_inference_quick(benchmarks, tmp_path):
    report = benchmarks("bench_inference").main(["--quick", "--dtypes", "float32", "bfloat16", "--json", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text())["arch"] == "tiny"
    # the headline ratios: float32's from its own paths (timed in turns), bfloat16's from the two timed in turns
    headline = report["headline"][0]
    assert headline["dtype"] == "bfloat16" and headline["ratio"] == pytest.approx(
        headline["bfloat16 cached queries_per_s"] / headline["float32 uncached queries_per_s"])
    assert report["targets"]["throughput bfloat16 cached / float32 uncached (1 shot, largest batch)"] == headline["ratio"]
    assert {r["path"] for r in report["paths"]} == {"uncached", "cached"}
    assert {r["option"] for r in report["options"]} >= {"default", "channels_last", "sdpa=math"}
    assert all(r["first_call_s"] > 0 for r in report["options"])
    assert all(r["max_abs_diff"] <= 1e-5 for r in report["options"] if r["dtype"] == "float32" and not r["option"].startswith("autocast"))
    stages = [r["stage"] for r in report["components"]]
    assert stages[-1] == "one cached query" and "VAE decode" in stages
    assert report["components"][-1]["gflop"] > 0
    assert report["peer"][0]["latency_ratio_ours_over_peer"] > 0


def test_bench_inference_skips_an_option_the_device_cannot_run(benchmarks, tmp_path, monkeypatch, capsys):
    """A forced kernel the device lacks is an InputError since the pipeline reports it in one line: the
    benchmark names it as skipped and measures the rest (on an H100 the 'flash' row stopped the run)."""
    from diffews import SpeedOptions
    from diffews.errors import InputError

    module = benchmarks("bench_inference")
    build = module.build_pipeline

    def build_without_flash(arch, device, dtype, speed: SpeedOptions | None = None):
        if speed is not None and speed.sdpa_backend == "flash":
            raise InputError("sdpa_backend 'flash' cannot run this model's attention here")
        return build(arch, device, dtype, speed)

    monkeypatch.setattr(module, "build_pipeline", build_without_flash)
    report = module.main(["--quick", "--peer", "none", "--json", str(tmp_path / "r.json")])
    assert "skipped sdpa=flash: sdpa_backend 'flash' cannot run" in capsys.readouterr().out
    assert {r["option"] for r in report["options"]} == {"default", "channels_last", "sdpa=math", "autocast=bfloat16"}


def test_bench_support_cache_quick(benchmarks, tmp_path):
    report = benchmarks("bench_support_cache").main(
        ["--queries", "2", "--repeats", "1", "--json", str(tmp_path / "c.json")]
    )
    assert report["max_abs_probability_difference"] == 0.0
    assert report["speedup_cached_over_uncached"] > 0


def test_bench_classes_quick(benchmarks, tmp_path):
    report = benchmarks("bench_classes").main(
        ["--classes", "1", "2", "--queries", "2", "--repeats", "1", "--json", str(tmp_path / "k.json")]
    )
    assert [row["classes"] for row in report["rows"]] == [1, 2]
    assert all(row["label_agreement"] >= 0.999 for row in report["rows"])  # both paths give the same label maps


def test_train_step_quick(benchmarks, tmp_path):
    report = benchmarks("train_step").main(
        ["--device", "cpu", "--steps", "1", "--warmup", "1", "--mixed-precision", "no", "bf16", "--json", str(tmp_path / "t.json")]
    )
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [(r["mixed_precision"], r["gradient_checkpointing"]) for r in rows] == [
        ("no", False), ("no", True), ("bf16", False), ("bf16", True)]
    assert all(r["steps_per_s"] > 0 and r["peak_gib"] is None for r in report["rows"])
    assert all(r["speed_vs_off"] > 0 for r in report["rows"] if r["gradient_checkpointing"])  # the pair timed in turns


def test_compare_devices_runs_the_examples(benchmarks, tmp_path):
    report = benchmarks("compare_devices").main(["--device", "cpu", "--dtypes", "float32", "--out", str(tmp_path / "d.json")])
    reference, same_device = report["rows"]
    assert same_device["max_abs_diff"] == 0.0 and same_device["label_disagreement"] == 0.0
    assert reference["mean_iou_vs_truth"] > 0.7  # the built-in model segments the README's examples
