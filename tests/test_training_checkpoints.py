"""Checkpoint files: nested safetensors state, atomic writes, picking the latest complete one."""

from __future__ import annotations

import pytest
import torch

from diffews.errors import InputError
from diffews.training.checkpoints import (
    STATE_NAME,
    complete_checkpoints,
    latest_checkpoint,
    load_train_state,
    load_nested,
    resolve_resume,
    save_nested,
    write_checkpoint,
)


def _write_state(folder, step=0):
    save_nested({"w": torch.full((2,), float(step))}, folder / "state.safetensors")
    (folder / STATE_NAME).write_text(f'{{"step": {step}}}\n')


def test_nested_state_round_trip_keeps_types(tmp_path):
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))], lr=1e-3)
    sum(p.sum() for group in optimizer.param_groups for p in group["params"]).backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "scaler": None, "tuple": (1, 2.5, "x", True)}
    save_nested(state, tmp_path / "s.safetensors")
    loaded = load_nested(tmp_path / "s.safetensors")
    assert list(loaded["optimizer"]["state"]) == [0, 1]  # int keys survive (the optimizer matches on them)
    for key in ("step", "exp_avg", "exp_avg_sq"):
        assert torch.equal(loaded["optimizer"]["state"][1][key], state["optimizer"]["state"][1][key])
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert loaded["scaler"] is None and loaded["tuple"] == (1, 2.5, "x", True)
    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(4))], lr=1e-3)
    fresh.load_state_dict(loaded["optimizer"])
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"])


def test_a_damaged_state_file_is_a_one_line_error_naming_it(tmp_path):
    path = tmp_path / "optimizer.safetensors"
    save_nested({"optimizer": {"state": {0: torch.zeros(100)}}}, path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(InputError, match=f"^{path}: cannot read weights, the file is damaged or truncated"):
        load_nested(path)


def test_unstorable_values_are_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot store a object"):
        save_nested({"x": object()}, tmp_path / "s.safetensors")


def test_a_folder_that_only_looks_numbered_is_not_a_checkpoint(tmp_path):
    """str.isdigit() takes "\u00b2", which int() refuses: listing the checkpoints was a ValueError."""
    write_checkpoint(tmp_path, 10, lambda folder: _write_state(folder, 10), keep=2)
    (tmp_path / "checkpoints" / "step-\u00b2").mkdir()
    _write_state(tmp_path / "checkpoints" / "step-\u00b2", 2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-00000010"]


def test_an_interrupted_removal_of_an_old_checkpoint_leaves_only_a_stale_temporary(tmp_path, monkeypatch):
    """Removal used to run on the checkpoint itself: stopped after its state file went, a half-deleted
    step-N stayed for good (no longer listed, never cleaned up)."""
    from diffews.training import checkpoints

    for step in (10, 20):
        write_checkpoint(tmp_path, step, lambda folder, s=step: _write_state(folder, s), keep=2)
    monkeypatch.setattr(checkpoints, "remove", lambda path: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint(tmp_path, 30, lambda folder: _write_state(folder, 30), keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names[-2:] == ["step-00000020", "step-00000030"] and names[0].startswith(".step-00000010.")
    monkeypatch.undo()
    write_checkpoint(tmp_path, 40, lambda folder: _write_state(folder, 40), keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000030", "step-00000040"]


def test_write_checkpoint_keeps_the_newest(tmp_path):
    for step in (10, 20, 30, 40):
        path = write_checkpoint(tmp_path, step, lambda folder, s=step: _write_state(folder, s), keep=2)
        assert path.name == f"step-{step:08d}"
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-00000030", "step-00000040"]
    assert latest_checkpoint(tmp_path).name == "step-00000040"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000030", "step-00000040"]


def test_failed_write_leaves_nothing_and_keeps_the_previous(tmp_path):
    write_checkpoint(tmp_path, 5, _write_state, keep=3)

    def crash(folder):
        _write_state(folder, 6)
        (folder / "big.bin").write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_checkpoint(tmp_path, 6, crash, keep=3)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-00000005"]


def test_killed_mid_write_is_never_resumed(tmp_path):
    """A process killed mid-write leaves a temporary folder (even a complete-looking one): never picked."""
    write_checkpoint(tmp_path, 5, _write_state, keep=3)
    killed = tmp_path / "checkpoints" / ".step-00000009.abcd1234.tmp"
    killed.mkdir()
    _write_state(killed, 9)
    half = tmp_path / "checkpoints" / "step-00000012"  # not from our writer, but never trust a folder without state
    half.mkdir()
    (half / "unet.safetensors").write_bytes(b"\0" * 10)
    assert resolve_resume("latest", tmp_path).name == "step-00000005"
    write_checkpoint(tmp_path, 7, _write_state, keep=3)
    assert not killed.exists()  # the next save clears leftovers
    assert latest_checkpoint(tmp_path).name == "step-00000007"


def test_resume_values(tmp_path):
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("latest", tmp_path) is None
    with pytest.raises(InputError, match="not a complete diffews training checkpoint"):
        resolve_resume(str(tmp_path), tmp_path)
    path = write_checkpoint(tmp_path, 3, _write_state, keep=1)
    assert resolve_resume(str(path), tmp_path) == path


def test_resuming_a_named_checkpoint_keeps_one_line_of_checkpoints(tmp_path):
    """Continuing from an older checkpoint while newer ones exist would mix two runs (a later
    --resume latest picks the abandoned run's newest); another run's folder is not mixed in either."""
    run = tmp_path / "run"
    older, newer = (write_checkpoint(run, step, lambda folder, s=step: _write_state(folder, s), keep=3) for step in (5, 10))
    with pytest.raises(InputError, match=r"step-00000005: .*checkpoints also holds newer checkpoints \(step-00000010\)"):
        resolve_resume(str(older), run)
    assert resolve_resume(str(newer), run) == newer
    link = tmp_path / "best"
    link.symlink_to(older)
    with pytest.raises(InputError, match=r"best: .*checkpoints also holds newer checkpoints \(step-00000010\)"):
        resolve_resume(str(link), run)
    elsewhere = write_checkpoint(tmp_path / "other", 5, _write_state, keep=1)
    with pytest.raises(InputError, match="already holds checkpoints of another run"):
        resolve_resume(str(elsewhere), run)
    assert resolve_resume(str(elsewhere), tmp_path / "new") == elsewhere
    assert [p.name for p in complete_checkpoints(run)] == ["step-00000005", "step-00000010"]


@pytest.mark.parametrize("state", ["[]", '{"num_processes": 1}', '{"step": "x", "num_processes": 1}'])
def test_a_damaged_trainer_state_is_a_one_line_error(tmp_path, state):
    (tmp_path / STATE_NAME).write_text(state)
    with pytest.raises(InputError, match=f"^{tmp_path / STATE_NAME}: damaged, it does not give the step and process count$"):
        load_train_state(tmp_path)


@pytest.mark.parametrize("structure", ["{not json", '{"__tensor__": "missing"}', '{"__items__": 3}'])
def test_a_state_file_whose_structure_does_not_match_is_a_one_line_error(tmp_path, structure):
    from safetensors.torch import save_file

    path = tmp_path / "optimizer.safetensors"
    save_file({"t0": torch.zeros(2)}, str(path), metadata={"structure": structure})
    with pytest.raises(InputError, match=f"^{path}: damaged diffews checkpoint file"):
        load_nested(path)
