"""One image preprocessing for training and serving, derived from a saved transformers image processor.

The training image cache, evaluation, ``Classifier`` and the ONNX path all call :func:`load_preprocessing` (a model
folder) or :func:`preprocessing_for` (a processor object), so validation and test scores are measured on exactly
the tensors ``pipeline("image-classification")`` feeds the model. Needs only numpy and Pillow: the configuration is
read as a dict, so serving through ONNX needs neither torch nor transformers.

:class:`Preprocessing` reproduces the stock PIL processors of ViT, DeiT, BEiT, CLIP, SigLIP, BiT (DINOv2),
MobileNet v1/v2, EfficientNet (``rescale_offset``, ``include_top``) and ConvNeXT (``crop_pct``; also ResNet's):
resize (fixed height and width, or keeping the aspect ratio by the shortest edge, optionally capped by the longest
edge) with the processor's PIL filter -> centre crop(s) on uint8 -> one multiply-add per channel (rescale, offset
and normalisation are all affine). Anything else (another processor class, padding, options this module does not
model) runs through the stock processor itself (:class:`StockPreprocessing`: exact, slower, needs transformers),
never through a guess.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from har_model.errors import HarError
from har_model.model_folder.files import PREPROCESSOR as CONFIG_NAME
from har_model.model_folder.files import read_json

_HALF = (0.5, 0.5, 0.5)  # transformers' IMAGENET_STANDARD_MEAN / _STD
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _defaults(resample: int, size: dict, crop: dict | None = None, square: bool = True, mean=_HALF, std=_HALF, **extra):
    out = dict(do_resize=True, size=size, resample=resample, do_center_crop=crop is not None, crop_size=crop,
               do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=mean, image_std=std,
               default_to_square=square)
    return {**out, **extra}


def _hw(side: int) -> dict:
    return {"height": side, "width": side}


# The class attributes of each reproduced PIL processor (a saved config leaves out or nulls what is at its class
# default). tests/test_preprocessing.py checks this table against the installed transformers classes.
CLASS_DEFAULTS = {
    "ViT": _defaults(2, _hw(224)),
    "DeiT": _defaults(3, _hw(256), _hw(224)),
    "Beit": _defaults(3, _hw(224), _hw(224), do_center_crop=False, do_reduce_labels=False),
    "CLIP": _defaults(3, {"shortest_edge": 224}, _hw(224), square=False, mean=_CLIP_MEAN, std=_CLIP_STD),
    "Siglip": _defaults(3, _hw(224), square=False),
    "Bit": _defaults(3, {"shortest_edge": 224}, _hw(224), square=False, mean=_CLIP_MEAN, std=_CLIP_STD),
    "MobileNetV1": _defaults(2, {"shortest_edge": 256}, _hw(224), square=False),
    "MobileNetV2": _defaults(2, {"shortest_edge": 256}, _hw(224), square=False, do_reduce_labels=False),
    "EfficientNet": _defaults(3, _hw(346), _hw(289), do_center_crop=False, rescale_offset=False, include_top=True),
    "ConvNext": _defaults(3, {"shortest_edge": 384}, square=False, crop_pct=224 / 256),
}

# Every keyword argument of the reproduced classes is in one of these sets (tests/test_preprocessing.py checks it
# against the installed transformers); keys outside a class's keyword arguments are ignored by transformers too.
MODELLED_OPTIONS = {"do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                    "do_normalize", "image_mean", "image_std", "default_to_square", "data_format", "crop_pct",
                    "rescale_offset", "include_top"}
# Options that leave the pixel values of an RGB PIL image unchanged (device, output layout requests, ...).
NO_EFFECT_OPTIONS = {"do_convert_rgb", "device", "disable_grouping", "image_seq_length", "input_data_format",
                     "return_tensors", "pad_size", "image_processor_type", "processor_class"}
# Options some classes accept that change the output unless they are off.
MUST_BE_OFF_OPTIONS = {"do_pad", "do_reduce_labels", "use_square_size"}


class NotReproduced(Exception):
    """The processor does something :class:`Preprocessing` does not reproduce exactly; the message says what."""


def processor_family(kind: str) -> str | None:
    """``"CLIPImageProcessorPil"`` -> ``"CLIP"`` when the class is one this module reproduces, else None."""
    for suffix in ("Pil", "Fast"):
        kind = kind.removesuffix(suffix)
    family = kind.removesuffix("ImageProcessor")
    return family if kind.endswith("ImageProcessor") and family in CLASS_DEFAULTS else None


# --------------------------------------------------------------------------------------------- sizes


def size_dict(value, default_to_square: bool, what: str = "size") -> dict:
    """transformers' ``get_size_dict``: an int, a (height, width) pair or a dict, as a dict of sizes."""
    if isinstance(value, bool) or value is None:
        raise NotReproduced(f"{what} {value!r}")
    if isinstance(value, int):
        return _hw(value) if default_to_square else {"shortest_edge": value}
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return {"height": int(value[0]), "width": int(value[1])}
    if isinstance(value, dict):
        return {k: int(v) for k, v in value.items() if v is not None}
    raise NotReproduced(f"{what} {value!r}")


