"""Split lists: fold classes, the pair-list format, pickle lists, and HSNet's published lists."""

from __future__ import annotations

import logging
import os
import pickle
import urllib.error
from pathlib import Path

import pytest

from diffews.data import fss, published
from diffews.data.splits import (
    coco_fold_classes,
    folds_used,
    format_pair,
    interleaved_folds,
    parse_pair,
    pascal_fold_classes,
    read_pair_lists,
    write_pair_lists,
)
from diffews.errors import InputError

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "splits"
needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(), reason=f"reference split lists (HSNet's published lists) are absent from {REFERENCE}"
)


# Fold classes


def test_pascal_folds_are_consecutive_fives():
    assert pascal_fold_classes(0) == [1, 2, 3, 4, 5]
    assert pascal_fold_classes(3) == [16, 17, 18, 19, 20]
    assert sorted(c for f in range(4) for c in pascal_fold_classes(f)) == list(range(1, 21))


@pytest.mark.parametrize("fold", range(4))
def test_coco_fold_takes_every_fourth_class(fold):
    classes = coco_fold_classes(fold)
    assert classes == [c for c in range(1, 81) if (c - 1) % 4 == fold]
    assert len(classes) == 20


def test_coco_folds_partition_the_80_classes():
    assert coco_fold_classes(0)[:3] == [1, 5, 9]
    assert coco_fold_classes(2)[-1] == 79
    assert sorted(c for f in range(4) for c in coco_fold_classes(f)) == list(range(1, 81))


def test_interleaved_folds_small_example():
    assert interleaved_folds([30, 10, 20, 50, 40, 70, 60], 3) == {0: [10, 40, 70], 1: [20, 50], 2: [30, 60]}


@pytest.mark.parametrize(("count", "num_folds"), [(92 * 4, 4), (1203, 4), (10, 3), (5, 5), (3, 4)])
def test_interleaved_folds_partition_the_classes(count, num_folds):
    class_ids = list(range(1000, 1000 + 3 * count, 3))[::-1]
    folds = interleaved_folds(class_ids, num_folds)
    assert sorted(folds) == list(range(num_folds))
    ordered = sorted(class_ids)
    for fold, members in folds.items():
        assert members == [ordered[p] for p in range(fold, count, num_folds)]
    assert sorted(c for members in folds.values() for c in members) == ordered
    sizes = [len(members) for members in folds.values()]
    assert max(sizes) - min(sizes) <= 1


# The pair-list format


@pytest.mark.parametrize(
    ("key", "class_id", "line"),
    [
        ("2007_000033", 1, "2007_000033__01"),
        ("2008_001234", 20, "2008_001234__20"),
        ("train2014/COCO_train2014_000000000009", 80, "train2014/COCO_train2014_000000000009__80"),
        ("a__b", 7, "a__b__07"),
        ("x", 123, "x__123"),
    ],
)
def test_format_and_parse_pair_round_trip(key, class_id, line):
    assert format_pair(key, class_id) == line
    assert parse_pair(line, Path("fold0.txt")) == (key, class_id)


@pytest.mark.parametrize("line", ["2007_000033", "2007_000033_01", "__01", "2007_000033__", "2007_000033__1a", "2007_000033__-1"])
def test_malformed_pair_names_the_file(line):
    with pytest.raises(InputError, match="lists/fold2.txt") as caught:
        parse_pair(line, Path("lists/fold2.txt"))
    assert repr(line) in str(caught.value)


def test_superscript_digit_is_malformed():
    with pytest.raises(InputError, match="fold0.txt"):
        parse_pair("2007_000033__\u00b2", Path("fold0.txt"))


def test_write_then_read_pair_lists(tmp_path):
    pairs_by_fold = {
        0: [("2007_000061", 4), ("2007_000033", 1), ("2007_000033", 2)],
        1: [("2008_000002", 6)],
        2: [],
    }
    written = write_pair_lists(pairs_by_fold, tmp_path / "lists" / "val")
    assert [p.name for p in written] == ["fold0.txt", "fold1.txt", "fold2.txt"]
    assert sorted(p.name for p in (tmp_path / "lists" / "val").iterdir()) == ["fold0.txt", "fold1.txt", "fold2.txt"]
    assert written[0].read_text() == "2007_000033__01\n2007_000033__02\n2007_000061__04\n"
    assert written[2].read_text() == ""

    read_all = read_pair_lists(tmp_path / "lists", "val", [0, 1, 2])
    assert sorted(read_all) == sorted(pairs_by_fold[0] + pairs_by_fold[1])
    assert read_pair_lists(tmp_path / "lists", "val", [1]) == [("2008_000002", 6)]


