"""CPU throughput of the built-in EfficientNet-Lite backbones (converted to stock transformers models).

Baselines measured in the same run: transformers' stock EfficientNet-B0 (random init, swish + squeeze-excite) at
224, and each Lite model in float32. Rows: images/s at batch 32 in float32 and in bf16 autocast + channels_last,
and the ratio to the B0 float32 baseline. A last row measures what the no-op squeeze-excite layers (which the stock
class cannot leave out) cost: lite0 after ``strip_noop_squeeze_excite`` (bit-identical outputs, inference only).
ImageNet top-1 is the published figure of the TensorFlow repo; it cannot be measured here.

    python benchmarks/backbones_cpu.py [--batch 32] [--repeats 3] [--threads N] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from har_model.model_folder.torch_model import strip_noop_squeeze_excite  # noqa: E402
from har_model.train.backbones import BUILTIN_BACKBONES, builtin_checkpoint  # noqa: E402


def seconds_per_batch(model, x, bf16: bool) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of one forward pass; CPU time is what this process actually got on a shared box."""
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        start, cpu = time.perf_counter(), time.process_time()
        model(pixel_values=x)
        return time.perf_counter() - start, time.process_time() - cpu


def measure(rows, batch: int, repeats: int) -> dict[tuple[str, bool], tuple[float, float]]:
    """Best (images per wall-clock second, images per CPU second) per (row, bf16).

    Rows are measured round-robin, so a load change on a shared machine hits all of them alike instead of biasing
    the ratios."""
    cases = []
    for label, model, res, *_ in rows:
        x = torch.randn(batch, 3, res, res)
        cases.append((label, False, model, x))
        cases.append((label, True, copy.deepcopy(model).to(memory_format=torch.channels_last),
                      x.contiguous(memory_format=torch.channels_last)))
    best = {}
    for round_ in range(repeats + 1):  # round 0 is the warm-up (oneDNN primitive creation)
        for label, bf16, model, x in cases:
            wall, cpu = seconds_per_batch(model, x, bf16)
            if round_:
                old_wall, old_cpu = best.get((label, bf16), (0.0, 0.0))
                best[label, bf16] = (max(old_wall, batch / wall), max(old_cpu, batch / cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds over all rows (best is reported)")
    parser.add_argument("--cache-dir", default=None, help="where converted backbones are cached")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import EfficientNetConfig, EfficientNetForImageClassification

    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"best of {args.repeats} interleaved rounds")
    b0 = EfficientNetForImageClassification(
        EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0, image_size=224, hidden_dim=1280,
                           dropout_rate=0.2)
    ).eval()
    rows = [("stock B0 (random, SE+swish)", b0, 224, None, None)]
    for name, spec in BUILTIN_BACKBONES.items():
        model = EfficientNetForImageClassification.from_pretrained(builtin_checkpoint(name, args.cache_dir)).eval()
        rows.append((name, model, spec.resolution, spec.params, spec.imagenet_top1))
    lite0 = EfficientNetForImageClassification.from_pretrained(builtin_checkpoint("efficientnet-lite0", args.cache_dir))
    assert strip_noop_squeeze_excite(lite0) == len(lite0.efficientnet.encoder.blocks)
    rows.append(("lite0, no-op SE stripped", lite0.eval(), 224, None, None))

    header = f"{'model':30} {'res':>4} {'params':>10} {'top1*':>6} {'fp32 img/s':>11} {'x B0':>6} " \
             f"{'bf16+CL img/s':>14} {'x B0':>6} {'bf16/fp32':>9} {'fp32 img/CPU-s':>15} {'bf16 img/CPU-s':>15}"
    print(header)
    print("-" * len(header))
    speed = measure(rows, args.batch, args.repeats)
    base = speed["stock B0 (random, SE+swish)", False][0]
    for label, model, res, params, top1 in rows:
        (fp32, fp32_cpu), (bf16, bf16_cpu) = speed[label, False], speed[label, True]
        n = params if params is not None else sum(p.numel() for p in model.parameters())
        print(f"{label:30} {res:>4} {n:>10,} {top1 if top1 else '-':>6} {fp32:>11.1f} {fp32 / base:>6.2f} "
              f"{bf16:>14.1f} {bf16 / base:>6.2f} {bf16 / fp32:>9.2f} {fp32_cpu:>15.1f} {bf16_cpu:>15.1f}", flush=True)
    print(f"load average after the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
          "(img/CPU-s: images per second of CPU this process got, less sensitive to other load)")
    print("* ImageNet top-1 (%) as published by tensorflow/tpu (models/official/efficientnet/lite), not measured here;"
          " Lite params exclude the no-op squeeze-excite layers of the stock class.")


if __name__ == "__main__":
    main()
