"""The Live tab: webcam frames classified as they arrive (har_model.serve.live), and the real app in headless
Chromium with a fake camera playing a generated clip of one class."""

from __future__ import annotations

import os

import helpers
import numpy as np
import pytest

from har_model.serve.live import LiveState, live_step, summary
from har_model.serve.model import load_model
from test_app import CHROMIUM_ARGS, serve


class FakeClassifier:
    labels = ["a", "b"]
    unsure_below = 0.0

    def __init__(self, rows):
        self.rows = list(rows)

    def predict_proba(self, frames):
        return np.asarray([self.rows.pop(0)], np.float32)


def test_smoothing_is_a_causal_mean_over_the_window_in_seconds():
    clf = FakeClassifier([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.2, 0.8], [0.2, 0.8]])
    state = LiveState()
    views = [live_step(clf, None, state, window_s=1.0, now=t) for t in (0.0, 0.5, 1.0, 1.6, 2.2)]
    # at 1.0 s the window holds 0.0, 0.5 and 1.0: mean a = (0.9 + 0.9 + 0.2) / 3
    assert views[2].label == "a" and views[2].confidence == pytest.approx(2.0 / 3, abs=1e-6)
    assert views[3].label == "b"  # 0.5 .. 1.6: (0.9 + 0.2 + 0.2) / 3 for a
    assert views[4].probs["b"] == pytest.approx(0.8, abs=1e-6)  # only the last two frames are within 1 s
    assert [label for _, label in views[4].history] == ["b", "a"]  # newest first
    assert views[4].frames == 5


def test_no_smoothing_and_unsure_below_threshold():
    clf = FakeClassifier([[0.9, 0.1], [0.55, 0.45]])
    state = LiveState()
    assert live_step(clf, None, state, window_s=0, unsure_below=0.6, now=0.0).label == "a"
    view = live_step(clf, None, state, window_s=0, unsure_below=0.6, now=0.1)
    assert view.label == "unsure" and view.probs["a"] == pytest.approx(0.55)
    # the headline says what was decided (it once said "a" over a line saying "unsure 55%")
    assert view.answer["decision"] == "unsure" and view.answer["top_k"][0] == {"label": "a", "confidence": 0.55}
    assert summary(view, 0).startswith("### unsure (a? 55%)\n")


# --------------------------------------------------------------------------------------------- the browser


LIVE_CLASS = 1  # "running": the green rectangle


@pytest.fixture(scope="module")
def live_app(tmp_path_factory, tiny_model_dir):
    """The app serving a tiny model trained on the synthetic classes, and a fake-camera clip of one class."""
    import shutil

    root = tmp_path_factory.mktemp("live")
    model = root / "model"
    shutil.copytree(tiny_model_dir, model)
    images = [helpers.synthetic_image(c, s, size=(192, 144)) for s in range(16) for c in range(3)]
    helpers.train_tiny_model(model, images, [c for s in range(16) for c in range(3)])
    frames = [helpers.synthetic_image(LIVE_CLASS, 500 + i, size=(192, 144)) for i in range(20)]
    handle = load_model(model)
    # the model names the clip's class on its own frames (else the browser test could not tell anything)
    assert [handle.classifier.decide(p) for p in handle.classifier.predict_proba(frames)].count(helpers.CLASSES[LIVE_CLASS]) >= 18
    clip = helpers.write_y4m(root / "clip.y4m", frames, fps=10)
    demo, url = serve(handle)
    yield url, clip
    demo.close()


def test_browser_live_tab_shows_the_class_of_the_fake_camera(live_app, artifacts_dir):
    if helpers.chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required under CI (/usr/bin/chromium)")
        pytest.skip("Chromium is not installed (/usr/bin/chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    url, clip = live_app
    args = CHROMIUM_ARGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                            f"--use-file-for-fake-video-capture={clip}"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=helpers.chromium_path(), args=args)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000}, permissions=["camera"])
            page = context.new_page()
            page.goto(url)
            page.get_by_role("tab", name="Live").click()
            page.locator("#live-input").get_by_text("Click to Access Webcam").click()
            page.locator("#live-input button.capture-button").click()  # "start recording": the stream begins
            page.locator("#live-summary", has_text=helpers.CLASSES[LIVE_CLASS]).wait_for(timeout=10_000)
            page.locator("#live-summary", has_text="frames/s").wait_for()
            page.wait_for_timeout(2500)  # let the frame rate settle before the screenshot
            text = page.locator("#live-summary").inner_text()
            assert helpers.CLASSES[LIVE_CLASS] in text and "unsure" not in text
            assert helpers.CLASSES[LIVE_CLASS] in page.locator("#live-label").inner_text()
            assert helpers.CLASSES[LIVE_CLASS] in page.locator("#live-history").inner_text()
            page.screenshot(path=str(artifacts_dir / "app_live.png"), full_page=True)
            # the other tabs keep working while the stream runs
            page.get_by_role("tab", name="Model").click()
            page.locator("#model-facts").wait_for()
        finally:
            browser.close()


def test_stream_limits_come_from_the_environment(monkeypatch):
    from har_model.serve.settings import Settings

    assert Settings().live_seconds == 120 and Settings().live_streams == 2
    monkeypatch.setenv("HAR_LIVE_SECONDS", "30")
    monkeypatch.setenv("HAR_LIVE_STREAMS", "4")
    settings = Settings.from_env()
    assert settings.live_seconds == 30 and settings.live_streams == 4


def test_bad_settings_stop_the_app_at_start_with_one_line_each(monkeypatch, tiny_model_dir):
    """Each bad HAR_* variable is named on its own line, before any model is loaded; `python app.py` prints them
    as `error:` lines and exits, without a traceback."""
    import subprocess
    import sys
    from pathlib import Path

    from har_model.errors import HarError
    from har_model.serve.settings import Settings

    bad = {"HAR_MAX_IMAGE_MB": "abc", "HAR_LIVE_STREAMS": "0.5", "HAR_QUEUE_SIZE": "0", "HAR_MAX_VIDEO_SECONDS": "-3",
           "HAR_BACKEND": "gpu", "HAR_LIVE_SECONDS": "inf"}
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(HarError) as info:
        Settings.from_env()
    lines = str(info.value).splitlines()
    assert len(lines) == len(bad) and all(f"{n}={v!r}" in "\n".join(lines) for n, v in bad.items())
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, str(root / "app.py")], cwd=root, capture_output=True, text=True, timeout=300,
                         env={**os.environ, **bad, "HAR_MODEL": str(tiny_model_dir)})
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("error: ")]
    assert run.returncode != 0 and len(errors) == len(bad) and "Traceback" not in run.stderr, run.stderr[-2000:]


def test_live_frame_restarts_after_a_silent_gap(tiny_model_dir, monkeypatch):
    from har_model.serve.model import LIVE_RESTART_GAP

    model = load_model(tiny_model_dir)
    frame = np.asarray(helpers.synthetic_image(0, 1))
    _, summary, history, state = model.live_frame(frame, None, 1.0)
    assert "1 frames" in summary and history.startswith("History: ")
    _, summary, _, state = model.live_frame(frame, state, 1.0)
    assert "2 frames" in summary
    state.done[-1] = (state.done[-1][0] - LIVE_RESTART_GAP - 1, state.done[-1][1])  # silent for a while
    _, summary, _, _ = model.live_frame(frame, state, 1.0)
    assert "1 frames" in summary  # a new stream: smoothing and history start afresh
    assert model.live_frame(None, state, 1.0)[:3] == (None, "", "")
