"""The Gradio app (a Hugging Face Space): Image, Video, Live, Batch and Model tabs, the page's layout around one
ServedModel, whose methods it binds.

    HAR_MODEL=outputs/har15 python app.py        # a local model folder written by train.py
    HAR_MODEL=user/har-model python app.py       # a model repo on the Hub (downloaded once, then cached)
    python app.py                                # the default: see har_model.serve.model (bundled model first)

Other settings (environment): HAR_BACKEND (auto|torch|torch-bf16|onnx|onnx-fp32|onnx-int8; auto uses the model
folder's ONNX file when there is one: int8 where its agreement gate passed at export, else float32),
HAR_MAX_IMAGE_MB (20), HAR_MAX_VIDEO_MB (200), HAR_MAX_VIDEO_SECONDS (120, longer clips are cut),
HAR_MAX_BATCH_FILES (500), HAR_QUEUE_SIZE (64).

The model is loaded once at start-up and shared by all requests; a queue bounds concurrent work. Without a
usable model the app still starts and every tab explains how to train one or point HAR_MODEL at one.
Named API endpoints (for ``gradio_client``): /classify_image, /explain_image, /classify_video, /classify_batch,
/model_info.

Event handlers receive the raw upload (``preprocess=False``) so that every bad input -- not an image, an
image that does not decode, not a video, an unknown codec, a file over the size cap -- is reported by our own
code as a friendly ``gr.Error`` instead of failing inside a component.
"""

from __future__ import annotations

import functools
import inspect
import logging
from pathlib import Path

import gradio as gr

from har_model.errors import HarError
from har_model.explain import torch_available
from har_model.serve import live, video
from har_model.serve.inputs import SAMPLE_RATES
from har_model.serve.model import MODEL_IMAGES, PREDICTED, TOP_K, ServedModel, load_model
from har_model.serve.settings import Settings

log = logging.getLogger("har_model.serve.ui")

LIVE_STREAM_EVERY = 0.07  # seconds between webcam frames sent (about 14 per second; the model takes the newest)
HEAVY = dict(concurrency_limit=1, concurrency_id="heavy")  # video, batch and heatmaps share one worker


# --------------------------------------------------------------------------------------------- the page


