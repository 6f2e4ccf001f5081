"""The model the app serves: one object, built once at start-up, whose methods the Gradio page binds directly.

    model = load_model()                      # HAR_MODEL, else the default below; never raises (the app must start)
    model.classify_image(payload)             # ({label: probability}, headline and latency)
    model.classify_video(payload, "5", 3)     # (annotated mp4, probabilities over time, segments, summary)
    model.classify_batch(payloads), model.explain_image(...), model.live_frame(...), model.model_info()

The default when HAR_MODEL is not set, first that exists: the model bundled beside app.py (``model/``, what
``publish-space`` writes into a Space), ``outputs/har15`` (what the README's training command writes), the first
model named in the ``models:`` list of the README.md front matter beside app.py (a Space that serves a Hub model).
Without a usable model the object still exists: every method raises the reason (one HarError line, shown in the
page), so the app starts and says how to train one.

Imports neither torch nor transformers nor Gradio: with an ONNX export the whole serving path runs without torch,
and the page (har_model.serve.ui) is the only part that knows Gradio.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from huggingface_hub import metadata_load

from har_model.calibration import headline
from har_model.errors import HarError
from har_model.imaging import is_image_path, open_rgb
from har_model.model_folder import files
from har_model.model_folder.int8 import read_gate
from har_model.model_folder.resolve import REPO_ID, resolve_model_dir
from har_model.paths import safe_filename
from har_model.serve import live, video
from har_model.serve.inference import Classifier
from har_model.serve.inputs import check_size, parse_sample_rate, scratch_dir, unsure_value, upload
from har_model.serve.settings import Settings

log = logging.getLogger("har_model.serve.model")

APP_ROOT = Path(__file__).resolve().parents[2]  # the folder of app.py: the repository, or a Space folder
BUNDLED_MODEL = "model"  # the model folder publish-space bundles into a Space, beside app.py
DEFAULT_MODEL = APP_ROOT / "outputs" / "har15"
TRAIN_HINT = (
    "Train one with `python train.py --data-dir DIR --output-dir outputs/har15` (DIR holds one sub-folder "
    "of images per action), or set `HAR_MODEL` to a model folder or a Hugging Face Hub model id, "
    "e.g. `HAR_MODEL=outputs/har15 python app.py`."
)
MODEL_IMAGES = {
    files.CONFUSION_MATRIX: "Confusion matrix on the test split (rows: true class)",
    files.TRAINING_CURVES: "Training curves",
    files.PREDICTIONS: "Test predictions (mistakes marked)",
}
TOP_K = 5
PLOT_CLASSES = 5  # classes drawn in the probability plot (the most likely ones over the clip)
PREDICTED = "predicted class"  # the heatmap's target when no class is chosen
LIVE_RESTART_GAP = 3.0  # a stream that was silent this long starts afresh (new smoothing and history)


# --------------------------------------------------------------------------------------------- which model


def readme_models(folder: Path = APP_ROOT) -> list[str]:
    """The ``models:`` list of ``folder/README.md``'s front matter (a Space names the Hub models it uses there)."""
    try:
        models = (metadata_load(folder / files.CARD) or {}).get("models") or []
    except Exception:  # no README, no front matter, bad YAML: no models named
        return []
    return [str(m) for m in ([models] if isinstance(models, str) else models)]


def default_model_spec(root: Path = APP_ROOT) -> str | None:
    """The model served without HAR_MODEL (see the module docstring), or None when there is none."""
    for folder in (root / BUNDLED_MODEL, root / "outputs" / "har15"):
        if (folder / files.CONFIG).is_file():
            return str(folder)
    models = readme_models(root)
    return models[0] if models else None


