"""Fast preprocessing for training: decode + resize once, augment on uint8 tensors with torch ops.

No torchvision. Validation and test images go through the model's image processor as reproduced by
`har_model.preprocessing` (the code `Classifier` and the ONNX path use too), so training-time validation and test
scores are the scores `pipeline()` gives; random training crops are normalised by the same object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Image as ImageFeature

from har_model.data.load import image_bytes
from har_model.errors import HarError
from har_model.imaging import open_rgb
from har_model.preprocessing import Preprocessing, StockPreprocessing

Prep = Preprocessing | StockPreprocessing


def train_base_hw(prep: Prep, margin: float = 1.15) -> tuple[int, int]:
    """Size at which training images are cached: a little larger than the model input, so crops keep detail."""
    h, w = prep.output_hw
    return (int(round(h * margin)), int(round(w * margin)))


def _decode_one(job) -> np.ndarray:
    data, (h, w), resample = job
    img = open_rgb(data, draft_size=(w, h))  # JPEG DCT scaling: never below the target size
    return np.array(img.resize((w, h), resample), dtype=np.uint8)


def _decode_eval(job) -> np.ndarray:
    data, prep = job
    return prep.resize_crop(open_rgb(data))


def decode_images(images: Sequence, *, prep: Prep, train: bool, num_workers: int = 1, desc: str = "") -> torch.Tensor:
    """Decode a column of undecoded `datasets.Image` values once, into an [N, 3, H, W] tensor.

    Training images are cached as uint8 at `train_base_hw` (random crops are cut from them every epoch);
    evaluation images exactly as the image processor sizes them: uint8, or already normalised float32 when the
    processor runs as the stock one.
    """
    from tqdm.auto import tqdm

    if train:
        jobs = ((image_bytes(im), train_base_hw(prep), prep.resample) for im in images)
        fn = _decode_one
    else:
        jobs = ((image_bytes(im), prep) for im in images)
        fn = _decode_eval
    out = None
    bar = tqdm(total=len(images), desc=desc or "decoding", unit="img", leave=False)
    pool = get_context("fork").Pool(num_workers) if num_workers > 1 and len(images) > 64 else None
    try:
        arrays = pool.imap(fn, jobs, chunksize=32) if pool is not None else map(fn, jobs)
        for i, arr in enumerate(arrays):
            if out is None:
                dtype = torch.uint8 if arr.dtype == np.uint8 else torch.float32
                out = torch.empty((len(images), 3, *arr.shape[:2]), dtype=dtype)
            out[i] = torch.from_numpy(arr).permute(2, 0, 1)
            bar.update(1)
    finally:
        if pool is not None:
            pool.terminate()
        bar.close()
    if out is None:
        out = torch.empty((0, 3, *prep.output_hw), dtype=torch.uint8)
    return out


class Augmenter:
    """Random resized crop + horizontal flip + mild colour jitter on a uint8 [3, H, W] tensor (torch ops only)."""

    def __init__(self, prep: Prep, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), flip: float = 0.5, jitter: float = 0.2):
        self.out_hw = prep.output_hw
        self.scale, self.ratio, self.flip, self.jitter = scale, ratio, flip, jitter
        self.affine = affine_tensors(prep)

    def crop_box(self, h: int, w: int) -> tuple[int, int, int, int]:
        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * float(torch.empty(1).uniform_(*self.scale))
            aspect = math.exp(float(torch.empty(1).uniform_(*log_ratio)))
            cw, ch = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,)))
                left = int(torch.randint(0, w - cw + 1, (1,)))
                return top, left, ch, cw
        return 0, 0, h, w

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        _, h, w = img.shape
        top, left, ch, cw = self.crop_box(h, w)
        x = img[:, top : top + ch, left : left + cw].unsqueeze(0).float()
        x = F.interpolate(x, size=self.out_hw, mode="bilinear", align_corners=False, antialias=True)[0]
        if float(torch.rand(1)) < self.flip:
            x = x.flip(-1)
        if self.jitter > 0:
            b, c, s = (1 + (torch.rand(3) * 2 - 1) * self.jitter).tolist()
            x = x * b
            mean = x.mean()
            x = (x - mean) * c + mean
            gray = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)
            x = (x - gray) * s + gray
            x = x.clamp(0, 255)
        return normalize(x, *self.affine)


def affine_tensors(prep: Prep) -> tuple[torch.Tensor, torch.Tensor]:
    """The processor's rescale and normalisation as per-channel (scale, offset) tensors of shape [3, 1, 1]."""
    if prep.scale is None:
        raise HarError(f"image processor {type(prep.processor).__name__}: its pixel values are not a per-channel "
                       "rescale and normalisation, so random training crops cannot be prepared like its inputs")
    return torch.tensor(prep.scale).view(3, 1, 1), torch.tensor(prep.offset).view(3, 1, 1)


def normalize(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Pixel values (0..255, uint8 or float) -> the model's input values."""
    return x.float() * scale + offset


class CachedImages(torch.utils.data.Dataset):
    """Pre-decoded images + labels; augments on the fly for training, normalises only for evaluation."""

    def __init__(self, pixels: torch.Tensor, labels: Sequence[int], prep: Prep, augment: bool):
        self.pixels, self.labels = pixels, torch.as_tensor(list(labels), dtype=torch.long)
        self.augmenter = Augmenter(prep) if augment else None
        self.affine = None if pixels.is_floating_point() else affine_tensors(prep)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        img = self.pixels[i]
        if self.augmenter:
            x = self.augmenter(img)
        else:  # float pixels: normalised by the stock processor already
            x = img if self.affine is None else normalize(img, *self.affine)
        return {"pixel_values": x, "labels": self.labels[i]}


@dataclass
class CachedSplits:
    """The train (augmented), validation and test splits, each decoded once."""

    train: CachedImages
    validation: CachedImages
    test: CachedImages


def cache_splits(dsd, train_prep: Prep, prep: Prep, num_workers: int) -> CachedSplits:
    """Decode and resize every image of a DatasetDict once (shared by all soup members)."""

    def cached(split: str, train: bool) -> CachedImages:
        ds = dsd[split].cast_column("image", ImageFeature(decode=False))
        p = train_prep if train else prep
        pixels = decode_images(ds["image"], prep=p, train=train, num_workers=num_workers, desc=f"decoding {split}")
        return CachedImages(pixels, ds["label"], p, augment=train)

    return CachedSplits(cached("train", True), cached("validation", False), cached("test", False))
