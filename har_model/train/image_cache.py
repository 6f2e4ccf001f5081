"""The training image cache: every image decoded and resized once, kept as uint8 tensors for all epochs.

Decoding a JPEG costs more than a training step's worth of augmentation, so each split is decoded once per run
(shared by every epoch, soup member and process) into an [N, 3, H, W] tensor:

    train        uint8 at `train_base_hw` (a little larger than the model input: random crops keep detail)
    validation,  exactly as the image processor sizes them: uint8, or already normalised float32 when the
    test         processor runs as the stock one

Where the pixels live (`CacheStore`): in RAM while the whole cache fits the memory budget (--cache-memory,
default half the memory available when the run starts); beyond it, and always under a launcher, in memory-mapped
files in the model folder (OUT/cache/, one raw file per split and cache.json, written last). A mapped file is read
through the page cache: one copy in memory for all processes of a node, and only the pages in use when the data is
larger than memory. The tensors, and so the augmented batches, are the same either way. The files are kept
for --resume (cache.json names the data they hold) and removed when the run has finished.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from datasets import Image as ImageFeature
from tqdm.auto import tqdm

from har_model.data.load import image_bytes
from har_model.data.splits import SPLITS
from har_model.errors import HarError
from har_model.hardware import available_memory, process_pool
from har_model.imaging import open_rgb
from har_model.model_folder.files import CACHE
from har_model.outputs import atomic_write_text, own_dir
from har_model.preprocessing import Preprocessing, StockPreprocessing
from har_model.train.augment import Augmenter, affine_tensors, normalize

Prep = Preprocessing | StockPreprocessing
INDEX = "cache.json"


def train_base_hw(prep: Prep, margin: float = 1.15) -> tuple[int, int]:
    """Size at which training images are cached: a little larger than the model input, so crops keep detail."""
    h, w = prep.output_hw
    return (int(round(h * margin)), int(round(w * margin)))


def default_budget() -> int:
    """Half the memory available now (the rest is for the model, the optimizer and the batches); 4 GiB when the
    platform does not say."""
    available = available_memory()
    return available // 2 if available else 4 << 30


# ------------------------------------------------------------------------------------------------ decoding


def _decode_train(job) -> np.ndarray:
    data, (h, w), resample = job
    img = open_rgb(data, draft_size=(w, h))  # JPEG DCT scaling: never below the target size
    return np.array(img.resize((w, h), resample), dtype=np.uint8)


def _decode_eval(job) -> np.ndarray:
    data, prep = job
    return prep.resize_crop(open_rgb(data))


def cached_shape(n: int, prep: Prep, train: bool) -> tuple[tuple[int, ...], torch.dtype]:
    """Shape and dtype of the decoded split, known before decoding (so the store can decide where it goes)."""
    hw = train_base_hw(prep) if train else prep.output_hw
    dtype = torch.float32 if not train and isinstance(prep, StockPreprocessing) else torch.uint8
    return (n, 3, *hw), dtype


def decode_images(images: Sequence, *, prep: Prep, train: bool, num_workers: int = 1, desc: str = "",
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """Decode undecoded `datasets.Image` values (a list, or a `Column`) once, into `out` (or a new tensor) of
    `cached_shape`. Images are read and decoded a block at a time: memory holds one block of encoded bytes, not
    the whole dataset's."""
    shape, dtype = cached_shape(len(images), prep, train)
    out = torch.empty(shape, dtype=dtype) if out is None else out
    if train:
        fn, extra = _decode_train, (train_base_hw(prep), prep.resample)
    else:
        fn, extra = _decode_eval, (prep,)
    bar = tqdm(total=len(images), desc=desc or "decoding", unit="img", leave=False)
    pool = process_pool(num_workers) if num_workers > 1 and len(images) > 64 else None
    try:
        i = 0
        for block in _blocks(iter(images), 1024):
            jobs = [(image_bytes(im), *extra) for im in block]
            for arr in (pool.imap(fn, jobs, chunksize=16) if pool is not None else map(fn, jobs)):
                out[i] = torch.from_numpy(arr).permute(2, 0, 1)
                i += 1
                bar.update(1)
    finally:
        if pool is not None:
            pool.terminate()
        bar.close()
    return out


def _blocks(items, size: int):
    while block := [x for _, x in zip(range(size), items)]:
        yield block


class Column:
    """The image values of a split, read from the dataset's files as they are needed (sized and iterable)."""

    def __init__(self, ds):
        self.ds = ds.cast_column("image", ImageFeature(decode=False)).select_columns(["image"])

    def __len__(self) -> int:
        return len(self.ds)

    def __iter__(self):
        for batch in self.ds.iter(batch_size=256):
            yield from batch["image"]


# -------------------------------------------------------------------------------------------------- storage