def test_write_pair_lists_replaces_files_leaving_no_temporaries(tmp_path):
    folder = tmp_path / "trn"
    write_pair_lists({0: [("old", 1)]}, folder)
    write_pair_lists({0: [("new", 2)], 1: [("other", 6)]}, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["fold0.txt", "fold1.txt"]
    assert (folder / "fold0.txt").read_text() == "new__02\n"


def test_failed_write_keeps_old_file_and_no_temporaries(tmp_path, monkeypatch):
    folder = tmp_path / "trn"
    write_pair_lists({0: [("old", 1)]}, folder)

    def failing_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_pair_lists({0: [("new", 2)]}, folder)
    assert [p.name for p in folder.iterdir()] == ["fold0.txt"]
    assert (folder / "fold0.txt").read_text() == "old__01\n"


def test_read_pair_lists_tolerates_blank_lines_and_crlf(tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "fold1.txt").write_bytes(b"2007_000033__06\r\n\r\n  2007_000061__07  \r\n")
    assert read_pair_lists(tmp_path, "val", [1]) == [("2007_000033", 6), ("2007_000061", 7)]


def test_a_split_list_that_is_not_utf8_is_one_line(tmp_path):
    """A UTF-16 list (Notepad's "Unicode") was a UnicodeDecodeError traceback, for pair lists and FSS-1000's class lists."""
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "fold0.txt").write_text("2007_000033__01\n", encoding="utf-16")
    with pytest.raises(InputError, match=r"fold0\.txt: not a UTF-8 text split list$"):
        read_pair_lists(tmp_path, "val", [0])
    (tmp_path / "test.txt").write_text("abacus\n", encoding="utf-16")
    with pytest.raises(InputError, match=r"test\.txt: not a UTF-8 text class list$"):
        fss.class_list("test", tmp_path)


def test_a_byte_order_mark_is_not_part_of_the_first_entry(tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "fold0.txt").write_text("2007_000033__01\n", encoding="utf-8-sig")
    assert read_pair_lists(tmp_path, "val", [0]) == [("2007_000033", 1)]


def test_read_pair_lists_missing_fold_names_the_file(tmp_path):
    write_pair_lists({0: [("a", 1)]}, tmp_path / "val")
    with pytest.raises(InputError, match="fold1.txt"):
        read_pair_lists(tmp_path, "val", [0, 1])


def test_read_pair_lists_malformed_line_names_the_file(tmp_path):
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "fold0.txt").write_text("2007_000033__01\nnot a pair\n")
    with pytest.raises(InputError, match="fold0.txt"):
        read_pair_lists(tmp_path, "val", [0])


@pytest.mark.parametrize(
    ("split", "fold", "num_folds", "expected"),
    [
        ("val", 2, 4, [2]),
        ("test", 0, 4, [0]),
        ("trn", 2, 4, [0, 1, 3]),
        ("trn", 0, 3, [1, 2]),
        ("trn", None, 4, [0, 1, 2, 3]),
        ("val", None, 3, [0, 1, 2]),
    ],
)
def test_folds_used(split, fold, num_folds, expected):
    assert folds_used(split, fold, num_folds) == expected


# HSNet's COCO pickle lists


def write_pickle(folder, split, fold, table):
    (folder / split).mkdir(parents=True, exist_ok=True)
    with open(folder / split / f"fold{fold}.pkl", "wb") as stream:
        pickle.dump(table, stream)


COCO_TABLE = {
    0: ["train2014/COCO_train2014_000000000009.jpg", "train2014/COCO_train2014_000000000025.jpg"],
    4: ["train2014/COCO_train2014_000000000009.jpg"],
}