def load_model(spec: str | os.PathLike | None = None, backend: str | None = None,
               settings: Settings | None = None) -> ServedModel:
    """The model named by ``spec`` (default: env HAR_MODEL, else ``default_model_spec()``), loaded and warmed up;
    or, when it cannot be loaded, a ServedModel that says why. Never raises."""
    if spec is None:
        spec = os.environ.get("HAR_MODEL") or default_model_spec()
    backend = backend or os.environ.get("HAR_BACKEND", "auto")
    model = ServedModel(source=str(spec if spec is not None else DEFAULT_MODEL), settings=settings or Settings())
    try:
        if spec is None:
            raise HarError(f"No model found at {DEFAULT_MODEL} (the default).")
        model.model_dir = resolve_model_dir(spec)
        model.classifier = Classifier.load(model.model_dir, backend=backend)
        h, w = model.classifier.image_size
        model.classifier.predict_proba([np.zeros((h, w, 3), np.uint8)])  # warm up: the first user is not slower
        model.info = read_model_info(model.model_dir)
    except HarError as exc:
        model.problem = f"{str(exc).rstrip('.')}. {TRAIN_HINT}"
    except Exception as exc:  # a broken model folder must not stop the app from starting
        log.exception("loading the model from %s failed", spec)
        model.problem = f"{spec}: the model could not be loaded ({type(exc).__name__}: {exc}). {TRAIN_HINT}"
    if model.problem:
        model.classifier = None
        log.warning(model.problem)
    return model


def read_model_info(model_dir: Path) -> dict:
    """What the Model tab shows, from whatever of config.json / metrics.json / README.md / *.png exists."""
    info: dict = {"model_dir": str(model_dir)}
    for key, name in (("config", files.CONFIG), ("metrics", files.METRICS)):
        info[key] = files.read_optional(model_dir, name)
    try:
        info["card"] = metadata_load(model_dir / files.CARD) or {}
    except Exception:  # no card or unreadable front matter: the Model tab says less
        info["card"] = {}
    info["int8_gate"] = read_gate(model_dir)  # which ONNX file serves by default, and the figures that decided it
    info["images"] = {n: model_dir / n for n in MODEL_IMAGES if (model_dir / n).is_file()}
    info["examples"] = pick_examples(model_dir / files.EXAMPLES)
    return info


def pick_examples(folder: Path, limit: int = 30) -> list[Path]:
    """Example images from the model folder, one per class first (train.py names them <class>_<k>.jpg)."""
    if not folder.is_dir():
        return []
    images = sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p))
    first, rest, seen = [], [], set()
    for p in images:
        key = p.stem.rsplit("_", 1)[0] if "_" in p.stem else p.stem
        (rest if key in seen else first).append(p)
        seen.add(key)
    return (first + rest)[:limit] if len(first) < limit else first[:limit]


# --------------------------------------------------------------------------------------------- the served model


