"""Small real images and a tiny real model, made inside the tests (no shared data needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("clapping", "running", "sitting")

# Each class gets its own colour and shape so that a tiny model can actually learn the task.
_CLASS_STYLE = {
    0: ((220, 40, 40), "ellipse"),
    1: ((40, 200, 60), "rectangle"),
    2: ((40, 60, 220), "triangle"),
}


def synthetic_image(label: int, seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A distinct, learnable picture for class ``label``; ``seed`` varies position, noise and background."""
    rng = np.random.default_rng(seed * 1000 + label)
    w, h = size
    background = rng.integers(0, 90, size=3)
    arr = np.clip(rng.normal(0, 12, size=(h, w, 3)) + background, 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(img)
    color, shape = _CLASS_STYLE[label % len(_CLASS_STYLE)]
    cx, cy = int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4))
    r = int(rng.integers(min(w, h) // 5, min(w, h) // 3))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "ellipse":
        draw.ellipse(box, fill=color)
    elif shape == "rectangle":
        draw.rectangle(box, fill=color)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    return img


def quadrant_image(label: int, quadrant: int, seed: int, size: int = 64) -> Image.Image:
    """Class ``label``'s shape (as in synthetic_image) inside one quadrant (0 top-left, 1 top-right, 2 bottom-left,
    3 bottom-right) of a noisy square background; the rest of the picture carries no class evidence."""
    rng = np.random.default_rng(seed * 100 + label * 10 + quadrant)
    arr = np.clip(rng.normal(0, 12, size=(size, size, 3)) + rng.integers(0, 90, size=3), 0, 255).astype(np.uint8)
    img = Image.fromarray(arr, "RGB")
    draw = ImageDraw.Draw(img)
    color, shape = _CLASS_STYLE[label % len(_CLASS_STYLE)]
    half = size // 2
    r = int(rng.integers(size // 10, size // 7))
    cx = (quadrant % 2) * half + half // 2 + int(rng.integers(-size // 16, size // 16 + 1))
    cy = (quadrant // 2) * half + half // 2 + int(rng.integers(-size // 16, size // 16 + 1))
    if shape == "ellipse":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    elif shape == "rectangle":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=color)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
    return img


def make_class_folder(root: Path, per_class: int | dict = 12, classes=CLASSES, size=(96, 72), seed: int = 0) -> Path:
    """root/<class>/img_XXX.jpg with ``per_class`` distinct images each (a dict: per class name; all different)."""
    root = Path(root)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class[name] if isinstance(per_class, dict) else per_class):
            synthetic_image(label, seed * 10_000 + i, size).save(folder / f"img_{i:03d}.jpg", quality=92)
    return root


def make_tiny_model(out_dir: Path, classes=CLASSES, image_size: int = 32) -> Path:
    """A real (random-weight) EfficientNetForImageClassification of ~6k parameters plus its image processor."""
    from transformers import EfficientNetConfig, EfficientNetForImageClassification
    from transformers.models.efficientnet.image_processing_pil_efficientnet import EfficientNetImageProcessorPil

    import torch

    torch.manual_seed(0)
    id2label = {i: c for i, c in enumerate(classes)}
    config = EfficientNetConfig(
        image_size=image_size,
        width_coefficient=0.25,
        depth_coefficient=0.2,
        hidden_dim=320,
        kernel_sizes=[3, 3],
        in_channels=[32, 16],
        out_channels=[16, 24],
        strides=[1, 2],
        num_block_repeats=[1, 1],
        expand_ratios=[1, 6],
        depthwise_padding=[],
        hidden_act="relu6",
        id2label=id2label,
        label2id={c: i for i, c in id2label.items()},
    )
    model = EfficientNetForImageClassification(config)
    with torch.no_grad():
        # Variance-preserving init, so activations stay O(1) and the initial batch-norm statistics (0, 1) are
        # about right: a few training steps then show up in eval mode too. A non-degenerate head, so predictions
        # differ between inputs.
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(module, torch.nn.BatchNorm2d):  # transformers draws BN weights around 0
                module.weight.fill_(1.0)
                module.bias.zero_()
        model.classifier.weight.normal_(0, 0.5)
    processor = EfficientNetImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[127 / 255] * 3,
        image_std=[128 / 255] * 3,
        include_top=False,
    )
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir


def chromium_path() -> str | None:
    path = "/usr/bin/chromium"
    return path if os.path.exists(path) else None


def train_tiny_model(folder: Path, images: list, labels: list[int], epochs: int = 12, seed: int = 0):
    """Fit the saved tiny model in ``folder`` to (PIL image, label) pairs with Adam, in place; returns the model.

    Inputs go through the folder's own preprocessing (as served), so what is learned is what the app sees."""
    import torch
    from transformers import AutoModelForImageClassification

    from har_model.preprocessing import load_preprocessing

    prep = load_preprocessing(folder)
    model = AutoModelForImageClassification.from_pretrained(folder)
    x = torch.from_numpy(prep.normalize(np.stack([prep.resize_crop(im.convert("RGB")) for im in images])))
    y = torch.tensor(labels)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(16):
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x[idx]).logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.save_pretrained(folder)
    return model


def write_y4m(path: Path, frames: list, fps: int = 10) -> Path:
    """RGB frames (equal even sizes) as an uncompressed YUV 4:2:0 .y4m clip, the format Chromium's fake camera plays."""
    h, w = np.asarray(frames[0]).shape[:2]
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            rgb = np.asarray(frame, np.float32)
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            y = 0.299 * r + 0.587 * g + 0.114 * b  # BT.601 full range (JPEG)
            u = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
            v = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
            sub = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))  # noqa: E731
            fh.write(b"FRAME\n")
            for plane in (y, sub(u), sub(v)):
                fh.write(np.clip(np.rint(plane), 0, 255).astype(np.uint8).tobytes())
    return path


