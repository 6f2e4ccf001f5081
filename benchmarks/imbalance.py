"""Class imbalance: no compensation vs balanced sampling vs a class-weighted loss, on the same splits of an
imbalanced subset of har15.

    python benchmarks/imbalance.py all ../shared/data/har15             # subset, prepare, three trainings, table
    python benchmarks/imbalance.py subset ../shared/data/har15          # or step by step (one training per command)
    python benchmarks/imbalance.py train none                           #   (also: sampling, loss)
    python benchmarks/imbalance.py report

`subset` links (symlinks, no copies) a few har15 classes into WORK/images: the --majority classes with all their
photos, the --minority classes with --minority-count photos each (a seeded random choice), and builds the dataset
folder once with `train.py prepare` (--val-fraction / --test-fraction), so that every training sees the same splits.
`train METHOD` runs `train.py --dataset WORK/dataset --class-balance METHOD` (one model, no soup; --epochs,
--image-size, --train-seed) into WORK/METHOD[-seedN]. `report` prints, for each run found, validation macro-F1 (the
number the default is chosen on) and, on the test split, macro-F1, accuracy and the recall of the minority and of
the majority classes. Nothing is written inside the repository: WORK defaults to /tmp/har_imbalance.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("none", "sampling", "loss")
MAJORITY = ("calling", "cycling", "drinking")
MINORITY = ("clapping", "dancing", "eating")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def make_subset(har15: Path, work: Path, args) -> Path:
    """WORK/images/<class>/ with symlinks: every photo of the majority classes, a seeded sample of the minority's."""
    images = work / "images"
    rng = random.Random(args.seed)
    for name in (*args.majority, *args.minority):
        files = sorted(p for p in (har15 / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"error: {har15 / name} has no images")
        if name in args.minority:
            files = sorted(rng.sample(files, min(args.minority_count, len(files))))
        folder = images / name
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            link = folder / f.name
            if not link.exists():
                link.symlink_to(f.resolve())
        print(f"{name}: {len(files)} images")
    return images


def prepare(work: Path, args) -> None:
    run([sys.executable, str(ROOT / "train.py"), "prepare", "--data-dir", str(work / "images"), "--output-dir",
         str(work / "dataset"), "--val-fraction", str(args.val_fraction), "--test-fraction",
         str(args.test_fraction), "--seed", str(args.seed), "--overwrite"])


def run_dir(work: Path, method: str, train_seed: int | None) -> Path:
    return work / (method if train_seed is None else f"{method}-seed{train_seed}")


def train(work: Path, method: str, args) -> None:
    cmd = [sys.executable, str(ROOT / "train.py"), "--dataset", str(work / "dataset"), "--output-dir",
           str(run_dir(work, method, args.train_seed)), "--class-balance", method, "--soup", "1", "--epochs",
           str(args.epochs), "--report-to", "none", "--num-examples", "0", "--overwrite"]
    if args.image_size:
        cmd += ["--image-size", str(args.image_size)]
    if args.train_seed is not None:
        cmd += ["--train-seed", str(args.train_seed)]
    run(cmd)


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def report(work: Path, args) -> list[dict]:
    rows = []
    for folder in sorted(work.iterdir()):
        metrics_file = folder / "metrics.json"
        if not metrics_file.is_file():
            continue
        m = json.loads(metrics_file.read_text())
        per_class = m["test"]["per_class"]
        minority = [c for c in m["labels"] if c in args.minority]
        majority = [c for c in m["labels"] if c not in args.minority]

        def recall(classes):
            return sum(per_class[c]["recall"] for c in classes) / len(classes)

        balance = m["recipe"].get("class_balance") or {}
        rows.append({
            "run": folder.name, "method": balance.get("method"), "ratio": balance.get("ratio"),
            "val_macro_f1": m["validation"]["macro_f1"], "test_macro_f1": m["test"]["macro_f1"],
            "test_accuracy": m["test"]["accuracy"], "minority_recall": recall(minority),
            "majority_recall": recall(majority), "minutes": m["train_seconds"] / 60,
            "minority_support": sum(per_class[c]["support"] for c in minority),
            "majority_support": sum(per_class[c]["support"] for c in majority),
        })
    if not rows:
        raise SystemExit(f"error: no finished runs in {work}")
    rows.sort(key=lambda r: (METHODS.index(r["method"]) if r["method"] in METHODS else 99, r["run"]))
    print(f"train/validation/test: {rows and _split_sizes(work)}; training ratio largest/smallest: {rows[0]['ratio']}")
    print("| run | validation macro-F1 | test macro-F1 | test accuracy | test recall, minority classes "
          f"({rows[0]['minority_support']} images) | test recall, majority classes ({rows[0]['majority_support']}) "
          "| training min |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        _print_row(r["run"], r)
    methods = sorted({r["method"] for r in rows}, key=lambda m: METHODS.index(m) if m in METHODS else 99)
    if len(rows) > len(methods):  # several training seeds: the mean of each method
        for method in methods:
            runs = [r for r in rows if r["method"] == method]
            mean = {k: sum(r[k] for r in runs) / len(runs) for k in NUMBERS}
            _print_row(f"**{method}: mean of {len(runs)}**", mean)
    return rows


NUMBERS = ("val_macro_f1", "test_macro_f1", "test_accuracy", "minority_recall", "majority_recall", "minutes")


def _print_row(name: str, r: dict) -> None:
    print(f"| {name} | " + " | ".join(f"{r[k]:.{1 if k == 'minutes' else 3}f}" for k in NUMBERS) + " |")


def _split_sizes(work: Path) -> str:
    report_file = work / "dataset" / "data_report.json"
    try:
        splits = json.loads(report_file.read_text())["summary"]["split_sizes"]
        return " / ".join(str(splits[s]) for s in ("train", "validation", "test"))
    except (OSError, ValueError, KeyError, TypeError):
        return "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["all", "subset", "train", "report"])
    p.add_argument("what", nargs="?", help="subset/all: the har15 folder; train: none, sampling or loss")
    p.add_argument("--work", type=Path, default=Path("/tmp/har_imbalance"), help="where everything is written")
    p.add_argument("--majority", nargs="+", default=list(MAJORITY))
    p.add_argument("--minority", nargs="+", default=list(MINORITY))
    p.add_argument("--minority-count", type=int, default=60)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=42, help="of the minority sample and the split")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--image-size", type=int, default=192)
    p.add_argument("--train-seed", type=int, default=None)
    args = p.parse_args()
    work = args.work
    if args.step in ("all", "subset"):
        if not args.what or not Path(args.what).is_dir():
            raise SystemExit("error: give the har15 folder, e.g. ../shared/data/har15")
        make_subset(Path(args.what), work, args)
        prepare(work, args)
    if args.step == "train":
        if args.what not in METHODS:
            raise SystemExit(f"error: train one of {', '.join(METHODS)}")
        train(work, args.what, args)
    if args.step == "all":
        for method in METHODS:
            train(work, method, args)
    if args.step in ("all", "report"):
        report(work, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
