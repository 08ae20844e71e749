"""Run by test_training_distributed under `accelerate launch --num_processes 2`: trains the tiny model,
then each process writes its UNet weights and losses to OUT/rank<i>.*."""

import json
import sys
from pathlib import Path

from safetensors.torch import save_file
from training_fixtures import SquaresEpisodes, tiny_config

from diffews.training import Trainer

out = Path(sys.argv[1])
trainer = Trainer(tiny_config(out / "run", max_steps=3, gradient_accumulation_steps=2, checkpoint_every=2), train_dataset=SquaresEpisodes(8, 2))
trainer.train()
rank = trainer.accelerator.process_index
save_file({k: v.contiguous() for k, v in trainer.model.unet.state_dict().items()}, out / f"rank{rank}.safetensors")
(out / f"rank{rank}.json").write_text(json.dumps({"world": trainer.accelerator.num_processes, "losses": trainer.loss_history}))