def test_pickle_lists_refused_by_default(tmp_path):
    write_pickle(tmp_path, "trn", 0, COCO_TABLE)
    with pytest.raises(InputError, match="--trust-pickle-splits") as caught:
        read_pair_lists(tmp_path, "trn", [0])
    assert "fold0.pkl" in str(caught.value)


@pytest.mark.parametrize("table", [{"a": ["x.jpg"]}, {0: [1]}, {0: 5}, {0: [""]}, {0: "abc.jpg"}, ["x.jpg"]])
def test_a_trusted_pickle_of_the_wrong_shape_is_one_line(tmp_path, table):
    """Each was a ValueError or TypeError traceback."""
    write_pickle(tmp_path, "trn", 0, table)
    with pytest.raises(InputError, match=r"fold0\.pkl: expected a dict of class index -> lists of image paths$"):
        read_pair_lists(tmp_path, "trn", [0], trust_pickle=True)


def test_trusted_pickle_lists_are_read_with_a_warning(tmp_path, caplog):
    write_pickle(tmp_path, "trn", 0, COCO_TABLE)
    with caplog.at_level(logging.WARNING, logger="diffews"):
        pairs = read_pair_lists(tmp_path, "trn", [0], trust_pickle=True)
    assert sorted(pairs) == [
        ("train2014/COCO_train2014_000000000009", 1),
        ("train2014/COCO_train2014_000000000009", 5),
        ("train2014/COCO_train2014_000000000025", 1),
    ]
    warnings = [r for r in caplog.records if r.name == "diffews" and r.levelno == logging.WARNING]
    assert any("fold0.pkl" in r.getMessage() for r in warnings)


class Planted:
    """Any instance of a class is pickled as a reference to a global."""

    def __init__(self):
        self.paths = ["train2014/COCO_train2014_000000000009.jpg"]