class PublishFaults:
    """The one fault injector of the guarded-output tests: counts every file-system step that
    ``har_model.outputs.commit`` takes (each write, link, rename, delete and the folder exchange) and makes step
    ``fail_at`` (0-based) raise ``error``. Steps before ``commit`` (writing the staged files) are not counted.

        faults = PublishFaults(monkeypatch)            # a clean run: faults.names lists its steps
        PublishFaults(monkeypatch, 3, KeyboardInterrupt())
    """

    OS_CALLS = ("replace", "rename", "link", "symlink", "mkdir", "unlink", "rmdir")
    OUR_CALLS = ("write_marker", "_renameat2_exchange")

    def __init__(self, monkeypatch, fail_at: int | None = None, error: BaseException | None = None,
                 fail_on: str | None = None, commit: int | None = None):
        """``fail_on``: fail at the first step of that name instead (``NAME+1``: the step after it). ``commit``:
        count only the steps of the n-th commit (1-based; e.g. 2 = training's own after its ONNX export's)."""
        from har_model import outputs

        self.fail_at, self.error, self.names, self.active = fail_at, error, [], False
        self.commit, self.commits = commit, 0
        self.fail_on, self.after = (fail_on or "").removesuffix("+1") or None, bool(fail_on and fail_on.endswith("+1"))
        for name in self.OS_CALLS:
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))
        for name in self.OUR_CALLS:
            monkeypatch.setattr(outputs, name, self._wrap(name, getattr(outputs, name)))
        real_commit = outputs.commit

        def commit(*a, **k):
            self.commits += 1
            self.active = self.commit in (None, self.commits)
            try:
                return real_commit(*a, **k)
            finally:
                self.active = False

        monkeypatch.setattr(outputs, "commit", commit)

    def _wrap(self, name, real):
        def step(*a, **k):
            if self.active:
                self.names.append(name)
                if self.fail_on is not None and self.fail_at is None:
                    if self.fail_on in self.names[:-1 if self.after else None]:
                        self.fail_at = len(self.names) - 1
                if len(self.names) - 1 == self.fail_at:
                    self.active = False  # the clean-up after the failure runs for real
                    raise self.error
            return real(*a, **k)

        return step

    @staticmethod
    def spread(names: list[str]) -> list[int]:
        """Step indexes that cover every kind of step once, the exchange and the step after it (for surfaces where
        a run per step would take too long)."""
        picks = {names.index(n) for n in set(names)}
        if "_renameat2_exchange" in names:
            k = names.index("_renameat2_exchange")
            picks |= {k, min(k + 1, len(names) - 1)}
        return sorted(picks | {0, len(names) - 1})


def write_dataset_copy(model_dir: Path, per_split: dict, classes=CLASSES, size=(96, 72)) -> Path:
    """``model_dir/dataset/data/<split>-00000-of-00001.parquet`` of synthetic images, as train.py keeps the dataset
    beside a model (``per_split``: {"train": images per class, ...}); the int8 export calibrates and gates on it."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    features = Features({"image": ImageFeature(), "label": ClassLabel(names=list(classes))})
    data = Path(model_dir) / "dataset" / "data"
    data.mkdir(parents=True, exist_ok=True)
    for s, (split, n) in enumerate(per_split.items()):
        images = [synthetic_image(c, 1000 * (s + 1) + i, size) for i in range(n) for c in range(len(classes))]
        labels = [c for _ in range(n) for c in range(len(classes))]
        Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(
            str(data / f"{split}-00000-of-00001.parquet"))
    return data.parent


def write_mp4(path: Path, frames: list, fps: int = 10, codec: str = "libx264", times=None) -> Path:
    """RGB frames (equal even sizes) as a real clip (H.264 by default), one frame every 1/fps seconds, or at
    ``times`` (seconds, a variable frame rate)."""
    from fractions import Fraction

    import av

    h, w = np.asarray(frames[0]).shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(np.asarray(frame.convert("RGB")), format="rgb24")
            if times is not None:
                video_frame.pts, video_frame.time_base = int(times[i] * 1000), Fraction(1, 1000)
            else:
                video_frame.pts = i
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
