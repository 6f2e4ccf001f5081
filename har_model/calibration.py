"""Confidence calibration: a temperature and an "unsure" threshold, both fitted on the validation split.

A classifier trained with label smoothing (and any deep network, Guo et al., *On Calibration of Modern Neural
Networks*, 2017) gives probabilities that do not match how often it is right. Temperature scaling divides the
logits by one number T fitted to minimise the negative log-likelihood of the validation labels: T > 1 softens
over-confident probabilities, T < 1 sharpens under-confident ones, and the top-1 class never changes.

The "unsure" threshold answers "when should the app not name a class?": the largest calibrated top-1 probability
t such that the validation predictions below t were right less often than ``UNSURE_TARGET`` (by default: less
than half the time, i.e. more often wrong than right). Predictions below t are reported as ``UNSURE``.

Both need enough validation images to mean anything (one temperature fitted to 6 images came out at 0.05 and marked
every test image unsure): below ``MIN_VALIDATION`` images in all, or ``MIN_PER_CLASS`` of some class, nothing is
fitted -- T stays 1, there is no "unsure" threshold, and the training run says so.

A third serving choice is fitted on validation too: horizontal-flip averaging (``flip_average``). Serving then
classifies each image and its mirror in one batch and averages the two logits; it is switched on only where that
scored a higher validation macro-F1 than the single view (``choose_views``), and the temperature and threshold are
fitted on the logits serving will produce.

All three are saved as ``calibration.json`` beside ``config.json``; ``pipeline("image-classification")`` does not read
it and keeps returning the softmax of the raw logits. numpy only (the serving path may run without torch).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from har_model.errors import HarError
from har_model.model_folder.files import CALIBRATION

FILENAME = CALIBRATION
UNSURE = "unsure"
UNSURE_TARGET = 0.5  # below the threshold, validation accuracy was under this
ECE_BINS = 15
# Smallest validation split that calibration is fitted on: one temperature is a single parameter, but its log-loss
# minimum on a few dozen images still swings widely (and the threshold is read off the least confident of them)
MIN_VALIDATION = 50
MIN_PER_CLASS = 3
_LOG_T_RANGE = (math.log(0.05), math.log(20.0))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float32."""
    z = np.asarray(logits, np.float32) / np.float32(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / temperature)."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(z)), np.asarray(labels, int)]))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with ``bins`` equal-width bins of top-1 confidence: sum over bins of |accuracy - confidence| x share."""
    probs = np.asarray(probs, np.float64)
    if len(probs) == 0:
        return 0.0
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    right = (pred == np.asarray(labels)).astype(np.float64)
    # bin b holds confidences in (b/bins, (b+1)/bins]; confidence is always > 0
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(right[mask].mean() - conf[mask].mean())
    return float(total)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] minimising the validation NLL: a coarse grid on log T, then golden-section search."""
    logits, labels = np.asarray(logits, np.float64), np.asarray(labels, int)
    if len(logits) == 0:
        raise HarError("cannot fit a temperature on an empty validation split")
    lo, hi = _LOG_T_RANGE
    grid = np.linspace(lo, hi, 41)
    losses = [nll(logits, labels, math.exp(g)) for g in grid]
    k = int(np.argmin(losses))
    a, b = grid[max(0, k - 1)], grid[min(len(grid) - 1, k + 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(logits, labels, math.exp(c)), nll(logits, labels, math.exp(d))
    for _ in range(40):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(logits, labels, math.exp(d))
    return float(math.exp((a + b) / 2))


def unsure_threshold(probs: np.ndarray, labels: np.ndarray, target: float = UNSURE_TARGET) -> float:
    """The largest top-1 probability t such that the predictions with confidence below t were right less often than
    ``target`` (0.0 when even the least confident prediction alone meets the target)."""
    probs = np.asarray(probs, np.float64)
    conf = probs.max(axis=1)
    right = probs.argmax(axis=1) == np.asarray(labels)
    order = np.argsort(conf, kind="stable")
    conf, right = conf[order], right[order]
    running = np.cumsum(right) / np.arange(1, len(right) + 1)  # accuracy of the k least confident predictions
    below = np.flatnonzero(running < target)
    if len(below) == 0:
        return 0.0
    k = int(below[-1])  # the k+1 least confident are right less than `target` of the time
    # threshold halfway to the next confidence, so that exactly those k+1 fall below it
    nxt = conf[k + 1] if k + 1 < len(conf) else 1.0
    return float(round((conf[k] + nxt) / 2, 4))


@dataclass(frozen=True)
class Calibration:
    """What serving applies: probabilities = softmax(logits / temperature); top-1 below ``unsure_below`` -> UNSURE."""

    temperature: float = 1.0
    unsure_below: float = 0.0
    unsure_target: float = UNSURE_TARGET
    fitted_on: str = "validation"
    validation: dict | None = None  # ECE / NLL before and after, on the split it was fitted on
    flip_average: bool = False  # serve the mean logits of the image and its mirror (choose_views)

    def probs(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits, self.temperature)

    def save(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / FILENAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> "Calibration":
        """The folder's calibration.json, or no calibration (T = 1, never unsure) when it has none. A file whose
        values are missing or of the wrong type is refused in one line (never silently served as T = 1)."""
        path = Path(model_dir) / FILENAME
        if not path.is_file():
            return cls(fitted_on="none")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise HarError(f"{path}: cannot read the calibration ({exc}); delete the file to serve uncalibrated") from None
        problem = _invalid(data)
        if problem:
            raise HarError(f"{path}: {problem}; delete the file to serve uncalibrated, or train again")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _invalid(data) -> str | None:
    """Why ``data`` (a parsed calibration.json) is not a usable calibration, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if "temperature" not in data:
        return "no temperature"
    for key in ("temperature", "unsure_below"):  # unsure_below: optional (older folders), 0 = never unsure
        if key in data and not _number(data[key]):
            return f"{key} must be a number, not {json.dumps(data[key])[:40]}"
    if not data["temperature"] > 0:
        return "temperature must be > 0"
    if not 0 <= data.get("unsure_below", 0) <= 1:
        return "unsure_below must be within 0..1"
    if "unsure_target" in data and not _number(data["unsure_target"]):
        return "unsure_target must be a number"
    if not isinstance(data.get("flip_average", False), bool):
        return "flip_average must be true or false"
    if not isinstance(data.get("fitted_on", ""), str) or not isinstance(data.get("validation") or {}, dict):
        return "fitted_on must be a string and validation an object"
    return None


