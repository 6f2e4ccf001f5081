"""Benchmark: our full `prepare` vs the stock datasets path, on the same folder, in the same run.

    python benchmarks/data_prepare.py [--data-dir ../shared/data/har15] [--repeats 1] [--num-workers N]

Ours: walk + open and fully decode every image + EXIF/mode handling + content hash + pHash/dHash +
duplicate grouping + grouped stratified split + parquet shards + card, figures, report + load_dataset(OUT).
Stock: load_dataset("imagefolder", data_dir=...) + train_test_split(stratify_by_column="label") twice
(train / validation / test) + to_parquet for each split + load_dataset(OUT) — no decoding, no checks.
Both start from an empty datasets cache (a fresh HF_DATASETS_CACHE each) so neither reuses the other's work.
Prints both times and the ratio ours / stock (target <= 1.5).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _fresh_cache(tmp: Path, name: str) -> Path:
    import datasets.config

    cache = tmp / f"cache-{name}"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    datasets.config.HF_DATASETS_CACHE = cache  # read at call time by the builders
    return cache


def run_ours(data_dir: Path, out: Path, num_workers: int | None) -> dict:
    from har_model.data import prepare_dataset

    ds = prepare_dataset(data_dir, out, num_workers=num_workers, progress=False, verbose=False)
    return {s: len(ds[s]) for s in ds}


def run_stock(data_dir: Path, out: Path) -> dict:
    from datasets import DatasetDict, load_dataset

    ds = load_dataset("imagefolder", data_dir=str(data_dir), split="train")
    first = ds.train_test_split(test_size=0.1, stratify_by_column="label", seed=42)
    second = first["train"].train_test_split(test_size=0.1 / 0.9, stratify_by_column="label", seed=42)
    splits = DatasetDict({"train": second["train"], "validation": second["test"], "test": first["test"]})
    (out / "data").mkdir(parents=True, exist_ok=True)
    for name, split in splits.items():
        split.to_parquet(str(out / "data" / f"{name}-00000-of-00001.parquet"))
    reloaded = load_dataset("parquet", data_dir=str(out / "data"))
    return {s: len(reloaded[s]) for s in reloaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "har15"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=None)
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        sys.exit(f"error: {data_dir}: no such folder")
    import datasets

    datasets.disable_progress_bars()
    n_files = sum(1 for p in data_dir.rglob("*") if p.is_file())
    print(f"data: {data_dir} ({n_files} files), cpu cores: {os.cpu_count()}, workers: {args.num_workers or os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="data-bench-") as tmp:
        tmp = Path(tmp)
        sum(len(p.read_bytes()) for p in data_dir.rglob("*") if p.is_file())  # warm the page cache
        times: dict[str, list[float]] = {"stock": [], "ours": []}
        for r in range(args.repeats):
            for name in ("stock", "ours"):
                out = tmp / f"out-{name}-{r}"
                _fresh_cache(tmp, f"{name}-{r}")
                t = time.perf_counter()
                sizes = run_stock(data_dir, out) if name == "stock" else run_ours(data_dir, out, args.num_workers)
                times[name].append(time.perf_counter() - t)
                print(f"  {name:<5} run {r + 1}: {times[name][-1]:6.2f} s  splits {sizes}")
    stock, ours = min(times["stock"]), min(times["ours"])
    print(f"stock (imagefolder + stratified train_test_split + to_parquet + reload): {stock:.2f} s")
    print(f"ours  (decode + validate + hash + dedup + grouped split + parquet + card + reload): {ours:.2f} s")
    print(f"ratio ours / stock: {ours / stock:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
