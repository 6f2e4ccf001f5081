"""Does the cost stay proportional to the data? `prepare`, the training image cache and training steps at 1x, 5x and
10x the size of har15, side by side: wall time, time per image and peak memory.

The larger datasets are made of realistic, distinct images: every har15 photo plus variants of it (a random crop of
55-90% of its area, a random flip, a colour and brightness shift, rescaled and re-encoded as JPEG at another
quality), so decoding, hashing, near-duplicate search and splitting work as on real photos. Scale k holds the
originals and variants 1..k-1 of each. Each measurement runs in a fresh process; its peak memory is sampled over
the whole process tree (the decoding workers included) as anonymous memory (what the run needs) and file-backed
memory (pages of memory-mapped files, which the system can drop at any time).

    prepare   python train.py prepare on the folder (decode + hash every file, near-duplicate search, split,
              parquet): wall time, time per image, peak memory
    cache     the training image cache of the prepared dataset (train, validation and test decoded once), in RAM
              or in memory-mapped files as the default budget decides (half the memory available)
    steps     a fixed number of Trainer steps (efficientnet-lite0 at the default 256 px) from that cache
    --compare at 1x, the same steps from the memory-mapped cache and from RAM, alternated in one process

    python benchmarks/scale.py [--data ../shared/data/har15] [--scales 1,5,10] [--work /tmp/har_scale] [--steps 40]
    python benchmarks/scale.py --compare [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


# ------------------------------------------------------------------------------------------- synthetic data


def _variant(job) -> None:
    src, dst, seed = job
    from PIL import Image, ImageEnhance, ImageOps

    rng = random.Random(seed)
    img = Image.open(src).convert("RGB")
    w, h = img.size
    area = rng.uniform(0.55, 0.9)
    aspect = rng.uniform(0.8, 1.25)
    cw, ch = min(w, int((w * h * area * aspect) ** 0.5)), min(h, int((w * h * area / aspect) ** 0.5))
    left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
    img = img.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.6, 1.4))
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.75, 1.25))
    scale = rng.uniform(0.9, 1.3)
    img = img.resize((max(32, int(cw * scale)), max(32, int(ch * scale))), Image.BICUBIC)
    img.save(dst, quality=rng.randint(80, 95))


def make_scales(data: Path, work: Path, scales: list[int]) -> dict[int, Path]:
    """work/x{k}/<class>/: the originals and variants 1..k-1 (links to files made once in work/variants)."""
    from multiprocessing import Pool

    top = max(scales)
    variants = work / "variants"
    done = variants / f".done-{top}"
    sources = sorted(p for p in data.glob("*/*") if p.is_file())
    if not done.exists():
        jobs = []
        for i, src in enumerate(sources):
            for v in range(1, top):
                dst = variants / src.parent.name / f"{src.stem}__v{v}.jpg"
                if not dst.exists():
                    jobs.append((str(src), str(dst), i * 1000 + v))
        for cls in {p.parent.name for p in sources}:
            (variants / cls).mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with Pool(os.cpu_count()) as pool:
            for _ in pool.imap_unordered(_variant, jobs, chunksize=64):
                pass
        print(f"made {len(jobs)} variants in {time.time() - t0:.0f} s", flush=True)
        done.touch()
    folders = {}
    for k in scales:
        folder = work / f"x{k}"
        if not (folder / ".done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            for src in sources:
                cls = folder / src.parent.name
                cls.mkdir(parents=True, exist_ok=True)
                (cls / src.name).symlink_to(src.resolve())
                for v in range(1, k):
                    name = f"{src.stem}__v{v}.jpg"
                    (cls / name).symlink_to((variants / src.parent.name / name).resolve())
            (folder / ".done").touch()
        folders[k] = folder
    return folders


# ------------------------------------------------------------------------------------------ measuring


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return pids


def _memory(pid: int) -> tuple[int, int]:
    """Proportional set size of the process tree, anonymous and file-backed: a page shared by several processes (a
    forked worker's copy-on-write pages, a memory-mapped file) counts once in all, not once per process."""
    anon = file = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss_Anon:"):
                    anon += int(line.split()[1]) * 1024
                elif line.startswith(("Pss_File:", "Pss_Shmem:")):
                    file += int(line.split()[1]) * 1024
        except OSError:
            pass
    return anon, file


def measured(cmd: list[str]) -> dict:
    """Run `cmd`; its wall time, peak anonymous and file-backed memory of its process tree, last stdout line."""
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = {"anon": 0, "file": 0}

    def sample():
        while proc.poll() is None:
            anon, file = _memory(proc.pid)
            peak["anon"], peak["file"] = max(peak["anon"], anon), max(peak["file"], file)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out[-2000:]}")
    last = out.strip().splitlines()[-1] if out.strip() else "{}"
    return {"seconds": time.time() - t0, "peak_anon": peak["anon"], "peak_file": peak["file"],
            "result": json.loads(last) if last.startswith("{") else {}}


