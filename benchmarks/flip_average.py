"""Horizontal-flip averaging: does averaging a photo's and its mirror's probabilities beat the single view?

    python benchmarks/flip_average.py --model outputs/har15 [--backend onnx] [--threads 2]

Scores a trained model folder on its own validation and test splits (``MODEL/dataset``, never seen in training),
once with the single view (what ``pipeline()`` answers) and once with the mean of the logits of the view and its
mirror (what our serving answers where the folder's calibration.json chose it), and prints macro-F1 and accuracy for both with the difference in points, and the model
time of the two-view pass relative to the single view (both views in one batch).
Decide on the validation row (as training does: har_model.calibration.choose_views); the test row is the check.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from PIL import ImageOps
from sklearn.metrics import f1_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from har_model.calibration import choose_views  # noqa: E402
from har_model.data.load import image_bytes, load_dataset_folder  # noqa: E402
from har_model.imaging import open_rgb  # noqa: E402
from har_model.serve.inference import Classifier  # noqa: E402


def score(clf: Classifier, images: list, labels: np.ndarray, batch: int) -> dict:
    single, double, t_single, t_double = [], [], 0.0, 0.0
    for i in range(0, len(images), batch):
        views = images[i:i + batch]
        t0 = time.perf_counter()
        single.append(clf.predict_logits(views, batch_size=batch))
        t_single += time.perf_counter() - t0
        t0 = time.perf_counter()
        both = clf.predict_logits(views + [ImageOps.mirror(im) for im in views], batch_size=2 * batch)
        t_double += time.perf_counter() - t0
        double.append((both[:len(views)] + both[len(views):]) / 2)
    a, b = np.concatenate(single).argmax(1), np.concatenate(double).argmax(1)
    return {"single": np.concatenate(single), "flip": np.concatenate(double),"n": len(labels), "f1_single": f1_score(labels, a, average="macro"), "acc_single": (a == labels).mean(),
            "f1_flip": f1_score(labels, b, average="macro"), "acc_flip": (b == labels).mean(),
            "time_ratio": t_double / t_single}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a trained model folder (with its dataset/ copy)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()

    from datasets import Image as ImageFeature

    clf = Classifier.load(args.model, backend=args.backend, num_threads=args.threads)
    clf.calibration = dataclasses.replace(clf.calibration, flip_average=False)  # the single view; mirrors added here
    splits = load_dataset_folder(Path(args.model) / "dataset")
    print(f"model {args.model} ({clf.backend}, {args.threads} threads)")
    print(f"{'split':<11} {'n':>5} {'macro-F1 single':>16} {'flip-avg':>9} {'diff':>7} {'acc single':>11} "
          f"{'flip-avg':>9} {'model time':>11}")
    for split in ("validation", "test"):
        ds = splits[split].cast_column("image", ImageFeature(decode=False))
        images = [open_rgb(image_bytes(v)) for v in ds["image"]]
        r = score(clf, images, np.asarray(ds["label"]), args.batch_size)
        print(f"{split:<11} {r['n']:>5} {r['f1_single']:>16.4f} {r['f1_flip']:>9.4f} "
              f"{100 * (r['f1_flip'] - r['f1_single']):>+6.2f}p {r['acc_single']:>11.4f} {r['acc_flip']:>9.4f} "
              f"{r['time_ratio']:>10.2f}x")
        if split == "validation":
            labels = np.asarray(ds["label"])
            chosen = choose_views(r["single"], 2 * r["flip"] - r["single"], labels)  # mirrored = 2 * mean - single
            print(f"{'':<11} training's rule (choose_views on validation): flip averaging "
                  f"{'ON' if chosen['flip_average'] else 'off'}")


if __name__ == "__main__":
    main()
