"""Expected calibration error of a trained model before and after temperature scaling, on its own test split.

    python benchmarks/calibration_ece.py --model outputs/har15 [--backend auto] [--save]

Reads the model folder and the dataset copy that train.py wrote beside it (``MODEL/dataset``), computes the raw
logits of the validation and test splits with the serving path (``Classifier``, ONNX when exported), fits the
temperature and the "unsure" threshold on validation only (har_model.calibration.fit, as train.py does) and
prints ECE (15 bins), NLL and the unsure share on test, uncalibrated (the baseline, same logits) vs calibrated.
``--save`` writes the fit as MODEL/calibration.json (for model folders trained before calibration existed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from har_model import calibration as cal  # noqa: E402
from har_model.data.load import image_bytes, load_dataset_folder  # noqa: E402
from har_model.serve.inference import Classifier  # noqa: E402


def split_logits(clf: Classifier, ds) -> tuple[np.ndarray, np.ndarray]:
    from datasets import Image as ImageFeature

    from har_model.imaging import open_rgb

    ds = ds.cast_column("image", ImageFeature(decode=False))
    images = [open_rgb(image_bytes(v), draft_size=clf.preprocessing.draft_size) for v in ds["image"]]
    return clf.predict_logits(images), np.asarray(ds["label"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--backend", default="auto")
    p.add_argument("--save", action="store_true", help="write MODEL/calibration.json")
    args = p.parse_args()
    model = Path(args.model)
    clf = Classifier.load(model, backend=args.backend)
    dsd = load_dataset_folder(model / "dataset")
    t0 = time.perf_counter()
    val_logits, val_labels = split_logits(clf, dsd["validation"])
    test_logits, test_labels = split_logits(clf, dsd["test"])
    seconds = time.perf_counter() - t0
    fitted = cal.fit(val_logits, val_labels)
    test = cal.report(fitted, test_logits, test_labels)
    raw_unsure = cal.report(cal.Calibration(1.0, fitted.unsure_below), test_logits, test_labels)["unsure_share"]
    print(f"model {model} ({clf.backend}); logits of {len(val_labels)} validation + {len(test_labels)} test images "
          f"in {seconds:.1f} s")
    print(f"fitted on validation: temperature {fitted.temperature:.4f}, unsure below {fitted.unsure_below:.4f} "
          f"(validation ECE {fitted.validation['ece_before']:.4f} -> {fitted.validation['ece_after']:.4f})")
    print(f"{'test split':<22} {'ECE (15 bins)':>14} {'NLL':>8}")
    print(f"{'uncalibrated (T = 1)':<22} {test['ece_before']:>14.4f} {cal.nll(test_logits, test_labels):>8.4f}")
    print(f"{'calibrated':<22} {test['ece_after']:>14.4f} {cal.nll(test_logits, test_labels, fitted.temperature):>8.4f}")
    print(f"ratio calibrated / uncalibrated ECE: {test['ece_after'] / max(test['ece_before'], 1e-12):.2f}")
    print(f"test accuracy {float((test_logits.argmax(1) == test_labels).mean()):.4f}; 'unsure' on "
          f"{100 * test['unsure_share']:.1f}% of test images (same threshold on raw probabilities: "
          f"{100 * raw_unsure:.1f}%), accuracy on the rest {test['accuracy_when_sure']}")
    if args.save:
        print(f"saved {fitted.save(model)}")
    print(json.dumps({"test": test, "validation": fitted.validation}))


if __name__ == "__main__":
    main()