def _setup(dataset: Path, steps: int, batch_size: int):
    """The run's config (Trainer steps only: no evaluation, no checkpoints), the dataset, its classes, the default
    base model with its new head."""
    from har_model.data.load import load_dataset_folder
    from har_model.train.base_model import load_base_model
    from har_model.train.config import TrainConfig

    config = TrainConfig.parse(["--dataset", str(dataset), "--max-steps", str(steps), "--batch-size", str(batch_size),
                                "--eval-strategy", "no", "--save-strategy", "no", "--load-best-model-at-end", "false",
                                "--report-to", "none", "--disable-tqdm", "true", "--early-stopping-patience", "0"])
    dsd = load_dataset_folder(dataset)
    labels = list(dsd["train"].features["label"].names)
    base = load_base_model(config.run.model, labels, image_size=None, eval_size="auto", freeze_layers="auto",
                           channels_last=True, report=False)
    return config, dsd, labels, base


def child_train(dataset: Path, cache_dir: Path, steps: int, batch_size: int, budget_gb: float | None) -> None:
    """In its own process: the image cache of `dataset`, then `steps` Trainer steps; prints one JSON line."""
    import torch

    from har_model.train.image_cache import CacheStore, cache_splits
    from har_model.train.trainer import make_trainer, use_bf16

    warmup = 5  # the first steps pay for allocations and the page cache: timed apart
    config, dsd, labels, base = _setup(dataset, warmup, batch_size)
    budget = None if budget_gb is None else int(budget_gb * 2**30)
    t0 = time.time()
    images = cache_splits(dsd, base.train_prep, base.eval_prep, os.cpu_count() or 1,
                          CacheStore(cache_dir, budget=budget, key=str(dataset)))
    cache_seconds = time.time() - t0
    n = len(images.train) + len(images.validation) + len(images.test)
    trainer = make_trainer(base.model, cache_dir / "trainer", 0, config=config, images=images, labels=labels,
                           bf16=use_bf16("auto"))
    trainer.train()
    t1 = time.time()
    trainer.args.max_steps = steps
    trainer.train()
    step_seconds = time.time() - t1
    print(json.dumps({"images": n, "train_images": len(images.train), "place": images.place,
                      "cache_seconds": cache_seconds, "step_seconds": step_seconds, "steps": steps,
                      "cache_bytes": sum(getattr(images, s).pixels.nbytes for s in ("train", "validation", "test")),
                      "torch_threads": torch.get_num_threads()}), flush=True)


