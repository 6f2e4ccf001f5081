"""Stock ``pipeline("image-classification")`` versus ``har_model.serve.inference.Classifier`` on CPU, in one run.

    python benchmarks/inference_speed.py --model outputs/har15 --threads 2     # stock vs ours float32 vs ours int8

For each path (stock pipeline at batch 1 and 32; ours with each backend at batch 1 and 32; by default the ONNX
float32 and int8 files, ``--backends onnx-fp32,onnx-int8,torch,torch-bf16`` for more) it reports, on the same test
images given as JPEG files: images/s over the whole set, top-1 agreement with the stock float32 pipeline and with
our float32 ONNX file, accuracy and macro-F1, then the p50 / p95 latency of one single-image call (paths timed
interleaved, image by image), and the fraction of this CPU's FLOP peak each path reaches. Other processes share this machine, so every path is timed
in every round, in rotating order, and the figures are medians over rounds; compare ratios, not absolutes.
On a CPU that other jobs are using, also run with ``--threads 1``: OpenMP threads that wait on each other while
another process holds a core make every multi-threaded torch path (stock included) erratic.

--data is a dataset folder (``datasets.load_from_disk`` or ``load_dataset``; the test split is used) or an image
folder with one sub-folder per class. --model defaults to outputs/har15; when absent, the ImageNet
EfficientNet-Lite0 built-in backbone is used (accuracy then meaningless: its classes are not the folder's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from har_model.errors import HarError  # noqa: E402
from har_model.hardware import cpu_has_bf16  # noqa: E402
from har_model.imaging import is_image_path  # noqa: E402
from har_model.model_folder.int8 import macro_f1  # noqa: E402
from har_model.model_folder.torch_model import strip_noop_squeeze_excite  # noqa: E402
from har_model.serve.inference import Classifier  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ test images


def test_images(data: Path, limit: int | None, workdir: Path) -> tuple[list[Path], list[str | None]]:
    """(JPEG/PNG files, class names) of the test split (dataset folder) or of an image folder (sampled evenly)."""
    if (data / "dataset_dict.json").is_file() or any(data.glob("**/*.parquet")) or (data / "state.json").is_file():
        return _dataset_images(data, limit, workdir)
    files = sorted(p for p in data.rglob("*") if p.is_file() and is_image_path(p))
    if not files:
        sys.exit(f"error: {data}: neither a dataset folder nor an image folder")
    if limit and len(files) > limit:
        files = [files[i] for i in np.linspace(0, len(files) - 1, limit).astype(int)]  # spread over every class
    return files, [p.parent.name if p.parent != data else None for p in files]


def _dataset_images(data: Path, limit: int | None, workdir: Path):
    import datasets

    if (data / "dataset_dict.json").is_file() or (data / "state.json").is_file():
        ds = datasets.load_from_disk(str(data))
    else:
        ds = datasets.load_dataset(str(data))
    if isinstance(ds, datasets.DatasetDict):
        split = "test" if "test" in ds else list(ds)[-1]
        ds = ds[split]
    image_col = next(c for c, f in ds.features.items() if isinstance(f, datasets.Image))
    label_col = next((c for c, f in ds.features.items() if isinstance(f, datasets.ClassLabel)), None)
    ds = ds.cast_column(image_col, datasets.Image(decode=False))
    if limit and len(ds) > limit:
        ds = ds.select(np.linspace(0, len(ds) - 1, limit).astype(int))  # spread over the split (sorted by class)
    files, labels = [], []
    for i, row in enumerate(ds):
        item = row[image_col]
        raw = item["bytes"] if item.get("bytes") else Path(item["path"]).read_bytes()
        suffix = Path(item.get("path") or "x.jpg").suffix or ".jpg"
        path = workdir / f"{i:05d}{suffix}"
        path.write_bytes(raw)
        files.append(path)
        labels.append(ds.features[label_col].int2str(row[label_col]) if label_col else None)
    return files, labels


# ------------------------------------------------------------------------------------------------ the paths


def stock_path(model_dir: Path, batch_size: int, labels: list[str]):
    from transformers import pipeline

    pipe = pipeline("image-classification", model=str(model_dir), device=-1)
    index = {name: i for i, name in enumerate(labels)}

    def run(files):
        out = pipe([str(f) for f in files], batch_size=batch_size, top_k=1)
        return np.array([index[r[0]["label"]] for r in out])

    return run


def ours_path(clf: Classifier, batch_size: int):
    def run(files):
        return clf.predict_proba(files, batch_size=batch_size).argmax(1)

    return run


# ------------------------------------------------------------------------------------------------ FLOPs


def model_gflops(model_dir: Path, hw: tuple[int, int]) -> float:
    """Forward FLOPs of one image (2 x multiply-accumulates of convolutions and matmuls), in GFLOP."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(model_dir).eval()
    strip_noop_squeeze_excite(model)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(pixel_values=torch.zeros(1, 3, *hw))
    return counter.get_total_flops() / 1e9


def cpu_peak_gflops(ghz: float | None, fp32_per_cycle: int, cores: int) -> tuple[float, float, float]:
    """(clock GHz, fp32 peak, bf16 peak) in GFLOP/s for ``cores`` cores."""
    if ghz is None:
        mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("cpu MHz")]
        ghz = max(mhz) / 1000 if mhz else 2.5
    fp32 = cores * ghz * fp32_per_cycle
    bf16 = fp32 * 2 if cpu_has_bf16() else fp32  # VDPBF16PS: two bf16 products per fp32 lane
    return ghz, fp32, bf16


