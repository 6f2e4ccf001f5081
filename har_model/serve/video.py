"""Per-frame action recognition on a video: sample, classify, smooth, draw, encode, segment.

Pure functions (no Gradio), used by the app's Video tab and testable with any object that has the
``Classifier`` interface (``labels`` and ``predict_proba(frames, batch_size=...) -> [N, C]``):

    result = analyse_video("clip.mp4", Classifier.load("outputs/har15"), out_path="annotated.mp4")
    result.segments   # [Segment(start=0.0, end=2.2, label="running", confidence=0.91), ...]

Every decoded frame is written to the output (H.264, yuv420p, playable in browsers) with the current
smoothed label drawn on it; only frames at the sampling rate are classified. Smoothing is causal, like the
original prototype: the label shown at time t is the mean of the last ``window`` sampled predictions at or
before t. Work happens in batches, so memory stays bounded for long clips.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from har_model.calibration import UNSURE, answer, decide
from har_model.errors import HarError
from har_model.serve.settings import Settings

DEFAULT_SAMPLE_FPS = 5.0  # classified frames per second of video; None / 0 = every frame
DEFAULT_WINDOW = 5  # sampled predictions averaged (1 = no smoothing)
DEFAULT_MAX_SIDE = 640  # output frames are scaled down so that their longer side is at most this
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class Segment:
    start: float  # seconds
    end: float
    label: str
    confidence: float  # mean smoothed probability of ``label`` over the segment's samples


@dataclass
class VideoResult:
    labels: list[str]
    times: np.ndarray  # [S] seconds of the classified (sampled) frames
    raw_probs: np.ndarray  # [S, C] per-frame probabilities
    probs: np.ndarray  # [S, C] smoothed probabilities
    segments: list[Segment]
    out_path: Path | None
    duration: float  # seconds of video processed
    source_duration: float | None  # the container's duration, when it states one
    source_fps: float
    frames: int  # frames decoded (and written)
    truncated: bool  # True when the duration cap cut the video short
    seconds: float  # wall-clock processing time
    stats: dict = field(default_factory=dict)

    @property
    def fps_processed(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


# --------------------------------------------------------------------------------------------- pure maths


def smooth_probs(probs: np.ndarray, window: int) -> np.ndarray:
    """Causal rolling mean: row i is the mean of rows max(0, i-window+1) .. i (window 1 = unchanged)."""
    probs = np.asarray(probs, dtype=np.float64)
    window = max(1, int(window))
    if window == 1 or len(probs) == 0:
        return probs.astype(np.float32)
    csum = np.cumsum(np.vstack([np.zeros((1, probs.shape[1])), probs]), axis=0)
    idx = np.arange(len(probs))
    lo = np.maximum(0, idx - window + 1)
    return ((csum[idx + 1] - csum[lo]) / (idx + 1 - lo)[:, None]).astype(np.float32)


def segment_answers(result: "VideoResult", unsure_below: float, k: int = 5) -> list[dict]:
    """Each segment as data: start, end, the decision (its label: a class or "unsure"), its confidence and the top
    ``k`` classes of the smoothed probabilities averaged over the segment's samples."""
    out = []
    for s in result.segments:
        inside = (result.times >= s.start) & ((result.times < s.end) | (s is result.segments[-1]))
        mean = result.probs[inside].mean(axis=0) if inside.any() else np.zeros(len(result.labels))
        top_k = answer(mean, result.labels, unsure_below, k)["top_k"]
        out.append({"start": round(s.start, 3), "end": round(s.end, 3), "decision": s.label,
                    "confidence": round(s.confidence, 4), "top_k": top_k})
    return out


