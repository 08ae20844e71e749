"""The built-in model on an accelerator against the CPU, on the README's examples.

    python benchmarks/compare_devices.py --device cuda

Segments the shipped example queries with the shipped 2-shot support set on the CPU (float32, the
reference) and on `--device` in each of `--dtypes`; prints, per setting, the largest probability
difference from the reference, the share of pixels whose mask label differs, and each setting's IoU
against the ground-truth masks. Exits 1 if a float32 run's masks differ from the CPU's on more than
`--max-float32-disagreement` of the pixels. Writes a JSON report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import describe_device, print_table, write_json
from PIL import Image

from diffews import DiffewSPipeline
from diffews.evaluation.metrics import intersection_union
from diffews.modeling.config import TORCH_DTYPES

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", nargs="+", choices=list(TORCH_DTYPES), default=["float32", "bfloat16"])
    parser.add_argument("--max-float32-disagreement", type=float, default=1e-3,
                        help="largest share of pixels whose float32 label may differ from the CPU's")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/compare_devices.json"))
    return parser.parse_args(argv)


def example_files() -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    """Support images, support masks, queries and their ground-truth masks shipped in examples/."""
    supports = sorted(p for p in (EXAMPLES / "support").glob("*.jpg"))
    queries = sorted((EXAMPLES / "query").glob("*.jpg"))
    return (supports, [p.with_name(f"{p.stem}_mask.png") for p in supports], queries,
            [EXAMPLES / "query_ground_truth" / f"{p.stem}_mask.png" for p in queries])


def iou(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Foreground IoU of one mask against its ground truth, by the evaluator's own count (1 if both are empty)."""
    intersections, unions = intersection_union(torch.from_numpy(prediction)[None], torch.from_numpy(truth.astype(np.uint8))[None])
    return float(intersections[0, 1] / unions[0, 1]) if unions[0, 1] else 1.0


def segment(device: str, dtype: torch.dtype, files: tuple[list[Path], ...]):
    supports, support_masks, queries, _ = files
    pipe = DiffewSPipeline.from_pretrained(device=device, torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe([str(p) for p in queries], [str(p) for p in supports], [str(p) for p in support_masks])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    files = example_files()
    truths = [np.asarray(Image.open(p).convert("L")) > 127 for p in files[3]]
    reference = segment("cpu", torch.float32, files)
    rows = [{"device": "cpu", "dtype": "float32", "max_abs_diff": 0.0, "label_disagreement": 0.0,
             "iou_vs_truth": [iou(m, t) for m, t in zip(reference.masks, truths)]}]
    for dtype_name in args.dtypes:
        out = segment(args.device, TORCH_DTYPES[dtype_name], files)
        rows.append({
            "device": describe_device(torch.device(args.device)), "dtype": dtype_name,
            "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(out.probabilities, reference.probabilities)),
            "label_disagreement": float(np.mean([np.mean(a != b) for a, b in zip(out.masks, reference.masks)])),
            "iou_vs_truth": [iou(m, t) for m, t in zip(out.masks, truths)],
        })
    for row in rows:
        row["mean_iou_vs_truth"] = float(np.mean(row["iou_vs_truth"]))
    print(f"built-in model, {len(files[2])} example queries, 2-shot support; reference: CPU float32")
    print_table(rows, [("device", "device", ""), ("dtype", "dtype", ""), ("max_abs_diff", "max |dp|", ".1e"),
                       ("label_disagreement", "labels differ", ".2%"), ("mean_iou_vs_truth", "IoU vs truth", ".3f")])
    write_json(args.out, {"queries": [p.name for p in files[2]], "rows": rows})
    worst = max((r["label_disagreement"] for r in rows[1:] if r["dtype"] == "float32"), default=0.0)
    if worst > args.max_float32_disagreement:
        print(f"float32 masks on {args.device} differ from the CPU's on {worst:.2%} of pixels", file=sys.stderr)
        raise SystemExit(1)
    return {"rows": rows}


if __name__ == "__main__":
    main()
