"""Inputs every command rejects the same way: one line naming the file or flag, exit 2, no traceback,
nothing written. Damaged weights files, out-of-range resolutions, a busy port, unsafe pickles."""

from __future__ import annotations

import errno
import json
import shutil
import socket
from pathlib import Path

import pytest
from helpers import free_port
import torch
from safetensors.torch import load_file, save_file

from diffews._testing import build_tiny_model, save_tiny_stable_diffusion
from diffews.cli.main import main
from diffews.modeling.mask_decoder import MaskDecoder, MaskDecoderConfig, save_mask_decoder

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SUPPORT = ["--support", str(EXAMPLES / "support/gnome_dev_cdrom_audio_support_1.jpg"), str(EXAMPLES / "support/gnome_dev_cdrom_audio_support_1_mask.png")]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved tiny DiffewS folder, a tiny SD 2.1 folder and a mask decoder file (never modified)."""
    root = tmp_path_factory.mktemp("saved")
    build_tiny_model(seed=0).save_pretrained(root / "diffews")
    save_tiny_stable_diffusion(root / "sd", seed=0)
    save_mask_decoder(MaskDecoder(MaskDecoderConfig()), root / "decoder.safetensors")
    return root


def truncated_copy(source: Path, target: Path, damaged: str) -> Path:
    """A copy of folder or file `source` at `target` whose `damaged` file (relative) keeps half its bytes."""
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy(source, target)
    broken = target / damaged if damaged else target
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    return broken


def expect_error(capsys, args: list[str], message: str) -> str:
    """`main(args)` exits 2 and its last stderr line, the only error line, holds `message`."""
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and message in errors[0], lines
    assert not any("Traceback" in line for line in lines)
    return errors[0]


def model_commands(model: Path, tmp: Path) -> dict[str, list[str]]:
    """Every command that loads a DiffewS folder, with otherwise valid options."""
    return {
        "segment": ["segment", "--model", str(model), *SUPPORT, "--query", str(EXAMPLES / "query"), "--out", str(tmp / "out")],
        "evaluate": ["evaluate", "--model", str(model), "--benchmark", "custom", "--root", str(tmp), "--out", str(tmp / "out.json")],
        "distill-decoder": ["distill-decoder", "--model", str(model), "--out", str(tmp / "out.safetensors"), "--steps", "1"],
        "app": ["app", "--model", str(model), "--port", str(free_port())],
        "train": [
            "train", "--pretrained", str(model), "--root", str(tmp), "--output-dir", str(tmp / "out"),
            "--tracker", "none", "--mixed-precision", "no", "--resolution", "64",
        ],
    }


@pytest.mark.parametrize("command", ["segment", "evaluate", "distill-decoder", "app", "train"])
def test_truncated_unet_weights(saved, tmp_path, capsys, command):
    if command == "app":
        pytest.importorskip("gradio")
    broken = truncated_copy(saved / "diffews", tmp_path / "model", "unet/diffusion_pytorch_model.safetensors")
    expect_error(capsys, model_commands(tmp_path / "model", tmp_path)[command], f"{broken}: cannot read weights, the file is damaged or truncated")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.json").exists() and not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("damaged", ["vae/diffusion_pytorch_model.safetensors", "prompt_embedding.safetensors"])
def test_every_weights_file_of_a_model_folder_is_checked(saved, tmp_path, capsys, damaged):
    broken = truncated_copy(saved / "diffews", tmp_path / "model", damaged)
    expect_error(capsys, model_commands(tmp_path / "model", tmp_path)["segment"], f"{broken}: cannot read weights")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damaged", ["unet/config.json", "vae/config.json"])
def test_a_corrupt_component_config_is_one_line(saved, tmp_path, capsys, damaged):
    broken = truncated_copy(saved / "diffews", tmp_path / "model", damaged)
    expect_error(capsys, model_commands(tmp_path / "model", tmp_path)["segment"], f"{broken}: cannot read it")
    assert not (tmp_path / "out").exists()


def _remove(path: Path) -> None:
    path.unlink()


def _set_json(value):
    return lambda path: path.write_text(json.dumps(value))


def _edit_json(key, value):
    return lambda path: path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))


def _rename_prompt(path: Path) -> None:
    save_file({"other": load_file(path)["prompt_embedding"]}, str(path))


def _scalar_prompt(path: Path) -> None:
    save_file({"prompt_embedding": load_file(path)["prompt_embedding"].flatten()[0].clone()}, str(path))


@pytest.mark.parametrize(
    ("damaged", "damage", "message"),
    [
        ("scheduler/scheduler_config.json", _remove, "scheduler_config.json: missing; is this a DiffewS model folder?"),
        ("scheduler/scheduler_config.json", lambda path: path.write_text("{not json"), "scheduler_config.json: cannot read JSON"),
        ("unet/config.json", _set_json([1, 2]), "unet/config.json: cannot read it"),
        ("unet/config.json", _edit_json("cross_attention_dim", "abc"), "unet/config.json: cannot build the model it describes"),
        ("prompt_embedding.safetensors", _rename_prompt, "prompt_embedding.safetensors: holds no 'prompt_embedding' tensor"),
        ("diffews_config.json", lambda path: path.write_text("{not json"), "diffews_config.json: cannot read JSON"),
        ("scheduler/scheduler_config.json", _set_json("some/repository"), "scheduler_config.json: not a scheduler config"),
        ("scheduler/scheduler_config.json", _edit_json("beta_schedule", "nope"), "scheduler_config.json: cannot build the scheduler"),
        ("scheduler/scheduler_config.json", _edit_json("num_train_timesteps", 0), "scheduler_config.json: cannot build the scheduler"),
        ("unet/config.json", _edit_json("norm_num_groups", 0), "unet/config.json: cannot build the model it describes"),
        ("prompt_embedding.safetensors", _scalar_prompt, "prompt_embedding.safetensors: prompt embedding must have shape (1, T, D)"),
        ("diffews_config.json", _edit_json("resolution", 64.0), "diffews_config.json: resolution must be an integer, got 64.0"),
        ("diffews_config.json", _edit_json("timestep", "x"), "diffews_config.json: timestep must be an integer, got 'x'"),
    ],
    ids=[
        "scheduler-missing", "scheduler-not-json", "unet-config-a-list", "unet-config-bad-value", "prompt-key-missing", "config-not-json",
        "scheduler-a-string", "scheduler-bad-schedule", "scheduler-no-timesteps", "unet-zero-groups", "prompt-a-scalar",
        "config-float-resolution", "config-string-timestep",
    ],
)
def test_a_damaged_model_folder_is_one_line_naming_the_file(saved, tmp_path, capsys, damaged, damage, message):
    shutil.copytree(saved / "diffews", tmp_path / "model")
    damage(tmp_path / "model" / damaged)
    line = expect_error(capsys, model_commands(tmp_path / "model", tmp_path)["segment"], message)
    assert line.count(str(tmp_path / "model" / damaged)) == 1, line  # named once
    assert not (tmp_path / "out").exists()


def test_truncated_mask_decoder(saved, tmp_path, capsys):
    broken = truncated_copy(saved / "decoder.safetensors", tmp_path / "decoder.safetensors", "")
    args = model_commands(saved / "diffews", tmp_path)["segment"] + ["--mask-decoder", str(broken)]
    expect_error(capsys, args, f"{broken}: cannot read weights")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damaged", ["vae/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"])
def test_truncated_stable_diffusion_base_for_training(saved, tmp_path, capsys, damaged):
    broken = truncated_copy(saved / "sd", tmp_path / "sd", damaged)
    args = model_commands(tmp_path / "sd", tmp_path)["train"]
    expect_error(capsys, args, f"{broken}: cannot read weights")
    assert not (tmp_path / "out").exists()


def test_truncated_base_for_convert(saved, tmp_path, capsys):
    from authors_fixtures import authors_unet_state, write_unet

    config, state = authors_unet_state()
    unet = write_unet(tmp_path / "unet", config, state)
    broken = truncated_copy(saved / "sd", tmp_path / "sd", "vae/diffusion_pytorch_model.safetensors")
    args = ["convert", "--unet", str(unet), "--base", str(tmp_path / "sd"), "--out", str(tmp_path / "out")]
    expect_error(capsys, args, f"{broken}: cannot read weights")
    truncated = truncated_copy(unet, tmp_path / "unet2", "diffusion_pytorch_model.safetensors")
    args = ["convert", "--unet", str(tmp_path / "unet2"), "--base", str(saved / "sd"), "--out", str(tmp_path / "out")]
    expect_error(capsys, args, f"{truncated}: cannot read weights")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["segment", "evaluate", "distill-decoder", "train"])
@pytest.mark.parametrize("value", ["100000", "0", "60"])
def test_resolution_out_of_range(saved, tmp_path, capsys, command, value):
    args = model_commands(saved / "diffews", tmp_path)[command]
    if "--resolution" in args:
        args[args.index("--resolution") + 1] = value
    else:
        args += ["--resolution", value]
    flag = "command line: " if command == "train" else "--resolution: "
    expect_error(capsys, args, f"{flag}resolution must be a multiple of 8 from 8 to 2048, got {value}")
    assert not (tmp_path / "out").exists()


def test_resolution_of_a_model_folder_is_checked(saved, tmp_path, capsys):
    shutil.copytree(saved / "diffews", tmp_path / "model")
    config = tmp_path / "model" / "diffews_config.json"
    config.write_text(config.read_text().replace('"resolution": 64', '"resolution": 100000'))
    expect_error(capsys, model_commands(tmp_path / "model", tmp_path)["segment"], "resolution must be a multiple of 8 from 8 to 2048")


def test_busy_port_names_the_flag(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = expect_error(capsys, ["app", "--model", "tiny-random", "--port", str(port)], f"--port {port}: 127.0.0.1:{port} is already in use")
    assert "gradio" not in line.lower() and "server_port" not in line


def test_pickled_unet_refusal_advises_converting_never_disabling_the_check(tmp_path, saved, capsys):
    from authors_fixtures import authors_unet_state, write_unet

    config, state = authors_unet_state()
    unet = write_unet(tmp_path / "unet", config, {**state, "extra": torch.nn.Linear(1, 1)}, pickled=True)
    line = expect_error(
        capsys, ["convert", "--unet", str(unet), "--base", str(saved / "sd"), "--out", str(tmp_path / "out"), "--allow-pickle"],
        f"{unet / 'diffusion_pytorch_model.bin'}: refused, not a plain file of tensors (it references torch.nn.modules.linear.Linear)",
    )
    assert "convert the UNet's tensors to diffusion_pytorch_model.safetensors in a trusted environment" in line
    assert "weights_only" not in line and "False" not in line


@pytest.mark.parametrize(
    "command",
    [
        ["segment", *SUPPORT, "--query", str(EXAMPLES / "query")],
        ["evaluate", "--benchmark", "custom", "--root", "r"],
        ["data", "composite", "--objects", "o", "--backgrounds", "b"],
        ["init-model", "--vae", "v", "--unet-config", "u.json"],
    ],
    ids=["segment", "evaluate", "data-composite", "init-model"],
)
def test_an_empty_out_is_refused_not_taken_as_the_current_folder(capsys, command):
    with pytest.raises(SystemExit) as stopped:
        main([*command, "--out", ""])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("argument --out: must not be empty")


def test_an_image_with_a_damaged_exif_block_is_one_line(saved, tmp_path, capsys):
    """Pillow reports a broken EXIF block (or PNG chunk) as SyntaxError, which was a traceback."""
    from PIL import Image

    query = tmp_path / "q.png"
    Image.new("RGB", (16, 16)).save(query, exif=b"garbage!")
    args = ["segment", "--model", str(saved / "diffews"), *SUPPORT, "--query", str(query), "--out", str(tmp_path / "out")]
    expect_error(capsys, args, f"{query}: cannot read image (not a TIFF file")
    assert not (tmp_path / "out").exists()


NO_SUCH_USER = "~diffews-no-such-user"


@pytest.mark.parametrize(
    ("command", "flag"),
    [("segment", "--query"), ("segment", "--out"), ("segment", "--model"), ("segment", "--mask-decoder"), ("evaluate", "--out"),
     ("distill-decoder", "--out"), ("train", "--output-dir"), ("train", "--config"), ("app", "--examples")],
)
def test_a_home_of_an_unknown_user_is_one_line(saved, tmp_path, capsys, command, flag):
    """pathlib's expanduser raises RuntimeError for ~<unknown user>: it was a traceback (or, for the
    paths never expanded, a search for a folder literally named '~user')."""
    args = model_commands(saved / "diffews", tmp_path)[command]
    value = f"{NO_SUCH_USER}/x"
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    line = expect_error(capsys, args, f"{value}: cannot expand '~' (no such user, or no home folder)")
    assert line.count(value) == 1, line  # named once: not prefixed with itself
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_a_folder_the_user_cannot_read_is_one_line(saved, tmp_path, capsys, monkeypatch):
    """A PermissionError on a data folder (an EACCES read, not a full disk) was a traceback.
    Tests run as root here, where chmod cannot lock a folder: the refusal is simulated."""
    locked = tmp_path / "data" / "cat"
    locked.mkdir(parents=True)
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    args = model_commands(saved / "diffews", tmp_path)["evaluate"]
    args[args.index("--root") + 1] = str(tmp_path / "data")
    expect_error(capsys, args, f"error: {locked}: Permission denied")
    assert not (tmp_path / "out.json").exists()