class RunsCode:
    """Unpickling this calls os.makedirs(marker): the classic code-execution trick."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (str(self.marker),)


class Prints:
    def __reduce__(self):
        return print, ("x",)


def test_trusted_pickle_with_a_class_instance_is_refused(tmp_path):
    write_pickle(tmp_path, "trn", 1, {0: Planted()})
    with pytest.raises(InputError, match="fold1.pkl"):
        read_pair_lists(tmp_path, "trn", [1], trust_pickle=True)


def test_trusted_pickle_that_runs_code_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "code-ran"
    write_pickle(tmp_path, "trn", 0, {0: [RunsCode(marker)], 1: [Prints()]})
    assert not marker.exists()
    with pytest.raises(InputError, match="fold0.pkl"):
        read_pair_lists(tmp_path, "trn", [0], trust_pickle=True)
    assert not marker.exists()
    assert "x" not in capsys.readouterr().out


def test_trusted_pickle_of_wrong_type_is_refused(tmp_path):
    write_pickle(tmp_path, "trn", 0, ["train2014/COCO_train2014_000000000009.jpg"])
    with pytest.raises(InputError, match="fold0.pkl"):
        read_pair_lists(tmp_path, "trn", [0], trust_pickle=True)


def test_truncated_pickle_is_an_input_error(tmp_path):
    write_pickle(tmp_path, "trn", 0, COCO_TABLE)
    path = tmp_path / "trn" / "fold0.pkl"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(InputError, match="fold0.pkl"):
        read_pair_lists(tmp_path, "trn", [0], trust_pickle=True)


# The published lists


def reference_lines(path):
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@needs_reference
@pytest.mark.parametrize("split", ["trn", "val"])
def test_reference_pascal_lists_match_the_fold_classes(split):
    covered = set()
    for fold in range(4):
        path = REFERENCE / "pascal" / split / f"fold{fold}.txt"
        lines = reference_lines(path)
        assert lines, path
        classes = {parse_pair(line, path)[1] for line in lines}
        assert classes <= set(pascal_fold_classes(fold)), (path, classes)
        covered |= classes
    assert covered == set(range(1, 21))


@needs_reference
def test_reference_pascal_lists_read_like_generated_ones():
    pairs = read_pair_lists(REFERENCE / "pascal", "trn", folds_used("trn", 0, 4))
    assert len(pairs) == sum(len(reference_lines(REFERENCE / "pascal" / "trn" / f"fold{f}.txt")) for f in (1, 2, 3))
    assert {c for _, c in pairs} == set(range(6, 21))


@needs_reference
def test_reference_fss_lists_are_disjoint_with_hsnet_sizes():
    names = {split: reference_lines(REFERENCE / "fss" / f"{split}.txt") for split in ("trn", "val", "test")}
    assert {split: len(set(n)) for split, n in names.items()} == {"trn": 520, "val": 240, "test": 240}
    assert not set(names["trn"]) & set(names["val"])
    assert not set(names["trn"]) & set(names["test"])
    assert not set(names["val"]) & set(names["test"])


class FakeResponse:
    def __init__(self, data):
        self.data = data

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def read(self):
        return self.data


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFEWS_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def served(monkeypatch):
    """A fake urlopen serving the reference lists by URL suffix; returns the list of requested URLs."""
    if not REFERENCE.is_dir():
        pytest.skip(f"reference split lists (HSNet's published lists) are absent from {REFERENCE}")
    requests = []

    def fake_urlopen(url, timeout=None):
        requests.append(url)
        assert url.startswith("https://"), url
        for path in REFERENCE.rglob("*.txt"):
            if url.endswith("/" + path.relative_to(REFERENCE).as_posix()):
                return FakeResponse(path.read_bytes())
        raise urllib.error.HTTPError(url, 404, "Not Found", None, None)

    monkeypatch.setattr(published, "urlopen", fake_urlopen)
    return requests


EXPECTED_FILES = {
    "pascal": sorted(f"{split}/fold{fold}.txt" for split in ("trn", "val") for fold in range(4)),
    "fss": ["test.txt", "trn.txt", "val.txt"],
}


def files_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("benchmark", ["pascal", "fss"])
def test_published_splits_download_once_into_the_cache(benchmark, cache, served):
    folder = published.published_splits(benchmark)
    assert folder == cache / "splits" / "hsnet" / benchmark
    assert files_under(folder) == EXPECTED_FILES[benchmark]
    assert files_under(cache) == [f"splits/hsnet/{benchmark}/{name}" for name in EXPECTED_FILES[benchmark]]
    for name in EXPECTED_FILES[benchmark]:
        assert (folder / name).read_bytes() == (REFERENCE / benchmark / name).read_bytes(), name
    assert len(served) == len(EXPECTED_FILES[benchmark])
    assert all(f"/{benchmark}/" in url for url in served)

    assert published.published_splits(benchmark) == folder
    assert len(served) == len(EXPECTED_FILES[benchmark])


def test_published_splits_fetch_only_missing_files(cache, served):
    folder = published.published_splits("pascal")
    (folder / "val" / "fold2.txt").unlink()
    served.clear()
    published.published_splits("pascal")
    assert len(served) == 1 and served[0].endswith("/pascal/val/fold2.txt")
    assert (folder / "val" / "fold2.txt").read_bytes() == (REFERENCE / "pascal" / "val" / "fold2.txt").read_bytes()


def test_fss_class_list_defaults_to_published_lists(cache, served):
    expected = (REFERENCE / "fss" / "test.txt").read_bytes().decode().split()
    assert len(expected) == 240
    assert fss.class_list("test") == expected
    assert fss.class_list("test") == expected
    assert len(served) == 3


def test_published_splits_offline_error_says_what_to_do(cache, monkeypatch):
    requests = []

    def offline_urlopen(url, timeout=None):
        requests.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(published, "urlopen", offline_urlopen)
    with pytest.raises(InputError) as caught:
        published.published_splits("fss")
    message = str(caught.value)
    assert len(requests) == 1
    assert requests[0] in message
    assert str(cache / "splits" / "hsnet" / "fss") in message
    assert "--splits" in message
    assert "no network" in message
    assert not cache.exists() or files_under(cache) == []


def test_no_published_lists_for_coco(cache, monkeypatch):
    def unexpected_urlopen(url, timeout=None):
        raise AssertionError(f"unexpected request {url}")

    monkeypatch.setattr(published, "urlopen", unexpected_urlopen)
    with pytest.raises(InputError, match="coco"):
        published.published_splits("coco")
    assert not cache.exists() or files_under(cache) == []
