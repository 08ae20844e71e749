"""Trainer on the tiny model and a synthetic episodic dataset (CPU, fp32, offline)."""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from torch.utils.data import Dataset
from safetensors.torch import load_file
from training_fixtures import SquaresEpisodes, tiny_config

from diffews.cli.main import main
from diffews.errors import InputError
from diffews.modeling import DiffewSModel
from diffews.registry import load_model
from diffews._testing import build_tiny_model
from diffews.training import Trainer
from diffews.training.checkpoints import latest_checkpoint
from diffews.training.ema import EMAWeights
from diffews.training.episodes import EpisodeSampler, RandomFlip, ShotSampler
from diffews.training.state import TrainState


def _unet_weights(checkpoint):
    return load_file(checkpoint / "unet.safetensors")


def test_loss_drops_on_learnable_episodes(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, max_steps=16, lr_scheduler="constant"), train_dataset=SquaresEpisodes(32, 2))
    trainer.train()
    losses = trainer.loss_history
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < 0.6 * losses[0], losses


def test_resume_after_a_kill_gives_the_same_weights(tmp_path, monkeypatch):
    """4 steps straight == 2 steps, killed in step 3, resumed from 'latest' for the rest (bitwise, CPU fp32)."""
    options = dict(max_steps=4, checkpoint_every=2, gradient_accumulation_steps=2, shots=3, use_ema=True, ema_decay=0.9, random_flip=0.5)
    data = SquaresEpisodes(8, 3)
    straight = Trainer(tiny_config(tmp_path / "straight", **options), train_dataset=data)
    straight.train()

    run = tmp_path / "killed"
    original = Trainer.step
    calls = []

    def killed_in_step_3(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies mid-step: everything in memory is lost
        return original(self, *args)

    monkeypatch.setattr(Trainer, "step", killed_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(run, **options), train_dataset=data).train()
    monkeypatch.setattr(Trainer, "step", original)
    assert latest_checkpoint(run).name == "step-00000002"
    with pytest.raises(InputError, match="already holds checkpoints"):
        Trainer(tiny_config(run, **options), train_dataset=data).train()

    resumed = Trainer(tiny_config(run, resume="latest", **options), train_dataset=data)
    resumed.train()
    assert resumed.loss_history == straight.loss_history[2:]
    expected, actual = _unet_weights(latest_checkpoint(tmp_path / "straight")), _unet_weights(latest_checkpoint(run))
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    exported = [load_file(p / "model" / "unet" / "diffusion_pytorch_model.safetensors") for p in (tmp_path / "straight", run)]
    assert all(torch.equal(exported[0][k], exported[1][k]) for k in exported[0])  # EMA weights, resumed too


def test_resume_refuses_options_the_checkpoint_fixes_and_takes_the_others(tmp_path):
    data = SquaresEpisodes(4, 2)
    Trainer(tiny_config(tmp_path, max_steps=2, checkpoint_every=2), train_dataset=data).train()
    for changed in ({"learning_rate": 0.5}, {"seed": 7, "batch_size": 3}):
        with pytest.raises(InputError, match="this run changes options the checkpoint fixes") as error:
            Trainer(tiny_config(tmp_path, max_steps=3, resume="latest", **changed), train_dataset=data).train()
        assert all(f"{name}: " in str(error.value) and f"-> {value}" in str(error.value) for name, value in changed.items())
    with pytest.raises(InputError, match=r"step-00000002: is at step 2, past max_steps 1; pass --max-steps 2 or more"):
        Trainer(tiny_config(tmp_path, max_steps=1, resume="latest"), train_dataset=data).train()
    resumed = Trainer(tiny_config(tmp_path, max_steps=3, resume="latest", log_every=1, val_every=0), train_dataset=data)
    resumed.train()
    assert resumed.state.step == 3


def test_a_new_run_never_replaces_an_exported_model(tmp_path, tmp_path_factory):
    Trainer(tiny_config(tmp_path, max_steps=1, checkpoint_every=1), train_dataset=SquaresEpisodes(4, 2)).train()
    # the run's own newest checkpoint may export again over its model (the same run, continued)
    Trainer(tiny_config(tmp_path, max_steps=1, resume=str(latest_checkpoint(tmp_path))), train_dataset=SquaresEpisodes(4, 2)).train()
    shutil.rmtree(tmp_path / "checkpoints")  # the checkpoints deleted to save space; the model kept
    before = (tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    Trainer(tiny_config(elsewhere, max_steps=1, checkpoint_every=1), train_dataset=SquaresEpisodes(4, 2)).train()
    # neither a fresh run, nor --resume latest with no checkpoint left (it would start from scratch),
    # nor another run's checkpoint may replace it
    for resume in (None, "latest", str(latest_checkpoint(elsewhere))):
        with pytest.raises(InputError, match="model: already holds a trained model; choose another output_dir"):
            Trainer(tiny_config(tmp_path, max_steps=1, resume=resume), train_dataset=SquaresEpisodes(4, 2)).train()
    assert (tmp_path / "model" / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="the efficient kernel runs on CUDA; the test needs a device that lacks it")
def test_a_forced_attention_kernel_the_device_lacks_is_a_one_line_error_and_leaves_nothing(tmp_path):
    """The run fails at its first step, after the tracker wrote its logs: the output folder goes."""
    run = tmp_path / "new" / "run"
    with pytest.raises(InputError, match="^sdpa_backend 'efficient' cannot run this model's attention here"):
        Trainer(tiny_config(run, max_steps=1, sdpa_backend="efficient", tracker="tensorboard"), train_dataset=SquaresEpisodes(4, 2)).train()
    assert not (tmp_path / "new").exists()


def test_a_run_stopped_after_writing_a_checkpoint_keeps_it_and_its_logs(tmp_path, monkeypatch):
    """Stopped right after a checkpoint is written (e.g. while the processes wait for each other):
    the checkpoint and the logs stay, so the run resumes."""
    from diffews.training import trainer

    original = trainer.save_train_state

    def written_then_stopped(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_train_state", written_then_stopped)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(tmp_path, max_steps=2, checkpoint_every=1, keep_checkpoints=1, tracker="tensorboard"), train_dataset=SquaresEpisodes(4, 2)).train()
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "logs").rglob("*"))


def test_a_stop_signal_dropped_by_a_finaliser_stops_training_before_the_next_step(tmp_path, monkeypatch):
    """A SIGTERM whose exception Python dropped (it landed in a ``__del__``) is only recorded: the run stops
    before its next step, as if it had been raised, and leaves nothing (no checkpoint was written)."""
    from diffews import signals

    monkeypatch.setattr(signals, "_requested", [])  # this test's record, gone with it
    original, steps = Trainer.step, []

    def step_then_signal_dropped(self):
        steps.append(self.state.step)
        loss = original(self)
        signals.request_stop(signal.SIGTERM)  # what the command line's handler records before it raises
        return loss

    monkeypatch.setattr(Trainer, "step", step_then_signal_dropped)
    with pytest.raises(signals.Terminated):
        Trainer(tiny_config(tmp_path / "run", max_steps=3, tracker="tensorboard"), train_dataset=SquaresEpisodes(4, 2)).train()
    assert steps == [0]
    assert not (tmp_path / "run").exists()


def test_an_interrupted_resume_removes_only_its_own_logs(tmp_path, monkeypatch):
    data = SquaresEpisodes(4, 2)
    Trainer(tiny_config(tmp_path, max_steps=2, checkpoint_every=2, tracker="tensorboard"), train_dataset=data).train()
    shutil.rmtree(tmp_path / "model")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert any(p.name.startswith("events.out.tfevents") for p in before)
    monkeypatch.setattr(Trainer, "step", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(tmp_path, max_steps=4, checkpoint_every=2, resume="latest", tracker="tensorboard"), train_dataset=data).train()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_failed_run_removes_only_what_appeared_in_its_own_folders(tmp_path, monkeypatch):
    """Another program writing into the output folder meanwhile (a second run's folder inside it, a note)
    keeps its files when this run fails before its first checkpoint; the run's logs go."""
    output_dir = tmp_path / "runs"
    original = Trainer.step

    def others_write_then_interrupted(self):
        (output_dir / "fold1" / "checkpoints").mkdir(parents=True)
        (output_dir / "fold1" / "checkpoints" / "state.json").write_text("{}")
        (output_dir / "notes.txt").write_text("mine")
        original(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "step", others_write_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(output_dir, max_steps=2, tracker="tensorboard"), train_dataset=SquaresEpisodes(4, 2)).train()
    assert sorted(p.relative_to(output_dir).as_posix() for p in output_dir.rglob("*")) == [
        "fold1", "fold1/checkpoints", "fold1/checkpoints/state.json", "notes.txt",
    ]


def test_a_diverged_run_stops_before_its_checkpoint_replaces_the_good_ones(tmp_path, monkeypatch):
    """A run whose weights went NaN wrote NaN checkpoints (keep_checkpoints then deleted the good ones),
    exported a NaN model and exited 0."""
    original = Trainer.step

    def diverging(self):
        loss = original(self)
        if self.state.step == 3:
            with torch.no_grad():
                self._params[0].fill_(float("nan"))
        return loss

    monkeypatch.setattr(Trainer, "step", diverging)
    config = tiny_config(tmp_path, max_steps=4, checkpoint_every=2, keep_checkpoints=1)
    with pytest.raises(InputError, match=r"^training diverged by step 4: the UNet's weights are no longer finite; "
                       r"lower optim.learning_rate; the newest checkpoint, .*step-00000002, is from before$"):
        Trainer(config, train_dataset=SquaresEpisodes(4, 2)).train()
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    assert all(torch.isfinite(w).all() for w in _unet_weights(latest_checkpoint(tmp_path)).values())
    assert not (tmp_path / "model").exists()


def test_ema_switched_on_at_resume_starts_from_the_resumed_weights(tmp_path, caplog):
    data = SquaresEpisodes(4, 2)
    Trainer(tiny_config(tmp_path, max_steps=2, checkpoint_every=2), train_dataset=data).train()
    with caplog.at_level("WARNING"):
        folder = Trainer(tiny_config(tmp_path, max_steps=2, resume="latest", use_ema=True), train_dataset=data).train()
    assert "has no EMA weights: the average starts from the resumed weights" in caplog.text
    trained = _unet_weights(latest_checkpoint(tmp_path))
    exported = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")  # the average, after no further step
    assert all(torch.equal(exported[k], trained[k]) for k in trained)


def test_export_loads_and_carries_a_model_card(tmp_path):
    config = tiny_config(tmp_path, max_steps=2, use_ema=True)
    folder = Trainer(config, train_dataset=SquaresEpisodes(4, 2)).train()
    model = DiffewSModel.from_pretrained(folder)
    trained = _unet_weights(latest_checkpoint(tmp_path))
    start = build_tiny_model(seed=config.run.seed).unet.state_dict()
    assert any(not torch.equal(trained[k], start[k]) for k in trained)
    card = (folder / "README.md").read_text()
    assert "fine-tuned from `tiny-random`" in card and "2 optimizer steps" in card and "max_steps: 2" in card
    assert "Prompt embedding: padded (77 tokens" in card
    assert model.config.resolution == config.model.resolution and model.config.prompt == "padded"


def test_fine_tuning_starts_from_a_diffews_folder(tmp_path):
    build_tiny_model(seed=3).save_pretrained(tmp_path / "start")
    config = tiny_config(tmp_path / "run", max_steps=1, pretrained=str(tmp_path / "start"), learning_rate=1e-12)
    folder = Trainer(config, train_dataset=SquaresEpisodes(4, 2)).train()
    start, tuned = (DiffewSModel.from_pretrained(p).unet.state_dict() for p in (tmp_path / "start", folder))
    assert all(torch.allclose(start[k], tuned[k], atol=1e-6) for k in start)  # from seed 3, not the run's seed 42


def test_bf16_training_casts_the_vae_quietly_and_exports_it_in_float32(tmp_path, caplog):
    """The frozen VAE runs in bf16 during training and is exported with its exact float32 weights,
    without diffusers' keep-in-float32 warning for the cast."""
    AcceleratorState._reset_state(True)  # accelerate keeps one mixed-precision setting per process
    try:
        with caplog.at_level("WARNING"):
            folder = Trainer(tiny_config(tmp_path, max_steps=1, mixed_precision="bf16"), train_dataset=SquaresEpisodes(4, 2)).train()
    finally:
        AcceleratorState._reset_state(True)
    assert "kept in float32" not in caplog.text
    exported, start = DiffewSModel.from_pretrained(folder).vae.state_dict(), load_model("tiny-random").vae.state_dict()
    assert all(exported[k].dtype == torch.float32 and torch.equal(exported[k], start[k]) for k in start)


def test_dataset_with_too_few_shots_is_refused(tmp_path):
    with pytest.raises(InputError, match="have 1 support shot"):
        Trainer(tiny_config(tmp_path, shots=2), train_dataset=SquaresEpisodes(4, 1)).train()


def test_gradient_checkpointing_gives_the_same_gradients():
    item = SquaresEpisodes(2, 2)[0]

    def gradients(checkpointing):
        model = build_tiny_model()
        model.unet.train()
        if checkpointing:
            model.unet.enable_gradient_checkpointing()
        model.training_loss(
            item["query_image"][None], item["query_mask"][None], item["support_images"][None],
            item["support_masks"][None], sample_latents=False,
        ).backward()
        return {name: p.grad for name, p in model.unet.named_parameters()}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain["conv_in_ref.weight"].abs().sum() > 0  # the support pass is trained through the K/V
    assert all(torch.allclose(plain[k], checkpointed[k], atol=1e-7) for k in plain)


def test_episode_sampler_is_disjoint_across_processes_and_resumable():
    def take(sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    ranks = [take(EpisodeSampler(10, seed=1, rank=r, world=2), 5) for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == list(range(10))  # one pass, split without overlap
    full = take(EpisodeSampler(10, seed=1, rank=1, world=2), 13)
    assert take(EpisodeSampler(10, seed=1, rank=1, world=2, start=7), 6) == full[7:]
    assert full[:5] != full[5:10]  # each pass reshuffles


def test_shot_sampler_cuts_support_and_covers_1_to_n():
    sampler = ShotSampler(3, seed=0)
    batch = {"support_images": torch.zeros(2, 3, 3, 4, 4), "support_masks": torch.zeros(2, 3, 1, 4, 4)}
    seen = {sampler.slice(batch)["support_masks"].shape[1] for _ in range(50)}
    assert seen == {1, 2, 3}


def _flip_states(original: torch.Tensor, result: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image (all but the last 3 axes): whether `result` is `original` mirrored, and whether it is `original`."""
    return (result == original.flip(-1)).flatten(-3).all(-1), (result == original).flatten(-3).all(-1)


def test_random_flip_mirrors_each_image_with_its_mask_on_draws_of_its_own():
    generator = torch.Generator().manual_seed(0)
    batch = {
        "query_image": torch.randn(64, 2, 4, 6, generator=generator), "query_mask": torch.randn(64, 1, 4, 6, generator=generator),
        "support_images": torch.randn(64, 3, 2, 4, 6, generator=generator),
        "support_masks": torch.randn(64, 3, 1, 4, 6, generator=generator),
    }
    flipped = RandomFlip(0.5, seed=0).apply(batch)
    mirrored = {}
    for image_key, mask_key in RandomFlip.PAIRS:
        image_mirrored, image_kept = _flip_states(batch[image_key], flipped[image_key])
        mask_mirrored, mask_kept = _flip_states(batch[mask_key], flipped[mask_key])
        assert torch.equal(image_mirrored, ~image_kept) and torch.equal(image_mirrored, mask_mirrored)
        assert torch.equal(mask_mirrored, ~mask_kept)
        mirrored[image_key] = image_mirrored
    query, supports = mirrored["query_image"], mirrored["support_images"]
    assert 0.3 < torch.cat([query, supports.flatten()]).float().mean() < 0.7
    assert (supports != query[:, None]).any() and (supports[:, 0] != supports[:, 1]).any()  # draws of their own
    assert RandomFlip(0.0, seed=0).apply(batch) is batch


class MirroredEpisodes(Dataset):
    """The episodes of `episodes` with every image and mask mirrored left to right."""

    def __init__(self, episodes: Dataset) -> None:
        self.episodes = episodes

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, index: int) -> dict:
        item = self.episodes[index]
        return {key: value.flip(-1) if isinstance(value, torch.Tensor) else value for key, value in item.items()}


def test_random_flip_1_trains_exactly_as_on_mirrored_episodes(tmp_path):
    data = SquaresEpisodes(8, 2)
    runs = {
        name: Trainer(tiny_config(tmp_path / name, **options), train_dataset=dataset)
        for name, options, dataset in [("flip", {"random_flip": 1.0}, data), ("mirrored", {}, MirroredEpisodes(data)), ("plain", {}, data)]
    }
    for trainer in runs.values():
        trainer.train()
    assert runs["flip"].loss_history == runs["mirrored"].loss_history
    assert runs["flip"].loss_history != runs["plain"].loss_history


def test_a_checkpoint_from_before_random_flip_resumes_with_a_fresh_flip_stream():
    layer = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)

    def state():
        return TrainState(
            unet=layer, optimizer=optimizer, scheduler=torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0), shots=ShotSampler(2, 0),
            noise=torch.Generator().manual_seed(1), flips=RandomFlip(0.5, seed=2),
        )

    running = state()
    torch.rand(5, generator=running.flips.generator)  # flips drawn before the save
    saved = running.state_dict()
    resumed = state()
    resumed.load_state_dict(saved)
    assert torch.equal(resumed.flips.generator.get_state(), running.flips.generator.get_state())
    del saved["rng"][0]["flips"]  # a checkpoint written before data.random_flip existed
    resumed = state()
    resumed.load_state_dict(saved)
    assert torch.equal(resumed.flips.generator.get_state(), RandomFlip(0.5, seed=2).generator.get_state())


def test_ema_follows_the_formula():
    layer = torch.nn.Linear(2, 1)
    ema = EMAWeights(layer, decay=0.5)
    start = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight.add_(1.0)
    ema.update(layer)  # first update: decay min(0.5, 1/10) = 0.1
    assert torch.allclose(ema.shadow["weight"], 0.1 * start + 0.9 * (start + 1))
    ema.copy_to(layer)
    assert torch.equal(layer.weight, ema.shadow["weight"])


def test_cli_trains_through_the_dataset_builder(tmp_path, monkeypatch, capsys):
    built = []

    def fake_build(data, split, resolution, episodes, seed, images_per_class=None):
        built.append((data.benchmark, data.root, split, data.fold, data.shots, resolution, seed))
        return SquaresEpisodes(4, data.shots, resolution)

    monkeypatch.setattr("diffews.training.trainer.build_dataset", fake_build)
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(tmp_path / "run", max_steps=2).to_yaml())
    assert main(["train", "--config", str(config), "--root", "/data/coco", "--fold", "1"]) == 0
    assert built == [("coco", "/data/coco", "trn", 1, 2, 64, 42)]
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("step 2/2: loss ") and lines[0].endswith(str(tmp_path / "run" / "checkpoints" / "step-00000002"))
    assert lines[-1] == f"trained model: {tmp_path / 'run' / 'model'}"


def test_progress_lines_show_each_validation_at_its_own_step_and_the_final_one(tmp_path, monkeypatch, capsys):
    """A validation off the checkpoint steps had no line; the last checkpoint's line showed the previous
    validation's scores as if they were the last step's, and the final validation was never printed."""
    args = train_cli(tmp_path, monkeypatch, max_steps=4, val_every=1, checkpoint_every=2)
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    scores = r"miou \d+\.\d\d, fbiou \d+\.\d\d"
    checkpoints = tmp_path / "run" / "checkpoints"
    expected = [
        rf"step 1/4: loss [\d.]+, lr \S+, [\d.]+ steps/s, {scores}",
        rf"step 2/4: loss [\d.]+, lr \S+, [\d.]+ steps/s, {scores} -> {re.escape(str(checkpoints / 'step-00000002'))}",
        rf"step 3/4: loss [\d.]+, lr \S+, [\d.]+ steps/s, {scores}",
        rf"step 4/4: loss [\d.]+, lr \S+, [\d.]+ steps/s -> {re.escape(str(checkpoints / 'step-00000004'))}",
        rf"final validation at step 4: {scores}",
        re.escape(f"trained model: {tmp_path / 'run' / 'model'}"),
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), (line, pattern)


def test_cli_without_dataset_root_exits_2(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(tmp_path / "run").to_yaml())
    assert main(["train", "--config", str(config)]) == 2
    assert "no dataset root" in capsys.readouterr().err


def test_validation_scores_and_panels(tmp_path):
    from diffews.training.validation import validate

    result = validate(build_tiny_model(), SquaresEpisodes(3, 2), num_panels=2)
    assert set(result.metrics) == {"miou", "fbiou"} and all(0 <= v <= 100 for v in result.metrics.values())
    assert [p.shape for p in result.panels] == [(64, 256, 3)] * 2 and result.panels[0].dtype.name == "uint8"


def test_validation_leaves_ignore_pixels_out_as_evaluate_does():
    from diffews.training.validation import validate

    episodes = SquaresEpisodes(4, 1)
    items = [episodes[i] for i in range(len(episodes))]

    def with_targets(ignore_background: bool) -> list[dict]:
        result = []
        for item in items:
            target = item["query_mask"][0].to(torch.uint8)
            if ignore_background:
                target = torch.where(target == 1, target, torch.full_like(target, 255))
            result.append({**item, "query_target": target})
        return result

    model = build_tiny_model()
    plain = validate(model, items).metrics
    assert validate(model, with_targets(False)).metrics == plain
    # every background pixel ignored: foreground predicted there is no longer a false positive
    ignored = validate(model, with_targets(True)).metrics
    assert ignored["miou"] > plain["miou"]


def test_cli_trains_on_a_benchmark_in_its_real_format(benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(tmp_path / "run", max_steps=2, shots=1).to_yaml())
    assert main(["train", "--config", str(config), "--benchmark", "pascal", "--root", str(root), "--fold", "0"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"trained model: {tmp_path / 'run' / 'model'}"


def train_cli(tmp_path, monkeypatch, **options) -> list[str]:
    """`diffews train` arguments for a tiny run into tmp_path/run on the squares episodes."""
    monkeypatch.setattr("diffews.training.trainer.build_dataset", lambda data, *a: SquaresEpisodes(4, data.shots))
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(tmp_path / "run", **options).to_yaml())
    return ["train", "--config", str(config), "--root", "unused"]


def only_error_line(capsys) -> str:
    """The one error line, last on stderr (after progress bars), with no traceback."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and not any("Traceback" in line for line in lines), lines
    return errors[0]


def unwritable_folder(tmp_path):
    """A folder this process cannot write into: a read-only one, or, as root (which ignores modes), /sys."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        try:
            with tempfile.TemporaryFile(dir=candidate):
                pass
        except OSError:
            return candidate
    pytest.skip("no unwritable folder here (root ignores modes, and /sys is writable)")


@pytest.mark.parametrize("kind", ["read-only", "below-a-file", "logs-is-a-file"])
def test_unwritable_output_folder_is_refused_before_the_first_step(tmp_path, monkeypatch, capsys, kind):
    args = train_cli(tmp_path, monkeypatch)
    if kind == "read-only":
        parent = unwritable_folder(tmp_path)
        expected = f"error: {parent}: cannot write there ("
    elif kind == "logs-is-a-file":
        parent = tmp_path / "runs"
        (parent / "run").mkdir(parents=True)
        (parent / "run" / "logs").write_text("x")
        expected = f"error: {parent / 'run' / 'logs'}: is a file, where the run keeps its logs; choose another output_dir"
    else:
        parent = tmp_path / "a-file"
        parent.write_text("x")
        expected = f"error: {parent}: is a file, not a folder; choose another output_dir"
    monkeypatch.setattr("diffews.training.trainer.load_start_model", lambda *a: pytest.fail("training started"))
    assert main([*args, "--output-dir", str(parent / "run")]) == 2
    assert only_error_line(capsys).startswith(expected)


def test_full_disk_at_a_checkpoint_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    args = train_cli(tmp_path, monkeypatch, max_steps=3, checkpoint_every=1)
    from diffews.training import checkpoints

    original, saves = checkpoints.save_nested, []

    def disk_full_at_step_2(state, path):
        saves.append(path)
        if ".step-00000002." in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(state, path)

    monkeypatch.setattr(checkpoints, "save_nested", disk_full_at_step_2)
    assert main(args) == 2
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000002"
    assert only_error_line(capsys) == (
        f"error: {checkpoint}/optimizer.safetensors: cannot write (No space left on device); checkpoint step-00000002 was not saved"
    )
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["step-00000001"]
    assert not (tmp_path / "run" / "model").exists()


def test_full_disk_met_by_the_safetensors_writer_names_the_checkpoint_file(tmp_path, monkeypatch, capsys):
    """safetensors reports a full disk as its own error, which save_safetensors turns into a message naming the
    staged file: the checkpoint's message names the checkpoint's file instead, as for any other write."""
    from safetensors import SafetensorError

    from diffews.modeling import weights

    args = train_cli(tmp_path, monkeypatch, max_steps=3, checkpoint_every=1)
    original = weights.save_file

    def disk_full_at_step_2(tensors, path, metadata=None):
        if ".step-00000002." in str(path):
            raise SafetensorError("Error while serializing: No space left on device (os error 28)")
        original(tensors, path, metadata=metadata)

    monkeypatch.setattr(weights, "save_file", disk_full_at_step_2)
    assert main(args) == 2
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000002"
    assert only_error_line(capsys) == (
        f"error: {checkpoint}/unet.safetensors: cannot write (Error while serializing: No space left on device (os error 28)); "
        "checkpoint step-00000002 was not saved"
    )
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == ["step-00000001"]


@pytest.mark.parametrize("writer", ["os", "safetensors"])
def test_full_disk_at_the_export_names_the_folder_and_leaves_no_partial_export(tmp_path, monkeypatch, capsys, writer):
    """The disk fills while the model is exported: reported by the OS, or by safetensors' own writer as its error."""
    from safetensors import SafetensorError

    from diffews.modeling import weights

    args = train_cli(tmp_path, monkeypatch, max_steps=1)
    if writer == "os":
        def disk_full(self, path):
            (Path(path) / "unet").mkdir(parents=True)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(DiffewSModel, "save_pretrained", disk_full)
    else:
        original = weights.save_file

        def disk_full(tensors, path, metadata=None):  # the checkpoint is written; the export is not
            if "checkpoints" not in Path(path).parts:
                raise SafetensorError("No space left on device (os error 28)")
            original(tensors, path, metadata=metadata)

        monkeypatch.setattr(weights, "save_file", disk_full)
    assert main(args) == 2
    run = tmp_path / "run"
    assert only_error_line(capsys) == f"error: {run / 'model'}: cannot export the model (No space left on device{'' if writer == 'os' else ' (os error 28)'}); the checkpoints hold the trained weights"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints"]
    assert latest_checkpoint(run).name == "step-00000001"


def test_resuming_from_a_damaged_checkpoint_names_the_file(tmp_path, monkeypatch, capsys):
    args = train_cli(tmp_path, monkeypatch, max_steps=1)
    assert main(args) == 0
    broken = latest_checkpoint(tmp_path / "run") / "unet.safetensors"
    broken.write_bytes(broken.read_bytes()[:100])
    assert main([*args, "--resume", "latest", "--max-steps", "2"]) == 2
    assert only_error_line(capsys).startswith(f"error: {broken}: cannot read weights, the file is damaged or truncated")


@pytest.mark.parametrize(("damaged", "content", "message"), [
    ("optimizer.safetensors", [torch.zeros(1)], "optimizer.safetensors: damaged diffews checkpoint file (not an optimizer state)"),
    ("rng.safetensors", [], "does not match the model being trained (list index out of range)"),
    ("rng.safetensors", [{"torch": [1, 2]}], "does not match the model being trained"),
])
def test_resuming_from_state_files_of_the_wrong_kind_is_one_line(tmp_path, monkeypatch, capsys, damaged, content, message):
    """Each file parses but holds another structure: they were tracebacks (TypeError, IndexError)."""
    from diffews.training.checkpoints import save_nested

    args = train_cli(tmp_path, monkeypatch, max_steps=1)
    assert main(args) == 0
    folder = latest_checkpoint(tmp_path / "run")
    save_nested(content, folder / damaged)
    assert main([*args, "--resume", "latest", "--max-steps", "2"]) == 2
    line = only_error_line(capsys)
    assert line.startswith("error: ") and message in line, line


def test_loss_from_stored_posteriors_equals_the_loss_from_pixels(tiny_model):
    data = SquaresEpisodes(2, 2)
    batch = {key: torch.stack([data[i][key] for i in range(2)]) for key in ("query_image", "query_mask", "support_images", "support_masks")}
    with torch.no_grad():
        from_pixels = tiny_model.training_loss(*batch.values(), generator=torch.Generator().manual_seed(3))
        posteriors = {
            "query_image": tiny_model.encode_posterior(batch["query_image"]),
            "query_mask": tiny_model.encode_posterior(batch["query_mask"].expand(-1, 3, -1, -1) * 2 - 1),
            "support_images": tiny_model.encode_posterior(batch["support_images"].flatten(0, 1)).unflatten(0, (2, 2)),
            "support_masks": tiny_model.encode_posterior(batch["support_masks"].flatten(0, 1).expand(-1, 3, -1, -1) * 2 - 1).unflatten(0, (2, 2)),
        }
        from_posteriors = tiny_model.training_loss(*posteriors.values(), generator=torch.Generator().manual_seed(3), posteriors=True)
    assert from_posteriors.item() == pytest.approx(from_pixels.item(), rel=1e-5)


def test_cached_latents_train_like_encoding_every_step(benchmarks, tmp_path):
    root, _ = benchmarks
    options = dict(benchmark="custom", root=str(root / "custom"), fold=None, shots=1, max_steps=2)
    plain = Trainer(tiny_config(tmp_path / "plain", **options))
    plain.train()
    cached = Trainer(tiny_config(tmp_path / "cached", cache_latents=True, **options))
    cached.train()
    assert cached.loss_history == pytest.approx(plain.loss_history, rel=1e-4)
    assert len(cached.loss_history) == 2


def test_fine_tuning_a_model_with_the_authors_evaluation_prompt_warns(monkeypatch, caplog):
    from dataclasses import replace

    from diffews.training import trainer as trainer_module
    from diffews.training.config import ModelOptions

    model = build_tiny_model()
    model.config = replace(model.config, prompt="authors-eval")
    monkeypatch.setattr(trainer_module, "load_model", lambda name: model)
    with caplog.at_level("WARNING"):
        trainer_module.load_start_model(ModelOptions(pretrained="converted", pretrained_type="diffews", resolution=64))
    assert "converted holds the authors' evaluation prompt embedding (2 tokens)" in caplog.text
    assert "convert with --prompt padded" in caplog.text
