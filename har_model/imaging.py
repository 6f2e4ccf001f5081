"""Opening images safely and turning whatever a camera or download produced into plain 8-bit RGB.

Used by the dataset builder (full validation) and by inference (fast path with JPEG draft mode), so
that training and serving see pixels prepared the same way.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from har_model.errors import HarError

# File name extensions we treat as images (lower case). Anything else in a class folder is skipped.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".ico"}
)

# File name extensions we treat as videos (frames sampled: the app's Video tab, unlabelled training data).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".webm", ".mov", ".avi", ".mkv", ".mpg", ".mpeg", ".ogv", ".gif"})

# Decompression-bomb guard: refuse images with more pixels than this (PIL's default warns at ~89 MP).
DEFAULT_MAX_PIXELS = 40_000_000

# Never accept half-decoded images silently.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def to_rgb(img: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Apply EXIF orientation and convert any PIL mode (P, RGBA, LA, CMYK, I;16, I, F, L, 1, ...) to RGB.

    Transparent pixels are composited onto ``background``; 16-bit and float images are rescaled to 8 bit
    by their actual range rather than clipped.
    """
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not make a good image unusable
        pass
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, background)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if hi <= lo:
            arr8 = np.zeros(arr.shape, dtype=np.uint8)
        else:
            arr8 = np.round((arr - lo) * (255.0 / (hi - lo))).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    return img.convert("RGB")


def open_rgb(
    source: str | os.PathLike | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Open, fully decode and convert one image to RGB, or raise HarError naming the file and the problem.

    ``draft_size`` lets JPEG decoding skip detail that a later resize to about that size would discard
    (DCT scaling); the result is at least that large on each side, so quality after resize is unchanged.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except PermissionError:
        raise HarError(f"{name}: permission denied") from None
    except IsADirectoryError:
        raise HarError(f"{name}: is a folder, not an image") from None
    except FileNotFoundError:
        raise HarError(f"{name}: no such file") from None
    except OSError as exc:
        raise HarError(f"{name}: cannot open ({exc.strerror or exc})") from None
    with fp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(fp)
                w, h = img.size
                if w * h > max_pixels:
                    raise HarError(f"{name}: {w}x{h} pixels exceeds the limit of {max_pixels} (decompression bomb?)")
                if draft_size is not None and img.format == "JPEG":
                    img.draft("RGB", draft_size)
                img.load()
        except HarError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise HarError(f"{name}: too many pixels (decompression bomb)") from None
        except Image.UnidentifiedImageError:
            raise HarError(f"{name}: not an image (or an unsupported format)") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise HarError(f"{name}: cannot decode image ({exc})") from None
    return to_rgb(img)


def is_image_path(path: str | os.PathLike) -> bool:
    """True for a non-hidden file name with a known image extension."""
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS


def is_video_path(path: str | os.PathLike) -> bool:
    """True for a non-hidden file name with a known video extension (an animated .gif counts as both)."""
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in VIDEO_EXTENSIONS
