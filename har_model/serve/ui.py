"""The Gradio app (a Hugging Face Space): Image, Video, Live, Batch and Model tabs around one shared Classifier.

    HAR_MODEL=outputs/har15 python app.py        # a local model folder written by train.py
    HAR_MODEL=user/har-model python app.py       # a model repo on the Hub (downloaded once, then cached)
    python app.py                                # the default: see har_model.serve.model (bundled model first)

Other settings (environment): HAR_BACKEND (auto|torch|torch-bf16|onnx; auto uses the model folder's ONNX file
when there is one), HAR_MAX_IMAGE_MB (20), HAR_MAX_VIDEO_MB (200), HAR_MAX_VIDEO_SECONDS (120, longer clips are
cut), HAR_MAX_BATCH_FILES (500), HAR_QUEUE_SIZE (64).

The model is loaded once at start-up and shared by all requests; a queue bounds concurrent work. Without a
usable model the app still starts and every tab explains how to train one or point HAR_MODEL at one.
Named API endpoints (for ``gradio_client``): /classify_image, /classify_video, /classify_batch, /model_info.

Event handlers receive the raw upload (``preprocess=False``) so that every bad input -- not an image, an
image that does not decode, not a video, an unknown codec, a file over the size cap -- is reported by our own
code as a friendly ``gr.Error`` instead of failing inside a component.
"""

from __future__ import annotations

import base64
import csv
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from har_model.calibration import headline
from har_model.serve import live as live_mod
from har_model.serve import video as video_mod
from har_model.serve.model import MODEL_IMAGES, ModelHandle, load_model
from har_model.errors import HarError
from har_model.explain import torch_available
from har_model.serve.settings import Settings
from har_model.paths import safe_filename

log = logging.getLogger("har_model.serve.ui")

SAMPLE_RATES = ("1", "2", "5", "10", "every frame")
TOP_K = 5
PLOT_CLASSES = 5  # classes drawn in the probability plot (the most likely ones over the clip)




# --------------------------------------------------------------------------------------------- handlers


def _upload(payload, what: str) -> tuple[str | bytes, str]:
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


def _check_size(source: str | bytes, name: str, limit: int, what: str) -> None:
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


def classify_image(handle: ModelHandle, payload, settings: Settings, unsure_below=None) -> tuple[dict, str, dict]:
    """Top-k {label: probability} for one uploaded / webcam / pasted image, a headline + latency line, and the
    answer as data: {"decision", "confidence", "unsure_below", "top_k"} (the decision is "unsure" when the top
    probability is below ``unsure_below``, default: the model's; the headline says the same)."""
    clf = handle.require()
    source, name = _upload(payload, "image")
    _check_size(source, name, settings.max_image_bytes, "image")
    from har_model.imaging import open_rgb

    t0 = time.perf_counter()
    try:
        img = open_rgb(source, draft_size=clf.preprocessing.draft_size)
    except HarError as exc:  # name the file as the user knows it, not by its temporary path
        raise HarError(str(exc).replace("<bytes>" if isinstance(source, bytes) else source, name, 1)) from None
    t1 = time.perf_counter()
    probs = clf.predict_proba([img])[0]
    t2 = time.perf_counter()
    decided = clf.answer(probs, unsure_value(unsure_below), TOP_K)
    latency = (f"### {headline(decided)}\n\n{1000 * (t2 - t0):.0f} ms (decode {1000 * (t1 - t0):.0f} ms, model "
               f"{1000 * (t2 - t1):.0f} ms, {clf.backend})")
    return {c["label"]: c["confidence"] for c in decided["top_k"]}, latency, decided


PREDICTED = "predicted class"


def explain_image(handle: ModelHandle, payload, settings: Settings, target=PREDICTED):
    """(heatmap overlay RGB array, caption): Grad-CAM of the predicted class or of the class named ``target``."""
    clf = handle.require()
    source, name = _upload(payload, "image")
    _check_size(source, name, settings.max_image_bytes, "image")
    from har_model.imaging import open_rgb

    if target not in (None, "", PREDICTED) and target not in clf.labels:
        raise HarError(f"heatmap class {target!r}: not a class of this model")
    chosen = None if target in (None, "", PREDICTED) else clf.labels.index(target)
    try:
        img = open_rgb(source, draft_size=clf.preprocessing.draft_size)
    except HarError as exc:
        raise HarError(str(exc).replace("<bytes>" if isinstance(source, bytes) else source, name, 1)) from None
    t0 = time.perf_counter()
    overlay, k, probs = clf.explain(img, chosen)
    took = 1000 * (time.perf_counter() - t0)
    return overlay, f"Grad-CAM for **{clf.labels[k]}** ({probs[k]:.0%}) · {took:.0f} ms; red = strongest evidence"


