"""Weight averaging along each run (--ema-decay) against the members' best checkpoints, on validation and test.

    python benchmarks/weight_average.py RUN [RUN ...]      # model folders written by train.py --ema-decay auto

For every folder it rebuilds, from the checkpoints the run kept, the model made of each member's best checkpoint
(averaged over the soup's members where there are several) and the one made of each member's final moving average
(ema.safetensors beside its checkpoints; for runs older than that file, the last checkpoint's if it is the final
step), and scores both on the folder's own validation and test splits
(``RUN/dataset``; neither was trained on), single view and flip-averaged (mean logits of the image and its mirror),
evaluated as the Trainer does (the saved processor's resize, bf16 autocast where the CPU has it). It also checks
that it rebuilds what the run shipped: model.safetensors must equal the members as chosen on validation (averaged
when the soup was shipped). Then, over the runs: the mean and spread of each figure and of the paired difference.
Training chose on validation; read the test columns as the check.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SPLITS = ("validation", "test")


def member_states(run: Path, metrics: dict) -> list[dict]:
    """[{'best': state, 'average': state or None, 'kept': 'average' | 'best checkpoint'}] for each member."""
    from safetensors.torch import load_file

    soup = metrics.get("soup")
    members = soup["members"] if soup else [{"best_checkpoint": metrics["best_checkpoint"],
                                              "weight_average": (metrics.get("weight_average") or [None])[0]}]
    states = []
    for m in members:
        if not m.get("best_checkpoint"):
            raise SystemExit(f"error: {run}: metrics.json names no best checkpoint (trained without evaluation?)")
        best_dir = run / m["best_checkpoint"]
        best = load_file(best_dir / "model.safetensors")
        average, saved = None, final_average(best_dir.parent)
        if saved is not None:
            if set(saved) - {"_updates"} != {k for k, v in best.items() if v.is_floating_point()}:
                raise SystemExit(f"error: {best_dir.parent}: the average's tensors are not the model's")
            average = {k: saved[k].to(v.dtype) if v.is_floating_point() else v for k, v in best.items()}
        kept = (m.get("weight_average") or {}).get("shipped", "best checkpoint")
        states.append({"best": best, "average": average, "kept": kept})
    return states


def final_average(member_dir: Path) -> dict | None:
    """The member's average at the end of its run: member_dir/ema.safetensors, else (runs made before that file was
    written) the last checkpoint's, if that checkpoint is the run's final step."""
    from safetensors.torch import load_file

    if (member_dir / "ema.safetensors").is_file():
        return load_file(member_dir / "ema.safetensors")
    last = max(member_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]), default=None)
    if last is None or not (last / "ema.safetensors").is_file():
        return None
    state = json.loads((last / "trainer_state.json").read_text())
    if state["global_step"] != state["max_steps"]:
        raise SystemExit(f"error: {last} is not the final step of its run (early-stopped?): its average is not the final one")
    return load_file(last / "ema.safetensors")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="model folders written by train.py")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()

    from safetensors.torch import load_file

    from har_model.train.soup import average_state_dicts

    table = {}  # (variant, split, view) -> [macro-F1 of each run]
    for run in args.runs:
        metrics = json.loads((run / "metrics.json").read_text())
        states = member_states(run, metrics)
        if any(s["average"] is None for s in states):
            print(f"{run}: no weight average saved for a member (trained with --ema-decay 0, the default, or before "
                  "it existed); skipped")
            continue
        variants = {"best checkpoints": average_state_dicts([s["best"] for s in states]),
                    "weight averages (EMA)": average_state_dicts([s["average"] for s in states])}
        chosen = [s["average"] if s["kept"] == "average" else s["best"] for s in states]
        shipped_how = (metrics.get("soup") or {}).get("shipped", "member 1")
        expected = average_state_dicts(chosen) if shipped_how == "soup" else chosen[int(shipped_how.split()[-1]) - 1]
        shipped = load_file(run / "model.safetensors")
        student = (metrics.get("semi_supervised") or {}).get("shipped") == "student"
        same = same_weights(shipped, expected)
        print(f"{run}: members kept {[s['kept'] for s in states]}, shipped the {shipped_how}; rebuilt = shipped: "
              f"{'yes' if same else 'NO' if not student else 'n/a (a student was shipped)'}")
        if not same and not student:
            raise SystemExit(f"error: {run}: the rebuilt model is not the shipped one; this script reads the wrong files")
        views_record = (metrics.get("views") or {}).get("test_macro_f1")
        if views_record:  # the check: the variant equal to the shipped model must score what the run measured
            print(f"  the run measured the shipped model at test macro-F1 {views_record['single']:.4f} single view, "
                  f"{views_record['flip']:.4f} flip-averaged")
        score_models(run, variants, table, args.batch_size)
    if not table:
        return 1
    print_paired(table, "best checkpoints", "weight averages (EMA)", "the weight average minus the best checkpoints")
    return 0


def same_weights(a: dict, b: dict) -> bool:
    """The floating-point tensors of state dict `a` equal b's (to 1e-6)."""
    import torch

    return all(torch.allclose(v.float(), b[k].float(), atol=1e-6) for k, v in a.items() if v.is_floating_point())


