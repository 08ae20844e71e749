"""`diffews app` command line: options, errors before anything starts, the page it builds."""

from __future__ import annotations

from pathlib import Path

import pytest

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
    ],
)
def test_bad_options_exit_2_before_starting(options, message, capsys):
    assert main(["app", "--model", "tiny-random", *options]) == 2
    assert capsys.readouterr().err.strip() == message


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
