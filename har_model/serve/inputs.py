"""What the app receives, checked: upload payloads, size caps, the "unsure" slider, video sampling rates.

Every bad input becomes one HarError line naming the file as the user knows it (the app shows it as a message and
keeps serving). No Gradio here: the payloads are plain dicts, paths or data URLs.
"""

from __future__ import annotations

import base64
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from har_model.errors import HarError

SAMPLE_RATES = ("1", "2", "5", "10", "every frame")


def upload(payload, what: str) -> tuple[str | bytes, str]:
    """(path or bytes, display name) from a Gradio file payload (dict), a FileData, a path or a data URL."""
    if payload is None or payload == "" or payload == []:
        raise HarError(f"no {what} given: upload one first")
    if isinstance(payload, (str, os.PathLike)):
        return str(payload), Path(payload).name
    get = payload.get if isinstance(payload, dict) else lambda k: getattr(payload, k, None)
    path, url, name = get("path"), get("url"), get("orig_name")
    if path:
        return str(path), name or Path(path).name
    if isinstance(url, str) and url.startswith("data:"):
        try:
            return base64.b64decode(url.split(",", 1)[1]), name or f"pasted {what}"
        except (ValueError, IndexError):
            raise HarError(f"pasted {what}: not valid base64 data") from None
    raise HarError(f"no {what} given: upload one first")


def check_size(source: str | bytes, name: str, limit: int, what: str) -> None:
    size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size if Path(source).is_file() else 0
    if size > limit:
        raise HarError(f"{name}: {size / 2**20:.1f} MB is over the {what} size limit of {limit / 2**20:.0f} MB")


def unsure_value(value) -> float | None:
    """The app's "unsure below" slider value as a probability (None: the model's saved threshold)."""
    if value is None or value == "":
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise HarError(f"unsure threshold {value!r}: give a probability between 0 and 1") from None
    if not 0 <= value <= 1:
        raise HarError(f"unsure threshold {value}: give a probability between 0 and 1")
    return value


def parse_sample_rate(value) -> float | None:
    """'5' / 5 -> 5.0 classified frames per second; 'every frame' / 0 / None -> None (classify all)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("every frame", "all", "")):
        return None
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise HarError(f"sampling rate {value!r}: choose one of {', '.join(SAMPLE_RATES)}") from None
    if rate < 0 or not np.isfinite(rate):
        raise HarError(f"sampling rate {value!r}: must be a positive number of frames per second")
    return rate or None


def scratch_dir(max_age_s: float = 3600) -> Path:
    """A temp folder for annotated videos and CSVs; files older than an hour are removed on each call."""
    d = Path(tempfile.gettempdir()) / "har_app"
    d.mkdir(exist_ok=True)
    now = time.time()
    for f in d.iterdir():
        try:
            if now - f.stat().st_mtime > max_age_s:
                f.unlink()
        except OSError:
            pass
    return d
