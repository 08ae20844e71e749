"""Trainer on the tiny model and a synthetic episodic dataset (CPU, fp32, offline)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from training_fixtures import SquaresEpisodes, tiny_config

from diffews.cli.main import main
from diffews.errors import InputError
from diffews.modeling import DiffewSModel, build_tiny_model
from diffews.training import Trainer
from diffews.training.checkpoints import latest_checkpoint
from diffews.training.ema import EMAWeights
from diffews.training.episodes import EpisodeSampler, ShotSampler


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
    options = dict(max_steps=4, checkpoint_every=2, gradient_accumulation_steps=2, shots=3, use_ema=True, ema_decay=0.9)
    data = SquaresEpisodes(8, 3)
    straight = Trainer(tiny_config(tmp_path / "straight", **options), train_dataset=data)
    straight.train()

    run = tmp_path / "killed"
    original = Trainer._optimizer_step
    calls = []

    def killed_in_step_3(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies mid-step: everything in memory is lost
        return original(self, *args)

    monkeypatch.setattr(Trainer, "_optimizer_step", killed_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_config(run, **options), train_dataset=data).train()
    monkeypatch.setattr(Trainer, "_optimizer_step", original)
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


def test_export_loads_and_carries_a_model_card(tmp_path):
    config = tiny_config(tmp_path, max_steps=2, use_ema=True)
    folder = Trainer(config, train_dataset=SquaresEpisodes(4, 2)).train()
    model = DiffewSModel.from_pretrained(folder)
    trained = _unet_weights(latest_checkpoint(tmp_path))
    start = build_tiny_model(seed=config.run.seed).unet.state_dict()
    assert any(not torch.equal(trained[k], start[k]) for k in trained)
    card = (folder / "README.md").read_text()
    assert "fine-tuned from `tiny-random`" in card and "2 optimizer steps" in card and "max_steps: 2" in card
    assert model.config.resolution == config.model.resolution


def test_fine_tuning_starts_from_a_diffews_folder(tmp_path):
    build_tiny_model(seed=3).save_pretrained(tmp_path / "start")
    config = tiny_config(tmp_path / "run", max_steps=1, pretrained=str(tmp_path / "start"), learning_rate=1e-12)
    folder = Trainer(config, train_dataset=SquaresEpisodes(4, 2)).train()
    start, tuned = (DiffewSModel.from_pretrained(p).unet.state_dict() for p in (tmp_path / "start", folder))
    assert all(torch.allclose(start[k], tuned[k], atol=1e-6) for k in start)  # from seed 3, not the run's seed 42


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

    def fake_build(data, split, resolution, episodes, seed):
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


def test_cli_trains_on_a_benchmark_in_its_real_format(benchmarks, tmp_path, capsys):
    root, _ = benchmarks
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(tmp_path / "run", max_steps=2, shots=1).to_yaml())
    assert main(["train", "--config", str(config), "--benchmark", "pascal", "--root", str(root), "--fold", "0"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"trained model: {tmp_path / 'run' / 'model'}"