LIVE_STREAM_EVERY = 0.07  # seconds between webcam frames sent (about 14 per second; the model takes the newest)
LIVE_RESTART_GAP = 3.0  # a stream that was silent this long starts afresh (new smoothing and history)


def live_frame(handle: ModelHandle, frame, state, window, unsure_below=None):
    """One webcam frame of the Live tab -> (label bars, headline and figures, history line, per-viewer state)."""
    clf = handle.require()
    if frame is None:
        return None, "", "", state
    now = time.perf_counter()
    if state is None or not state.done or now - state.done[-1][0] > LIVE_RESTART_GAP:
        state = live_mod.LiveState()
    window = max(0.0, float(window or 0.0))
    view = live_mod.live_step(clf, frame, state, window, unsure_value(unsure_below), top_k=TOP_K)
    return view.probs, live_mod.summary(view, window), "History: " + live_mod.history_text(view), state


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


def classify_video(handle: ModelHandle, payload, sample_rate, window, settings: Settings, progress=None,
                   unsure_below=None):
    """(annotated mp4 path, probabilities-over-time DataFrame, segments DataFrame, summary markdown, the answer as
    data: {"unsure_below", "segments": [{"start", "end", "decision", "confidence", "top_k"}]})."""
    import pandas as pd

    clf = handle.require()
    source, name = _upload(payload, "video")
    if isinstance(source, bytes):
        raise HarError(f"{name}: upload the video as a file")
    path = Path(source)
    if path.is_file():
        _check_size(source, name, settings.max_video_bytes, "video")
    rate = parse_sample_rate(sample_rate)
    window = max(1, int(window or 1))
    out = _scratch_dir() / f"{safe_filename(Path(name).stem, 40, fallback='video')}_{time.time_ns()}_annotated.mp4"

    def report(done: float, total: float | None) -> None:
        if progress is not None:
            progress((done / total) if total else None, desc=f"{done:.0f} s of {f'{total:.0f} s' if total else 'video'}")

    threshold = unsure_value(unsure_below)
    threshold = clf.unsure_below if threshold is None else threshold
    try:
        result = video_mod.analyse_video(
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
        _warn(note)
    plot = probability_frame(result)
    seg = pd.DataFrame(
        [[s.start, s.end, s.label, round(s.confidence, 3)] for s in result.segments],
        columns=["start (s)", "end (s)", "action", "confidence"],
    )
    decided = {"unsure_below": round(float(threshold), 4),
               "segments": video_mod.segment_answers(result, threshold, TOP_K)}
    return str(out), plot, seg, summary, decided


def probability_frame(result: video_mod.VideoResult, max_points: int = 600):
    """Long-format DataFrame (time (s), action, probability) of the smoothed probabilities, top classes only."""
    import pandas as pd

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


def classify_batch(handle: ModelHandle, payloads, settings: Settings, unsure_below=None):
    """(results DataFrame, CSV path, the answers as data): one row per file with the decision ("unsure" below
    ``unsure_below``, default: the model's), its confidence and the top 3; unreadable files get an error row, not a
    failure."""
    import pandas as pd

    clf = handle.require()
    payloads = [p for p in (payloads or []) if p]
    if not payloads:
        raise HarError("no images given: upload one or more first")
    if len(payloads) > settings.max_batch_files:
        raise HarError(f"{len(payloads)} files: at most {settings.max_batch_files} at once")
    threshold = unsure_value(unsure_below)
    names, paths, rows, answers = {}, [], {}, {}
    for i, payload in enumerate(payloads):
        source, name = _upload(payload, "image")
        try:
            if isinstance(source, bytes):
                raise HarError(f"{name}: upload the image as a file")
            _check_size(source, name, settings.max_image_bytes, "image")
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
    out = _scratch_dir() / f"predictions_{time.time_ns()}.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(table.columns)
        writer.writerows(table.itertuples(index=False))
    return table, str(out), [answers[i] for i in sorted(answers)]


def model_info(handle: ModelHandle) -> dict:
    """JSON-friendly facts about the loaded model (API endpoint /model_info)."""
    if handle.classifier is None:
        return {"loaded": False, "source": handle.name, "problem": handle.public(handle.problem)}
    info, clf = handle.info, handle.classifier
    test = (info.get("metrics") or {}).get("test") or {}
    return {
        "loaded": True,
        "source": handle.name,  # never the absolute folder: that is the server's business
        "backend": clf.backend,
        "labels": list(clf.labels),
        "image_size": list(clf.image_size),
        "base_model": _base_model(info),
        "test_accuracy": test.get("accuracy"),
        "test_macro_f1": test.get("macro_f1"),
    }


def _base_model(info: dict) -> str | None:
    card, metrics = info.get("card") or {}, info.get("metrics") or {}
    base = card.get("base_model") or metrics.get("base_model") or (info.get("config") or {}).get("_name_or_path")
    return ", ".join(base) if isinstance(base, list) else base


def model_markdown(handle: ModelHandle) -> str:
    if handle.classifier is None:
        return f"### No model loaded\n\n{handle.public(handle.problem)}"
    facts = model_info(handle)
    metrics = handle.info.get("metrics") or {}
    lines = [f"### Model: `{handle.name}`", ""]
    lines.append(f"- **Classes ({len(facts['labels'])})**: {', '.join(facts['labels'])}")
    if facts["base_model"]:
        lines.append(f"- **Base model**: `{facts['base_model']}`")
    datasets = (handle.info.get("card") or {}).get("datasets") or metrics.get("dataset")
    if datasets:
        lines.append(f"- **Dataset**: {', '.join(datasets) if isinstance(datasets, list) else datasets}")
    for key, label in (("test_accuracy", "Test accuracy"), ("test_macro_f1", "Test macro-F1")):
        if isinstance(facts[key], (int, float)):
            lines.append(f"- **{label}**: {facts[key]:.3f}")
    if isinstance(metrics.get("train_seconds"), (int, float)):
        lines.append(f"- **Training time**: {metrics['train_seconds'] / 60:.1f} min")
    lines.append(f"- **Input size**: {facts['image_size'][0]}x{facts['image_size'][1]}, backend `{facts['backend']}`")
    if not metrics:
        lines.append("\n_No metrics.json in the model folder: evaluation figures are not available._")
    return "\n".join(lines)


def per_class_frame(handle: ModelHandle):
    import pandas as pd

    per_class = ((handle.info.get("metrics") or {}).get("test") or {}).get("per_class") or {}
    rows = [
        [label, *(round(float(m.get(k, float("nan"))), 3) for k in ("precision", "recall", "f1")), m.get("support")]
        for label, m in per_class.items()
        if isinstance(m, dict)
    ]
    return pd.DataFrame(rows, columns=["class", "precision", "recall", "f1", "support"])


def _scratch_dir(max_age_s: float = 3600) -> Path:
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


def _warn(message: str) -> None:
    try:
        import gradio as gr

        gr.Warning(message)
    except Exception:
        log.warning(message)


# --------------------------------------------------------------------------------------------- the Blocks


def _friendly(fn):
    """Turn HarError (and, as a last resort, any exception) into gr.Error so the UI shows it and keeps serving."""
    import functools

    import gradio as gr

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except HarError as exc:
            raise gr.Error(str(exc), title="Cannot process this input", print_exception=False) from None
        except Exception as exc:
            log.exception("request failed")
            raise gr.Error(f"Something went wrong ({type(exc).__name__}); the app is still running.") from None

    return wrapper


def build_demo(handle: ModelHandle | None = None, settings: Settings | None = None):
    """The whole app as a gr.Blocks (queue configured); launch it with ``demo.launch(**launch_kwargs(...))``."""
    import gradio as gr

    settings = settings or Settings.from_env()  # first: a bad HAR_* setting stops the start (one line each)
    handle = handle if handle is not None else load_model(backend=settings.backend)
    banner = None if handle.classifier is not None else f"⚠️ **No model loaded.** {handle.public(handle.problem)}"

    with gr.Blocks(title="Human Action Recognition", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# Human action recognition\nClassify what people are doing in photos, webcam snapshots and videos."
            + (f"\n\nModel: `{handle.name}` ({len(handle.classifier.labels)} actions)" if handle.classifier else "")
        )
        if banner:
            gr.Markdown(banner, elem_id="no-model")
        saved_unsure = handle.classifier.unsure_below if handle.classifier is not None else 0.0
        unsure_in = gr.Slider(0, 1, value=round(saved_unsure, 2), step=0.01, elem_id="unsure-below",
                              label="Say \"unsure\" below this confidence (every tab; 0 = always name an action)",
                              info=f"The model's own threshold, chosen on its validation split: {saved_unsure:.2f}")

        with gr.Tab("Image", id="image"):
            with gr.Row():
                with gr.Column():
                    image_in = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", label="Photo", elem_id="image-input")
                    image_btn = gr.Button("Classify", variant="primary")
                with gr.Column():
                    # the headline is the decision ("unsure" below the threshold), never the Label's own top class
                    latency_out = gr.Markdown(elem_id="image-latency")
                    label_out = gr.Label(num_top_classes=TOP_K, label="Action", elem_id="image-label", show_heading=False)
                    image_answer = gr.JSON(visible=False, elem_id="image-answer")  # for API clients
                    # heatmaps need torch: without it (an ONNX-only install) the toggle is not offered
                    can_explain = handle.classifier is not None and torch_available()
                    with gr.Row(visible=can_explain):
                        heat_on = gr.Checkbox(False, label="Show heatmap (where the model looked)", elem_id="heatmap-toggle")
                        heat_class = gr.Dropdown([PREDICTED, *(handle.classifier.labels if handle.classifier else [])],
                                                 value=PREDICTED, label="Heatmap for", elem_id="heatmap-class")
                    heat_out = gr.Image(label="Grad-CAM heatmap (the model's input crop)", type="numpy", interactive=False,
                                        visible=False, elem_id="heatmap-image", format="png")
                    heat_note = gr.Markdown(elem_id="heatmap-note")

            @_friendly
            def on_image(payload, unsure=None):
                if payload is None:
                    return None, "", None
                return classify_image(handle, payload, settings, unsure)

            @_friendly
            def on_explain(payload, show, target):
                if payload is None or not show:
                    return gr.update(value=None, visible=False), ""
                image, note = explain_image(handle, payload, settings, target)
                return gr.update(value=image, visible=True), note

            explain_args = dict(fn=on_explain, inputs=[image_in, heat_on, heat_class], outputs=[heat_out, heat_note],
                                preprocess=False, concurrency_limit=1, concurrency_id="heavy")

            if handle.classifier is not None and handle.info.get("examples"):
                examples = handle.info["examples"]
                shown = gr.Examples([[str(p)] for p in examples], inputs=[image_in], cache_examples=False,
                                    example_labels=[p.stem for p in examples], examples_per_page=15)
                # classified after loading, with the current settings (Examples' own fn would get the image only)
                loaded = shown.load_input_event.then(on_image, inputs=[image_in, unsure_in], outputs=[label_out, latency_out, image_answer],
                                                     preprocess=False, api_visibility="undocumented")
                if can_explain:
                    loaded.then(**explain_args, api_visibility="undocumented")

            # `input` fires once per upload, webcam snapshot, paste or clear (`change` fires twice on a replacement)
            gr.on([image_in.input, image_btn.click], on_image, inputs=[image_in, unsure_in], outputs=[label_out, latency_out, image_answer],
                  api_name="classify_image", preprocess=False, concurrency_limit=settings.image_concurrency, concurrency_id="image")
            if can_explain:
                gr.on([image_in.input, image_btn.click, heat_on.change, heat_class.change], **explain_args, api_name="explain_image")

        with gr.Tab("Video", id="video"):
            with gr.Row():
                with gr.Column():
                    video_in = gr.Video(sources=["upload", "webcam"], include_audio=True, label="Clip (mp4, webm, mov, avi)", elem_id="video-input")
                    rate_in = gr.Radio(list(SAMPLE_RATES), value=f"{video_mod.DEFAULT_SAMPLE_FPS:g}", label="Classified frames per second")
                    window_in = gr.Slider(1, 30, value=video_mod.DEFAULT_WINDOW, step=1, label="Smoothing window (sampled frames; 1 = no smoothing)")
                    video_btn = gr.Button("Analyse video", variant="primary", elem_id="video-button")
                    gr.Markdown(f"Clips longer than {settings.max_video_seconds:.0f} s are cut at that point; files up to {settings.max_video_bytes / 2**20:.0f} MB.")
                with gr.Column():
                    video_out = gr.Video(label="Annotated video", elem_id="video-output", interactive=False)
                    summary_out = gr.Markdown(elem_id="video-summary")
            plot_out = gr.LinePlot(x="time (s)", y="probability", color="action", y_lim=[0, 1], label="Smoothed class probabilities", elem_id="video-plot")
            segments_out = gr.Dataframe(headers=["start (s)", "end (s)", "action", "confidence"], label="Segments", elem_id="video-segments", interactive=False)
            video_answer = gr.JSON(visible=False, elem_id="video-answer")  # for API clients

            @_friendly
            def on_video(payload, rate, window, unsure=None, progress=gr.Progress()):
                return classify_video(handle, payload, rate, window, settings, progress, unsure)

            video_btn.click(on_video, inputs=[video_in, rate_in, window_in, unsure_in], outputs=[video_out, plot_out, segments_out, summary_out, video_answer],
                            api_name="classify_video", preprocess=False, concurrency_limit=1, concurrency_id="heavy")

        with gr.Tab("Live", id="live"):
            with gr.Row():
                with gr.Column():
                    cam_in = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam (press record to start)",
                                      elem_id="live-input")
                    live_window = gr.Slider(0, 5, value=live_mod.DEFAULT_WINDOW_S, step=0.25, elem_id="live-window",
                                            label="Smoothing window (seconds of frames averaged; 0 = none)")
                    gr.Markdown(f"A stream stops after {settings.live_seconds:.0f} s (record again to continue). Frames "
                                "that arrive while the model is busy are skipped, never queued, so the label stays current.")
                with gr.Column():
                    live_summary = gr.Markdown(elem_id="live-summary")  # headline: the decision, as in every tab
                    live_label = gr.Label(num_top_classes=TOP_K, label="Action (live)", elem_id="live-label",
                                          show_heading=False)
                    live_history = gr.Markdown(elem_id="live-history")
            live_state = gr.State(None)

            @_friendly
            def on_live(frame, state, window, unsure):
                return live_frame(handle, frame, state, window, unsure)

            cam_in.stream(on_live, inputs=[cam_in, live_state, live_window, unsure_in],
                          outputs=[live_label, live_summary, live_history, live_state], stream_every=LIVE_STREAM_EVERY,
                          time_limit=settings.live_seconds, concurrency_limit=settings.live_streams,
                          concurrency_id="live", show_progress="hidden", api_visibility="undocumented")

        with gr.Tab("Batch", id="batch"):
            files_in = gr.File(file_count="multiple", file_types=["image"], label="Images", elem_id="batch-input")
            batch_btn = gr.Button("Classify all", variant="primary")
            table_out = gr.Dataframe(label="Results", interactive=False, elem_id="batch-table")
            csv_out = gr.File(label="CSV download", interactive=False)
            batch_answer = gr.JSON(visible=False, elem_id="batch-answer")  # for API clients

            @_friendly
            def on_batch(payloads, unsure=None):
                return classify_batch(handle, payloads, settings, unsure)

            batch_btn.click(on_batch, inputs=[files_in, unsure_in], outputs=[table_out, csv_out, batch_answer],
                            api_name="classify_batch",
                            preprocess=False, concurrency_limit=1, concurrency_id="heavy")

        with gr.Tab("Model", id="model"):
            gr.Markdown(model_markdown(handle), elem_id="model-facts")
            if handle.classifier is not None:
                per_class = per_class_frame(handle)
                if len(per_class):
                    gr.Dataframe(per_class, label="Per-class test metrics", interactive=False)
                for name, path in handle.info.get("images", {}).items():
                    gr.Image(str(path), label=MODEL_IMAGES[name], interactive=False, elem_id=f"model-{Path(name).stem}")

        def model_info_api() -> dict:
            return model_info(handle)

        gr.api(model_info_api, api_name="model_info")

    demo.queue(max_size=settings.queue_size, default_concurrency_limit=1)
    demo.har_handle = handle  # for tests and scripts
    return demo


def launch_kwargs(handle: ModelHandle | None = None, settings: Settings | None = None) -> dict:
    """Arguments for demo.launch(): the upload size cap, and the files the app shows (examples, plots) as the only
    model files browsers may fetch, by explicit name: never the model folder as a whole, which also holds
    checkpoints (pickles), the dataset copy and whatever else its owner keeps there (a .env)."""
    settings = settings or Settings.from_env()
    kwargs = {"max_file_size": max(settings.max_image_bytes, settings.max_video_bytes), "show_error": True}
    if handle is not None and handle.shown_files():
        kwargs["allowed_paths"] = [str(p) for p in handle.shown_files()]
    return kwargs
