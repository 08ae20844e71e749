"""`diffews app` command line: options, errors before anything starts, the page it builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import free_port

from diffews import DiffewSPipeline
from diffews._testing import build_tiny_model
from diffews.cli.main import build_parser, main

gr = pytest.importorskip("gradio")

from diffews.app import ui  # noqa: E402


def test_defaults_listen_on_loopback():
    args = build_parser().parse_args(["app", "--model", "tiny-random"])
    assert (args.host, args.port, args.batch_size, args.examples) == ("127.0.0.1", 7860, 4, None)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--port", "0"], "error: --port must be in 1..65535, got 0"),
        (["--batch-size", "0"], "error: --batch-size must be at least 1, got 0"),
        (["--examples", "no/such/dir"], "error: no/such/dir: no such folder (--examples)"),
        (["--host", "::1"], "error: --host ::1: IPv6 addresses are not supported; use 127.0.0.1 (this machine) or 0.0.0.0 (the network)"),
        (["--examples", "tests"], "error: tests: no example in it (--examples): it needs support/IMG.jpg with support/IMG_mask.png, and query/*.jpg"),
    ],
)
def test_bad_options_exit_2_before_starting(options, message, capsys, monkeypatch):
    """An IPv6 --host passed the check and crashed the server's start (it builds http://HOST:PORT); an
    --examples folder without an example showed none, without a word."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    assert main(["app", "--model", "tiny-random", "--port", str(free_port()), *options]) == 2  # 7860 may be taken
    assert capsys.readouterr().err.strip() == message


def test_stopping_the_app_reports_the_signal_and_leaves_no_files(tmp_path):
    """Gradio's block_thread swallowed SIGTERM and Ctrl+C (exit 0), and uploads stayed in its own temp folder."""
    import os
    import signal
    import subprocess
    import sys

    env = {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("GRADIO_TEMP_DIR", None)
    process = subprocess.Popen([sys.executable, "-m", "diffews.cli.main", "app", "--model", "tiny-random", "--port", str(free_port())],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for line in process.stdout:
            if "diffews app running at" in line:
                break
        ours = [p for p in tmp_path.iterdir() if p.name != THIRD_PARTY_CACHE]
        assert [p.name.startswith("diffews-app-") for p in ours] == [True] and (ours[0] / "gradio").is_dir()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        process.kill()
    assert "terminated (SIGTERM)" in process.stdout.read()
    assert [p.name for p in tmp_path.iterdir() if p.name != THIRD_PARTY_CACHE] == []  # Gradio's files went too


THIRD_PARTY_CACHE = f"torchinductor_{__import__('getpass').getuser()}"
"""torch's compile cache, made in the temporary folder when diffusers imports it: not the app's."""


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["app", "--help"])
    text = capsys.readouterr().out
    for option in ("--model", "--host", "--port", "--examples", "--batch-size", "--device", "--dtype"):
        assert option in text


def page_text(demo) -> str:
    return "\n".join(block.value for block in demo.blocks.values() if isinstance(block, gr.Markdown))


def test_page_has_no_telemetry_and_finds_the_shipped_examples(tmp_path):
    examples = ui.default_examples_dir()
    assert examples == Path(__file__).resolve().parents[1] / "examples"
    pipe = DiffewSPipeline(build_tiny_model())
    demo = ui.build_app(pipe, "tiny-random", tmp_path, examples)
    assert demo.analytics_enabled is False
    assert "random weights" in page_text(demo)
    assert "random weights" not in page_text(ui.build_app(pipe, "./trained", tmp_path))


def test_segmenting_and_rethresholding_share_one_queue(tmp_path):
    """Each writes the session's files and removes the others': Gradio gave each function a queue of its own."""
    demo = ui.build_app(DiffewSPipeline(build_tiny_model()), "tiny-random", tmp_path)
    writers = [fn for fn in demo.fns.values() if fn.name in ("run", "rethreshold")]
    assert len(writers) == 3 and len({fn.concurrency_id for fn in writers}) == 1
    assert all(fn.concurrency_limit == 1 for fn in writers)


def test_the_threshold_slider_starts_at_the_builtin_models_threshold_on_a_step(tmp_path):
    """The slider's step was 0.01, so the built-in model's 0.005 fell between two of its steps (a browser's range input snaps its value to one)."""
    from dataclasses import replace

    from diffews.modeling.builtin import DEFAULT_MODEL, MODELS_ROOT
    from diffews.modeling.diffews_model import read_model_config

    stored = read_model_config(MODELS_ROOT / DEFAULT_MODEL).threshold
    model = build_tiny_model()
    model.config = replace(model.config, threshold=stored)
    demo = ui.build_app(DiffewSPipeline(model), "tiny-random", tmp_path)
    slider = next(block for block in demo.blocks.values() if isinstance(block, gr.Slider))
    assert slider.value == stored
    assert abs(slider.value / slider.step - round(slider.value / slider.step)) < 1e-9
