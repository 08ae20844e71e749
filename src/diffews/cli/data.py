"""`diffews data`: check a benchmark's files, write its split lists, build one from cut-outs."""

from __future__ import annotations

import argparse

from ..data import BENCHMARKS, get_benchmark, split_lists_folder
from ..errors import InputError
from ..io import replace_folder, require_new_folder
from ..paths import user_path
from .common import output_path
from .data_build import add_commands as add_build_commands

DESCRIPTION = (
    "Benchmark data: check the folder layout, write split lists (layouts: 'Benchmark data' in the README); "
    "build a benchmark from cut-out objects (icons, emoji, backgrounds, composite)."
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="check benchmark folders, write split lists, build benchmarks from cut-outs", description=DESCRIPTION)
    commands = parser.add_subparsers(title="data commands", metavar="ACTION", required=True)

    check = commands.add_parser("check", help="report what a benchmark root holds and what is missing, with counts")
    check.add_argument("benchmark", choices=list(BENCHMARKS), help="which benchmark")
    check.add_argument("root", help="data root (custom: the folder of class folders)")
    check.add_argument(
        "--splits", default=None, metavar="DIR",
        help="also check a folder of split lists (FSS-1000: the class lists trn.txt, val.txt, test.txt; 'hsnet': the published ones)",
    )
    check.set_defaults(run=run_check)

    splits = commands.add_parser(
        "splits", help="write split lists: <out>/<split>/fold<i>.txt generated from the annotations (FSS-1000: the class lists)"
    )
    with_lists = [name for name, benchmark in BENCHMARKS.items() if benchmark.write_split_lists is not None]
    splits.add_argument("benchmark", choices=with_lists, help="which benchmark")
    splits.add_argument("root", help="data root")
    splits.add_argument("--out", type=output_path, required=True, metavar="DIR", help="folder to write the lists into (pass it to --splits later)")
    splits.set_defaults(run=run_splits)
    add_build_commands(commands)


def run_check(args: argparse.Namespace) -> int:
    benchmark = get_benchmark(args.benchmark)
    root = user_path(args.root)
    items = benchmark.check(root, split_lists_folder(benchmark, args.splits))
    for item in items:
        print(item)
    problems = [item for item in items if item.missing]
    if problems:
        raise InputError(f"{args.benchmark} at {root}: {len(problems)} problem(s), see above (layouts: 'Benchmark data' in the README)")
    print(f"{args.benchmark} at {root}: complete")
    return 0


def run_splits(args: argparse.Namespace) -> int:
    benchmark = get_benchmark(args.benchmark)
    root, out = user_path(args.root), user_path(args.out)
    require_new_folder(out, "split lists go into a new or empty --out")  # never over files of the user's
    lines: list[str] = []
    replace_folder(out, lambda folder: lines.extend(benchmark.write_split_lists(root, folder)), "write the split lists here")
    for line in lines:
        print(line)
    print(f"wrote {args.benchmark} split lists to {out}")
    return 0
