"""The benchmark registry: a dataset added as one `Benchmark` object and one registry entry works in
`diffews evaluate`, `diffews data`, the training config and the episode builder, with no other change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffews.cli.main import main
from diffews.data import BENCHMARKS, Benchmark, CheckItem, build_episode_dataset
from diffews.data.custom import FolderSplit, class_folders
from diffews.errors import InputError
from diffews.training.config import load_config


def open_halves(root: Path, split: str, fold: int | None, splits: Path | None, trust_pickle: bool) -> FolderSplit:
    """Class folders in two folds: fold f holds every other class folder, from position f."""
    names = class_folders(root)
    return FolderSplit("halves", split, root, root, names if fold is None else names[fold::2])


def check_halves(root: Path, splits: Path | None) -> list[CheckItem]:
    return [CheckItem("class folders", len(class_folders(root)))]


HALVES = Benchmark("halves", "Halves-2i", ("trn", "val"), 2, open_halves, check_halves, test_episodes=3)


@pytest.fixture
def halves(monkeypatch):
    monkeypatch.setitem(BENCHMARKS, "halves", HALVES)
    return HALVES


def test_a_registered_benchmark_evaluates_every_fold_with_its_defaults(halves, benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    out = tmp_path / "report.json"
    args = ["evaluate", "--model", "tiny-random", "--workers", "0", "--benchmark", "halves", "--root", str(root / "custom"), "--fold", "all"]
    assert main([*args, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert sorted(report["results"]) == ["0", "1"] and report["settings"]["split"] == "val"
    assert [fold["episodes"] for fold in report["results"].values()] == [3, 3]  # its test_episodes
    assert [sorted(fold["per_class_iou"]) for fold in report["results"].values()] == [["cat"], ["dog"]]


def test_a_registered_benchmark_in_data_commands(halves, benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    assert main(["data", "check", "halves", str(root / "custom")]) == 0
    assert capsys.readouterr().out.splitlines() == ["class folders: 2 found, ok", f"halves at {root / 'custom'}: complete"]
    with pytest.raises(SystemExit):  # it has no split lists, so `data splits` does not offer it
        main(["data", "splits", "halves", str(root), "--out", str(tmp_path)])
    assert "invalid choice: 'halves'" in capsys.readouterr().err


def test_a_registered_benchmark_in_training_configs_and_episodes(halves, benchmarks):
    root, _ = benchmarks
    config = load_config(None, {"benchmark": "halves", "fold": "1", "root": str(root / "custom")})
    assert config.data.benchmark == "halves"
    with pytest.raises(InputError, match=r"fold must be null or 0\.\.1 for Halves-2i, got 2"):
        load_config(None, {"benchmark": "halves", "fold": "2"})
    with pytest.raises(InputError, match="train_split must be one of trn, val for Halves-2i, got 'test'"):
        load_config(None, {"benchmark": "halves", "train_split": "test"})
    episodes = build_episode_dataset("halves", root / "custom", "trn", 1, shots=1, resolution=32)
    assert len(episodes) == 4  # training: every pair once (the 4 dog images), not its test_episodes


def test_unknown_benchmarks_are_refused_by_name(capsys):
    with pytest.raises(InputError, match="benchmark must be one of pascal, coco, lvis, fss, custom, composite, got 'imagenet'"):
        load_config(None, {"benchmark": "imagenet"})


def test_data_check_reports_split_lists(benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    assert main(["data", "splits", "pascal", str(root), "--out", str(tmp_path / "lists")]) == 0
    capsys.readouterr()
    assert main(["data", "check", "pascal", str(root), "--splits", str(tmp_path / "lists")]) == 0
    assert "split lists: 8 found, ok" in capsys.readouterr().out.splitlines()
    (tmp_path / "lists" / "val" / "fold3.txt").unlink()
    assert main(["data", "check", "pascal", str(root), "--splits", str(tmp_path / "lists")]) == 2
    assert f"split lists: 7 found, MISSING 1 (first: {tmp_path / 'lists' / 'val' / 'fold3.txt'})" in capsys.readouterr().out
    assert main(["data", "check", "custom", str(root / "custom"), "--splits", str(tmp_path / "lists")]) == 2
    assert "custom folders have no split lists" in capsys.readouterr().err