def score_models(run: Path, states: dict, table: dict, batch_size: int) -> None:
    """Score each {name: state dict} on the run's own validation and test splits (RUN/dataset), single view and
    flip-averaged, evaluated as the Trainer does; print each macro-F1 and append it to table[(name, split, view)]."""
    import numpy as np
    import torch
    from datasets import Image as ImageFeature
    from transformers import AutoModelForImageClassification

    from har_model.calibration import macro_f1
    from har_model.data import load_dataset_folder
    from har_model.hardware import cpu_has_bf16
    from har_model.preprocessing import load_preprocessing
    from har_model.train.image_cache import CachedImages, decode_images

    bf16 = cpu_has_bf16()
    prep = load_preprocessing(run)
    dsd = load_dataset_folder(run / "dataset")
    model = AutoModelForImageClassification.from_pretrained(run).eval().to(memory_format=torch.channels_last)
    width = max(map(len, states))
    for split in SPLITS:
        ds = dsd[split].cast_column("image", ImageFeature(decode=False))
        pixels = decode_images(ds["image"], prep=prep, train=False, num_workers=os.cpu_count() or 1)
        views = CachedImages(pixels, ds["label"], prep, augment=False)
        labels = np.asarray(ds["label"])
        for name, state in states.items():
            model.load_state_dict(state)
            logits = [logits_of(model, v, batch_size, bf16) for v in (views, views.mirrored())]
            for view, z in (("single", logits[0]), ("flip", (logits[0] + logits[1]) / 2)):
                f1 = macro_f1(z, labels)
                table.setdefault((name, split, view), []).append(f1)
                print(f"  {split:<10} {name:<{width}} {view:<6} macro-F1 {f1:.4f}", flush=True)


def print_paired(table: dict, first: str, second: str, difference: str) -> None:
    """Over the runs in `table` (score_models): mean and spread of both models' figures and of the paired
    difference, second minus first, in points."""
    n = len(table[(first, SPLITS[0], "single")])
    print(f"\nover {n} run(s): mean macro-F1 (standard deviation), and {difference} (paired, in points)")
    print(f"{'split':<10} {'view':<6} {first:>22} {second:>22} {'difference':>16}")
    for split in SPLITS:
        for view in ("single", "flip"):
            a, b = table[(first, split, view)], table[(second, split, view)]
            d = [100 * (y - x) for x, y in zip(a, b)]
            print(f"{split:<10} {view:<6} {fmt(a):>22} {fmt(b):>22} {fmt(d, points=True):>16}")


def logits_of(model, images, batch_size: int, bf16: bool):
    import numpy as np
    import torch

    out = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(images), batch_size):
            x = torch.stack([images[j]["pixel_values"] for j in range(i, min(i + batch_size, len(images)))])
            out.append(model(pixel_values=x.contiguous(memory_format=torch.channels_last)).logits.float())
    return np.concatenate([t.numpy() for t in out])


def fmt(values: list[float], points: bool = False) -> str:
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:+.2f} ({spread:.2f})" if points else f"{mean:.4f} ({spread:.4f})"


if __name__ == "__main__":
    sys.exit(main())