def shortest_edge_hw(height: int, width: int, shortest: int, longest: int | None = None) -> tuple[int, int]:
    """Output (height, width) of an aspect-keeping resize, as transformers' PIL backend computes it."""
    if longest is None:  # get_resize_output_image_size(default_to_square=False)
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(shortest * long / short)
        return (new_long, shortest) if width <= height else (shortest, new_long)
    # get_size_with_aspect_ratio(size=shortest, max_size=longest)
    raw = None
    lo, hi = float(min(height, width)), float(max(height, width))
    if hi / lo * shortest > longest:
        raw = longest * lo / hi
        shortest = int(round(raw))
    if (height <= width and height == shortest) or (width <= height and width == shortest):
        return height, width
    if width < height:
        return (int(raw * height / width) if raw is not None else int(shortest * height / width)), shortest
    return shortest, (int(raw * width / height) if raw is not None else int(shortest * width / height))


def center_crop(arr: np.ndarray, crop_hw: tuple[int, int]) -> np.ndarray:
    """transformers' ``center_crop`` on an (H, W, C) array, zero-padding where the image is smaller."""
    ch, cw = crop_hw
    h, w = arr.shape[:2]
    if h < ch or w < cw:
        nh, nw = max(h, ch), max(w, cw)
        padded = np.zeros((nh, nw, arr.shape[2]), arr.dtype)
        top, left = -(-(nh - h) // 2), -(-(nw - w) // 2)
        padded[top : top + h, left : left + w] = arr
        arr, h, w = padded, nh, nw
    top, left = (h - ch) // 2, (w - cw) // 2
    return arr[top : top + ch, left : left + cw]


def _scaled_size(value, factor: float):
    if isinstance(value, int):
        return int(round(value * factor))
    keys = ("height", "width", "shortest_edge", "longest_edge")
    return {k: int(round(v * factor)) if k in keys and v is not None else v for k, v in dict(value).items()}


def scale_processor(processor, factor: float) -> None:
    """Scale an image processor's resize and centre-crop sizes in place, keeping its other settings (FixRes)."""
    if factor == 1:
        return
    for attr in ("size", "crop_size"):
        value = getattr(processor, attr, None)
        if value is not None:
            setattr(processor, attr, _scaled_size(value, factor))


# --------------------------------------------------------------------------------------------- the fast path


@dataclass(frozen=True)
class Preprocessing:
    """A processor reduced to: resize (PIL, uint8) -> centre crop(s) -> per-channel ``x * scale + offset``."""

    resize_hw: tuple[int, int] | None  # fixed (height, width) resize
    shortest_edge: int | None  # or: resize the short side to this, keeping the aspect ratio ...
    longest_edge: int | None  # ... and, if set, the long side at most this
    resample: int  # PIL resampling filter
    crops: tuple[tuple[int, int], ...]  # centre crops after resizing, in order
    scale: tuple[float, float, float]  # pixel value (0..255) * scale + offset, per channel
    offset: tuple[float, float, float]

    @property
    def output_hw(self) -> tuple[int, int]:
        if self.crops:
            return self.crops[-1]
        if self.resize_hw is not None:
            return self.resize_hw
        raise HarError("the image processor resizes by the shortest edge without a centre crop: its inputs vary in "
                       "size and cannot be batched")

    @property
    def draft_size(self) -> tuple[int, int] | None:
        """A JPEG may be decoded at 1/2, 1/4 or 1/8 scale as long as both sides stay at least this large (square,
        so that EXIF rotation after decoding cannot make a side too small); None: decode at full size."""
        if self.resize_hw is not None:
            side = max(self.resize_hw)
        elif self.shortest_edge is not None:
            side = self.shortest_edge * 2  # the long side is unknown before decoding; stay conservative
        else:
            return None
        return side, side

    def target_hw(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the resized image, before cropping."""
        if self.resize_hw is not None:
            return self.resize_hw
        if self.shortest_edge is not None:
            return shortest_edge_hw(height, width, self.shortest_edge, self.longest_edge)
        return height, width

    def resize_crop(self, img: Image.Image) -> np.ndarray:
        """RGB PIL image -> uint8 (H, W, 3) at the model's input size (resize, then centre crop)."""
        h, w = self.target_hw(img.size[1], img.size[0])
        if (w, h) != img.size:
            img = img.resize((w, h), resample=self.resample)
        arr = np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy takes it as it is
        for crop in self.crops:
            arr = center_crop(arr, crop)
        return arr

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) with the processor's rescale and normalisation."""
        scale = np.asarray(self.scale, np.float32)
        offset = np.asarray(self.offset, np.float32)
        out = np.empty((batch.shape[0], 3, batch.shape[1], batch.shape[2]), np.float32)
        for c in range(3):
            np.multiply(batch[..., c], scale[c], out=out[:, c], dtype=np.float32)
            out[:, c] += offset[c]
        return out

    @classmethod
    def from_config(cls, config: dict) -> "Preprocessing":
        """From a processor's configuration (``preprocessor_config.json`` or ``processor.to_dict()``).

        Raises NotReproduced when the processor does something this class does not reproduce exactly, HarError
        when the configuration cannot work at all.
        """
        kind = str(config.get("image_processor_type") or "")
        family = processor_family(kind)
        if family is None:
            raise NotReproduced(f"image processor {kind or '(unnamed)'} is not one this project reproduces")
        cfg = {**CLASS_DEFAULTS[family], **config}  # a missing key means the class default; an explicit null is None
        needed = {"do_resize": ("size",), "do_center_crop": ("crop_size",), "do_rescale": ("rescale_factor",),
                  "do_normalize": ("image_mean", "image_std")}
        missing = [k for step, keys in needed.items() if cfg.get(step) for k in keys if cfg.get(k) is None]
        if missing:  # transformers refuses to run such a processor too
            raise NotReproduced(f"{kind}: {', '.join(missing)} is null")
        switched_on = sorted(k for k in MUST_BE_OFF_OPTIONS if cfg.get(k))
        if switched_on:
            raise NotReproduced(f"{kind}: option {', '.join(switched_on)} is not reproduced")
        if cfg.get("data_format") not in (None, "channels_first"):
            raise NotReproduced(f"{kind}: data_format {cfg['data_format']!r} is not reproduced")
        resize_hw, shortest, longest, crops = _geometry(family, cfg)
        resample = cfg.get("resample")
        if isinstance(resample, bool) or not isinstance(resample, int) or resample not in range(6):
            raise NotReproduced(f"{kind}: resample {resample!r} is not a PIL filter")
        scale, offset = _affine(family, cfg)
        return cls(resize_hw, shortest, longest, int(resample), crops, scale, offset)


def _geometry(family: str, cfg: dict):
    """(resize_hw, shortest_edge, longest_edge, crops) as the processor's PIL backend resizes and crops."""
    resize_hw = shortest = longest = None
    crops: list[tuple[int, int]] = []
    if cfg.get("do_resize"):
        size = size_dict(cfg.get("size"), bool(cfg.get("default_to_square")))
        if family == "ConvNext":  # ConvNextImageProcessor.resize: crop_pct below 384 pixels, else a square warp
            if "shortest_edge" not in size:
                raise NotReproduced(f"ConvNext size {size} has no shortest_edge")
            edge = size["shortest_edge"]
            if edge < 384:
                shortest, crops = int(edge / float(cfg.get("crop_pct") or 224 / 256)), [(edge, edge)]
            else:
                resize_hw = (edge, edge)
        elif set(size) in ({"shortest_edge"}, {"shortest_edge", "longest_edge"}):
            shortest, longest = size["shortest_edge"], size.get("longest_edge")
        elif set(size) == {"height", "width"}:
            resize_hw = (size["height"], size["width"])
        else:
            raise NotReproduced(f"resize to {size} is not reproduced")
    if cfg.get("do_center_crop"):
        crop = size_dict(cfg.get("crop_size"), True, "crop_size")
        if set(crop) != {"height", "width"}:
            raise NotReproduced(f"crop_size {crop} is not reproduced")
        crops.append((crop["height"], crop["width"]))
    if resize_hw is None and shortest is None and not crops:
        raise HarError("the image processor neither resizes nor crops: the model input size is unknown")
    return resize_hw, shortest, longest, tuple(crops)


def _affine(family: str, cfg: dict) -> tuple[tuple, tuple]:
    """Rescale (EfficientNet: minus 1 with ``rescale_offset``), normalise, EfficientNet's ``include_top``
    (a second division by the std): one per-channel (scale, offset)."""
    scale, offset = np.ones(3), np.zeros(3)
    if cfg.get("do_rescale"):
        scale *= float(cfg["rescale_factor"])
        if family == "EfficientNet" and cfg.get("rescale_offset"):
            offset -= 1.0
    std = np.broadcast_to(np.asarray(cfg.get("image_std"), np.float64), (3,))
    if cfg.get("do_normalize"):
        mean = np.broadcast_to(np.asarray(cfg.get("image_mean"), np.float64), (3,))
        scale, offset = scale / std, (offset - mean) / std
    if family == "EfficientNet" and cfg.get("include_top"):
        scale, offset = scale / std, offset / std
    return tuple(scale.tolist()), tuple(offset.tolist())


# --------------------------------------------------------------------------------------------- the exact fallback


class StockPreprocessing:
    """The processor itself, image by image: for processors :class:`Preprocessing` does not reproduce.

    Same interface, except that ``resize_crop`` already returns normalised float32 (H, W, 3) values. ``scale`` and
    ``offset`` (used to normalise random training crops) are measured on plain-colour images and checked to be
    affine.
    """

    draft_size = None

    def __init__(self, processor):
        self.processor = processor
        try:
            shapes = {self.resize_crop(Image.new("RGB", wh)).shape for wh in ((64, 48), (48, 64))}
        except Exception as exc:  # transformers raises ValueError, TypeError, ... for unusable settings
            raise HarError(f"image processor {type(processor).__name__}: fails on a test image "
                           f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        if len(shapes) != 1:
            raise HarError(f"image processor {type(processor).__name__}: its inputs vary in size with the image and "
                           "cannot be batched")
        self.output_hw = next(iter(shapes))[:2]
        resample = getattr(processor, "resample", None)
        resample = int(getattr(resample, "value", resample)) if resample is not None else 2
        self.resample = resample if resample in range(6) else int(Image.Resampling.BILINEAR)
        self.scale, self.offset = self._measure_affine()

    @classmethod
    def load(cls, model_dir: str | Path) -> "StockPreprocessing":
        from transformers import AutoImageProcessor  # optional: only processors we cannot reproduce need it

        try:
            return cls(AutoImageProcessor.from_pretrained(model_dir))
        except (OSError, ValueError, KeyError) as exc:
            raise HarError(f"{model_dir}: cannot load the image processor ({str(exc).splitlines()[0]})") from None

    def resize_crop(self, img: Image.Image) -> np.ndarray:
        out = self.processor(images=img, return_tensors="np")["pixel_values"][0]
        return np.ascontiguousarray(np.transpose(out, (1, 2, 0)), np.float32)

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, H, W, 3), already normalised -> float32 (N, 3, H, W)."""
        return np.ascontiguousarray(np.transpose(batch, (0, 3, 1, 2)), np.float32)

    def _measure_affine(self):
        side = 4 * max(self.output_hw)  # large enough that no centre crop pads
        h, w = self.output_hw

        def value(rgb) -> np.ndarray:
            return self.resize_crop(Image.new("RGB", (side, side), rgb))[h // 2, w // 2].astype(np.float64)

        low, high, mid = value((0, 0, 0)), value((255, 255, 255)), value((60, 120, 180))
        scale = (high - low) / 255
        if not np.allclose(low + scale * np.array([60, 120, 180]), mid, atol=1e-3):
            return None, None  # not affine: random training crops cannot be normalised the same way
        return tuple(scale.tolist()), tuple(low.tolist())


# --------------------------------------------------------------------------------------------- entry points

_SAID: set[str] = set()


def _say_once(message: str) -> None:
    if message not in _SAID:
        _SAID.add(message)
        print(message, file=sys.stderr, flush=True)


def _fallback_note(reason: object, where: str = "") -> str:
    return f"{where + ': ' if where else ''}{reason}; using the stock image processor (exact, slower)"


def preprocessing_for(processor) -> Preprocessing | StockPreprocessing:
    """The preprocessing of a processor object (training: the base model's processor, as saved with the model)."""
    try:
        return Preprocessing.from_config(processor.to_dict())
    except NotReproduced as reason:
        _say_once(_fallback_note(reason))
        return StockPreprocessing(processor)


def read_config(model_dir: str | Path) -> dict:
    return read_json(Path(model_dir) / CONFIG_NAME, "not a saved image classifier?")


def load_preprocessing(model_dir: str | Path) -> Preprocessing | StockPreprocessing:
    """A model folder's preprocessing: reproduced from ``preprocessor_config.json`` (numpy and Pillow only) when
    possible, else the stock processor (loaded with transformers)."""
    config = read_config(model_dir)
    try:
        return Preprocessing.from_config(config)
    except NotReproduced as reason:
        _say_once(_fallback_note(reason, str(Path(model_dir) / CONFIG_NAME)))
        return StockPreprocessing.load(model_dir)
