"""Support cache: segment N queries with one support set, encoding the support per query vs once.

Prints a table and the speed ratio, measured side by side in one run, and writes a JSON report.

    python benchmarks/bench_support_cache.py                  # tiny model, CPU, 20 queries, 1 shot
    python benchmarks/bench_support_cache.py --shots 5 --queries 20 --repeats 5
    python benchmarks/bench_support_cache.py --model DIR --device cuda --dtype float16 --resolution 512
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import box_masks, measure_alternating, random_images, write_json

from diffews import DiffewSPipeline


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random", help="DiffewS model name or folder (default: the tiny random model)")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--resolution", type=int, default=None, help="default: the model's")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of each path (median reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/support_cache.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    pipe = DiffewSPipeline.from_pretrained(args.model, torch_dtype=dtype, device=args.device)
    pipe.set_progress_bar_config(disable=True)
    resolution = args.resolution or pipe.resolution

    rng = np.random.default_rng(0)
    queries = random_images(rng, args.queries, resolution)
    supports = random_images(rng, args.shots, resolution)
    masks = box_masks(args.shots, resolution)

    def uncached() -> list[np.ndarray]:
        return [pipe(q, supports, masks, resolution=resolution).probabilities[0] for q in queries]

    def cached() -> list[np.ndarray]:
        support = pipe.encode_support(supports, masks, resolution=resolution)
        return [pipe(q, support=support, resolution=resolution).probabilities[0] for q in queries]

    max_diff = max(float(np.abs(a - b).max()) for a, b in zip(uncached(), cached()))
    device = pipe.device
    stats = measure_alternating({"uncached": uncached, "cached": cached}, device, args.repeats)
    uncached_s, cached_s = stats["uncached"]["median_s"], stats["cached"]["median_s"]
    ratio = uncached_s / cached_s

    report = {
        "model": args.model,
        "device": str(device),
        "dtype": args.dtype,
        "threads": torch.get_num_threads(),
        "resolution": resolution,
        "queries": args.queries,
        "shots": args.shots,
        "repeats": args.repeats,
        "uncached_seconds": uncached_s,
        "cached_seconds": cached_s,
        "speedup_cached_over_uncached": ratio,
        "max_abs_probability_difference": max_diff,
    }
    print(f"{args.queries} queries, {args.shots} shot(s), {resolution}px, {report['model']} on {device} {args.dtype}")
    print(f"{'path':<10}{'total s':>10}{'ms/query':>10}")
    print(f"{'uncached':<10}{uncached_s:>10.3f}{1000 * uncached_s / args.queries:>10.1f}")
    print(f"{'cached':<10}{cached_s:>10.3f}{1000 * cached_s / args.queries:>10.1f}")
    print(f"speed-up cached / uncached: {ratio:.2f}x   (max |diff| of probabilities: {max_diff:.2e})")
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
