"""Training augmentation on the cached uint8 images (har_model.train.image_cache), with torch ops, no torchvision.

Random training crops are normalised by the model's image processor as reproduced by `har_model.preprocessing`
(the code `Classifier`, evaluation and the ONNX path use too).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from har_model.errors import HarError
from har_model.preprocessing import Preprocessing, StockPreprocessing

Prep = Preprocessing | StockPreprocessing


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