def segments_from_probs(times: Sequence[float], probs: np.ndarray, labels: Sequence[str], end_time: float,
                        unsure_below: float = 0.0) -> list[Segment]:
    """Consecutive samples with the same shown label merged into (start, end, label, mean confidence).

    A sample whose top probability is below ``unsure_below`` shows "unsure" (its confidence: the top probability).
    A segment starts at its first sample and ends where the next one starts (the last ends at ``end_time``).
    """
    times = np.asarray(times, dtype=np.float64)
    if len(times) == 0:
        return []
    probs = np.asarray(probs)
    top = probs.argmax(axis=1)
    shown = np.where(probs.max(axis=1) < unsure_below, -1, top)  # -1: unsure
    segments = []
    start = 0
    for i in range(1, len(top) + 1):
        if i == len(top) or shown[i] != shown[start]:
            end = float(times[i]) if i < len(top) else max(float(end_time), float(times[-1]))
            k = int(shown[start])
            conf = float(np.mean(probs[start:i].max(axis=1) if k < 0 else probs[start:i, k]))
            label = UNSURE if k < 0 else labels[k]
            segments.append(Segment(round(float(times[start]), 3), round(end, 3), label, conf))
            start = i
    return segments


# --------------------------------------------------------------------------------------------- drawing


class LabelPainter:
    """Draws "label 87%" on a dark band at the top of RGB frames; the text bitmap is cached per string."""

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        self.font_px = max(10, round(min(height, width * 0.6) / 14))
        self.band = min(height, round(self.font_px * 1.6))
        self.font = ImageFont.load_default(size=self.font_px)
        self._cache: dict[str, np.ndarray] = {}

    def _mask(self, text: str) -> np.ndarray:
        mask = self._cache.get(text)
        if mask is None:
            img = Image.new("L", (self.width, self.band), 0)
            ImageDraw.Draw(img).text((self.font_px // 2, (self.band - self.font_px) // 2 - 1), text, fill=255, font=self.font)
            mask = np.asarray(img, dtype=np.uint16)[..., None]
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[text] = mask
        return mask

    def draw(self, frame: np.ndarray, text: str) -> np.ndarray:
        """Draw in place on an (H, W, 3) uint8 frame and return it."""
        band = frame[: self.band]
        mask = self._mask(text)
        dark = band.astype(np.uint16) * 2 // 5  # darken the band to 40 %
        band[...] = ((dark * (255 - mask) + 255 * mask) // 255).astype(np.uint8)
        return frame


def caption(label: str, confidence: float) -> str:
    return f"{label} {confidence * 100:.0f}%"


# --------------------------------------------------------------------------------------------- decode / encode


def check_video_file(path: str | os.PathLike, max_bytes: int | None = None) -> Path:
    """The file exists, is not empty and not over the size cap, else HarError naming it."""
    path = Path(path)
    name = path.name
    if not path.is_file():
        raise HarError(f"{name}: no such video file")
    size = path.stat().st_size
    if size == 0:
        raise HarError(f"{name}: the file is empty")
    limit = Settings.from_env().max_video_bytes if max_bytes is None else max_bytes
    if size > limit:
        raise HarError(f"{name}: {size / 2**20:.1f} MB is over the video size limit of {limit / 2**20:.0f} MB")
    return path


def _open_video(path: Path):
    try:
        container = av.open(str(path), "r")
    except av.error.FFmpegError as exc:
        raise HarError(f"{path.name}: not a video, or a format that cannot be read ({_av_reason(exc)})") from None
    fmt = container.format.name
    if fmt == "image2" or (fmt.endswith("_pipe") and fmt not in ("gif_pipe",)):
        container.close()
        raise HarError(f"{path.name}: is a still image or not a video; use the Image tab for photos")
    if not container.streams.video:
        container.close()
        raise HarError(f"{path.name}: contains no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None or not stream.codec_context.width:
        codec = getattr(stream.codec_context, "name", None)
        tag = getattr(stream.codec_context, "codec_tag", None) if codec else None
        container.close()
        what = f"codec {codec}" + (f" ({tag})" if tag else "") if codec else "an unknown codec"
        raise HarError(f"{path.name}: cannot decode its video ({what}); re-encode it as H.264 mp4 or VP9 webm")
    stream.thread_type = "AUTO"
    return container, stream


def _av_reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def output_size(width: int, height: int, max_side: int | None = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """Scale down to ``max_side`` on the longer side, keep the aspect ratio, round to even numbers (yuv420p)."""
    scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def pick_encoder() -> str:
    """H.264 for browsers: libx264 when PyAV's FFmpeg has it, else another H.264 encoder, else MPEG-4."""
    for name in ("libx264", "libopenh264", "h264"):
        if name in av.codecs_available:
            try:
                av.codec.Codec(name, "w")
                return name
            except Exception:
                continue
    return "mpeg4"


class _Writer:
    """mp4 writer on a constant frame-rate grid; source timestamps are rounded onto it (VFR webcam clips)."""

    def __init__(self, path: Path, width: int, height: int, fps: float):
        self.fps = max(1, min(60, int(round(fps))))
        self.container = av.open(str(path), "w", options={"movflags": "+faststart"})
        codec = pick_encoder()
        self.stream = self.container.add_stream(codec, rate=self.fps)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.codec_context.time_base = Fraction(1, self.fps)
        if codec == "libx264":
            self.stream.options = {"preset": "veryfast", "crf": "23"}
        self.last_pts = -1

    def write(self, rgb: np.ndarray, t: float) -> None:
        pts = max(self.last_pts + 1, int(round(t * self.fps)))
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = pts, Fraction(1, self.fps)
        self.last_pts = pts
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


# --------------------------------------------------------------------------------------------- the pipeline


@dataclass
class VideoPass:
    """One pass over a video: sampled frames are batched, classified, smoothed causally, drawn and encoded.

    Frames wait in ``pending`` until the prediction of the sample they belong to is known (a sample is the first
    frame of each 1/sample_fps slot), so every frame is drawn with the smoothed label of the latest sample at or
    before it, never one from its future.
    """

    classifier: object
    labels: list[str]
    sample_fps: float | None
    window: int
    batch_size: int
    unsure_below: float = 0.0  # smoothed top probabilities under it are drawn as "unsure"
    progress: Callable[[float, float | None], None] | None = None
    total: float | None = None
    painter: LabelPainter | None = None  # made at the first frame, once its rotation (phone videos) is known
    writer: _Writer | None = None
    times: list[float] = field(default_factory=list)  # time of each classified sample
    raw: list[np.ndarray] = field(default_factory=list)  # the classifier's probabilities, one per sample
    shown: list[np.ndarray] = field(default_factory=list)  # smoothed probabilities, one per sample
    batch: list[np.ndarray] = field(default_factory=list)  # sampled frames waiting to be classified
    pending: list[tuple[float, np.ndarray, int]] = field(default_factory=list)  # (time, frame, its sample)
    frames: int = 0
    last_t: float = 0.0
    slot: int | None = None
    timing: dict = field(default_factory=lambda: {"decode": 0.0, "classify": 0.0, "draw_encode": 0.0})

    def add(self, t: float, rgb: np.ndarray) -> None:
        """Queue one decoded frame shown at ``t`` seconds; classify and draw once a batch of samples is full."""
        self.frames += 1
        self.last_t = t
        s = math.floor(t * self.sample_fps + 1e-6) if self.sample_fps else self.frames
        if s != self.slot:  # the first frame of each 1/sample_fps slot is classified
            self.slot = s
            self.times.append(t)
            self.batch.append(rgb)
        self.pending.append((t, rgb, len(self.times) - 1))
        if len(self.batch) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Classify the waiting samples, then draw and encode every frame whose sample is now known."""
        if self.batch:
            t0 = time.perf_counter()
            probs = self.classifier.predict_proba(self.batch, batch_size=self.batch_size)
            self.raw.extend(np.asarray(probs, dtype=np.float32))
            self.timing["classify"] += time.perf_counter() - t0
            new = len(self.raw) - len(self.shown)
            recent = np.stack(self.raw[-(new + self.window - 1):])  # enough history for the first new one's window
            self.shown.extend(smooth_probs(recent, self.window)[-new:])
            self.batch.clear()
        t0 = time.perf_counter()
        for t, rgb, sample in self.pending:
            p = self.shown[sample]
            self.painter.draw(rgb, caption(decide(p, self.labels, self.unsure_below), float(p.max())))
            if self.writer is not None:
                self.writer.write(rgb, t)
        self.pending.clear()
        self.timing["draw_encode"] += time.perf_counter() - t0
        if self.progress is not None:
            self.progress(self.last_t, self.total)

    def probabilities(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, raw probabilities, smoothed probabilities) of the classified samples."""
        raw = np.stack(self.raw) if self.raw else np.zeros((0, len(self.labels)), np.float32)
        return np.asarray(self.times), raw, (np.stack(self.shown) if self.shown else raw)


def analyse_video(
    path: str | os.PathLike,
    classifier,
    *,
    sample_fps: float | None = DEFAULT_SAMPLE_FPS,
    window: int = DEFAULT_WINDOW,
    out_path: str | os.PathLike | None = None,
    max_seconds: float | None = None,
    max_bytes: int | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Callable[[float, float | None], None] | None = None,
    unsure_below: float | None = None,
) -> VideoResult:
    """Classify a video frame by frame; see the module docstring. Raises HarError for unusable input.

    ``max_seconds`` / ``max_bytes`` default to the HAR_MAX_VIDEO_SECONDS / HAR_MAX_VIDEO_MB settings.
    ``unsure_below``: smoothed top probabilities under it show "unsure" (default: the classifier's own threshold).
    ``progress(seconds_done, total_seconds_or_None)`` is called after each batch.
    """
    started = time.perf_counter()
    path = check_video_file(path, max_bytes)
    max_seconds = Settings.from_env().max_video_seconds if max_seconds is None else max_seconds
    if unsure_below is None:
        unsure_below = float(getattr(classifier, "unsure_below", 0.0))
    container, stream = _open_video(path)
    src_fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
    source_duration = _duration(container, stream)
    width, height = output_size(stream.codec_context.width, stream.codec_context.height, max_side)
    run = VideoPass(classifier, list(classifier.labels), sample_fps, window, batch_size, unsure_below, progress,
                    total=min(source_duration, max_seconds) if source_duration else None)
    truncated = False
    turns = t_first = 0
    try:
        t_dec = time.perf_counter()
        for frame in _decode(container, stream, path):
            t = float(frame.time) if frame.time is not None else run.frames / src_fps
            if run.frames == 0:
                t_first = t  # some containers start at a non-zero timestamp
            t = max(0.0, t - t_first)
            if t >= max_seconds:
                truncated = True
                break
            rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
            if run.frames == 0:
                turns = round((getattr(frame, "rotation", 0) or 0) / 90) % 4  # display matrix: degrees counter-clockwise
                run.painter = LabelPainter(*((height, width) if turns % 2 else (width, height)))
                if out_path is not None:
                    run.writer = _Writer(Path(out_path), run.painter.width, run.painter.height, src_fps)
            if turns:
                rgb = np.ascontiguousarray(np.rot90(rgb, turns))
            run.timing["decode"] += time.perf_counter() - t_dec
            run.add(t, rgb)
            t_dec = time.perf_counter()
        if run.frames == 0:
            raise HarError(f"{path.name}: the video has no frames that could be decoded")
        run.flush()
        if run.writer is not None:
            run.writer.close()
            run.writer = None
    finally:
        container.close()
        if run.writer is not None:  # an error happened: drop the half-written file
            try:
                run.writer.container.close()
            except Exception:
                pass
            Path(out_path).unlink(missing_ok=True)

    duration = run.last_t + 1.0 / src_fps
    times, raw, probs = run.probabilities()
    return VideoResult(
        labels=run.labels,
        times=times,
        raw_probs=raw,
        probs=probs,
        segments=segments_from_probs(times, probs, run.labels, duration, unsure_below),
        out_path=Path(out_path) if out_path is not None else None,
        duration=duration,
        source_duration=source_duration,
        source_fps=src_fps,
        frames=run.frames,
        truncated=truncated,
        seconds=time.perf_counter() - started,
        stats={k: round(v, 3) for k, v in run.timing.items()},
    )


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return None


def _decode(container, stream, path: Path):
    """Decoded frames; a decoding error after some good frames ends the video early instead of failing."""
    produced = False
    try:
        for frame in container.decode(stream):
            produced = True
            yield frame
    except av.error.FFmpegError as exc:
        if not produced:
            raise HarError(f"{path.name}: cannot decode the video ({_av_reason(exc)})") from None