def child_compare(dataset: Path, cache_dir: Path, steps: int, batch_size: int, rounds: int = 3) -> None:
    """In its own process: the same Trainer steps from the RAM cache and from the memory-mapped one, alternated
    (ram, disk, disk, ram, ...) so that drift in the machine's speed falls on both; prints one JSON line."""
    import statistics

    from har_model.train.image_cache import CacheStore, cache_splits
    from har_model.train.trainer import make_trainer, use_bf16

    config, dsd, labels, base = _setup(dataset, steps, batch_size)
    caches = {"ram": cache_splits(dsd, base.train_prep, base.eval_prep, os.cpu_count() or 1, CacheStore(None)),
              "disk": cache_splits(dsd, base.train_prep, base.eval_prep, os.cpu_count() or 1,
                                   CacheStore(cache_dir, budget=0, key="compare"))}
    assert caches["disk"].place == "disk" and caches["ram"].place == "ram"
    seconds = {"ram": [], "disk": []}
    order = [name for r in range(rounds) for name in (("ram", "disk") if r % 2 == 0 else ("disk", "ram"))]
    for name in ["ram"] + order:  # the first run warms up allocations and is not counted
        trainer = make_trainer(base.model, cache_dir / "trainer", 0, config=config, images=caches[name],
                               labels=labels, bf16=use_bf16("auto"))
        t0 = time.time()
        trainer.train()
        seconds[name].append(time.time() - t0)
    seconds["ram"].pop(0)
    ratio = statistics.median(seconds["disk"]) / statistics.median(seconds["ram"])
    print(json.dumps({"steps": steps, "seconds": seconds, "disk_vs_ram": ratio}), flush=True)


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "har15")
    ap.add_argument("--scales", default="1,5,10")
    ap.add_argument("--work", type=Path, default=Path("/tmp/har_scale"))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--only", choices=["prepare", "train"], help="measure one stage only")
    ap.add_argument("--compare", action="store_true", help="only the RAM vs memory-mapped comparison at 1x")
    ap.add_argument("--child-train", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-compare", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--budget-gb", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_train:
        return child_train(args.child_train, args.cache_dir, args.steps, args.batch_size, args.budget_gb)
    if args.child_compare:
        return child_compare(args.child_compare, args.cache_dir, args.steps, args.batch_size)
    if args.compare:
        return compare(args)

    scales = [int(s) for s in args.scales.split(",")]
    folders = make_scales(args.data, args.work, scales)
    # measurements accumulate in work/scale.json, so that stages and scales can be measured in separate calls
    saved = args.work / "scale.json"
    rows = {int(k): v for k, v in json.loads(saved.read_text()).items()} if saved.is_file() else {}
    for k in scales:
        row = rows.setdefault(k, {})
        n = sum(1 for _ in folders[k].glob("*/*"))
        row["files"] = n
        dataset = args.work / f"ds{k}"
        if args.only != "train":
            shutil.rmtree(dataset, ignore_errors=True)
            row["prepare"] = measured([sys.executable, "train.py", "prepare", "--data-dir", str(folders[k]),
                                       "--output-dir", str(dataset)])
            print(f"{k}x prepare: {row['prepare']['seconds']:.0f} s", flush=True)
        if args.only != "prepare":
            for name, budget in {"default": None}.items():
                cache_dir = args.work / f"cache{k}-{name}"
                shutil.rmtree(cache_dir, ignore_errors=True)
                cmd = [sys.executable, __file__, "--child-train", str(dataset), "--cache-dir", str(cache_dir),
                       "--steps", str(args.steps), "--batch-size", str(args.batch_size)]
                row[name] = measured(cmd + ([] if budget is None else ["--budget-gb", str(budget)]))
                shutil.rmtree(cache_dir, ignore_errors=True)
                print(f"{k}x train ({name}): {row[name]['result']}", flush=True)
        saved.write_text(json.dumps(rows, indent=1))
    report(rows, sorted(rows), args)


def report(rows: dict, scales: list[int], args) -> None:
    gb = 2**30
    base = rows[scales[0]]
    print(f"\n{args.steps} steps of {args.batch_size} images; peak memory of the whole process tree")
    print("\n| scale | files | prepare s | ms/file | vs 1x | peak anon MB | cache s | ms/img | vs 1x | cache in | "
          "steps s | s/step | peak anon GB | peak file GB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k in scales:
        r = rows[k]
        cells = [f"{k}x", str(r["files"])]
        if "prepare" in r and "prepare" in base:
            p = r["prepare"]
            per = p["seconds"] / r["files"] * 1000
            ref = base["prepare"]["seconds"] / base["files"] * 1000
            cells += [f"{p['seconds']:.0f}", f"{per:.2f}", f"{per / ref:.2f}x", f"{p['peak_anon'] / 2**20:.0f}"]
        else:
            cells += ["-"] * 4
        if "default" in r and "default" in base:
            t, res = r["default"], r["default"]["result"]
            per = res["cache_seconds"] / res["images"] * 1000
            ref = base["default"]["result"]["cache_seconds"] / base["default"]["result"]["images"] * 1000
            cells += [f"{res['cache_seconds']:.0f}", f"{per:.2f}", f"{per / ref:.2f}x", res["place"],
                      f"{res['step_seconds']:.1f}", f"{res['step_seconds'] / res['steps']:.2f}",
                      f"{t['peak_anon'] / gb:.2f}", f"{t['peak_file'] / gb:.2f}"]
        print("| " + " | ".join(cells) + " |")


def compare(args) -> None:
    """Training steps from the memory-mapped cache vs the RAM cache, on the prepared 1x dataset."""
    dataset, cache_dir = args.work / "ds1", args.work / "cache-compare"
    if not dataset.is_dir():
        raise SystemExit(f"{dataset}: run `benchmarks/scale.py --scales 1 --only prepare` first")
    shutil.rmtree(cache_dir, ignore_errors=True)
    r = measured([sys.executable, __file__, "--child-compare", str(dataset), "--cache-dir", str(cache_dir), "--steps",
                  str(args.steps), "--batch-size", str(args.batch_size)])["result"]
    shutil.rmtree(cache_dir, ignore_errors=True)
    fmt = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
    print(f"{r['steps']} steps of {args.batch_size} at 1x, alternated: RAM {fmt(r['seconds']['ram'])} s; memory-mapped "
          f"{fmt(r['seconds']['disk'])} s; median memory-mapped / RAM = {r['disk_vs_ram']:.3f}x")


if __name__ == "__main__":
    main()
