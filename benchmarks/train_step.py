"""Cost of one DiffewS training step (1 query + 1 shot, AdamW), without vs with gradient checkpointing,
for each mixed-precision setting of the trainer.

    python benchmarks/train_step.py                                    # tiny model, CPU fp32
    python benchmarks/train_step.py --full --mixed-precision no bf16 fp16   # SD-2.1-sized random model at 512 px on CUDA

Prints steps/s and peak GPU memory of each setting side by side, and their ratios; writes a JSON report.
The two checkpointing settings of a precision are timed in turns (off, on, off, on, ...), so that load or clock
changes hit both alike; each one's peak memory is its own (what it allocated above what was there before it was built).
Each step runs as the trainer runs it: the UNet in float32 under autocast of the chosen dtype (a grad
scaler for fp16), the frozen VAE cast to that dtype. Random weights cost the same as trained ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from _common import describe_device, measure_alternating, print_table, write_json

from diffews._testing import TINY_RESOLUTION, build_tiny_model
from diffews.modeling import DiffewSModel
from diffews.modeling.sd21 import SD21_RESOLUTION, build_sd21_model
from diffews.training.trainer import MIXED_DTYPES, cast_module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="SD-2.1-sized random model at 512 px (needs a GPU)")
    parser.add_argument("--mixed-precision", nargs="+", choices=list(MIXED_DTYPES), default=["no"],
                        help="the trainer's precision.mixed_precision settings to measure")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/train_step.json"))
    return parser.parse_args(argv)


def build(full: bool, device: torch.device) -> tuple[DiffewSModel, int]:
    if full:
        return build_sd21_model(device=device), SD21_RESOLUTION
    torch.manual_seed(0)
    return build_tiny_model().to(device), TINY_RESOLUTION


def prepare(args: argparse.Namespace, precision: str, checkpointing: bool, device: torch.device) -> tuple[Callable[[], None], float | None]:
    """A training step of a new model with these settings, and its own peak GPU memory in GiB over the
    warm-up steps (None on CPU): the peak above what was allocated before the model was built."""
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model, size = build(args.full, device)
    dtype, half = MIXED_DTYPES[precision], precision != "no"
    cast_module(model.vae, dtype).eval()
    model.unet.train()
    if checkpointing:
        model.unet.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW([p for p in model.unet.parameters() if p.requires_grad], lr=1e-5, weight_decay=1e-2)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    generator = torch.Generator().manual_seed(0)
    query = (torch.rand(1, 3, size, size, generator=generator) * 2 - 1).to(device)
    support = (torch.rand(1, 1, 3, size, size, generator=generator) * 2 - 1).to(device)
    query_mask = (torch.rand(1, 1, size, size, generator=generator) > 0.5).float().to(device)
    support_mask = query_mask[:, None]

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=half):
            loss = model.training_loss(query, query_mask, support, support_mask)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.unet.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(max(args.warmup, 1)):  # the optimizer's state exists from the first step on
        step()
    peak = (torch.cuda.max_memory_allocated(device) - before) / 2**30 if device.type == "cuda" else None
    return step, peak


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for precision in args.mixed_precision:
        prepared = {checkpointing: prepare(args, precision, checkpointing, device) for checkpointing in (False, True)}
        times = measure_alternating({str(c): step for c, (step, _) in prepared.items()}, device, args.steps, warmup=0)
        off, on = (
            {"mixed_precision": precision, "gradient_checkpointing": c, "steps_per_s": 1 / times[str(c)]["median_s"],
             "ms_per_step": 1000 * times[str(c)]["median_s"], "peak_gib": prepared[c][1]}
            for c in (False, True)
        )
        on["speed_vs_off"] = on["steps_per_s"] / off["steps_per_s"]
        on["memory_vs_off"] = on["peak_gib"] / off["peak_gib"] if off["peak_gib"] else None
        rows += [off, on]
        del prepared
    name = f"SD-2.1-sized, {SD21_RESOLUTION} px" if args.full else f"tiny, {TINY_RESOLUTION} px"
    print(f"{name}, on {describe_device(device)}, 1 query + 1 shot per step, {args.steps} timed steps after {args.warmup}")
    print_table(rows, [("mixed_precision", "mixed precision", ""), ("gradient_checkpointing", "checkpointing", ""),
                       ("steps_per_s", "steps/s", ".2f"), ("ms_per_step", "ms/step", ".1f"), ("peak_gib", "peak GiB", ".2f"),
                       ("speed_vs_off", "speed vs off", ".2f"), ("memory_vs_off", "memory vs off", ".2f")])
    report = {"model": name, "device": describe_device(device), "torch": torch.__version__,
              "steps": args.steps, "warmup": args.warmup, "rows": rows}
    write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
