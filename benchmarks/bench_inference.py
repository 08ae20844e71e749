"""Inference speed and memory: our uncached and cached paths, each speed option, a component split,
FLOPs, and Hugging Face transformers' SegGPT as a peer, measured side by side in one run.

Prints tables (ratios included) and writes a JSON report.

    python benchmarks/bench_inference.py                              # tiny config, CPU
    python benchmarks/bench_inference.py --arch sd21 --device cuda --dtypes float32 bfloat16 float16 --compile
    python benchmarks/bench_inference.py --quick                      # seconds: checks the script runs

``--arch sd21`` builds the full SD 2.1 VAE + UNet from `diffews.modeling.sd21` with random weights
(cost does not depend on weight values). The peer is `SegGptForImageSegmentation` from
``SegGptConfig()`` (random weights, 448 px, one prompt); ``--peer tiny`` shrinks it for quick runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    box_masks,
    describe_device,
    measure,
    measure_alternating,
    mebibytes,
    print_table,
    random_images,
    resolve_device,
    write_json,
)
from torch.utils.flop_counter import FlopCounterMode

from diffews import DiffewSPipeline, SpeedOptions
from diffews._testing import build_tiny_model
from diffews.errors import InputError
from diffews.modeling.config import TORCH_DTYPES as DTYPES
from diffews.modeling.mask_decoder import MaskDecoder
from diffews.modeling.sd21 import SD21_RESOLUTION, build_sd21_model
from diffews.processing.thresholds import masks_at_sizes

SEGGPT_RESOLUTION = 448
TINY_SEGGPT = dict(hidden_size=32, num_hidden_layers=5, num_attention_heads=2, image_size=(128, 64),
                   intermediate_hidden_state_indices=(1, 2, 3, 4), decoder_hidden_size=16, merge_index=0)
# Dense float16/bfloat16 tensor-core peaks (TFLOP/s) by device name fragment. No float32 peak is
# given: cuDNN runs float32 convolutions on TF32 tensor cores by default and matrix products in full
# float32, so no single peak bounds a float32 run (pass --peak-tflops to compare against one).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["tiny", "sd21"], default="tiny", help="model architecture (random weights)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=None,
                        help="weight dtypes to measure; default float32 on CPU, float32 bfloat16 float16 on CUDA")
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 5], help="support shots K")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8], help="queries per model call")
    parser.add_argument("--resolution", type=int, default=None, help="working resolution; default: the model's")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before each measurement")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    parser.add_argument("--peer", choices=["default", "tiny", "none"], default="default",
                        help="SegGPT config of the peer: default (the released architecture), tiny (quick runs), none")
    parser.add_argument("--peer-repeats", type=int, default=None, help="timed SegGPT calls; default --repeats")
    parser.add_argument("--peak-tflops", type=float, default=None, help="device peak for the achieved fraction")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-sd21-flops", dest="sd21_flops", action="store_false",
                        help="skip the FLOP count of the full SD 2.1 architecture and SegGPT (meta device, no weights)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat: only checks that the script works")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/inference.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.shots, args.batch_sizes, args.repeats, args.warmup = [1], [1, 2], 1, 1
        args.peer = "tiny" if args.peer == "default" else args.peer
        args.sd21_flops = False
    return args


def build_pipeline(arch: str, device: torch.device, dtype: torch.dtype, speed: SpeedOptions | None = None) -> DiffewSPipeline:
    model = build_tiny_model() if arch == "tiny" else build_sd21_model(device=device)
    pipe = DiffewSPipeline(model.to(device=device, dtype=dtype), speed)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def count_flops(fn) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fn()
    return counter.get_total_flops()


class Bench:
    """One run's settings, inputs and results."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args, self.device = args, device
        self.rows: dict[str, list[dict[str, Any]]] = {"paths": [], "options": [], "components": [], "peer": [], "headline": []}
        size = args.resolution or (64 if args.arch == "tiny" else 512)
        self.resolution = size
        rng = np.random.default_rng(0)
        self.queries = random_images(rng, max(args.batch_sizes), size)
        self.supports = random_images(rng, max(args.shots), size)
        self.masks = box_masks(max(args.shots), size)

    def segment_call(self, pipe: DiffewSPipeline, shots: int, batch: int, cached: bool):
        """A call segmenting `batch` queries with a `shots`-shot support set, encoded in the call or once before."""
        queries, supports, masks = self.queries[:batch], self.supports[:shots], self.masks[:shots]
        if cached:
            support = pipe.encode_support(supports, masks, resolution=self.resolution)
            return lambda: pipe(queries, support=support, resolution=self.resolution, batch_size=batch).probabilities
        return lambda: pipe(queries, supports, masks, resolution=self.resolution, batch_size=batch).probabilities

    def compare(self, calls: dict[str, Any], shots: int, batch: int) -> dict[str, dict[str, Any]]:
        """Time `calls` in turns; a row per call with latency, throughput, peak memory and its
        largest probability difference from the first call's."""
        outputs = {name: call() for name, call in calls.items()}
        stats = measure_alternating(calls, self.device, self.args.repeats, self.args.warmup)
        reference = next(iter(outputs.values()))
        return {name: {"shots": shots, "batch": batch, "ms_per_query": 1000 * s["median_s"] / batch,
                       "queries_per_s": batch / s["median_s"], "peak_mib": mebibytes(s["peak_bytes"]),
                       "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(reference, outputs[name]))}
                for name, s in stats.items()}

    def paths(self, dtype_name: str) -> None:
        pipe = build_pipeline(self.args.arch, self.device, DTYPES[dtype_name])
        for shots in self.args.shots:
            for batch in self.args.batch_sizes:
                calls = {path: self.segment_call(pipe, shots, batch, path == "cached") for path in ("uncached", "cached")}
                rows = self.compare(calls, shots, batch)
                rows["cached"]["speedup_vs_uncached"] = rows["uncached"]["ms_per_query"] / rows["cached"]["ms_per_query"]
                self.rows["paths"] += [{"dtype": dtype_name, "path": path, **row} for path, row in rows.items()]
        self.components(pipe, dtype_name)
        del pipe

    def components(self, pipe: DiffewSPipeline, dtype_name: str) -> None:
        """Each stage of one cached query (batch 1), and the support pass, timed apart."""
        model, size = pipe.model, self.resolution
        generator = torch.Generator().manual_seed(0)
        query = (torch.rand(1, 3, size, size, generator=generator) * 2 - 1).to(self.device, model.dtype)
        for shots in self.args.shots:
            images = (torch.rand(1, shots, 3, size, size, generator=generator) * 2 - 1).to(self.device, model.dtype)
            masks = torch.tensor(np.stack(self.masks[:shots]))[None, :, None].to(self.device, model.dtype)
            with torch.no_grad():
                support = model.encode_support(images, masks)
                latents = model.encode_images(query)
                mask_latents = model.predict_mask_latents(latents, support)
                mask_images = model.decode_mask_images(mask_latents)
                image_latents = model.encode_images(images.flatten(0, 1))[None]
                mask_image_latents = model.encode_masks(masks.flatten(0, 1))[None]
            stages = {
                "support VAE encode": lambda: (model.encode_images(images.flatten(0, 1)), model.encode_masks(masks.flatten(0, 1))),
                "support UNet pass": lambda: model.support_context(image_latents, mask_image_latents),
                "query VAE encode": lambda: model.encode_images(query),
                "query UNet pass": lambda: model.predict_mask_latents(latents, support),
                "VAE decode": lambda: model.decode_mask_images(mask_latents),
                "post-processing": lambda: masks_at_sizes(mask_images, [(size, size)], 0.25, "relative"),
            }
            total_query = 0.0
            for stage, fn in stages.items():
                with torch.no_grad():
                    seconds = measure(fn, self.device, self.args.repeats, self.args.warmup)["median_s"]
                    flops = count_flops(fn)
                per_query = not stage.startswith("support")
                total_query += seconds if per_query else 0.0
                self.rows["components"].append({"dtype": dtype_name, "shots": shots, "stage": stage, "ms": 1000 * seconds,
                                                "gflop": flops / 1e9, "tflop_per_s": flops / seconds / 1e12})
            for row in self.rows["components"][-len(stages):]:
                if not row["stage"].startswith("support"):
                    row["share_of_query"] = row["ms"] / 1000 / total_query
            query_flops = sum(r["gflop"] for r in self.rows["components"][-len(stages):] if "share_of_query" in r) * 1e9
            peak = self.peak_flops(dtype_name)
            self.rows["components"].append({
                "dtype": dtype_name, "shots": shots, "stage": "one cached query", "ms": 1000 * total_query,
                "gflop": query_flops / 1e9, "tflop_per_s": query_flops / total_query / 1e12,
                "peak_fraction": None if peak is None else query_flops / total_query / peak,
            })

    def peak_flops(self, dtype_name: str) -> float | None:
        if self.args.peak_tflops is not None:
            return self.args.peak_tflops * 1e12
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
            for fragment, half in PEAK_TFLOPS.items():
                if fragment in name and dtype_name != "float32":
                    return 1e12 * half
        return None

    def options(self, dtype_name: str) -> None:
        """Each speed option alone against the default path (cached, 1 shot, the largest batch)."""
        shots, batch = min(self.args.shots), max(self.args.batch_sizes)
        variants = {"default": SpeedOptions(), "channels_last": SpeedOptions(channels_last=True)}
        backends = ["math", "efficient", "flash"] if self.device.type == "cuda" else ["math", "flash"]
        variants.update({f"sdpa={name}": SpeedOptions(sdpa_backend=name) for name in backends})
        if dtype_name == "float32":
            variants["autocast=bfloat16"] = SpeedOptions(autocast="bfloat16")
        if self.args.compile:
            variants["compile"] = SpeedOptions(compile=True, static_batch=True)
        calls, first_call_s = {}, {}
        for name, speed in variants.items():
            try:  # the support is encoded here: a forced kernel can fail already
                started = time.perf_counter()
                call = self.segment_call(build_pipeline(self.args.arch, self.device, DTYPES[dtype_name], speed), shots, batch, True)
                call()
                first_call_s[name] = time.perf_counter() - started
                print(f"{dtype_name} {name}: first call {first_call_s[name]:.1f} s (build, support pass and any compiling)")
            except (RuntimeError, InputError) as error:  # e.g. a kernel this device/dtype lacks
                print(f"skipped {name}: {str(error).splitlines()[0]}")
                continue
            calls[name] = call
        rows = self.compare(calls, shots, batch)
        for name, row in rows.items():
            row["speedup_vs_default"] = rows["default"]["ms_per_query"] / row["ms_per_query"]
            row["first_call_s"] = first_call_s[name]
            self.rows["options"].append({"dtype": dtype_name, "option": name, **row})

    def peer(self, dtype_name: str) -> None:
        """SegGPT, one prompt, 448 px, batch 1: latency, memory, FLOPs; ratios against our cached path."""
        from transformers import SegGptConfig, SegGptForImageSegmentation

        config = SegGptConfig() if self.args.peer == "default" else SegGptConfig(**TINY_SEGGPT)
        size = SEGGPT_RESOLUTION if self.args.peer == "default" else config.image_size[1]
        torch.manual_seed(0)
        with torch.device(self.device):
            model = SegGptForImageSegmentation(config).eval().to(DTYPES[dtype_name])
        image = torch.rand(1, 3, size, size, device=self.device, dtype=DTYPES[dtype_name])

        def call():
            with torch.no_grad():
                return model(pixel_values=image, prompt_pixel_values=image, prompt_masks=image).pred_masks

        repeats = self.args.peer_repeats or self.args.repeats
        stats = measure(call, self.device, repeats, self.args.warmup)  # alone: its memory is its own
        ours = next(r for r in self.rows["paths"] if r["dtype"] == dtype_name and r["path"] == "cached"
                    and r["shots"] == 1 and r["batch"] == 1) if 1 in self.args.shots and 1 in self.args.batch_sizes else None
        row = {"dtype": dtype_name, "peer": f"SegGPT ({self.args.peer} config)", "resolution": size,
               "ms_per_query": 1000 * stats["median_s"], "peak_mib": mebibytes(stats["peak_bytes"]),
               "gflop": count_flops(call) / 1e9}
        if ours is not None:  # the latency ratio from the two timed in turns; peak memory from each measured alone
            pipe = build_pipeline(self.args.arch, self.device, DTYPES[dtype_name])
            turns = measure_alternating({"ours": self.segment_call(pipe, 1, 1, True), "peer": call}, self.device, repeats, self.args.warmup)
            row["ours_ms_per_query"] = 1000 * turns["ours"]["median_s"]
            row["latency_ratio_ours_over_peer"] = turns["ours"]["median_s"] / turns["peer"]["median_s"]
            if ours["peak_mib"] and row["peak_mib"]:
                row["memory_ratio_ours_over_peer"] = ours["peak_mib"] / row["peak_mib"]
            del pipe
        self.rows["peer"].append(row)
        del model

    def headline(self, dtypes: list[str]) -> None:
        """Each lower precision's cached path against float32 uncached (1 shot, the largest batch), timed in turns."""
        lower = [name for name in dtypes if name != "float32"]
        if "float32" not in dtypes or not lower or 1 not in self.args.shots:
            return
        batch = max(self.args.batch_sizes)
        reference = build_pipeline(self.args.arch, self.device, DTYPES["float32"])
        for dtype_name in lower:
            pipe = build_pipeline(self.args.arch, self.device, DTYPES[dtype_name])
            calls = {"float32 uncached": self.segment_call(reference, 1, batch, False), f"{dtype_name} cached": self.segment_call(pipe, 1, batch, True)}
            rows = self.compare(calls, 1, batch)
            self.rows["headline"].append({
                "dtype": dtype_name, "batch": batch, **{f"{name} queries_per_s": row["queries_per_s"] for name, row in rows.items()},
                "ratio": rows[f"{dtype_name} cached"]["queries_per_s"] / rows["float32 uncached"]["queries_per_s"],
            })
            del pipe


def architecture_flops(shots: list[int]) -> list[dict[str, Any]]:
    """FLOPs of each stage of the full SD 2.1 DiffewS at 512 px and of the default SegGPT at 448 px,
    counted on the meta device (shapes only: no weights allocated, nothing computed)."""
    from transformers import SegGptConfig, SegGptForImageSegmentation

    model = build_sd21_model(device="meta")
    size, latent = SD21_RESOLUTION, SD21_RESOLUTION // 8
    query = torch.zeros(1, 3, size, size, device="meta")
    latents = torch.zeros(1, 4, latent, latent, device="meta")
    with torch.device("meta"):
        mask_decoder = MaskDecoder()
        peer = SegGptForImageSegmentation(SegGptConfig()).eval()
    peer_image = torch.zeros(1, 3, SEGGPT_RESOLUTION, SEGGPT_RESOLUTION, device="meta")
    peer_flops = count_flops(lambda: peer(pixel_values=peer_image, prompt_pixel_values=peer_image, prompt_masks=peer_image))
    rows = []
    for k in shots:
        images, masks = torch.zeros(1, k, 3, size, size, device="meta"), torch.zeros(1, k, 1, size, size, device="meta")
        support = model.encode_support(images, masks)
        stages = {
            "support pass (VAE encode + UNet), once per support set": count_flops(lambda: model.encode_support(images, masks)),
            "query VAE encode": count_flops(lambda: model.encode_images(query)),
            "query UNet pass": count_flops(lambda: model.predict_mask_latents(latents, support)),
            "VAE decode": count_flops(lambda: model.decode_probabilities(latents)),
            "distilled mask decoder (default widths)": count_flops(lambda: mask_decoder(latents)),
        }
        per_query = stages["query VAE encode"] + stages["query UNet pass"]
        stages["one cached query, VAE decoder"] = per_query + stages["VAE decode"]
        stages["one cached query, distilled decoder"] = per_query + stages["distilled mask decoder (default widths)"]
        rows += [{"shots": k, "stage": name, "gflop": flops / 1e9, "vs_seggpt": flops / peer_flops} for name, flops in stages.items()]
    rows.append({"shots": 1, "stage": "SegGPT (default config, 448 px, one prompt)", "gflop": peer_flops / 1e9, "vs_seggpt": 1.0})
    return rows


def print_report(bench: Bench, header: str) -> None:
    print(header)
    print("\nper-query latency, throughput and peak memory")
    print_table(bench.rows["paths"], [("dtype", "dtype", ""), ("shots", "K", "d"), ("batch", "batch", "d"), ("path", "path", ""),
                                      ("ms_per_query", "ms/query", ".2f"), ("queries_per_s", "queries/s", ".1f"),
                                      ("peak_mib", "peak MiB", ".0f"), ("speedup_vs_uncached", "x uncached", ".2f"),
                                      ("max_abs_diff", "max |diff|", ".1e")])
    print("\nspeed options (cached path), each alone against the default (peak MiB: every variant's weights stay loaded)")
    print_table(bench.rows["options"], [("dtype", "dtype", ""), ("option", "option", ""), ("ms_per_query", "ms/query", ".2f"),
                                        ("speedup_vs_default", "x default", ".2f"), ("max_abs_diff", "max |diff|", ".1e"),
                                        ("peak_mib", "peak MiB", ".0f")])
    print("\ncomponent split (batch 1)")
    print_table(bench.rows["components"], [("dtype", "dtype", ""), ("shots", "K", "d"), ("stage", "stage", ""), ("ms", "ms", ".2f"),
                                           ("share_of_query", "share", ".0%"), ("gflop", "GFLOP", ".2f"),
                                           ("tflop_per_s", "TFLOP/s", ".3f"), ("peak_fraction", "of peak", ".1%")])
    if bench.rows.get("sd21_flops"):
        print("\nFLOPs of the full architectures (batch 1; ours at 512 px, SegGPT at 448 px)")
        print_table(bench.rows["sd21_flops"], [("shots", "K", "d"), ("stage", "stage", ""), ("gflop", "GFLOP", ".1f"),
                                               ("vs_seggpt", "x SegGPT", ".3f")])
    if bench.rows["peer"]:
        print("\npeer: transformers SegGptForImageSegmentation, one prompt, batch 1 (ratios: ours cached 1-shot / peer)")
        print_table(bench.rows["peer"], [("dtype", "dtype", ""), ("peer", "peer", ""), ("resolution", "px", "d"),
                                         ("ms_per_query", "peer ms", ".2f"), ("ours_ms_per_query", "ours ms", ".2f"),
                                         ("latency_ratio_ours_over_peer", "latency ratio", ".3f"), ("peak_mib", "peer MiB", ".0f"),
                                         ("memory_ratio_ours_over_peer", "memory ratio", ".2f"), ("gflop", "peer GFLOP", ".1f")])


def summarise_targets(rows: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    """The issue's headline ratios where this run timed both sides in turns (1 shot, largest batch)."""
    name = "throughput {} cached / float32 uncached (1 shot, largest batch)"
    targets = {}
    float32 = [r for r in rows["paths"] if r["dtype"] == "float32" and r["path"] == "cached" and r["shots"] == 1]
    if float32:
        targets[name.format("float32")] = max(float32, key=lambda r: r["batch"])["speedup_vs_uncached"]
    targets.update({name.format(r["dtype"]): r["ratio"] for r in rows["headline"]})
    return targets


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtypes = args.dtypes or (["float32", "bfloat16", "float16"] if device.type == "cuda" else ["float32"])
    bench = Bench(args, device)
    for dtype_name in dtypes:
        bench.paths(dtype_name)
        bench.options(dtype_name)
        if args.peer != "none":
            bench.peer(dtype_name)
        write_json(args.json, build_report(args, bench, device))  # kept if a later dtype is interrupted
    bench.headline(dtypes)
    if args.sd21_flops:
        bench.rows["sd21_flops"] = architecture_flops(args.shots)
    header = (f"{args.arch} architecture (random weights), {bench.resolution}px, on {describe_device(device)}, "
              f"median of {args.repeats} after {args.warmup} warm-up")
    print_report(bench, header)
    report = build_report(args, bench, device)
    for name, value in report["targets"].items():
        print(f"{name}: {value:.2f}x")
    write_json(args.json, report)
    return report


def build_report(args: argparse.Namespace, bench: Bench, device: torch.device) -> dict[str, Any]:
    """The JSON report of what `bench` has measured so far."""
    return {"arch": args.arch, "device": describe_device(device), "resolution": bench.resolution,
            "repeats": args.repeats, "warmup": args.warmup, "torch": torch.__version__,
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "targets": summarise_targets(bench.rows), **bench.rows}


if __name__ == "__main__":
    main()
