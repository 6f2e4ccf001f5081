"""Serving limits, read from environment variables so that a Space can tune them without code changes."""

from __future__ import annotations

import os
from dataclasses import dataclass

from har_model.errors import HarError
from har_model.serve.inference import BACKENDS

MB = 2**20


def env_float(name: str, default: float) -> float:
    """A positive number from the environment variable ``name`` (``default`` when unset or empty)."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise HarError(f"environment variable {name}={raw!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise HarError(f"environment variable {name}={raw!r} must be a positive number")
    return value


def env_int(name: str, default: int) -> int:
    """A whole number >= 1 from the environment variable ``name`` (``0.5`` streams or files is refused: it would
    silently become 0, switching the feature off)."""
    value = env_float(name, default)
    if value != int(value) or value < 1:
        raise HarError(f"environment variable {name}={os.environ[name].strip()!r} must be a whole number of 1 or more")
    return int(value)


def env_choice(name: str, default: str, choices) -> str:
    raw = os.environ.get(name, "").strip()
    if raw and raw not in choices:
        raise HarError(f"environment variable {name}={raw!r}: choose one of {', '.join(choices)}")
    return raw or default


@dataclass(frozen=True)
class Settings:
    """Limits of the app and the video path (defaults; ``from_env`` reads the HAR_* variables)."""

    max_image_bytes: int = 20 * MB  # HAR_MAX_IMAGE_MB
    max_video_bytes: int = 200 * MB  # HAR_MAX_VIDEO_MB
    max_video_seconds: float = 120.0  # HAR_MAX_VIDEO_SECONDS: longer clips are cut there
    max_batch_files: int = 500  # HAR_MAX_BATCH_FILES
    queue_size: int = 64  # HAR_QUEUE_SIZE: requests waiting beyond this are refused ("queue full")
    image_concurrency: int = 2  # image requests run at once; video and batch share one more slot
    live_seconds: float = 120.0  # HAR_LIVE_SECONDS: a webcam stream is closed after this long
    live_streams: int = 2  # HAR_LIVE_STREAMS: webcam streams served at once (further viewers wait in the queue)
    backend: str = "auto"  # HAR_BACKEND

    @classmethod
    def from_env(cls) -> "Settings":
        """Every HAR_* setting checked at once: a HarError with one line per bad variable."""
        readers = {
            "max_image_bytes": lambda: int(env_float("HAR_MAX_IMAGE_MB", cls.max_image_bytes / MB) * MB),
            "max_video_bytes": lambda: int(env_float("HAR_MAX_VIDEO_MB", cls.max_video_bytes / MB) * MB),
            "max_video_seconds": lambda: env_float("HAR_MAX_VIDEO_SECONDS", cls.max_video_seconds),
            "max_batch_files": lambda: env_int("HAR_MAX_BATCH_FILES", cls.max_batch_files),
            "queue_size": lambda: env_int("HAR_QUEUE_SIZE", cls.queue_size),
            "live_seconds": lambda: env_float("HAR_LIVE_SECONDS", cls.live_seconds),
            "live_streams": lambda: env_int("HAR_LIVE_STREAMS", cls.live_streams),
            "backend": lambda: env_choice("HAR_BACKEND", cls.backend, BACKENDS),
        }
        values, problems = {}, []
        for field, read in readers.items():
            try:
                values[field] = read()
            except HarError as exc:
                problems.append(str(exc))
        if problems:
            raise HarError("\n".join(problems))
        return cls(**values)
