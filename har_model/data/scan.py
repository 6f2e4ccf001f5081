"""Finding the images of a class-folder tree and validating each one with a single full decode.

``list_candidates`` walks ``DIR/<class>/...`` (sub-folders included, symlinks followed, loops cut) and
sorts every entry into "candidate image" or "skipped, with a reason". ``analyse_file`` is the worker run
in a process pool: it reads a file once, decodes it fully once (``imaging.open_rgb``), and derives from
that one decode everything the builder needs: the bytes to store, a content hash and two
perceptual hashes.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from har_model.errors import HarError
from har_model.hardware import process_pool
from har_model.imaging import DEFAULT_MAX_PIXELS, is_image_path, open_rgb

DEFAULT_MIN_SIDE = 32
SERIAL_BELOW = 200  # fewer files than this are decoded in-process (a pool costs more than it saves)
JPEG_QUALITY = 95  # re-encoding quality for JPEG sources that had to be converted (CMYK, grayscale, EXIF-rotated)

_HASH_SIDE = 32  # pHash: DCT of a 32x32 grayscale thumbnail, 8x8 lowest frequencies
_DHASH_DEAD_ZONE = 2  # dHash bit set only for a brightness step above this: flat, noisy areas hash stably


@dataclass(frozen=True)
class Skipped:
    """A file (or folder) left out of the dataset and why; ``path`` is relative to the data folder."""

    path: str
    reason: str
    kind: str  # short category, e.g. "hidden", "not-image", "empty-file", "decode-error", "too-small"


@dataclass(frozen=True)
class Candidate:
    path: str  # relative to the data folder, with forward slashes
    class_name: str


def _rel(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def check_data_dir(data_dir: str | os.PathLike) -> Path:
    """The data folder as a Path, or HarError for a missing path or a file."""
    path = Path(data_dir)
    if not path.exists():
        raise HarError(f"{path}: no such folder")
    if not path.is_dir():
        raise HarError(f"{path}: is a file, not a folder of class sub-folders (expected DIR/<class>/<images>)")
    return path


def list_candidates(data_dir: str | os.PathLike) -> tuple[list[Candidate], list[Skipped], list[str]]:
    """Walk ``data_dir``; return (candidate image files, skipped entries, class folder names), all sorted.

    Class folders are the non-hidden sub-folders of ``data_dir``; images may sit in nested folders
    below them. Hidden entries, files with non-image extensions, files directly in ``data_dir`` and
    folder symlink loops are skipped with a reason. Class folders without candidate images are reported
    as empty.
    """
    root = str(check_data_dir(data_dir))
    candidates: list[Candidate] = []
    skipped: list[Skipped] = []
    classes: list[str] = []
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except PermissionError:
        raise HarError(f"{root}: permission denied") from None
    for entry in entries:
        if entry.name.startswith("."):
            skipped.append(Skipped(entry.name, "hidden entry", "hidden"))
        elif _is_dir(entry):
            classes.append(entry.name)
        else:
            skipped.append(Skipped(entry.name, "file outside any class folder", "outside-class"))
    if not classes:
        raise HarError(f"{root}: no class sub-folders (expected {root}/<class name>/<image files>)")
    for name in classes:
        found = _walk_class(root, name, skipped)
        if not found:
            skipped.append(Skipped(name + "/", "empty class folder (no image files)", "empty-class"))
        candidates.extend(found)
    skipped.sort(key=lambda s: s.path)
    return candidates, skipped, classes


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:
        return False


def _walk_class(root: str, class_name: str, skipped: list[Skipped]) -> list[Candidate]:
    top = os.path.join(root, class_name)
    seen = {os.path.realpath(top)}
    found: list[Candidate] = []

    def on_error(exc: OSError) -> None:
        skipped.append(Skipped(_rel(exc.filename or top, root), f"cannot list folder ({exc.strerror})", "unreadable"))

    for dirpath, dirnames, filenames in os.walk(top, onerror=on_error, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            real = os.path.realpath(full)
            if d.startswith("."):
                skipped.append(Skipped(_rel(full, root) + "/", "hidden folder", "hidden"))
            elif real in seen or any(v.startswith(real + os.sep) for v in seen):
                skipped.append(Skipped(_rel(full, root) + "/", "symlink loop (folder already visited or a parent)", "symlink-loop"))
            else:
                seen.add(real)
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            rel = _rel(os.path.join(dirpath, f), root)
            if f.startswith("."):
                skipped.append(Skipped(rel, "hidden file", "hidden"))
            elif not is_image_path(f):
                skipped.append(Skipped(rel, "not an image file (extension)", "not-image"))
            else:
                found.append(Candidate(rel, class_name))
    found.sort(key=lambda c: c.path)
    return found


def read_file(path: str) -> bytes:
    """The file's bytes, or HarError with the reason (permissions, symlink loop, broken link, ...)."""
    try:
        with open(path, "rb") as fp:
            return fp.read()
    except PermissionError:
        raise HarError("permission denied") from None
    except FileNotFoundError:
        raise HarError("no such file (broken symlink?)") from None
    except IsADirectoryError:
        raise HarError("is a folder") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise HarError("symlink loop") from None
        raise HarError(f"cannot read ({exc.strerror or exc})") from None


