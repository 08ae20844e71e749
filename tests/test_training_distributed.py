"""Two CPU processes (gloo) under `accelerate launch`: a few steps, identical weights on both ranks."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffews.training.checkpoints import latest_checkpoint

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_train_in_lockstep(tmp_path):
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if launcher is None:
        pytest.skip("the accelerate launcher is not installed")
    command = [
        launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_free_port()), str(HERE / "two_process_training.py"), str(tmp_path),
    ]
    # torchrun-style launch of 2 processes; ACCELERATE_USE_CPU makes them CPU processes joined by gloo
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]

    weights = [load_file(tmp_path / f"rank{r}.safetensors") for r in range(2)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    runs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [run["world"] for run in runs] == [2, 2]
    assert runs[0]["losses"] != runs[1]["losses"]  # each process trained on its own episodes
    checkpoint = latest_checkpoint(tmp_path / "run")
    assert checkpoint.name == "step-00000003"
    assert json.loads((checkpoint / "trainer_state.json").read_text())["num_processes"] == 2
    saved = load_file(checkpoint / "unet.safetensors")
    assert all(torch.equal(saved[k], weights[0][k]) for k in saved)