# ------------------------------------------------------------------------------------------------ main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "outputs" / "har15")
    ap.add_argument("--data", type=Path, default=None, help="dataset folder or image folder (default: the model's dataset)")
    ap.add_argument("--limit", type=int, default=None, help="use at most this many test images")
    ap.add_argument("--rounds", type=int, default=3, help="timed passes over the images per path (median reported)")
    ap.add_argument("--latency-n", type=int, default=100, help="single-image calls per path for the p50 / p95 latency")
    ap.add_argument("--backends", default="onnx-fp32,onnx-int8", help="Classifier backends, comma-separated")
    ap.add_argument("--threads", type=int, default=None, help="threads for every path (default: all cores)")
    ap.add_argument("--ghz", type=float, default=None, help="core clock for the peak (default: /proc/cpuinfo)")
    ap.add_argument("--fp32-flops-per-cycle", type=int, default=32, help="per core: 2 FMA pipes x 8 fp32 lanes x 2")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    model_dir = args.model
    if not (model_dir / "config.json").is_file():
        from har_model.train.backbones import builtin_checkpoint

        print(f"note: {model_dir} has no model; using the ImageNet EfficientNet-Lite0 (accuracy is meaningless)")
        model_dir = builtin_checkpoint("efficientnet-lite0")
    data = args.data or (args.model / "dataset" if (args.model / "dataset").is_dir() else ROOT.parent / "shared" / "data" / "har15")
    limit = args.limit or (None if (data / "dataset_dict.json").is_file() or any(data.glob("*.parquet")) or any(data.glob("*/*.parquet")) else 600)

    workdir = Path(tempfile.mkdtemp(prefix="har_bench_"))
    files, truth = test_images(data, limit, workdir)
    print(f"model {model_dir}\ndata {data}: {len(files)} test images; torch threads {threads}; cpu bf16: {cpu_has_bf16()}")

    reference = Classifier.load(model_dir, backend="torch")
    labels = reference.labels
    paths = {"stock b1": stock_path(model_dir, 1, labels), "stock b32": stock_path(model_dir, 32, labels)}
    classifiers = {}
    for spec in [b.strip() for b in args.backends.split(",") if b.strip()]:
        try:
            clf = Classifier.load(model_dir, backend=spec, num_threads=args.threads)
        except HarError as exc:
            print(f"skip {spec}: {exc}")
            continue
        classifiers[spec] = clf
        for bs in (1, 32):
            paths[f"ours {spec} b{bs}"] = ours_path(clf, bs)

    # warm-up (first calls allocate, pick kernels), then rounds over the whole set in rotating order
    for run in paths.values():
        run(files[:4])
    times: dict[str, list[float]] = {name: [] for name in paths}
    preds: dict[str, np.ndarray] = {}
    names = list(paths)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            pred = paths[name](files)
            times[name].append(time.perf_counter() - t0)
            print(f"  {name}: {len(files) / times[name][-1]:.1f} img/s", flush=True)
            preds.setdefault(name, pred)
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    # single-image latency: one call per image and path, paths interleaved so load changes hit all alike
    latency: dict[str, list[float]] = {"stock": [], **{spec: [] for spec in classifiers}}
    single = {"stock": paths["stock b1"], **{spec: ours_path(clf, 1) for spec, clf in classifiers.items()}}
    for f in files[: args.latency_n]:
        for name, run in single.items():
            t0 = time.perf_counter()
            run([f])
            latency[name].append(time.perf_counter() - t0)

    gflops = model_gflops(model_dir, reference.image_size)
    ghz, peak32, peak16 = cpu_peak_gflops(args.ghz, args.fp32_flops_per_cycle, threads)
    ref = preds["stock b1"]
    known = np.array([t in reference.labels for t in truth]) if any(truth) else None
    y = np.array([labels.index(t) if t in labels else -1 for t in truth])

    print(f"\nmodel: {gflops:.3f} GFLOP per image; CPU: {threads} cores at {ghz:.2f} GHz x {args.fp32_flops_per_cycle} "
          f"fp32 FLOP/cycle = {peak32:.0f} GFLOP/s fp32 peak, {peak16:.0f} bf16 -> limit {peak32 / gflops:.0f} img/s fp32, "
          f"{peak16 / gflops:.0f} img/s bf16")
    base32 = len(files) / statistics.median(times["stock b32"])
    base1 = len(files) / statistics.median(times["stock b1"])
    ours32 = next((preds[n] for n in names if n.startswith("ours onnx-fp32")), None)
    print(f"\n| path | images/s | vs stock same batch | % of fp32 peak | top-1 agreement with stock fp32 | "
          f"with ours ONNX fp32 | accuracy | macro-F1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        ips = len(files) / statistics.median(times[name])
        base = base32 if name.endswith("b32") else base1
        agree = float((preds[name] == ref).mean())
        agree32 = f"{float((preds[name] == ours32).mean()):.2%}" if ours32 is not None else "n/a"
        scored = known is not None and known.any()
        acc = f"{float((preds[name] == y)[known].mean()):.2%}" if scored else "n/a"
        f1 = f"{macro_f1(y[known], preds[name][known]):.4f}" if scored else "n/a"
        print(f"| {name} | {ips:.1f} | {ips / base:.2f}x | {100 * ips * gflops / peak32:.1f}% | {agree:.2%} | "
              f"{agree32} | {acc} | {f1} |")
    stock_p50 = statistics.median(latency["stock"])
    print(f"\n| single image (batch 1 call, {len(latency['stock'])} images) | p50 latency ms | p95 latency ms | "
          f"stock / ours (p50) |")
    print("|---|---:|---:|---:|")
    for name, ts in latency.items():
        p50, p95 = statistics.median(ts), float(np.percentile(ts, 95))
        print(f"| {'stock pipeline' if name == 'stock' else 'ours ' + name} | {1000 * p50:.1f} | {1000 * p95:.1f} | "
              f"{stock_p50 / p50:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