_ERROR_KINDS = (
    ("permission denied", "unreadable"),
    ("symlink loop", "symlink-loop"),
    ("no such file", "missing"),
    ("decompression bomb", "too-many-pixels"),
    ("pixels exceeds", "too-many-pixels"),
    ("not an image", "not-an-image"),
)


def _error_kind(reason: str) -> str:
    for needle, kind in _ERROR_KINDS:
        if needle in reason:
            return kind
    return "decode-error"


def analyse_file(task: tuple[str, int, int]) -> dict:
    """Worker: read and fully decode one file. ``task`` = (absolute path, min_side, max_pixels).

    Returns ``{"ok": False, "reason", "kind"}`` or ``{"ok": True, "bytes", "width", "height",
    "content_hash", "phash", "dhash", "converted"}`` where ``converted`` names what was converted
    ("" when the original bytes are kept).
    """
    path, min_side, max_pixels = task
    try:
        data = read_file(path)
    except HarError as exc:
        return {"ok": False, "reason": str(exc), "kind": _error_kind(str(exc))}
    if not data:
        return {"ok": False, "reason": "empty file (0 bytes)", "kind": "empty-file"}
    return analyse_bytes(data, min_side=min_side, max_pixels=max_pixels)


def analyse_files(tasks: list[tuple[str, int, int]], num_workers: int | None) -> Iterator[dict]:
    """``analyse_file`` of each task, in order: in a process pool of ``num_workers`` (default: every core), or in
    this process for fewer than SERIAL_BELOW files. Closing the generator stops the pool."""
    workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
    if workers <= 1 or len(tasks) < SERIAL_BELOW:
        yield from map(analyse_file, tasks)
        return
    pool = process_pool(workers)
    try:
        yield from pool.imap(analyse_file, tasks, chunksize=max(1, min(64, len(tasks) // (workers * 8))))
    finally:
        pool.terminate()


def analyse_bytes(data: bytes, *, min_side: int = DEFAULT_MIN_SIDE, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict:
    """Like ``analyse_file`` for bytes already in memory (also used for datasets loaded from the Hub)."""
    try:
        rgb = open_rgb(data, max_pixels=max_pixels)
    except HarError as exc:
        reason = str(exc).removeprefix("<bytes>: ")
        return {"ok": False, "reason": reason, "kind": _error_kind(reason)}
    w, h = rgb.size
    if min(w, h) < min_side:
        return {"ok": False, "reason": f"too small: {w}x{h} (minimum side {min_side})", "kind": "too-small"}
    converted = _conversion_needed(data)
    payload = data if not converted else _encode(rgb, jpeg=converted.endswith("JPEG"))
    phash, dhash = perceptual_hashes(rgb)
    return {
        "ok": True,
        "bytes": payload,
        "width": w,
        "height": h,
        "content_hash": content_hash(data),
        "phash": phash,
        "dhash": dhash,
        "converted": converted,
    }


def _conversion_needed(data: bytes) -> str:
    """'' when ``data`` is a plain RGB JPEG without EXIF rotation (kept as is), else what gets converted."""
    with Image.open(io.BytesIO(data)) as img:  # header only, the pixels were decoded already
        fmt, mode = img.format or "image", img.mode
        orientation = img.getexif().get(0x0112, 1) if fmt in ("JPEG", "MPO") else 1
    if fmt == "JPEG" and mode == "RGB" and orientation in (0, 1):
        return ""
    what = f"{mode} {fmt}"
    if orientation not in (0, 1):
        what += f" (EXIF orientation {orientation})"
    return what + (" -> RGB JPEG" if fmt in ("JPEG", "MPO") else " -> RGB PNG")


def _encode(rgb: Image.Image, *, jpeg: bool) -> bytes:
    buf = io.BytesIO()
    if jpeg:
        rgb.save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        rgb.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def content_hash(data: bytes) -> str:
    """Hash of the file's bytes: byte-identical copies are exact duplicates (others are caught as near ones)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT8 = _dct_matrix(_HASH_SIDE)[:8]  # only the 8 lowest frequencies are used
_BIT_WEIGHTS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def _bits_to_int(bits: np.ndarray) -> int:
    return int(np.bitwise_or.reduce(_BIT_WEIGHTS[bits.ravel()]) if bits.any() else 0)


def perceptual_hashes(rgb: Image.Image) -> tuple[int, int]:
    """(pHash, dHash) as 64-bit ints, both from one small grayscale thumbnail of the decoded image.

    pHash: signs of the 8x8 lowest DCT frequencies of a 32x32 thumbnail against their median; dHash:
    horizontal brightness steps (up by more than a small dead zone) of a 9x8 thumbnail. Both survive
    resizing and re-encoding.
    """
    thumb = rgb.convert("L").resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.BOX)
    a = np.asarray(thumb, dtype=np.float64)
    low = (_DCT8 @ a @ _DCT8.T).ravel()
    ordered = np.sort(low)
    phash = _bits_to_int(low > (ordered[31] + ordered[32]) / 2)  # above the median
    g = np.asarray(thumb.resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    dhash = _bits_to_int(g[:, 1:] > g[:, :-1] + _DHASH_DEAD_ZONE)
    return phash, dhash
