"""Live webcam recognition: frames classified as they arrive, smoothed over the last seconds, a rolling history.

Pure functions and a small per-viewer state (no Gradio), used by the app's Live tab:

    state = LiveState()
    for frame in frames:                      # RGB arrays, as the browser sends them
        view = live_step(classifier, frame, state, window_s=1.0)
        view.label, view.confidence, view.history

Smoothing is causal like the video path's (har_model.serve.video.smooth_probs): the label shown at time t is the
mean of the probabilities of the frames received in the last ``window_s`` seconds, so one odd frame does not flip
it. Frames are never queued here: the app's stream delivers the newest frame when the model is free again and the
frames that arrived meanwhile are dropped, so a slow model lowers the frame rate, never raises the delay.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from har_model.calibration import answer, decide, headline

DEFAULT_WINDOW_S = 1.0
HISTORY = 8  # label changes kept in the rolling history
STATS_S = 3.0  # frame rate and latency are averaged over the last this-many seconds


@dataclass
class LiveState:
    """One viewer's stream: recent (time, probabilities), label changes, timings."""

    started: float | None = None
    recent: deque = field(default_factory=deque)  # (time, probabilities) inside the smoothing window
    history: list = field(default_factory=list)  # (seconds since start, label) at each change of the shown label
    frames: int = 0
    done: deque = field(default_factory=deque)  # (time finished, seconds spent) of recent frames


@dataclass
class LiveView:
    label: str
    confidence: float
    probs: dict  # top classes, smoothed: {label: probability}
    fps: float  # classified frames per second (recent)
    latency_ms: float  # frame received -> result ready (decode, model, smoothing), recent mean
    history: list  # [(seconds, label)], newest first
    frames: int
    answer: dict  # the decision as data (har_model.calibration.answer)


def live_step(classifier, frame: np.ndarray, state: LiveState, window_s: float = DEFAULT_WINDOW_S,
              unsure_below: float | None = None, top_k: int = 5, now: float | None = None) -> LiveView:
    """Classify one frame, update ``state`` and return what to show."""
    received = time.perf_counter() if now is None else now
    if state.started is None:
        state.started = received
    probs = np.asarray(classifier.predict_proba([frame])[0], np.float32)
    state.recent.append((received, probs))
    while state.recent and state.recent[0][0] < received - max(window_s, 0.0) and len(state.recent) > 1:
        state.recent.popleft()
    smoothed = np.mean([p for _, p in state.recent], axis=0)
    threshold = float(getattr(classifier, "unsure_below", 0.0)) if unsure_below is None else unsure_below
    label = decide(smoothed, list(classifier.labels), threshold)
    if not state.history or state.history[-1][1] != label:
        state.history.append((round(received - state.started, 1), label))
        del state.history[:-HISTORY]
    state.frames += 1
    finished = time.perf_counter() if now is None else received
    state.done.append((finished, finished - received))
    while len(state.done) > 2 and state.done[0][0] < finished - STATS_S:
        state.done.popleft()
    span = state.done[-1][0] - state.done[0][0]
    fps = (len(state.done) - 1) / span if span > 0 else 0.0
    latency = 1000 * float(np.mean([d for _, d in state.done]))
    order = np.argsort(-smoothed, kind="stable")[:top_k]
    return LiveView(label, float(smoothed.max()), {classifier.labels[i]: float(smoothed[i]) for i in order},
                    fps, latency, state.history[::-1], state.frames,
                    answer(smoothed, list(classifier.labels), threshold, top_k))


def history_text(view: LiveView) -> str:
    return " ← ".join(f"{label} ({t:g} s)" for t, label in view.history)


def summary(view: LiveView, window_s: float) -> str:
    """The headline (the decision, as every tab shows it) and the stream's figures under it."""
    return (f"### {headline(view.answer)}\n\n{view.fps:.1f} frames/s classified · {view.latency_ms:.0f} ms per frame "
            f"(received → result) · smoothing {window_s:g} s · {view.frames} frames")
