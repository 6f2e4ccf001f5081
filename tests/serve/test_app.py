"""The real Gradio app served on localhost: driven by gradio_client and by headless Chromium (Playwright).

One server (the tiny model, plus example images in its folder) is shared by the whole module. The browser
test skips when Chromium is absent, except under CI (CI installs it), where it fails instead.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from har_model.serve.model import TRAIN_HINT, load_model
from har_model.serve.ui import Settings, build_demo, launch_kwargs
from helpers import CLASSES, chromium_path, synthetic_image
from test_video import make_clip

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

MAX_IMAGE_BYTES = 150_000  # small, so that a test image can exceed it
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(handle, settings=None):
    demo = build_demo(handle, settings or Settings(max_image_bytes=MAX_IMAGE_BYTES))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs(handle))
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("app_files")
    model = d / "model"
    shutil.copytree(tiny_model_dir, model)
    (model / "examples").mkdir()
    for i, name in enumerate(CLASSES):
        for k in range(2):  # as train.py writes them: <class>_<k>.jpg
            synthetic_image(i, 99 + k).save(model / "examples" / f"{name}_{k}.jpg")
    per_class = {c: {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "support": 4} for c in CLASSES}
    metrics = {"test": {"accuracy": 0.8125, "macro_f1": 0.75, "per_class": per_class, "confusion_matrix": [[4, 0, 0], [1, 3, 0], [0, 2, 2]]},
               "labels": list(CLASSES), "base_model": "efficientnet-lite0", "dataset": "toy", "train_seconds": 90.0}
    (model / "metrics.json").write_text(json.dumps(metrics))
    (model / "README.md").write_text("---\nbase_model: google/efficientnet-b0\ndatasets:\n- someone/toy-actions\n---\n# card\n")
    Image.new("RGB", (120, 90), (200, 30, 30)).save(model / "confusion_matrix.png")
    # what else lies in a model folder: never served (the checkpoints' pickles, the dataset copy, the owner's secrets)
    for rel, content in ((".env", b"HF_TOKEN=hf_secret\n"), ("notes.txt", b"mine"),
                         ("checkpoints/checkpoint-1/training_args.bin", b"pickle"),
                         ("dataset/data/train-00000-of-00001.parquet", b"PAR1"), ("dataset/README.md", b"card")):
        (model / rel).parent.mkdir(parents=True, exist_ok=True)
        (model / rel).write_bytes(content)
    good = d / "walk.jpg"
    synthetic_image(1, 5).save(good)
    bad = d / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG" * 10)
    big = d / "huge.png"  # noise does not compress: well over MAX_IMAGE_BYTES
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(big)
    clip = make_clip(d / "clip.mp4")  # 4 s, 10 fps, 96x72
    return {"model": model, "good": good, "bad": bad, "big": big, "clip": clip, "dir": d}


@pytest.fixture(scope="module")
def app_url(files):
    demo, url = serve(load_model(files["model"]))
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


# --------------------------------------------------------------------------------------------- gradio_client


def test_api_endpoints_are_named(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/classify_image", "/classify_video", "/classify_batch", "/model_info"} <= names


def test_client_image(client, files):
    label, latency, answer = client.predict(handle_file(str(files["good"])), api_name="/classify_image")
    assert label["label"] in CLASSES
    scores = [c["confidence"] for c in label["confidences"]]
    assert [c["label"] for c in label["confidences"]] and set(c["label"] for c in label["confidences"]) == set(CLASSES)
    assert sum(scores) == pytest.approx(1.0, abs=1e-3) and scores == sorted(scores, reverse=True)
    assert " ms" in latency and label["label"] in latency
    # the answer as data: the decision, the calibrated confidence, the threshold and the top-k
    assert set(answer) == {"decision", "confidence", "unsure_below", "top_k"}
    assert answer["top_k"] == [{"label": c["label"], "confidence": pytest.approx(c["confidence"], abs=1e-4)}
                               for c in label["confidences"]]
    assert answer["confidence"] == answer["top_k"][0]["confidence"]


def test_client_image_says_unsure_below_the_chosen_threshold(client, files):
    label, latency, answer = client.predict(handle_file(str(files["good"])), 0.0, api_name="/classify_image")
    top = label["label"]
    assert answer["decision"] == top and latency.startswith(f"### {top} ")
    score = max(c["confidence"] for c in label["confidences"])
    _, latency, answer = client.predict(handle_file(str(files["good"])), min(1.0, score + 0.01), api_name="/classify_image")
    assert answer["decision"] == "unsure" and answer["top_k"][0]["label"] == top
    assert latency.startswith(f"### unsure ({top}? ")  # the headline agrees with the decision
    _, latency, answer = client.predict(handle_file(str(files["good"])), max(0.0, score - 0.01), api_name="/classify_image")
    assert answer["decision"] == top and latency.startswith(f"### {top} ")


def test_client_heatmap_for_predicted_and_chosen_class(client, files):
    image, note = client.predict(handle_file(str(files["good"])), True, "predicted class", api_name="/explain_image")
    assert image["visible"] is True  # an update that shows the heatmap image
    path = image["value"]
    with Image.open(path) as im:
        assert im.size == (256, 256)
    assert "Grad-CAM for **" in note and " ms" in note
    _, note = client.predict(handle_file(str(files["good"])), True, "sitting", api_name="/explain_image")
    assert "Grad-CAM for **sitting**" in note


def test_client_video(client, files):
    video, plot, segments, summary, answer = client.predict(handle_file(str(files["clip"])), "5", 3,
                                                           api_name="/classify_video")
    path = video["video"] if isinstance(video, dict) else video
    with av.open(path) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in c.decode(stream)) == 40
    assert plot["columns"] == ["time (s)", "action", "probability"] and len(plot["data"]) == 20 * len(CLASSES)
    assert segments["headers"] == ["start (s)", "end (s)", "action", "confidence"]
    rows = segments["data"]
    assert rows and rows[0][0] == 0 and rows[-1][1] == pytest.approx(4.0) and all(r[2] in CLASSES for r in rows)
    assert "40 frames" in summary and "20 classified" in summary
    # the segments as data, each with its decision, confidence and top-k
    assert len(answer["segments"]) == len(rows)
    for a, r in zip(answer["segments"], rows):
        assert (a["start"], a["end"], a["decision"]) == (pytest.approx(r[0], abs=1e-3), pytest.approx(r[1], abs=1e-3), r[2])
    assert len(answer["segments"]) == len(rows) and all(len(a["top_k"]) == len(CLASSES) for a in answer["segments"])
    assert all(a["top_k"][0]["label"] == a["decision"] for a in answer["segments"] if a["decision"] != "unsure")


def test_client_batch_with_a_bad_file(client, files):
    images = [handle_file(str(files["good"])), handle_file(str(files["bad"])),
              handle_file(str(files["model"] / "examples" / "sitting_0.jpg"))]
    table, csv_path, answers = client.predict(images, 0.0, api_name="/classify_batch")
    rows = table["data"]
    assert [r[0] for r in rows] == ["walk.jpg", "broken.jpg", "sitting_0.jpg"]
    assert rows[0][1] in CLASSES and rows[2][1] in CLASSES and not rows[0][4]
    assert rows[1][1] == "" and "broken.jpg" in rows[1][4]
    assert [a["file"] for a in answers] == ["walk.jpg", "broken.jpg", "sitting_0.jpg"] and "broken.jpg" in answers[1]["error"]
    assert answers[0]["decision"] == rows[0][1] and answers[0]["confidence"] == pytest.approx(rows[0][2], abs=1e-4)
    table, _, answers = client.predict(images, 1.0, api_name="/classify_batch")  # everything is unsure at 1.0
    assert [r[1] for r in table["data"]] == ["unsure", "", "unsure"] and answers[2]["decision"] == "unsure"
    with open(csv_path, newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == ["file", "prediction", "confidence", "top 3", "error"] and len(lines) == 4


def test_client_bad_inputs_get_friendly_errors_and_the_app_keeps_serving(client, files):
    with pytest.raises(AppError, match=r"broken\.jpg: .*(not an image|cannot decode)"):
        client.predict(handle_file(str(files["bad"])), api_name="/classify_image")
    with pytest.raises(AppError, match=r"huge\.png: .*over the image size limit"):
        client.predict(handle_file(str(files["big"])), api_name="/classify_image")
    with pytest.raises(AppError, match=r"broken\.jpg: .*(not a video|still image)"):
        client.predict(handle_file(str(files["bad"])), "5", 3, api_name="/classify_video")
    with pytest.raises(AppError, match="sampling rate"):
        client.predict(handle_file(str(files["clip"])), "fast", 3, api_name="/classify_video")
    label, _, _ = client.predict(handle_file(str(files["good"])), api_name="/classify_image")
    assert label["label"] in CLASSES


def test_model_info(client):
    info = client.predict(api_name="/model_info")
    assert info["loaded"] is True and info["labels"] == list(CLASSES) and info["image_size"] == [32, 32]
    assert info["test_accuracy"] == 0.8125 and info["base_model"] == "google/efficientnet-b0"  # the card wins


def test_the_app_serves_only_the_files_it_shows(app_url, files):
    """By URL, a model folder's other files are refused; the examples and plots it shows are served; no answer
    names the folder's absolute path."""
    import urllib.error
    import urllib.request

    def status(path) -> int:
        try:
            with urllib.request.urlopen(f"{app_url}gradio_api/file={path}") as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    model = files["model"].resolve()
    for rel in (".env", "notes.txt", "checkpoints/checkpoint-1/training_args.bin",
                "dataset/data/train-00000-of-00001.parquet", "dataset/README.md", "config.json", "model.safetensors",
                "metrics.json", "README.md", ".har_model.json", "../walk.jpg"):
        assert status(model / rel) in (403, 404), rel
    assert status(model / "examples" / "running_0.jpg") == 200 and status(model / "confusion_matrix.png") == 200
    with urllib.request.urlopen(f"{app_url}config") as response:
        config = response.read().decode()
    info = Client(app_url, verbose=False).predict(api_name="/model_info")
    assert info["source"] == "model"
    for text in (json.dumps(info), config):
        assert str(files["dir"]) not in text and str(model) not in text