@dataclass
class ServedModel:
    """The classifier the app shares between all requests (or the reason there is none), its facts and limits.

    Each method is one of the page's actions (and named API endpoint); a bad input or a missing model raises
    HarError with one line for the user."""

    source: str
    settings: Settings = field(default_factory=Settings)
    classifier: Classifier | None = None
    model_dir: Path | None = None
    problem: str | None = None
    info: dict = field(default_factory=dict)
    notify: Callable[[str], None] = log.warning  # a note for the user beside the answer (the page shows it)

    def require(self) -> Classifier:
        if self.classifier is None:
            raise HarError(self.public(self.problem) or "no model loaded")
        return self.classifier

    @property
    def name(self) -> str:
        """The model as the app's answers and pages name it: a Hub id as is, a local folder by its name only
        (an absolute path says where the server keeps its files)."""
        return self.source if REPO_ID.match(self.source) and not Path(self.source).is_absolute() \
            else Path(self.source).name or self.source

    def public(self, text: str | None) -> str | None:
        """``text`` (a problem, a message) with the model's local paths and the app folder replaced by names."""
        if not text:
            return text
        for path in sorted({p for p in (self.source, str(self.model_dir or ""), _resolved(self.model_dir or self.source))
                            if p and p != self.name}, key=len, reverse=True):
            text = text.replace(path, self.name)
        return text.replace(f"{APP_ROOT}{os.sep}", "").replace(str(APP_ROOT), ".")

    def shown_files(self) -> list[Path]:
        """The only model files the app serves to browsers: the example images and the report plots it shows."""
        return [*self.info.get("examples", []), *self.info.get("images", {}).values()]

    @property
    def labels(self) -> list[str]:
        return list(self.classifier.labels) if self.classifier is not None else []

    # -- images

    def classify_image(self, payload, unsure_below=None) -> tuple[dict | None, str, dict | None]:
        """Top-k {label: probability} for one uploaded / webcam / pasted image, a headline + latency line, and the
        answer as data: {"decision", "confidence", "unsure_below", "top_k"} (the decision is "unsure" when the top
        probability is below ``unsure_below``, default: the model's; the headline says the same).
        No image (the input was cleared): nothing to show."""
        if payload is None:
            return None, "", None
        clf = self.require()
        source, name = self._image_source(payload)
        t0 = time.perf_counter()
        img = self._decode(source, name, clf)
        t1 = time.perf_counter()
        probs = clf.predict_proba([img])[0]
        t2 = time.perf_counter()
        decided = clf.answer(probs, unsure_value(unsure_below), TOP_K)
        latency = (f"### {headline(decided)}\n\n{1000 * (t2 - t0):.0f} ms (decode {1000 * (t1 - t0):.0f} ms, model "
                   f"{1000 * (t2 - t1):.0f} ms, {clf.backend})")
        return {c["label"]: c["confidence"] for c in decided["top_k"]}, latency, decided

    def explain_image(self, payload, show=True, target=PREDICTED) -> tuple[np.ndarray | None, str]:
        """(heatmap overlay RGB array, caption): Grad-CAM of the predicted class or of the class named ``target``;
        (None, "") when there is no image or the heatmap is switched off."""
        if payload is None or not show:
            return None, ""
        clf = self.require()
        source, name = self._image_source(payload)
        if target not in (None, "", PREDICTED) and target not in clf.labels:
            raise HarError(f"heatmap class {target!r}: not a class of this model")
        chosen = None if target in (None, "", PREDICTED) else clf.labels.index(target)
        img = self._decode(source, name, clf)
        t0 = time.perf_counter()
        overlay, k, probs = clf.explain(img, chosen)
        took = 1000 * (time.perf_counter() - t0)
        return overlay, f"Grad-CAM for **{clf.labels[k]}** ({probs[k]:.0%}) · {took:.0f} ms; red = strongest evidence"

    def _image_source(self, payload) -> tuple[str | bytes, str]:
        """(path or bytes, display name) of an uploaded image within the size cap."""
        source, name = upload(payload, "image")
        check_size(source, name, self.settings.max_image_bytes, "image")
        return source, name

    @staticmethod
    def _decode(source: str | bytes, name: str, clf: Classifier):
        try:
            return open_rgb(source, draft_size=clf.preprocessing.draft_size)
        except HarError as exc:  # name the file as the user knows it, not by its temporary path
            raise HarError(str(exc).replace("<bytes>" if isinstance(source, bytes) else source, name, 1)) from None

    # -- webcam

    def live_frame(self, frame, state, window, unsure_below=None):
        """One webcam frame of the Live tab -> (label bars, headline and figures, history line, per-viewer state)."""
        clf = self.require()
        if frame is None:
            return None, "", "", state
        now = time.perf_counter()
        if state is None or not state.done or now - state.done[-1][0] > LIVE_RESTART_GAP:
            state = live.LiveState()
        window = max(0.0, float(window or 0.0))
        view = live.live_step(clf, frame, state, window, unsure_value(unsure_below), top_k=TOP_K)
        return view.probs, live.summary(view, window), "History: " + live.history_text(view), state

    # -- video and batches

    def classify_video(self, payload, sample_rate, window, unsure_below=None, progress=None):
        """(annotated mp4 path, probabilities-over-time DataFrame, segments DataFrame, summary markdown, the answer as
        data: {"unsure_below", "segments": [{"start", "end", "decision", "confidence", "top_k"}]}).
        ``progress(fraction, desc=...)``: told how far the clip is (the page's progress bar)."""
        clf, settings = self.require(), self.settings
        source, name = upload(payload, "video")
        if isinstance(source, bytes):
            raise HarError(f"{name}: upload the video as a file")
        path = Path(source)
        if path.is_file():
            check_size(source, name, settings.max_video_bytes, "video")
        rate = parse_sample_rate(sample_rate)
        window = max(1, int(window or 1))
        out = scratch_dir() / f"{safe_filename(Path(name).stem, 40, fallback='video')}_{time.time_ns()}_annotated.mp4"

        def report(done: float, total: float | None) -> None:
            if progress is not None:
                progress((done / total) if total else None, desc=f"{done:.0f} s of {f'{total:.0f} s' if total else 'video'}")

        threshold = unsure_value(unsure_below)
        threshold = clf.unsure_below if threshold is None else threshold
        try:
            result = video.analyse_video(
                path, clf, sample_fps=rate, window=window, out_path=out, max_seconds=settings.max_video_seconds,
                max_bytes=settings.max_video_bytes, progress=report, unsure_below=threshold,
            )
        except HarError as exc:
            raise HarError(str(exc).replace(path.name, name, 1)) from None
        summary = (
            f"Processed {result.duration:.1f} s of video ({result.frames} frames, {len(result.times)} classified"
            f" {'at every frame' if rate is None else f'at {rate:g} fps'}, smoothing window {window})"
            f" in {result.seconds:.1f} s: {result.fps_processed:.0f} frames/s, "
            f"{result.duration / max(result.seconds, 1e-9):.1f}x real time."
        )
        if result.truncated:
            note = f"Only the first {settings.max_video_seconds:.0f} s were processed (the duration cap)."
            summary += " " + note
            self.notify(note)
        seg = pd.DataFrame(
            [[s.start, s.end, s.label, round(s.confidence, 3)] for s in result.segments],
            columns=["start (s)", "end (s)", "action", "confidence"],
        )
        decided = {"unsure_below": round(float(threshold), 4),
                   "segments": video.segment_answers(result, threshold, TOP_K)}
        return str(out), probability_frame(result), seg, summary, decided

    def classify_batch(self, payloads, unsure_below=None):
        """(results DataFrame, CSV path, the answers as data): one row per file with the decision ("unsure" below
        ``unsure_below``, default: the model's), its confidence and the top 3; unreadable files get an error row, not
        a failure."""
        clf, settings = self.require(), self.settings
        payloads = [p for p in (payloads or []) if p]
        if not payloads:
            raise HarError("no images given: upload one or more first")
        if len(payloads) > settings.max_batch_files:
            raise HarError(f"{len(payloads)} files: at most {settings.max_batch_files} at once")
        threshold = unsure_value(unsure_below)
        names, paths, rows, answers = {}, [], {}, {}
        for i, payload in enumerate(payloads):
            source, name = upload(payload, "image")
            try:
                if isinstance(source, bytes):
                    raise HarError(f"{name}: upload the image as a file")
                check_size(source, name, settings.max_image_bytes, "image")
            except HarError as exc:
                rows[i], answers[i] = [name, "", None, "", str(exc)], {"file": name, "error": str(exc)}
                continue
            names[str(source)] = (i, name)
            paths.append(source)
        for path, probs, error in clf.predict_files(paths):
            i, name = names[path]
            if probs is None:
                message = (error or "").replace(path, name)
                rows[i], answers[i] = [name, "", None, "", message], {"file": name, "error": message}
                continue
            decided = clf.answer(probs, threshold, 3)
            rows[i] = [name, decided["decision"], decided["confidence"],
                       ", ".join(f"{c['label']} {c['confidence']:.2f}" for c in decided["top_k"]), ""]
            answers[i] = {"file": name, **decided}
        table = pd.DataFrame([rows[i] for i in sorted(rows)], columns=["file", "prediction", "confidence", "top 3", "error"])
        out = scratch_dir() / f"predictions_{time.time_ns()}.csv"
        with open(out, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(table.columns)
            writer.writerows(table.itertuples(index=False))
        return table, str(out), [answers[i] for i in sorted(answers)]

    # -- facts

    def model_info(self) -> dict:
        """JSON-friendly facts about the loaded model (API endpoint /model_info)."""
        if self.classifier is None:
            return {"loaded": False, "source": self.name, "problem": self.public(self.problem)}
        test = (self.info.get("metrics") or {}).get("test") or {}
        return {
            "loaded": True,
            "source": self.name,  # never the absolute folder: that is the server's business
            "backend": self.classifier.backend,
            "labels": self.labels,
            "image_size": list(self.classifier.image_size),
            "base_model": self._base_model(),
            "test_accuracy": test.get("accuracy"),
            "test_macro_f1": test.get("macro_f1"),
            "int8_gate": self._int8_gate(),
        }

    def _int8_gate(self) -> dict | None:
        """The export's int8 verdict as data (passed, reason, agreement, both F1s, speed), or None without one."""
        gate = self.info.get("int8_gate")
        if gate is None:
            return None
        return {key: value for key, value in gate.as_json().items() if key != "calibration"}

    def _base_model(self) -> str | None:
        card, metrics = self.info.get("card") or {}, self.info.get("metrics") or {}
        base = card.get("base_model") or metrics.get("base_model") or (self.info.get("config") or {}).get("_name_or_path")
        return ", ".join(base) if isinstance(base, list) else base

    def markdown(self) -> str:
        """The Model tab's facts (or why there is no model)."""
        if self.classifier is None:
            return f"### No model loaded\n\n{self.public(self.problem)}"
        facts = self.model_info()
        metrics = self.info.get("metrics") or {}
        lines = [f"### Model: `{self.name}`", ""]
        lines.append(f"- **Classes ({len(facts['labels'])})**: {', '.join(facts['labels'])}")
        if facts["base_model"]:
            lines.append(f"- **Base model**: `{facts['base_model']}`")
        datasets = (self.info.get("card") or {}).get("datasets") or metrics.get("dataset")
        if datasets:
            lines.append(f"- **Dataset**: {', '.join(datasets) if isinstance(datasets, list) else datasets}")
        for key, label in (("test_accuracy", "Test accuracy"), ("test_macro_f1", "Test macro-F1")):
            if isinstance(facts[key], (int, float)):
                lines.append(f"- **{label}**: {facts[key]:.3f}")
        if isinstance(metrics.get("train_seconds"), (int, float)):
            lines.append(f"- **Training time**: {metrics['train_seconds'] / 60:.1f} min")
        lines.append(f"- **Input size**: {facts['image_size'][0]}x{facts['image_size'][1]}, backend `{facts['backend']}`")
        if self.info.get("int8_gate") is not None:
            lines.append(f"- **ONNX int8**: {self.info['int8_gate'].summary()}")
        if not metrics:
            lines.append("\n_No metrics.json in the model folder: evaluation figures are not available._")
        return "\n".join(lines)

    def per_class_frame(self) -> pd.DataFrame:
        per_class = ((self.info.get("metrics") or {}).get("test") or {}).get("per_class") or {}
        rows = [
            [label, *(round(float(m.get(k, float("nan"))), 3) for k in ("precision", "recall", "f1")), m.get("support")]
            for label, m in per_class.items()
            if isinstance(m, dict)
        ]
        return pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "support"])


def _resolved(path) -> str:
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError, ValueError):
        return ""


def probability_frame(result: video.VideoResult, max_points: int = 600) -> pd.DataFrame:
    """Long-format DataFrame (time (s), action, probability) of the smoothed probabilities, top classes only."""
    probs = result.probs
    if len(probs) == 0:
        return pd.DataFrame({"time (s)": [], "action": [], "probability": []})
    keep = np.argsort(-probs.max(axis=0), kind="stable")[:PLOT_CLASSES]
    step = max(1, int(np.ceil(len(probs) / max_points)))
    rows = np.arange(0, len(probs), step)
    return pd.DataFrame(
        {
            "time (s)": np.repeat(np.round(result.times[rows], 3), len(keep)),
            "action": [result.labels[k] for _ in rows for k in keep],
            "probability": np.round(probs[rows][:, keep].reshape(-1), 4),
        }
    )