def build_demo(model: ServedModel | None = None, settings: Settings | None = None) -> gr.Blocks:
    """The whole app as a gr.Blocks (queue configured); launch it with ``demo.launch(**launch_kwargs(...))``.
    ``settings``: the limits to serve with (default: the HAR_* environment variables)."""
    settings = settings or Settings.from_env()  # first: a bad HAR_* setting stops the start (one line each)
    model = model if model is not None else load_model(backend=settings.backend, settings=settings)
    model.settings, model.notify = settings, warn
    with gr.Blocks(title="Human Action Recognition", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        header(model)
        unsure = unsure_slider(model)
        with gr.Tab("Image", id="image"):
            image_tab(model, unsure)
        with gr.Tab("Video", id="video"):
            video_tab(model, unsure)
        with gr.Tab("Live", id="live"):
            live_tab(model, unsure)
        with gr.Tab("Batch", id="batch"):
            batch_tab(model, unsure)
        with gr.Tab("Model", id="model"):
            model_tab(model)
        gr.api(model.model_info, api_name="model_info")
    demo.queue(max_size=model.settings.queue_size, default_concurrency_limit=1)
    demo.har_handle = model  # for app.py, tests and scripts
    return demo


def header(model: ServedModel) -> None:
    gr.Markdown(
        "# Human action recognition\nClassify what people are doing in photos, webcam snapshots and videos."
        + (f"\n\nModel: `{model.name}` ({len(model.labels)} actions)" if model.classifier else "")
    )
    if model.classifier is None:
        gr.Markdown(f"⚠️ **No model loaded.** {model.public(model.problem)}", elem_id="no-model")


def unsure_slider(model: ServedModel) -> gr.Slider:
    saved = model.classifier.unsure_below if model.classifier is not None else 0.0
    return gr.Slider(0, 1, value=round(saved, 2), step=0.01, elem_id="unsure-below",
                     label="Say \"unsure\" below this confidence (every tab; 0 = always name an action)",
                     info=f"The model's own threshold, chosen on its validation split: {saved:.2f}")


def image_tab(model: ServedModel, unsure: gr.Slider) -> None:
    with gr.Row():
        with gr.Column():
            image_in = gr.Image(sources=["upload", "webcam", "clipboard"], type="filepath", label="Photo",
                                elem_id="image-input")
            image_btn = gr.Button("Classify", variant="primary")
        with gr.Column():
            # the headline is the decision ("unsure" below the threshold), never the Label's own top class
            latency_out = gr.Markdown(elem_id="image-latency")
            label_out = gr.Label(num_top_classes=TOP_K, label="Action", elem_id="image-label", show_heading=False)
            answer_out = gr.JSON(visible=False, elem_id="image-answer")  # for API clients
            # heatmaps need torch: without it (an ONNX-only install) the toggle is not offered
            can_explain = model.classifier is not None and torch_available()
            with gr.Row(visible=can_explain):
                heat_on = gr.Checkbox(False, label="Show heatmap (where the model looked)", elem_id="heatmap-toggle")
                heat_class = gr.Dropdown([PREDICTED, *model.labels], value=PREDICTED, label="Heatmap for",
                                         elem_id="heatmap-class")
            heat_out = gr.Image(label="Grad-CAM heatmap (the model's input crop)", type="numpy", interactive=False,
                                visible=False, elem_id="heatmap-image", format="png")
            heat_note = gr.Markdown(elem_id="heatmap-note")
    classify = dict(fn=handler(model.classify_image), inputs=[image_in, unsure],
                    outputs=[label_out, latency_out, answer_out], preprocess=False)
    explain = dict(fn=shown_image(handler(model.explain_image)), inputs=[image_in, heat_on, heat_class],
                   outputs=[heat_out, heat_note], preprocess=False, **HEAVY)
    # `input` fires once per upload, webcam snapshot, paste or clear (`change` fires twice on a replacement); the
    # named endpoints first, so that the examples' events below do not take their names
    gr.on([image_in.input, image_btn.click], **classify, api_name="classify_image",
          concurrency_limit=model.settings.image_concurrency, concurrency_id="image")
    if can_explain:
        gr.on([image_in.input, image_btn.click, heat_on.change, heat_class.change], **explain, api_name="explain_image")
    if model.classifier is not None and model.info.get("examples"):
        examples = model.info["examples"]
        shown = gr.Examples([[str(p)] for p in examples], inputs=[image_in], cache_examples=False,
                            example_labels=[p.stem for p in examples], examples_per_page=15)
        # classified after loading, with the current settings (Examples' own fn would get the image only)
        loaded = shown.load_input_event.then(**classify, api_visibility="undocumented")
        if can_explain:
            loaded.then(**explain, api_visibility="undocumented")


def video_tab(model: ServedModel, unsure: gr.Slider) -> None:
    settings = model.settings
    with gr.Row():
        with gr.Column():
            video_in = gr.Video(sources=["upload", "webcam"], include_audio=True, label="Clip (mp4, webm, mov, avi)",
                                elem_id="video-input")
            rate_in = gr.Radio(list(SAMPLE_RATES), value=f"{video.DEFAULT_SAMPLE_FPS:g}",
                               label="Classified frames per second")
            window_in = gr.Slider(1, 30, value=video.DEFAULT_WINDOW, step=1,
                                  label="Smoothing window (sampled frames; 1 = no smoothing)")
            video_btn = gr.Button("Analyse video", variant="primary", elem_id="video-button")
            gr.Markdown(f"Clips longer than {settings.max_video_seconds:.0f} s are cut at that point; files up to "
                        f"{settings.max_video_bytes / 2**20:.0f} MB.")
        with gr.Column():
            video_out = gr.Video(label="Annotated video", elem_id="video-output", interactive=False)
            summary_out = gr.Markdown(elem_id="video-summary")
    plot_out = gr.LinePlot(x="time (s)", y="probability", color="action", y_lim=[0, 1],
                           label="Smoothed class probabilities", elem_id="video-plot")
    segments_out = gr.Dataframe(headers=["start (s)", "end (s)", "action", "confidence"], label="Segments",
                                elem_id="video-segments", interactive=False)
    answer_out = gr.JSON(visible=False, elem_id="video-answer")  # for API clients
    video_btn.click(handler(model.classify_video), inputs=[video_in, rate_in, window_in, unsure],
                    outputs=[video_out, plot_out, segments_out, summary_out, answer_out], api_name="classify_video",
                    preprocess=False, **HEAVY)


def live_tab(model: ServedModel, unsure: gr.Slider) -> None:
    settings = model.settings
    with gr.Row():
        with gr.Column():
            cam_in = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam (press record to start)",
                              elem_id="live-input")
            window_in = gr.Slider(0, 5, value=live.DEFAULT_WINDOW_S, step=0.25, elem_id="live-window",
                                  label="Smoothing window (seconds of frames averaged; 0 = none)")
            gr.Markdown(f"A stream stops after {settings.live_seconds:.0f} s (record again to continue). Frames "
                        "that arrive while the model is busy are skipped, never queued, so the label stays current.")
        with gr.Column():
            summary_out = gr.Markdown(elem_id="live-summary")  # headline: the decision, as in every tab
            label_out = gr.Label(num_top_classes=TOP_K, label="Action (live)", elem_id="live-label",
                                 show_heading=False)
            history_out = gr.Markdown(elem_id="live-history")
    state = gr.State(None)
    cam_in.stream(handler(model.live_frame), inputs=[cam_in, state, window_in, unsure],
                  outputs=[label_out, summary_out, history_out, state], stream_every=LIVE_STREAM_EVERY,
                  time_limit=settings.live_seconds, concurrency_limit=settings.live_streams, concurrency_id="live",
                  show_progress="hidden", api_visibility="undocumented")