def test_examples_one_per_class_first(files):
    from har_model.serve.model import pick_examples

    names = [p.name for p in pick_examples(files["model"] / "examples")]
    assert names[:3] == [f"{c}_0.jpg" for c in CLASSES] and len(names) == 6
    assert [p.name for p in pick_examples(files["model"] / "examples", limit=2)] == ["clapping_0.jpg", "running_0.jpg"]


def test_app_without_a_model_starts_and_explains(tmp_path):
    handle = load_model(tmp_path / "not_trained_yet")
    assert handle.classifier is None and "train.py" in handle.problem
    demo, url = serve(handle)
    try:
        c = Client(url, verbose=False)
        info = c.predict(api_name="/model_info")
        assert info["loaded"] is False and "not_trained_yet" in info["problem"]
        with pytest.raises(AppError, match="not_trained_yet.*train.py"):
            c.predict(handle_file(str(make_clip(tmp_path / "c.mp4", seconds=(1,)))), "5", 3, api_name="/classify_video")
    finally:
        demo.close()


def test_hub_id_offline_is_a_clear_problem(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    handle = load_model("someone/har-model-that-is-not-cached")
    assert handle.classifier is None
    assert "Hugging Face Hub" in handle.problem and TRAIN_HINT in handle.problem


# --------------------------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser():
    if chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required under CI (/usr/bin/chromium)")
        pytest.skip("Chromium is not installed (/usr/bin/chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_browser_image_video_and_bad_file(browser, app_url, files, artifacts_dir):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(app_url)

    # Image tab: upload -> a label with bars and a latency line
    page.locator("#image-input input[type=file]").set_input_files(str(files["good"]))
    page.locator("#image-latency", has_text=" ms").wait_for()
    label_text = page.locator("#image-label").inner_text()
    assert any(name in label_text for name in CLASSES) and "%" in label_text
    headline = page.locator("#image-latency h3").inner_text()  # the decision, above the bars
    assert headline.split()[0] in (*CLASSES, "unsure"), headline
    page.screenshot(path=str(artifacts_dir / "app_image.png"), full_page=True)
    page.locator("#heatmap-toggle input").check()  # the heatmap appears over the same photo
    page.locator("#heatmap-image img").wait_for()
    page.locator("#heatmap-note", has_text="Grad-CAM for").wait_for()
    page.screenshot(path=str(artifacts_dir / "app_heatmap.png"), full_page=True)
    page.locator("#heatmap-toggle input").uncheck()
    page.locator("#heatmap-image").wait_for(state="hidden")

    # a file that is not an image: a friendly error, then the page still works
    page.locator("#image-input input[type=file]").set_input_files(str(files["bad"]))
    toast = page.locator("[data-testid=toast-text]", has_text="broken.jpg")
    toast.wait_for()
    assert "not an image" in toast.inner_text() or "cannot decode" in toast.inner_text()
    page.screenshot(path=str(artifacts_dir / "app_bad_file.png"), full_page=True)

    page.get_by_role("tab", name="Video").click()
    page.locator("#video-input input[type=file]").set_input_files(str(files["clip"]))
    page.locator("#video-button").click()
    page.locator("#video-summary", has_text="Processed").wait_for()
    video = page.locator("#video-output video")
    video.wait_for()
    page.wait_for_function("() => { const v = document.querySelector('#video-output video'); return v && v.readyState >= 1 && v.duration > 0; }")
    duration = video.evaluate("v => v.duration")
    assert duration == pytest.approx(4.0, abs=0.3)
    assert video.evaluate("v => [v.videoWidth, v.videoHeight]") == [96, 72]  # decodable by the browser
    page.locator("#video-plot canvas, #video-plot svg").first.wait_for()
    table = page.locator("#video-segments").inner_text()
    assert "start (s)" in table and any(name in table.split("confidence", 1)[1] for name in CLASSES)
    page.screenshot(path=str(artifacts_dir / "app_video.png"), full_page=True)

    page.get_by_role("tab", name="Model").click()
    facts = page.locator("#model-facts")
    facts.wait_for()
    assert "0.812" in facts.inner_text() and "google/efficientnet-b0" in facts.inner_text() and "sitting" in facts.inner_text()
    page.locator("#model-confusion_matrix img").wait_for()
    page.screenshot(path=str(artifacts_dir / "app_model.png"), full_page=True)

    # after the error, the image tab still classifies
    page.get_by_role("tab", name="Image").click()
    page.locator("#image-input button[aria-label='Remove Image']").click()  # clearing empties the outputs
    page.wait_for_function("() => !document.querySelector('#image-latency').innerText.includes(' ms')")
    page.get_by_text("running_0", exact=True).click()  # an example from the model folder runs on click
    page.locator("#image-latency", has_text=" ms").wait_for()
    assert any(name in page.locator("#image-label").inner_text() for name in CLASSES)
    page.close()
