"""benchmarks/live_fps.py counts the results the Live tab displays: its page observer, run in headless Chromium on a
recorded sequence of summary texts (the frame rate's digits change without a new result; the frame count grows
with each)."""

from __future__ import annotations

import importlib.util
import os

import helpers
import pytest

from conftest import ROOT
from har_model.calibration import answer
from har_model.serve.live import LiveView, summary
from test_app import CHROMIUM_ARGS

# The Live summary as the page's textContent gave it (Markdown bold removed), recorded from the real app
RECORDED = [
    "running 91% · 10.2 frames/s classified · 48 ms per frame (received → result) · smoothing 1 s · 70 frames",
    "running 91% · 10.3 frames/s classified · 48 ms per frame (received → result) · smoothing 1 s · 71 frames",
    "running 92% · 10.3 frames/s classified · 47 ms per frame (received → result) · smoothing 1 s · 72 frames",
    "running 92% · 10.4 frames/s classified · 47 ms per frame (received → result) · smoothing 1 s · 74 frames",
    "running 92% · 10.4 frames/s classified · 47 ms per frame (received → result) · smoothing 1 s · 74 frames",
    "running 93% · 11.1 frames/s classified · 46 ms per frame (received → result) · smoothing 1 s · 75 frames",
]
SHOWN = [70, 71, 72, 74, 75]  # one displayed result per new frame count (73 was never displayed)


def load_benchmark():
    spec = importlib.util.spec_from_file_location("live_fps", ROOT / "benchmarks" / "live_fps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_frame_count_is_the_count_not_the_rate():
    bench = load_benchmark()
    assert [bench.frame_count(t) for t in RECORDED] == [70, 71, 72, 74, 74, 75]
    view = LiveView("sitting", 0.5, {}, fps=12.0, latency_ms=40.0, history=[], frames=3,
                    answer=answer([0.5, 0.3, 0.2], ["sitting", "running", "clapping"], 0.0))
    assert bench.frame_count(summary(view, 1.0)) == 3  # the app's own summary: rate 12.0, count 3
    assert bench.frame_count("waiting for the camera") is None


def test_page_observer_counts_each_displayed_result_once():
    if helpers.chromium_path() is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required under CI (/usr/bin/chromium)")
        pytest.skip("Chromium is not installed (/usr/bin/chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    bench = load_benchmark()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=helpers.chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_content('<div id="live-summary"><p>waiting</p></div>')
            page.evaluate(bench.OBSERVE)
            for text in RECORDED:  # replace the paragraph as Gradio's Markdown does, one update at a time
                page.evaluate("t => { document.querySelector('#live-summary').innerHTML = "
                              "'<p><strong>' + t.split(' ')[0] + '</strong> ' + t.split(' ').slice(1).join(' ') + '</p>'; }",
                              text)
                page.wait_for_timeout(20)  # the observer runs between updates, as between two results
            assert page.evaluate("window.__counts") == SHOWN
            assert len(page.evaluate("window.__shown")) == len(SHOWN)
        finally:
            browser.close()
