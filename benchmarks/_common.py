"""Timing, peak-memory, synthetic-input and report helpers shared by the benchmark scripts."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffews.io import write_text

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")
RESET_PEAK_RSS = "5"  # Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds taken by each of `repeats` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA allocator peak, or the process's peak RSS on CPU)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    elif CLEAR_REFS.exists():
        try:
            CLEAR_REFS.write_text(RESET_PEAK_RSS)
        except OSError:
            pass


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak since `reset_peak_memory`: CUDA bytes allocated, or on CPU the process's peak RSS
    (weights included); None where the platform does not tell."""
    if device.type == "cuda":
        synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    if STATUS.exists():
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def measure(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> dict[str, float | None]:
    """Median (and min) seconds per call of `fn` over `repeats` timed calls, and the peak memory while they ran."""
    return measure_alternating({"fn": fn}, device, repeats, warmup)["fn"]


def measure_alternating(
    fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int = 1
) -> dict[str, dict[str, float | None]]:
    """`measure` for several functions, timed in turns (a b c a b c ...) so that load from other
    processes or clock changes hit all of them alike; peak memory is tracked per function."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    peaks: dict[str, int | None] = {name: None for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            reset_peak_memory(device)
            times[name] += timed(fn, device, 1, warmup=0)
            peak = peak_memory_bytes(device)
            peaks[name] = peak if peaks[name] is None else max(peaks[name], peak)
    return {
        name: {"median_s": statistics.median(t), "min_s": min(t), "peak_bytes": peaks[name]} for name, t in times.items()
    }


def random_images(rng: np.random.Generator, count: int, size: int) -> list[np.ndarray]:
    """`count` random RGB uint8 images ``(size, size, 3)``."""
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]


def box_masks(count: int, size: int) -> list[np.ndarray]:
    """`count` binary ``(size, size)`` masks with the central square of half the side set."""
    mask = np.zeros((size, size), bool)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
    return [mask.copy() for _ in range(count)]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """Human-readable device name for reports."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> None:
    """Print `rows` as an aligned table; `columns` are (key, header, format spec) triples."""

    def cell(row: dict[str, Any], key: str, spec: str) -> str:
        value = row.get(key)
        return "-" if value is None else format(value, spec)

    cells = [[header for _, header, _ in columns]] + [[cell(row, key, spec) for key, _, spec in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    for line in cells:
        print("  ".join(text.rjust(width) if i else text.ljust(width) for i, (text, width) in enumerate(zip(line, widths))))


def mebibytes(value: int | None) -> float | None:
    return None if value is None else value / 2**20


def write_json(path: Path, report: dict[str, Any]) -> None:
    """Write `report` as indented JSON, atomically (a run cut short never leaves half a file), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