class CacheStore:
    """Where the decoded splits live: RAM within `budget` bytes, memory-mapped files in `folder` beyond it.

    `key` names the data (the run's data fingerprint and the sizes): files holding another key are rebuilt.
    `build=False` (the other processes under a launcher, after the main one has built the files): map them only.
    `disk=True`: files whatever the budget (several processes share one copy through the page cache)."""

    def __init__(self, folder: Path | None, *, budget: int | None = None, key: str = "", build: bool = True,
                 disk: bool = False):
        self.folder, self.key, self.build, self.disk = folder, key, build, disk
        self.budget = default_budget() if budget is None else budget
        self.index = self._read_index() if folder is not None else {}
        if build and self.index.get("key") != key:
            self.index = {}  # another run's cache, or a half-written one: rebuilt split by split

    def place(self, total_bytes: int) -> str:
        """"ram" or "disk" for a cache of `total_bytes`."""
        if self.folder is not None and (self.disk or total_bytes > self.budget or not self.build):
            return "disk"
        return "ram"

    def split(self, name: str, shape, dtype: torch.dtype, fill, on_disk: bool) -> torch.Tensor:
        """The tensor of split `name`: `fill(tensor)` decodes into it unless a complete file is already there."""
        if not on_disk:
            return fill(torch.empty(shape, dtype=dtype))
        path = self.folder / f"{name}.bin"
        entry = {"shape": list(shape), "dtype": str(dtype).removeprefix("torch.")}
        if self.index.get("splits", {}).get(name) == entry and path.is_file():
            return _mapped(path, shape, dtype)
        if not self.build:
            raise HarError(f"{self.folder}: the image cache of the {name} split is missing; the main process builds "
                           "it (run the same command again)")
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            if math.prod(shape):
                mm = np.memmap(tmp, dtype=_np_dtype(dtype), mode="w+", shape=tuple(shape))
                fill(torch.from_numpy(mm))
                mm.flush()  # on disk before the index names it
                del mm
            else:
                tmp.touch()
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self.index = {"key": self.key, "splits": {**self.index.get("splits", {}), name: entry}}
        atomic_write_text(self.folder / INDEX, json.dumps(self.index, indent=1) + "\n")
        return _mapped(path, shape, dtype)

    def _read_index(self) -> dict:
        try:
            index = json.loads((self.folder / INDEX).read_text())
        except (OSError, ValueError):
            return {}
        return index if isinstance(index, dict) else {}


def _mapped(path: Path, shape, dtype: torch.dtype) -> torch.Tensor:
    """A tensor over a memory-mapped file, mapped copy-on-write ("c"): readable and writable without ever writing
    to the file, its pages shared with every other process that maps it."""
    if math.prod(shape) == 0:
        return torch.empty(shape, dtype=dtype)
    return torch.from_numpy(np.memmap(path, dtype=_np_dtype(dtype), mode="c", shape=tuple(shape)))


def _np_dtype(dtype: torch.dtype) -> np.dtype:
    return np.dtype(str(dtype).removeprefix("torch."))


# ---------------------------------------------------------------------------------------------- the splits


class CachedImages(torch.utils.data.Dataset):
    """Pre-decoded images + labels; augments on the fly for training, normalises only for evaluation."""

    def __init__(self, pixels: torch.Tensor, labels: Sequence[int], prep: Prep, augment: bool, mirror: bool = False):
        self.pixels, self.labels = pixels, torch.as_tensor(list(labels), dtype=torch.long)
        self.prep, self.mirror = prep, mirror
        self.augmenter = Augmenter(prep) if augment else None
        self.affine = None if pixels.is_floating_point() else affine_tensors(prep)

    def mirrored(self) -> CachedImages:
        """The same evaluation images, mirrored left to right (the second view of flip averaging)."""
        return CachedImages(self.pixels, self.labels, self.prep, augment=False, mirror=not self.mirror)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        img = self.pixels[i]
        if self.augmenter:
            x = self.augmenter(img)
        else:  # float pixels: normalised by the stock processor already
            x = img if self.affine is None else normalize(img, *self.affine)
            x = x.flip(-1) if self.mirror else x
        return {"pixel_values": x, "labels": self.labels[i]}


@dataclass
class CachedSplits:
    """The train (augmented), validation and test splits, each decoded once; `place`: "ram" or "disk"."""

    train: CachedImages
    validation: CachedImages
    test: CachedImages
    place: str = "ram"


def run_store(out: Path, recipe, key: str, *, build: bool, shared: bool) -> CacheStore:
    """Where a run's decoded images go: RAM within --cache-memory, else OUT/cache (always there when ``shared`` by
    the processes of a launcher, so that a node holds one copy). The builder fills it, the others map its files."""
    folder = own_dir(out, CACHE) if build else out / CACHE
    budget = None if recipe.cache_memory is None else int(recipe.cache_memory * 2**30)
    return CacheStore(folder, budget=budget, key=f"{key}|{recipe.image_size}|{recipe.eval_size}", build=build,
                      disk=shared)


def cache_splits(dsd, train_prep: Prep, prep: Prep, num_workers: int, store: CacheStore | None = None) -> CachedSplits:
    """Decode and resize every image of a DatasetDict once (shared by all soup members), into `store`."""
    store = store or CacheStore(None)
    shapes = {s: cached_shape(len(dsd[s]), train_prep if s == "train" else prep, s == "train") for s in SPLITS}
    total = sum(math.prod(shape) * dtype.itemsize for shape, dtype in shapes.values())
    place = store.place(total)

    def cached(split: str) -> CachedImages:
        train = split == "train"
        p = train_prep if train else prep
        images = Column(dsd[split])

        def fill(out: torch.Tensor) -> torch.Tensor:
            return decode_images(images, prep=p, train=train, num_workers=num_workers, desc=f"decoding {split}",
                                 out=out)

        pixels = store.split(split, *shapes[split], fill, on_disk=place == "disk")
        return CachedImages(pixels, dsd[split]["label"], p, augment=train)

    return CachedSplits(cached("train"), cached("validation"), cached("test"), place)
