"""The held-out tables of docs/learning.md, with the evaluator behind `diffews evaluate` (`run_evaluation`).

    python docs/learning/evaluate_all.py --model diffews-icons-small --untrained outputs/icons-w44-init-256 \
        --root data/iconbench [--oxygen data/oxygen-eval] --out docs/learning

Held-out fold 0, test split, every test image once as a query (1,152 episodes on the rebuilt benchmark:
all 192 classes; the default 1000 would leave the last 25 classes unscored), 1 and 5 shots, at the
trained model's working resolution, threshold (or `--threshold`) and shot fusion: the trained model with
supports of the query's class and of another class, the untrained model (same VAE, random UNet),
and the reserved oxygen set (baselines: `diffews evaluate --baseline`). One `CachedLatentsPredictor`
cache serves every run on the benchmark (both models share the VAE), so each test image and mask is
encoded once. Reports: <out>/fold0-test-<K>shot-<what>.json, <out>/oxygen-fold0-test-<K>shot-trained.json.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from diffews import DiffewSPipeline
from diffews.data import EVERY_IMAGE
from diffews.evaluation import EvaluationSettings, run_evaluation
from diffews.evaluation.predictors import CachedLatentsPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the trained model (folder or built-in name)")
    parser.add_argument("--untrained", default=None, help="the same architecture before training (diffews init-model output)")
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--oxygen", type=Path, default=None, help="the reserved oxygen set: scored, never used to choose anything")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--runs", nargs="+", default=["trained:1", "trained:5", "other-class:1", "other-class:5", "untrained:1", "untrained:5", "oxygen:1", "oxygen:5"],
        help="what:shots pairs to score, in order (what: trained, other-class, untrained, oxygen)",
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="binarise every run at this threshold (the trained model's mode); default: the trained model's"
    )
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    trained = CachedLatentsPredictor(DiffewSPipeline.from_pretrained(args.model))
    predictors = {"trained": trained, "other-class": trained}
    if args.untrained:
        untrained = DiffewSPipeline.from_pretrained(args.untrained)
        untrained.model.config = replace(untrained.model.config, shot_fusion=trained.pipe.model.config.shot_fusion)  # as the trained
        predictors["untrained"] = CachedLatentsPredictor(untrained)
        predictors["untrained"].latents = trained.latents  # the same VAE: the same latents
    oxygen = CachedLatentsPredictor(trained.pipe)  # other images: a cache of their own
    resolution = trained.pipe.model.config.resolution  # the trained model's, for every run
    threshold, mode = trained.pipe.model.config.thresholding(args.threshold)  # likewise: the untrained rows binarise as the trained
    common = {"episodes": EVERY_IMAGE, "seed": 0, "resolution": resolution, "threshold": threshold, "threshold_mode": mode}
    for run in args.runs:
        what, shots = run.split(":")
        shots = int(shots)
        if what == "oxygen":
            if args.oxygen is None:
                continue
            settings = EvaluationSettings("composite", str(args.oxygen), "test", shots, **common)
            path, predictor = args.out / f"oxygen-fold0-test-{shots}shot-trained.json", oxygen
        else:
            support = "other-class" if what == "other-class" else "same-class"
            settings = EvaluationSettings("composite", str(args.root), "test", shots, support=support, **common)
            path, predictor = args.out / f"fold0-test-{shots}shot-{what}.json", predictors[what]
        report = run_evaluation(predictor, settings, [0], path, what, batch_size=8)
        print(f"{shots}-shot {what:<12} mIoU {report['mean']['miou']:6.2f}  FB-IoU {report['mean']['fbiou']:6.2f}", flush=True)


if __name__ == "__main__":
    main()
