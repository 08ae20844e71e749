"""Evaluation throughput for 1 and N processes under ``accelerate launch``: episodes/s and the scaling ratio.

Runs ``accelerate launch [--multi_gpu --num_processes N] -m diffews evaluate`` on a synthetic custom
benchmark, the process counts alternating, and reads each run's episodes/s from its report (the
evaluation loop's time, the slowest process's: start-up and model loading are not in it; the
whole command's wall time is printed beside it). Every run's report must equal the one-process
report apart from its timings, so the benchmark also checks that sharding changes no number.

    python benchmarks/bench_scaling.py                           # tiny model, CPU (gloo), 1 and 2 processes
    python benchmarks/bench_scaling.py --device cuda --processes 1 2 4 8 --model ./diffews-coco --resolution 512
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import print_table, write_json
from PIL import Image

TIMINGS = ("elapsed_s", "episodes_per_s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-random", help="DiffewS folder; default: the tiny random model")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts to compare (default 1 2)")
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=None, help="working resolution (default: the model's)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each process count, alternating (best kept)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu: gloo processes of one thread each; cuda: one GPU each")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/scaling.json"))
    return parser.parse_args(argv)


def write_dataset(root: Path, classes: int = 4, images: int = 8, size: int = 96) -> None:
    """A custom benchmark: `classes` folders of `images` random photos with a box mask each."""
    rng = np.random.default_rng(0)
    for class_index in range(classes):
        folder = root / f"class{class_index}"
        folder.mkdir(parents=True)
        for number in range(images):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"photo{number}.jpg")
            mask = np.zeros((size, size), np.uint8)
            top, left = rng.integers(0, size // 2, 2)
            mask[top : top + size // 3, left : left + size // 3] = 255
            Image.fromarray(mask).save(folder / f"photo{number}_mask.png")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(args: argparse.Namespace, processes: int, data: Path, report: Path) -> float:
    """Run the evaluation as `processes` processes; returns the command's wall time in seconds."""
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if launcher is None:
        sys.exit("error: the accelerate launcher is not installed (pip install 'diffews[train]')")
    command = [launcher, "launch", "--num_processes", str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes > 1:
        command += ["--multi_gpu", "--main_process_port", str(_free_port())]
    command += [
        "-m", "diffews", "evaluate", "--model", args.model, "--benchmark", "custom", "--root", str(data),
        "--episodes", str(args.episodes), "--batch-size", str(args.batch_size), "--workers", "0", "--out", str(report),
        *(["--resolution", str(args.resolution)] if args.resolution else []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if args.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "true"
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: {processes} process(es) failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    rows: dict[int, dict] = {}
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="diffews-scaling-") as folder:
        data = Path(folder) / "data"
        write_dataset(data)
        reference = None
        for repeat in range(args.repeats):
            for processes in args.processes:
                report_path = Path(folder) / f"report-{processes}-{repeat}.json"
                wall = launch(args, processes, data, report_path)
                report = json.loads(report_path.read_text())
                numbers = {k: v for k, v in report["results"]["all"].items() if k not in TIMINGS}
                reference = reference or numbers
                if numbers != reference:
                    sys.exit(f"error: {processes} processes reported other numbers than {args.processes[0]}: {numbers} vs {reference}")
                speed = report["results"]["all"]["episodes_per_s"]
                runs.append({"processes": processes, "repeat": repeat, "episodes_per_s": speed, "wall_s": wall})
                print(f"run {repeat + 1}/{args.repeats}, {processes} process(es): {speed:.2f} episodes/s, command {wall:.1f} s", flush=True)
                best = rows.get(processes)
                if best is None or speed > best["episodes_per_s"]:
                    rows[processes] = {"processes": processes, "episodes_per_s": speed, "wall_s": wall, "miou": numbers["miou"]}
    base = rows[args.processes[0]]["episodes_per_s"]
    for row in rows.values():
        row["scaling"] = row["episodes_per_s"] / base
        row["efficiency"] = row["scaling"] / (row["processes"] / args.processes[0])
    table = list(rows.values())
    print(f"{args.model}, {args.episodes} episodes, batch {args.batch_size}, {args.device}, best of {args.repeats}; "
          f"{os.cpu_count()} CPU cores on this machine, load average {os.getloadavg()[0]:.1f} (other work competes for them)")
    print_table(table, [
        ("processes", "processes", "d"), ("episodes_per_s", "episodes/s", ".2f"), ("scaling", "scaling", ".2f"),
        ("efficiency", "efficiency", ".2f"), ("wall_s", "command wall s", ".1f"), ("miou", "mIoU (same for all)", ".4f"),
    ])
    result = {"model": args.model, "device": args.device, "episodes": args.episodes, "batch_size": args.batch_size,
              "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "rows": table, "runs": runs}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
