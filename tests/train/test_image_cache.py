"""The training image cache in RAM and memory-mapped on disk: the same tensors, the same augmented batches, files
built once, reused while they hold the same data and refused when missing (har_model.train.image_cache)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import helpers
import pytest
import torch


ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--epochs", "2", "--batch-size", "8", "--val-fraction", "0.25", "--test-fraction", "0.25", "--num-workers",
         "1", "--report-to", "none", "--soup", "1"]


@pytest.fixture(scope="module")
def dsd(tmp_path_factory):
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

    root = tmp_path_factory.mktemp("cache")
    features = Features({"image": Image(), "label": ClassLabel(names=helpers.CLASSES)})
    splits = {}
    for s, (split, n) in enumerate({"train": 70, "validation": 9, "test": 6}.items()):  # > 64: the process pool
        rows = {"image": [], "label": []}
        for i in range(n):
            path = root / f"{split}{i}.jpg"
            helpers.synthetic_image(i % 3, seed=100 * s + i, size=(80 + i % 7, 60)).save(path)
            rows["image"].append(str(path))
            rows["label"].append(i % 3)
        splits[split] = Dataset.from_dict(rows, features=features)
    return DatasetDict(splits)


@pytest.fixture(scope="module")
def prep(tiny_model_dir):
    from har_model.preprocessing import load_preprocessing

    return load_preprocessing(tiny_model_dir)


def cache(dsd, prep, store=None):
    from har_model.train.image_cache import cache_splits

    return cache_splits(dsd, prep, prep, num_workers=2, store=store)


def test_the_disk_cache_holds_the_same_tensors_and_gives_the_same_batches(dsd, prep, tmp_path):
    from har_model.train.image_cache import CacheStore

    ram = cache(dsd, prep)
    disk = cache(dsd, prep, CacheStore(tmp_path / "cache", budget=0, key="k"))
    assert ram.place == "ram" and disk.place == "disk"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["cache.json", "test.bin", "train.bin",
                                                                       "validation.bin"]
    for split in ("train", "validation", "test"):
        a, b = getattr(ram, split), getattr(disk, split)
        assert a.pixels.dtype == b.pixels.dtype == torch.uint8 and torch.equal(a.pixels, b.pixels)
        assert torch.equal(a.labels, b.labels)
    for split in ("train", "test"):  # augmented training crops and evaluation inputs, item by item, same seed
        torch.manual_seed(0)
        items_a = [getattr(ram, split)[i]["pixel_values"] for i in range(6)]
        torch.manual_seed(0)
        items_b = [getattr(disk, split)[i]["pixel_values"] for i in range(6)]
        assert all(torch.equal(x, y) for x, y in zip(items_a, items_b))


def test_the_files_are_built_once_reused_for_the_same_data_and_rebuilt_for_other(dsd, prep, tmp_path, monkeypatch):
    from har_model.train import image_cache
    from har_model.train.image_cache import CacheStore

    folder = tmp_path / "cache"
    first = cache(dsd, prep, CacheStore(folder, budget=0, key="data-1"))
    assert json.loads((folder / "cache.json").read_text())["key"] == "data-1"
    decoded = []
    real = image_cache.decode_images
    monkeypatch.setattr(image_cache, "decode_images", lambda *a, **k: decoded.append(1) or real(*a, **k))
    again = cache(dsd, prep, CacheStore(folder, budget=0, key="data-1"))  # --resume: mapped, not decoded
    assert decoded == [] and torch.equal(again.train.pixels, first.train.pixels)
    other = cache(dsd, prep, CacheStore(folder, budget=0, key="data-2"))  # other data: decoded again
    assert len(decoded) == 3 and json.loads((folder / "cache.json").read_text())["key"] == "data-2"
    assert torch.equal(other.test.pixels, first.test.pixels)


def test_the_other_processes_only_map_what_the_main_one_built(dsd, prep, tmp_path):
    from har_model.errors import HarError
    from har_model.train.image_cache import CacheStore

    folder = tmp_path / "cache"
    with pytest.raises(HarError, match="main process builds it"):
        cache(dsd, prep, CacheStore(folder, key="k", build=False))
    built = cache(dsd, prep, CacheStore(folder, key="k", disk=True))  # the main process, under a launcher
    mapped = cache(dsd, prep, CacheStore(folder, build=False))
    assert mapped.place == built.place == "disk" and torch.equal(mapped.train.pixels, built.train.pixels)


def test_the_budget_decides_where_the_cache_lives(tmp_path):
    from har_model.train.image_cache import CacheStore, cached_shape, default_budget

    assert CacheStore(tmp_path, budget=10).place(11) == "disk"
    assert CacheStore(tmp_path, budget=10).place(10) == "ram"
    assert CacheStore(None, budget=0).place(10) == "ram"  # nowhere to put files: RAM
    assert CacheStore(tmp_path, budget=10**12, disk=True).place(1) == "disk"  # a launcher: always shared files
    assert default_budget() > 0


def test_a_run_with_the_disk_cache_trains_the_same_model(tmp_path, tiny_model_dir):
    """--cache-memory 0 (the memory-mapped files) and the default (RAM) give the same weights, bit for bit."""
    from safetensors.torch import load_file

    images = helpers.make_class_folder(tmp_path / "images", per_class=8)
    outs = {}
    for name, extra in {"ram": [], "disk": ["--cache-memory", "0"]}.items():
        outs[name] = tmp_path / name
        proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data-dir", str(images), "--output-dir",
                               str(outs[name]), "--model", str(tiny_model_dir), *QUICK, *extra],
                              capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]
        where = "OUT/cache (memory-mapped)" if name == "disk" else "images cached in memory"
        assert where in proc.stdout
        assert not (outs[name] / "cache").exists()  # removed once the run has finished
    a, b = (load_file(outs[n] / "model.safetensors") for n in ("ram", "disk"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_decoding_works_where_processes_are_spawned_not_forked(tmp_path, tiny_model_dir):
    """Windows has no fork and macOS should not fork: there the pool is started the platform's way (spawn: workers
    import afresh and get their jobs pickled), with the same pixels. Run as a script, as a user's run would be."""
    script = tmp_path / "spawned.py"
    script.write_text(f"""
import multiprocessing, sys, types
sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / "tests")!r}]
import torch
import helpers
from har_model import hardware
from har_model.preprocessing import load_preprocessing
from har_model.train.image_cache import decode_images

if __name__ == "__main__":
    prep = load_preprocessing({str(tiny_model_dir)!r})
    blobs = []
    for i in range(70):
        path = {str(tmp_path)!r} + f"/{{i}}.jpg"
        helpers.synthetic_image(i % 3, seed=i, size=(70 + i % 5, 60)).save(path)
        blobs.append({{"bytes": None, "path": path}})
    serial = decode_images(blobs, prep=prep, train=True, num_workers=1)
    hardware.sys = types.SimpleNamespace(platform="win32")  # what har_model sees; multiprocessing stays on Linux
    started = []
    real = multiprocessing.get_context
    multiprocessing.get_context = lambda method=None: started.append(method) or real("spawn")
    for train in (True, False):
        pooled = decode_images(blobs, prep=prep, train=train, num_workers=2)
        assert torch.equal(pooled, decode_images(blobs, prep=prep, train=train, num_workers=1))
    print("spawned", started)
""")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "spawned [None, None]" in proc.stdout