def too_small(labels: np.ndarray, num_classes: int) -> str | None:
    """Why a validation split with these labels is too small to calibrate on, or None when it is large enough."""
    labels = np.asarray(labels, int)
    fewest = int(np.bincount(labels, minlength=num_classes).min()) if num_classes else 0
    if len(labels) >= MIN_VALIDATION and fewest >= MIN_PER_CLASS:
        return None
    return (f"the validation split has {len(labels)} images, {fewest} in its smallest class; calibration needs at "
            f"least {MIN_VALIDATION}, and {MIN_PER_CLASS} of every class")


def macro_f1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Macro-averaged F1 of the top-1 predictions over the classes of the logits (numpy only, like serving)."""
    labels, pred = np.asarray(labels, int), np.asarray(logits).argmax(-1)
    f1 = []
    for c in range(np.asarray(logits).shape[-1]):
        tp, fp, fn = np.sum((pred == c) & (labels == c)), np.sum((pred == c) & (labels != c)), np.sum((pred != c) & (labels == c))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(f1)) if f1 else 0.0


def choose_views(single: np.ndarray, mirrored: np.ndarray, labels: np.ndarray) -> dict:
    """Whether to serve flip-averaged logits: only when their validation macro-F1 beats the single view's (a tie
    keeps the single view, which costs half the model time). Returns the figures and the choice."""
    scores = {"single": round(macro_f1(single, labels), 5), "flip": round(macro_f1((single + mirrored) / 2, labels), 5)}
    return {"validation_macro_f1": scores, "flip_average": scores["flip"] > scores["single"]}


def fit(logits: np.ndarray, labels: np.ndarray, target: float = UNSURE_TARGET, flip_average: bool = False) -> Calibration:
    """Fit the temperature and then the unsure threshold (on the calibrated probabilities) on validation logits (the
    flip-averaged ones for ``flip_average``); on a validation split that is ``too_small``, nothing: T = 1, never
    unsure (``validation["skipped"]`` says why)."""
    labels = np.asarray(labels, int)
    reason = too_small(labels, np.asarray(logits).shape[-1])
    if reason is not None:
        return Calibration(1.0, 0.0, target, "none", {"num_examples": int(len(labels)), "skipped": reason},
                           flip_average)
    t = fit_temperature(logits, labels)
    raw, cal = softmax(logits), softmax(logits, t)
    validation = {
        "num_examples": int(len(labels)),
        "ece_before": round(expected_calibration_error(raw, labels), 5),
        "ece_after": round(expected_calibration_error(cal, labels), 5),
        "nll_before": round(nll(logits, labels), 5),
        "nll_after": round(nll(logits, labels, t), 5),
    }
    return Calibration(round(t, 5), unsure_threshold(cal, labels, target), target, "validation", validation,
                       flip_average)


def report(cal: Calibration, logits: np.ndarray, labels: np.ndarray) -> dict:
    """ECE before/after and the unsure share on another split (the test split in metrics.json)."""
    labels = np.asarray(labels, int)
    probs = cal.probs(logits)
    conf = probs.max(axis=1)
    sure = conf >= cal.unsure_below
    right = probs.argmax(axis=1) == labels
    return {
        "temperature": cal.temperature,
        "unsure_below": cal.unsure_below,
        "ece_bins": ECE_BINS,
        "ece_before": round(expected_calibration_error(softmax(logits), labels), 5),
        "ece_after": round(expected_calibration_error(probs, labels), 5),
        "unsure_share": round(float(1 - sure.mean()), 4) if len(labels) else 0.0,
        "accuracy_when_sure": round(float(right[sure].mean()), 4) if sure.any() else None,
    }


def decide(probs: np.ndarray, labels: list[str], unsure_below: float) -> str:
    """The label to show for one probability vector: the top class, or UNSURE below the threshold."""
    k = int(np.argmax(probs))
    return UNSURE if float(probs[k]) < unsure_below else labels[k]


def answer(probs: np.ndarray, labels: list[str], unsure_below: float, k: int = 5) -> dict:
    """One classification as data, for API clients and every page headline alike: the decision (UNSURE or the top
    class), the top class's calibrated probability, the threshold used and the top ``k`` classes."""
    probs = np.asarray(probs, np.float64)
    order = np.argsort(-probs, kind="stable")[: max(1, k)]
    return {
        "decision": decide(probs, labels, unsure_below),
        "confidence": round(float(probs[order[0]]), 4),
        "unsure_below": round(float(unsure_below), 4),
        "top_k": [{"label": labels[i], "confidence": round(float(probs[i]), 4)} for i in order],
    }


def headline(decided: dict) -> str:
    """The page's headline for an ``answer``: the decision and the top class's confidence (its name when unsure)."""
    top = decided["top_k"][0]
    if decided["decision"] == UNSURE:
        return f"unsure ({top['label']}? {top['confidence']:.0%})"
    return f"{decided['decision']} {decided['confidence']:.0%}"
