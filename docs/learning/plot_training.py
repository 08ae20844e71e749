"""Plot a `diffews train` run: training loss and validation mIoU against optimizer steps.

Reads the run's TensorBoard logs (``<output_dir>/logs``: ``train/loss``, ``val/miou``,
``final/miou``) and writes a PNG. Needs matplotlib (``pip install matplotlib``). Several runs that
continue one another are drawn as one curve: ``DIR@OFFSET`` shifts a run's steps by OFFSET (a run
started from an earlier run's weights counts its steps from 0); a dotted line marks where it starts.
A run may also be a ``--json`` file this script wrote, for a run whose logs are gone.

    python docs/learning/plot_training.py outputs/icons-w44 docs/learning/training.png
    python docs/learning/plot_training.py outputs/icons-fold0 outputs/icons-fold0-continue@2750 docs/learning/training.png
    python docs/learning/plot_training.py docs/learning/tried/w44-128-training.json outputs/icons-w44-256@10500 \
        outputs/icons-w44-256-more@12500 docs/learning/training.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of the run's event files: tag -> sorted (step, value), later writes winning."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, dict[int, float]] = {}
    for events in sorted((run / "logs").rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            series.setdefault(tag, {}).update({e.step: e.value for e in accumulator.Scalars(tag)})
    return {tag: sorted(values.items()) for tag, values in series.items()}


def read_series(run: Path) -> dict[str, list[tuple[int, float]]]:
    """A run's scalar series: from its TensorBoard logs, or from a ``--json`` file this script wrote
    (whose continuations are already applied)."""
    if run.suffix != ".json":
        return read_scalars(run)
    saved = json.loads(run.read_text())
    return {tag: [(int(step), float(value)) for step, value in saved[tag]] for tag in ("train/loss", "val/miou")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="the runs' output_dirs (or --json files), in order, each optionally DIR@OFFSET")
    parser.add_argument("png", type=Path, help="image to write")
    parser.add_argument("--json", type=Path, default=None, help="also write the series as JSON")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loss: dict[int, float] = {}
    miou: dict[int, float] = {}
    starts = []
    for run in args.runs:
        folder, _, offset = run.partition("@")
        offset = int(offset or 0)
        scalars = read_series(Path(folder))
        if offset:
            starts.append(offset)
            # A continuation replaces what the earlier run logged after its starting point.
            loss = {step: value for step, value in loss.items() if step <= offset}
            miou = {step: value for step, value in miou.items() if step <= offset}
        loss.update({offset + step: value for step, value in scalars.get("train/loss", [])})
        miou.update({offset + step: value for step, value in scalars.get("val/miou", []) + scalars.get("final/miou", [])})
    loss, miou = sorted(loss.items()), sorted(miou.items())
    figure, left = plt.subplots(figsize=(7, 4), dpi=120)
    left.plot(*zip(*loss), color="tab:blue", linewidth=1, label="training loss (mean of logged window)")
    left.set_xlabel("optimizer step")
    left.set_ylabel("OI2M loss (MSE)", color="tab:blue")
    left.set_yscale("log")
    right = left.twinx()
    right.plot(*zip(*miou), color="tab:red", marker="o", markersize=3, label="validation mIoU")
    for start in starts:
        left.axvline(start, color="gray", linestyle=":", linewidth=1)
    right.set_ylabel("validation mIoU (%)", color="tab:red")
    figure.legend(loc="upper center", ncol=2, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0, 1, 0.93))
    args.png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.png)
    if args.json:
        args.json.write_text(json.dumps({"train/loss": loss, "val/miou": miou, "continuations": starts}, indent=1) + "\n")
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
