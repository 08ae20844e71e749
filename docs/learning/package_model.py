"""Package a trained model as the built-in diffews-icons-small: weights stored in float16.

    python docs/learning/package_model.py outputs/icons-w44-init src/diffews/models/diffews-icons-small \
        --checkpoint outputs/icons-w44/checkpoints/step-00010500        # a checkpoint's UNet (the 128 px release)
    python docs/learning/package_model.py outputs/icons-init outputs/icons-step2750 --dtype float32 \
        --checkpoint outputs/icons-fold0/checkpoints/step-00002750      # a checkpoint's UNet, to train on from
    python docs/learning/package_model.py outputs/icons-w44-256-more/model src/diffews/models/diffews-icons-small \
        --threshold 0.005                                                # the built-in model

Loads the folder that `diffews train` exported (or an initial model plus a checkpoint's UNet), casts
every weight to float16 (half the size; it loads back as float32, see `DiffewSModel.from_pretrained`)
or keeps float32, stores the binarisation threshold chosen on validation episodes (`--threshold`),
and saves it into the target folder (replaced), keeping the model card (README.md) already there.
Prints the folder's size.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from diffews import DiffewSModel
from diffews.modeling.prompt import PROMPT_CONSTANT


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trained", type=Path, help="model folder written by diffews train")
    parser.add_argument("package", type=Path, help="the built-in model's folder in the package")
    parser.add_argument("--checkpoint", type=Path, default=None, help="take the UNet weights from this diffews train checkpoint")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="stored weights (default float16)")
    parser.add_argument("--threshold", type=float, default=None, help="store this threshold (mode: the model's); default: the model's own")
    args = parser.parse_args()
    model = DiffewSModel.from_pretrained(args.trained)
    if args.checkpoint is not None:
        model.unet.load_state_dict(load_file(args.checkpoint / "unet.safetensors"), strict=True)
    model = model.to(getattr(torch, args.dtype))
    threshold, _ = model.config.thresholding(args.threshold)  # checked; the model's own when not given
    model.config = replace(model.config, prompt=PROMPT_CONSTANT, threshold=threshold)  # the prompt: init-model's fixed embedding
    card = args.package / "README.md"
    with tempfile.TemporaryDirectory() as staging:
        model.save_pretrained(staging)
        if card.is_file():
            shutil.copyfile(card, Path(staging) / "README.md")
        shutil.rmtree(args.package, ignore_errors=True)
        shutil.copytree(staging, args.package)
    size = sum(p.stat().st_size for p in args.package.rglob("*") if p.is_file())
    print(f"wrote {args.package} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
