"""`diffews data`: check a benchmark's files, write its split lists."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data import BENCHMARKS, benchmark_module, fss
from ..data.splits import write_pair_lists, write_text_atomic
from ..errors import InputError

DESCRIPTION = "Benchmark data: check the folder layout, write split lists (layouts: 'Benchmark data' in the README)."


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check benchmark folders, write split lists", description=DESCRIPTION)
    commands = parser.add_subparsers(title="data commands", metavar="ACTION", required=True)

    check = commands.add_parser("check", help="report what a benchmark root holds and what is missing, with counts")
    check.add_argument("benchmark", choices=list(BENCHMARKS), help="which benchmark")
    check.add_argument("root", help="data root (custom: the folder of class folders)")
    check.add_argument("--splits", default=None, metavar="DIR", help="FSS-1000 only: folder with trn.txt, val.txt, test.txt")
    check.set_defaults(run=run_check)

    splits = commands.add_parser(
        "splits", help="write split lists: <out>/<split>/fold<i>.txt generated from the annotations (FSS-1000: the class lists)"
    )
    splits.add_argument("benchmark", choices=[b for b in BENCHMARKS if b != "custom"], help="which benchmark")
    splits.add_argument("root", help="data root")
    splits.add_argument("--out", required=True, metavar="DIR", help="folder to write the lists into (pass it to --splits later)")
    splits.set_defaults(run=run_splits)


def run_check(args: argparse.Namespace) -> int:
    module = benchmark_module(args.benchmark)
    root = Path(args.root).expanduser()
    items = module.check(root, Path(args.splits)) if module is fss and args.splits else module.check(root)
    for item in items:
        print(item)
    problems = [item for item in items if item.missing]
    if problems:
        raise InputError(f"{args.benchmark} at {root}: {len(problems)} problem(s), see above (layouts: 'Benchmark data' in the README)")
    print(f"{args.benchmark} at {root}: complete")
    return 0


def run_splits(args: argparse.Namespace) -> int:
    module = benchmark_module(args.benchmark)
    root, out = Path(args.root).expanduser(), Path(args.out).expanduser()
    if module is fss:
        lists = {split: fss.class_list(split) for split in fss.SPLITS}
        out.mkdir(parents=True, exist_ok=True)
        for split, names in lists.items():
            write_text_atomic(out / f"{split}.txt", "".join(f"{n}\n" for n in names))
        print(f"wrote FSS-1000 class lists ({', '.join(f'{s} {len(n)}' for s, n in lists.items())}) to {out}")
        return 0
    generated = {split: module.generate_pairs(root, split) for split in module.SPLITS}
    for split, pairs in generated.items():
        write_pair_lists(pairs, out / split)
        print(f"{split}: " + ", ".join(f"fold{f} {len(p)} pairs" for f, p in sorted(pairs.items())))
    print(f"wrote {args.benchmark} split lists to {out}")
    return 0
