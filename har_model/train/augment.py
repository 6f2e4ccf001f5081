"""Fast preprocessing for training: decode + resize once, augment on uint8 tensors with torch ops.

No torchvision. Evaluation preprocessing reproduces the model's saved image processor (resize to its size with
its resample filter, optional centre crop, rescale, normalise), so training-time validation scores are the
scores `pipeline()` gives.
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
from PIL import Image

from har_model.data.load import image_bytes
from har_model.imaging import open_rgb

_PIL_RESAMPLE = {0: Image.NEAREST, 1: Image.LANCZOS, 2: Image.BILINEAR, 3: Image.BICUBIC, 4: Image.BOX, 5: Image.HAMMING}


def _hw(value, default: tuple[int, int] | None = None) -> tuple[int, int] | None:
    if value is None:
        return default
    if isinstance(value, int):
        return (value, value)
    if "height" in value and "width" in value:
        return (int(value["height"]), int(value["width"]))
    if "shortest_edge" in value:
        s = int(value["shortest_edge"])
        return (s, s)
    raise ValueError(f"unsupported image processor size {value!r}")


@dataclass(frozen=True)
class Geometry:
    """What the image processor does to an image, in numbers."""

    resize_hw: tuple[int, int]
    crop_hw: tuple[int, int] | None
    resample: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale: float

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.crop_hw or self.resize_hw

    @classmethod
    def from_processor(cls, processor) -> "Geometry":
        resize_hw = _hw(getattr(processor, "size", None))
        if resize_hw is None:
            raise ValueError("the image processor has no `size`")
        crop_hw = _hw(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", False) else None
        resample = getattr(processor, "resample", 2)
        resample = int(getattr(resample, "value", resample)) if resample is not None else 2
        mean = tuple(processor.image_mean) if getattr(processor, "do_normalize", True) else (0.0, 0.0, 0.0)
        std = tuple(processor.image_std) if getattr(processor, "do_normalize", True) else (1.0, 1.0, 1.0)
        rescale = float(getattr(processor, "rescale_factor", 1 / 255)) if getattr(processor, "do_rescale", True) else 1.0
        return cls(resize_hw, crop_hw, resample, mean, std, rescale)


def scale_processor(processor, factor: float) -> None:
    """Scale an image processor's resize (and centre-crop) size in place, keeping its other settings."""
    if factor == 1:
        return

    def scaled(value):
        if isinstance(value, int):
            return int(round(value * factor))
        return {k: int(round(v * factor)) if k in ("height", "width", "shortest_edge") else v for k, v in value.items()}

    for attr in ("size", "crop_size"):
        value = getattr(processor, attr, None)
        if value is not None:
            setattr(processor, attr, scaled(dict(value) if not isinstance(value, int) else value))


def resize_for_eval(img: Image.Image, geo: Geometry) -> np.ndarray:
    """PIL image -> HxWx3 uint8 exactly as the image processor would size it (resize, then centre crop)."""
    h, w = geo.resize_hw
    img = img.resize((w, h), _PIL_RESAMPLE.get(geo.resample, Image.BILINEAR))
    if geo.crop_hw is not None:
        ch, cw = geo.crop_hw
        top, left = max(0, (h - ch) // 2), max(0, (w - cw) // 2)
        img = img.crop((left, top, left + cw, top + ch))
    return np.array(img, dtype=np.uint8)


def train_base_hw(geo: Geometry, margin: float = 1.15) -> tuple[int, int]:
    """Size at which training images are cached: a little larger than the model input, so crops keep detail."""
    h, w = geo.out_hw
    return (int(round(h * margin)), int(round(w * margin)))


def _decode_one(job) -> np.ndarray:
    data, (h, w), resample = job
    img = open_rgb(data, draft_size=(w, h))  # JPEG DCT scaling: never below the target size
    return np.array(img.resize((w, h), _PIL_RESAMPLE.get(resample, Image.BILINEAR)), dtype=np.uint8)


def _decode_eval(job) -> np.ndarray:
    data, geo = job
    return resize_for_eval(open_rgb(data), geo)


def decode_images(images: Sequence, *, geo: Geometry, train: bool, num_workers: int = 1, desc: str = "") -> torch.Tensor:
    """Decode a column of undecoded `datasets.Image` values once, into an [N, 3, H, W] uint8 tensor.

    Training images are cached at `train_base_hw` (random crops are cut from them every epoch); evaluation images
    at exactly the processor's output size.
    """
    from tqdm.auto import tqdm

    if train:
        hw = train_base_hw(geo)
        jobs = ((image_bytes(im), hw, geo.resample) for im in images)
        fn = _decode_one
    else:
        hw = geo.out_hw
        jobs = ((image_bytes(im), geo) for im in images)
        fn = _decode_eval
    out = torch.empty((len(images), 3, *hw), dtype=torch.uint8)
    bar = tqdm(total=len(images), desc=desc or "decoding", unit="img", leave=False)
    if num_workers > 1 and len(images) > 64:
        with get_context("fork").Pool(num_workers) as pool:
            for i, arr in enumerate(pool.imap(fn, jobs, chunksize=32)):
                out[i] = torch.from_numpy(arr).permute(2, 0, 1)
                bar.update(1)
    else:
        for i, job in enumerate(jobs):
            out[i] = torch.from_numpy(fn(job)).permute(2, 0, 1)
            bar.update(1)
    bar.close()
    return out


class Augmenter:
    """Random resized crop + horizontal flip + mild colour jitter on a uint8 [3, H, W] tensor (torch ops only)."""

    def __init__(self, geo: Geometry, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), flip: float = 0.5, jitter: float = 0.2):
        self.out_hw = geo.out_hw
        self.scale, self.ratio, self.flip, self.jitter = scale, ratio, flip, jitter
        self.mean = torch.tensor(geo.mean).view(3, 1, 1)
        self.std = torch.tensor(geo.std).view(3, 1, 1)
        self.rescale = geo.rescale

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
        return normalize(x, self.rescale, self.mean, self.std)


def normalize(x: torch.Tensor, rescale: float, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.float() * rescale - mean) / std


class CachedImages(torch.utils.data.Dataset):
    """Pre-decoded images + labels; augments on the fly for training, normalises only for evaluation."""

    def __init__(self, pixels: torch.Tensor, labels: Sequence[int], geo: Geometry, augment: bool):
        self.pixels, self.labels = pixels, torch.as_tensor(list(labels), dtype=torch.long)
        self.augmenter = Augmenter(geo) if augment else None
        self.mean = torch.tensor(geo.mean).view(3, 1, 1)
        self.std = torch.tensor(geo.std).view(3, 1, 1)
        self.rescale = geo.rescale

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        img = self.pixels[i]
        x = self.augmenter(img) if self.augmenter else normalize(img, self.rescale, self.mean, self.std)
        return {"pixel_values": x, "labels": self.labels[i]}


@dataclass
class CachedSplits:
    """The train (augmented), validation and test splits, each decoded once."""

    train: CachedImages
    validation: CachedImages
    test: CachedImages


def cache_splits(dsd, train_geo: Geometry, geo: Geometry, num_workers: int) -> CachedSplits:
    """Decode and resize every image of a DatasetDict once (shared by all soup members)."""

    def cached(split: str, train: bool) -> CachedImages:
        ds = dsd[split].cast_column("image", ImageFeature(decode=False))
        g = train_geo if train else geo
        pixels = decode_images(ds["image"], geo=g, train=train, num_workers=num_workers, desc=f"decoding {split}")
        return CachedImages(pixels, ds["label"], g, augment=train)

    return CachedSplits(cached("train", True), cached("validation", False), cached("test", False))
