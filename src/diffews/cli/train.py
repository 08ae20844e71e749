"""`diffews train`: fine-tune Stable Diffusion 2.1 into DiffewS (accelerate; any number of GPUs)."""

from __future__ import annotations

import argparse

from ..training.config import add_config_flags, load_config, overrides_from_args

DESCRIPTION = """\
Fine-tune Stable Diffusion 2.1 (or a DiffewS model) into a DiffewS few-shot segmenter.

Options come from --config (YAML; shipped ones in configs/) and are overridden by flags. The
defaults are the authors' recipe: 512 px, AdamW lr 1e-5, weight decay 1e-2, linear decay,
grad-clip 1.0, fp16, 1 x 4 accumulated episodes, 20k steps, K in 1..N shots per step, seed 42.
Checkpoints go to <output_dir>/checkpoints, logs to <output_dir>/logs, the trained model (loadable
with DiffewSPipeline.from_pretrained, with a model card) to <output_dir>/model.
"""

EPILOG = """\
examples:
  diffews train --config configs/coco20i_fold0.yaml --root /data/benchmarks
  diffews train --config configs/coco20i_fold0.yaml --root /data/benchmarks --resume latest
  accelerate launch --multi_gpu --num_processes 8 -m diffews.cli.main train --config configs/coco_incontext.yaml
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="fine-tune Stable Diffusion 2.1 into DiffewS", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="YAML", help="training config file; flags below override its values")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration as YAML and exit")
    add_config_flags(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, overrides_from_args(args))
    if args.print_config:
        print(config.to_yaml(), end="")
        return 0
    from ..training import Trainer

    exported = Trainer(config).train()
    print(f"trained model: {exported}")
    return 0
