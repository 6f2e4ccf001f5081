"""Figures for cards and reports: sample grids (PIL), charts, training curves, confusion matrices and prediction
grids (matplotlib, Agg canvas, no pyplot state).

Uses ``matplotlib.figure.Figure`` with the Agg canvas directly, so importing this module never changes
the global matplotlib backend of an application that embeds it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont, ImageOps


def _figure(width: float, height: float):
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out_path: str | os.PathLike) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out_path)
    return out_path


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def sample_grid(
    images_by_class: Mapping[str, Sequence[Image.Image]],
    out_path: str | os.PathLike,
    *,
    thumb: int = 96,
    label_width: int = 170,
) -> Path:
    """One row per class: its name, then its sample images center-cropped to ``thumb`` x ``thumb``."""
    per_row = max((len(v) for v in images_by_class.values()), default=0)
    if not images_by_class or per_row == 0:
        raise ValueError("sample_grid needs at least one image")
    pad = 4
    width = label_width + per_row * (thumb + pad) + pad
    height = len(images_by_class) * (thumb + pad) + pad
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font = _font(16)
    for row, (name, images) in enumerate(images_by_class.items()):
        y = pad + row * (thumb + pad)
        draw.text((pad, y + thumb // 2), name, fill=(0, 0, 0), font=font, anchor="lm")
        for col, img in enumerate(images):
            tile = ImageOps.fit(img.convert("RGB"), (thumb, thumb), Image.Resampling.BILINEAR)
            grid.paste(tile, (label_width + pad + col * (thumb + pad), y))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out_path, quality=90)
    return out_path


def class_distribution_chart(
    counts: Mapping[str, Mapping[str, int]], out_path: str | os.PathLike, *, title: str = "Images per class"
) -> Path:
    """Horizontal stacked bars: ``counts[class][split]`` images, one colour per split."""
    classes = list(counts)
    splits: list[str] = []
    for per_split in counts.values():
        splits.extend(s for s in per_split if s not in splits)
    fig = _figure(8, 1.2 + 0.35 * len(classes))
    ax = fig.add_subplot(1, 1, 1)
    left = [0] * len(classes)
    for split in splits:
        values = [counts[c].get(split, 0) for c in classes]
        ax.barh(classes, values, left=left, label=split)
        left = [a + b for a, b in zip(left, values)]
    for y, total in enumerate(left):
        ax.text(total, y, f" {total}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_title(title, pad=24)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=max(1, len(splits)), frameon=False, fontsize=8)
    ax.set_xlim(0, max(left, default=1) * 1.12 or 1)
    return _save(fig, out_path)


def epoch_history(log_history: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Trainer log history -> series of (epoch, value) for train/validation loss and accuracy."""
    series = {"train_loss": [], "train_accuracy": [], "eval_loss": [], "eval_accuracy": [], "eval_macro_f1": []}
    for row in log_history:
        epoch = row.get("epoch")
        if epoch is None:
            continue
        if "loss" in row:
            series["train_loss"].append((epoch, row["loss"]))
        if "train_accuracy" in row:
            series["train_accuracy"].append((epoch, row["train_accuracy"]))
        for key in ("eval_loss", "eval_accuracy", "eval_macro_f1"):
            if key in row:
                series[key].append((epoch, row[key]))
    return series


def plot_training_curves(log_history: list[dict], path: Path) -> Path:
    """Loss and accuracy per epoch, train vs validation."""
    s = epoch_history(log_history)
    fig = _figure(10, 4)
    ax1, ax2 = fig.subplots(1, 2)
    for key, label, style in (("train_loss", "train", "o-"), ("eval_loss", "validation", "s-")):
        if s[key]:
            ax1.plot(*zip(*s[key]), style, label=label)
    ax1.set(title="loss", xlabel="epoch")
    ax1.legend()
    for key, label, style in (
        ("train_accuracy", "train accuracy", "o-"),
        ("eval_accuracy", "validation accuracy", "s-"),
        ("eval_macro_f1", "validation macro-F1", "^--"),
    ):
        if s[key]:
            ax2.plot(*zip(*s[key]), style, label=label)
    ax2.set(title="accuracy", xlabel="epoch", ylim=(0, 1.02))
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_confusion_matrix(matrix, labels: list[str], path: Path, title: str = "test confusion matrix") -> Path:
    """Row-normalised colours with the counts written in."""
    cm = np.asarray(matrix, dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    size = max(5.0, 0.55 * n + 2)
    fig = _figure(size, size * 0.9)
    ax = fig.subplots()
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=60, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_predictions(images: list, true: list[str], pred: list[str], conf: list[float], path: Path, cols: int = 6,
                     note: str = "") -> Path:
    """Grid of test images titled `true -> predicted (conf)`; mistakes in red with a red frame."""
    n = len(images)
    rows = max(1, math.ceil(n / cols))
    fig = _figure(cols * 2.2, rows * 2.4)
    axes = fig.subplots(rows, cols)
    for ax, i in zip(np.atleast_1d(axes).ravel(), range(rows * cols)):
        ax.axis("off")
        if i >= n:
            continue
        ok = true[i] == pred[i]
        ax.imshow(images[i])
        ax.set_title(f"{true[i]}\n-> {pred[i]} ({conf[i]:.0%})", fontsize=8, color="black" if ok else "red")
        if not ok:
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(3)
    fig.suptitle("test predictions (true -> predicted); mistakes in red" + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
