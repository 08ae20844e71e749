"""Several classes at once: `segment_classes` against C separate binary runs, per query.

For C classes (default 1, 3 and 10) and N queries (default 20), both paths start from the same
support contexts (encoded once per class, outside the timing) and end with label maps:

- together: ``pipe.segment_classes(queries, contexts)`` (one query encode, class passes batched);
- separate: ``pipe(queries, support=context)`` once per class, then the same label rule.

Timed in turns in one run (see `_common.measure_alternating`); prints ms per query and the ratio
separate / together, and writes a JSON report.

    python benchmarks/bench_classes.py                                   # tiny model, CPU
    python benchmarks/bench_classes.py --arch sd21 --device cuda --dtype float16 --resolution 512
    python benchmarks/bench_classes.py --classes 1 3 --queries 2 --repeats 1   # seconds: checks the script runs
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _common import box_masks, describe_device, measure_alternating, print_table, random_images, resolve_device, write_json

from diffews import DiffewSPipeline
from diffews._testing import build_tiny_model
from diffews.modeling.config import TORCH_DTYPES as DTYPES
from diffews.modeling.sd21 import build_sd21_model
from diffews.processing.labels import label_map


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["tiny", "sd21"], default="tiny", help="model architecture (random weights)")
    parser.add_argument("--classes", type=int, nargs="+", default=[1, 3, 10], metavar="C")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4, help="queries per call, both paths")
    parser.add_argument("--resolution", type=int, default=None, help="default: the model's")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each path (median reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/classes.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = build_tiny_model() if args.arch == "tiny" else build_sd21_model(device=device)
    pipe = DiffewSPipeline(model.to(device, DTYPES[args.dtype]))
    pipe.set_progress_bar_config(disable=True)
    resolution = args.resolution or pipe.resolution

    rng = np.random.default_rng(0)
    queries = random_images(rng, args.queries, resolution)
    rows = []
    for count in args.classes:
        contexts = {
            f"class{n}": pipe.encode_support(random_images(rng, args.shots, resolution), box_masks(args.shots, resolution), resolution=resolution)
            for n in range(count)
        }

        def together() -> list[np.ndarray]:
            return pipe.segment_classes(queries, contexts, resolution=resolution, batch_size=args.batch_size).labels

        def separate() -> list[np.ndarray]:
            runs = [pipe(queries, support=c, resolution=resolution, batch_size=args.batch_size) for c in contexts.values()]
            return [label_map(np.stack([r.probabilities[q] for r in runs]), np.stack([r.masks[q] for r in runs])) for q in range(len(queries))]

        agree = float(np.mean([np.mean(a == b) for a, b in zip(together(), separate())]))
        stats = measure_alternating({"together": together, "separate": separate}, device, args.repeats)
        together_s, separate_s = stats["together"]["median_s"], stats["separate"]["median_s"]
        rows.append({
            "classes": count,
            "together_ms_per_query": 1000 * together_s / args.queries,
            "separate_ms_per_query": 1000 * separate_s / args.queries,
            "speedup_together_over_separate": separate_s / together_s,
            "label_agreement": agree,
        })

    report = {
        "arch": args.arch, "device": describe_device(device), "dtype": args.dtype, "threads": torch.get_num_threads(),
        "resolution": resolution, "queries": args.queries, "shots": args.shots, "batch_size": args.batch_size,
        "repeats": args.repeats, "rows": rows,
    }
    print(f"{args.queries} queries, {args.shots} shot(s) per class, {resolution}px, batch {args.batch_size}, "
          f"{args.arch} on {report['device']} {args.dtype}, {report['threads']} thread(s)")
    print_table(rows, [
        ("classes", "C", "d"), ("together_ms_per_query", "together ms/query", ".1f"),
        ("separate_ms_per_query", "C binary runs ms/query", ".1f"),
        ("speedup_together_over_separate", "separate / together", ".2f"), ("label_agreement", "same label", ".4f"),
    ])
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
