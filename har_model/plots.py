"""Figures for cards and reports: sample grids (PIL) and charts (matplotlib, Agg canvas, no pyplot state).

Uses ``matplotlib.figure.Figure`` with the Agg canvas directly, so importing this module never changes
the global matplotlib backend of an application that embeds it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
