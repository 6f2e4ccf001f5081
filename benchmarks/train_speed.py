"""Training throughput: our recipe vs the plain recipe of the transformers image-classification guide.

Same model (efficientnet-lite0, ImageNet weights), same resolution (256 by default, the size
our default recipe trains at), same batch size, same images, same
number of optimizer steps (one epoch of a class-balanced subset of har15), then both models are scored on the same
held-out images.

    stock: per-example PIL decode + image processor in `set_transform`, DefaultDataCollator, default
           TrainingArguments (fp32, everything trainable, one learning rate)
    ours:  har_model.train.run recipe (decode + resize once, torch augmentation, channels-last, bf16 autocast,
           frozen stem + early blocks, run as an inference network) -- the one-time decode is counted in its time

    python benchmarks/train_speed.py [--data ../shared/data/har15] [--per-class 64] [--eval-per-class 20] [--image-size 256]
                                     [--repeats 3] [--baseline stock|ours-stock-prefix]

`--baseline ours-stock-prefix` measures one lever instead: ours against ours with the frozen blocks run by the
stock layers (har_model.train.frozen_prefix off), everything else equal.

Each recipe runs --repeats times, alternating which goes first (ours, stock / stock, ours / ...), and the speed-up is
the ratio of the median times: a single pair is at the mercy of order (the first run pays the page cache and the
kernels' first-use costs) and of anything else the machine does. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def subset(data: Path, per_class: int, eval_per_class: int):
    classes = sorted(p.name for p in data.iterdir() if p.is_dir())
    train, held = [], []
    for label, name in enumerate(classes):
        files = sorted((data / name).iterdir())
        train += [(str(f), label) for f in files[:per_class]]
        held += [(str(f), label) for f in files[-eval_per_class:]]
    return classes, train, held


def to_dataset(rows, classes):
    from datasets import ClassLabel, Dataset, Features, Image

    features = Features({"image": Image(), "label": ClassLabel(names=classes)})
    return Dataset.from_dict({"image": [r[0] for r in rows], "label": [r[1] for r in rows]}, features=features)


def accuracy(model, processor, rows) -> float:
    import torch
    from PIL import Image

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(rows), 32):
            chunk = rows[i : i + 32]
            x = processor([Image.open(p).convert("RGB") for p, _ in chunk], return_tensors="pt")["pixel_values"]
            pred = model(pixel_values=x).logits.argmax(-1)
            correct += int((pred == torch.tensor([y for _, y in chunk])).sum())
    return correct / len(rows)


def sized_backbone(classes, size: int):
    """Lite0 with its image processor set to `size` (training and held-out scoring), the same for both recipes."""
    from har_model.preprocessing import preprocessing_for, scale_processor
    from har_model.train.backbones import load_backbone

    model, processor = load_backbone("efficientnet-lite0", classes)
    scale_processor(processor, size / preprocessing_for(processor).output_hw[0])
    return model, processor


def run_stock(classes, train_rows, held_rows, batch_size, out, size):
    from transformers import DefaultDataCollator, Trainer, TrainingArguments

    model, processor = sized_backbone(classes, size)
    ds = to_dataset(train_rows, classes)

    def transform(batch):  # the guide's recipe, minus torchvision: the image processor does the work
        batch["pixel_values"] = [processor(img.convert("RGB"), return_tensors="pt")["pixel_values"][0] for img in batch["image"]]
        del batch["image"]
        return batch

    ds.set_transform(transform)
    args = TrainingArguments(output_dir=str(out / "stock"), per_device_train_batch_size=batch_size, num_train_epochs=1,
                             remove_unused_columns=False, report_to="none", save_strategy="no", use_cpu=True,
                             learning_rate=5e-5, disable_tqdm=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=DefaultDataCollator())
    t = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t
    return seconds, accuracy(model, processor, held_rows)


def run_ours(classes, train_rows, held_rows, batch_size, out, size, frozen_prefix: bool = True):
    import torch
    from datasets import Image as ImageFeature
    from transformers import Trainer as _T  # noqa: F401 (imported for parity of import cost)

    from har_model.train.config import TrainConfig
    from har_model.train.trainer import HarTrainer, find_head_prefixes, freeze_early_layers, training_arguments
    from har_model.hardware import cpu_has_bf16
    from har_model.preprocessing import preprocessing_for
    from har_model.train.image_cache import CachedImages, decode_images

    model, processor = sized_backbone(classes, size)
    prep = preprocessing_for(processor)
    config = TrainConfig.parse(["--data-dir", "x", "--batch-size", str(batch_size), "--epochs", "1",
                                "--report-to", "none", "--early-stopping-patience", "0"])
    t = time.perf_counter()
    ds = to_dataset(train_rows, classes).cast_column("image", ImageFeature(decode=False))
    pixels = decode_images(ds["image"], prep=prep, train=True, num_workers=os.cpu_count() or 1)
    train_ds = CachedImages(pixels, ds["label"], prep, augment=True)
    n_frozen, norms = freeze_early_layers(model, "auto")
    model = model.to(memory_format=torch.channels_last)
    targs = training_arguments(config.training, out / "ours", 0, bf16=cpu_has_bf16())
    targs.eval_strategy = targs.save_strategy = "no"
    targs.load_best_model_at_end = False
    targs.disable_tqdm = True
    trainer = HarTrainer(model=model, args=targs, train_dataset=train_ds, frozen_norms=norms,
                         backbone_lr_scale=config.run.backbone_lr_scale, head_prefixes=find_head_prefixes(model))
    if not frozen_prefix:
        trainer.fast_frozen_blocks = False  # the frozen blocks run through the stock layers
    trainer.train()
    seconds = time.perf_counter() - t
    return seconds, accuracy(model.to(memory_format=torch.contiguous_format), processor, held_rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "har15")
    p.add_argument("--per-class", type=int, default=64, help="training images per class (one epoch)")
    p.add_argument("--eval-per-class", type=int, default=20, help="held-out images per class for accuracy")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=256, help="input size of both recipes")
    p.add_argument("--repeats", type=int, default=3, help="runs of each recipe, alternating the order (median taken)")
    p.add_argument("--baseline", choices=["stock", "ours-stock-prefix"], default="stock",
                   help="what ours is compared with: the guide's recipe, or ours without the frozen-prefix network")
    a = p.parse_args()
    if not a.data.is_dir():
        print(f"error: {a.data} is not a folder of class sub-folders", file=sys.stderr)
        return 2
    import torch

    from har_model.hardware import cpu_has_bf16

    classes, train_rows, held_rows = subset(a.data, a.per_class, a.eval_per_class)
    n = len(train_rows)
    print(f"{len(classes)} classes, {n} training images (1 epoch, batch {a.batch_size}, {a.image_size}x{a.image_size}), "
          f"{len(held_rows)} held-out; "
          f"torch threads {torch.get_num_threads()}, CPU cores {os.cpu_count()}, bf16 CPU: {cpu_has_bf16()}")
    baseline = run_stock if a.baseline == "stock" else functools.partial(run_ours, frozen_prefix=False)
    recipes = {"ours": run_ours, a.baseline: baseline}
    times = {name: [] for name in recipes}
    accs = {name: [] for name in recipes}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            order = ["ours", a.baseline] if r % 2 == 0 else [a.baseline, "ours"]
            for name in order:
                seconds, acc = recipes[name](classes, train_rows, held_rows, a.batch_size, Path(tmp) / f"{name}{r}",
                                             a.image_size)
                times[name].append(seconds)
                accs[name].append(acc)
                print(f"run {r + 1} {name}: {seconds:7.1f} s  {n / seconds:6.1f} img/s"
                      f"{' (decode included)' if recipes[name] is not run_stock else ''}  held-out accuracy {acc:.3f}",
                      flush=True)
    med = {name: statistics.median(t) for name, t in times.items()}
    acc = {name: statistics.median(v) for name, v in accs.items()}
    for name in recipes:
        print(f"{name} median: {med[name]:7.1f} s  {n / med[name]:6.1f} img/s  (runs: "
              f"{', '.join(f'{t:.1f}' for t in times[name])} s)  held-out accuracy {acc[name]:.3f}")
    print(f"speed-up over {a.baseline} (ratio of medians, {a.repeats} alternated runs each): "
          f"{med[a.baseline] / med['ours']:.2f}x   accuracy difference (ours - {a.baseline}): "
          f"{acc['ours'] - acc[a.baseline]:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