def batch_tab(model: ServedModel, unsure: gr.Slider) -> None:
    files_in = gr.File(file_count="multiple", file_types=["image"], label="Images", elem_id="batch-input")
    batch_btn = gr.Button("Classify all", variant="primary")
    table_out = gr.Dataframe(label="Results", interactive=False, elem_id="batch-table")
    csv_out = gr.File(label="CSV download", interactive=False)
    answer_out = gr.JSON(visible=False, elem_id="batch-answer")  # for API clients
    batch_btn.click(handler(model.classify_batch), inputs=[files_in, unsure], outputs=[table_out, csv_out, answer_out],
                    api_name="classify_batch", preprocess=False, **HEAVY)


def model_tab(model: ServedModel) -> None:
    gr.Markdown(model.markdown(), elem_id="model-facts")
    if model.classifier is None:
        return
    per_class = model.per_class_frame()
    if len(per_class):
        gr.Dataframe(per_class, label="Per-class test metrics", interactive=False)
    for name, path in model.info.get("images", {}).items():
        gr.Image(str(path), label=MODEL_IMAGES[name], interactive=False, elem_id=f"model-{Path(name).stem}")


# --------------------------------------------------------------------------------------------- Gradio adapters


def handler(method):
    """A ServedModel method as an event handler: HarError (and, as a last resort, any exception) becomes a gr.Error
    that the page shows while the app keeps serving; a ``progress`` parameter gets Gradio's progress bar."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except gr.Error:
            raise
        except HarError as exc:
            raise gr.Error(str(exc), title="Cannot process this input", print_exception=False) from None
        except Exception as exc:
            log.exception("request failed")
            raise gr.Error(f"Something went wrong ({type(exc).__name__}); the app is still running.") from None

    signature = inspect.signature(method)
    if "progress" in signature.parameters:  # Gradio passes its tracker to a parameter whose default is gr.Progress()
        wrapper.__signature__ = signature.replace(parameters=[
            p.replace(default=gr.Progress()) if p.name == "progress" else p for p in signature.parameters.values()])
    return wrapper


def shown_image(fn):
    """``fn``'s first output (an image or None) as an update that shows the image, or hides it when there is none."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        image, *rest = fn(*args, **kwargs)
        return (gr.update(value=image, visible=image is not None), *rest)

    return wrapper


def warn(message: str) -> None:
    """A note beside the answer (a toast in the page; the log outside a request)."""
    try:
        gr.Warning(message)
    except Exception:
        log.warning(message)


def launch_kwargs(model: ServedModel | None = None, settings: Settings | None = None) -> dict:
    """Arguments for demo.launch(): the upload size cap, and the files the app shows (examples, plots) as the only
    model files browsers may fetch, by explicit name: never the model folder as a whole, which also holds
    checkpoints (pickles), the dataset copy and whatever else its owner keeps there (a .env)."""
    settings = settings or Settings.from_env()
    kwargs = {"max_file_size": max(settings.max_image_bytes, settings.max_video_bytes), "show_error": True}
    if model is not None and model.shown_files():
        kwargs["allowed_paths"] = [str(p) for p in model.shown_files()]
    return kwargs
