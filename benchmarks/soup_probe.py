"""Probe: what does averaging the weights of finished runs (a model soup) do to their scores?

    python benchmarks/soup_probe.py outputs/har15 outputs/har15_s1 --split validation
    python benchmarks/soup_probe.py outputs/har15 outputs/har15_s1 --split test

The folders must be written by train.py from the same base model and the same dataset (the first folder's
`dataset/` is used) at the same input size. For each model, for the ensemble of their probabilities (N forward
passes per image) and for the soup (the element-wise mean of their weights: one model, one forward pass) it prints
accuracy and macro-F1, evaluated the way the Trainer does (the saved image processor's resize, bf16 autocast where
the CPU has it). `train.py --soup N` (default 2) builds such a soup inside one run; this script measures the idea on
runs that already exist. Pick settings on --split validation; look at test once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="model folders written by train.py")
    p.add_argument("--split", default="validation", choices=["validation", "test"])
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()

    import torch
    from datasets import Image as ImageFeature
    from transformers import AutoModelForImageClassification

    from har_model.preprocessing import load_preprocessing
    from har_model.train.image_cache import CachedImages, decode_images
    from har_model.data import load_dataset_folder
    from har_model.train.evaluation import classification_report
    from har_model.hardware import cpu_has_bf16
    from har_model.train.soup import average_state_dicts

    preps = [load_preprocessing(m) for m in args.models]
    if any(p != preps[0] for p in preps):
        raise SystemExit("error: the models do not share one input size / preprocessing")
    prep = preps[0]
    split = load_dataset_folder(args.models[0] / "dataset")[args.split].cast_column("image", ImageFeature(decode=False))
    labels = split.features["label"].names
    pixels = decode_images(split["image"], prep=prep, train=False, num_workers=os.cpu_count() or 1)
    images = CachedImages(pixels, split["label"], prep, augment=False)
    bf16 = cpu_has_bf16()

    def probabilities(model) -> torch.Tensor:
        model = model.eval().to(memory_format=torch.channels_last)
        out = []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for i in range(0, len(pixels), args.batch_size):
                x = torch.stack([images[j]["pixel_values"] for j in range(i, min(i + args.batch_size, len(images)))])
                out.append(model(pixel_values=x.contiguous(memory_format=torch.channels_last)).logits.float().softmax(-1))
        return torch.cat(out)

    def scores(probs: torch.Tensor) -> dict:
        report = classification_report(probs.argmax(-1).tolist(), split["label"], labels)
        return {"accuracy": round(report["accuracy"], 4), "macro_f1": round(report["macro_f1"], 4)}

    models = [AutoModelForImageClassification.from_pretrained(m) for m in args.models]
    rows, all_probs = {}, []
    for path, model in zip(args.models, models):
        all_probs.append(probabilities(model))
        rows[str(path)] = scores(all_probs[-1])
    rows["ensemble (mean probability)"] = scores(sum(all_probs))
    soup = AutoModelForImageClassification.from_pretrained(args.models[0])
    soup.load_state_dict(average_state_dicts([m.state_dict() for m in models]))
    rows["soup (mean weights)"] = scores(probabilities(soup))
    print(f"{args.split} split, {len(split)} images, input {prep.output_hw[0]}x{prep.output_hw[1]}")
    for name, row in rows.items():
        print(f"  {name:<40} accuracy {row['accuracy']:.4f}  macro-F1 {row['macro_f1']:.4f}")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
