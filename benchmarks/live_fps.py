"""Frames per second and latency of the app's Live tab, with a real browser and a fake webcam.

    python benchmarks/live_fps.py --model outputs/har15 [--seconds 20]

Serves the app (the model folder's default backend: ONNX when exported), opens the Live tab in headless Chromium
whose fake camera plays a 640x480 clip (har15 photos when ../shared/data/har15 exists, else generated frames;
written to /tmp only) and streams for ``--seconds``. Measured in the page: when each frame left the browser
(resource timing of the POSTs to /stream/) and when each new result was displayed (a MutationObserver on the
summary); display latency = display time - send time of the newest frame sent before it. Measured in the server:
classified frames per second and the per-frame time from receipt to result. Baseline in the same run: the model
alone on one 640x480 frame (Classifier.predict_proba), so the ratio shows what the streaming path adds.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

HAR15 = ROOT.parent / "shared" / "data" / "har15"
CHROMIUM = "/usr/bin/chromium"
# The summary reads "running 93%" (the headline) over "10.2 frames/s classified · 45 ms per frame (received → result) ·
# smoothing 1 s · 70 frames": each displayed result raises the frame count at its end. A bare `(\d+) frames` would first match the
# rate's last digit ("2 frames/s") and count changes of that digit instead of results; the lookahead skips it.
FRAME_COUNT = r"(\d+) frames(?!\/)"  # "\/": also valid inside a JavaScript regex literal
OBSERVE = """() => {
  performance.setResourceTimingBufferSize(100000);
  performance.clearResourceTimings();
  window.__shown = [];
  window.__counts = [];
  const el = document.querySelector('#live-summary');
  let last = -1;
  new MutationObserver(() => {  // one entry per new result shown: the frame count changed
    const m = [...el.textContent.matchAll(/FRAME_COUNT/g)].pop();
    if (m && +m[1] !== last) { last = +m[1]; window.__shown.push(performance.now()); window.__counts.push(last); }
  }).observe(el, {subtree: true, childList: true, characterData: true});
}""".replace("FRAME_COUNT", FRAME_COUNT)


def frame_count(text: str) -> int | None:
    """The frame count of a Live summary text (what the page observer reads), None when there is none."""
    found = re.findall(FRAME_COUNT, text)
    return int(found[-1]) if found else None


def clip_frames(n: int = 30) -> list:
    from PIL import Image, ImageOps

    if HAR15.is_dir():
        files = sorted(HAR15.rglob("*.jpg"))[:: 500][: n // 10 or 1]
        photos = [ImageOps.fit(Image.open(f).convert("RGB"), (640, 480)) for f in files]
        return [photos[i // 10 % len(photos)] for i in range(n)]  # each photo for one second at 10 fps
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for _ in range(n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    import socket

    from helpers import write_y4m
    from playwright.sync_api import sync_playwright

    from har_model.serve.model import load_model
    from har_model.serve.settings import Settings
    from har_model.serve.ui import build_demo, launch_kwargs

    frames = clip_frames()
    clip = write_y4m(Path(tempfile.gettempdir()) / "har_live_bench.y4m", frames, fps=10)
    handle = load_model(args.model)
    clf = handle.require()
    frame = np.asarray(frames[0])
    clf.predict_proba([frame])
    t0 = time.perf_counter()
    for _ in range(20):
        clf.predict_proba([frame])
    model_ms = 1000 * (time.perf_counter() - t0) / 20

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = build_demo(handle, Settings())
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs(handle))
    chromium_args = ["--headless", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
                     "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={clip}"]
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=chromium_args)
            page = browser.new_context(viewport={"width": 1280, "height": 1000}, permissions=["camera"]).new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_role("tab", name="Live").click()
            page.locator("#live-input").get_by_text("Click to Access Webcam").click()
            page.locator("#live-input button.capture-button").click()
            page.locator("#live-summary", has_text="frames/s").wait_for(timeout=30_000)
            page.wait_for_timeout(2000)  # warm-up
            page.evaluate(OBSERVE)
            start = page.evaluate("performance.now()")
            page.wait_for_timeout(int(args.seconds * 1000))
            shown = page.evaluate("window.__shown")
            counts = [c for t, c in zip(shown, page.evaluate("window.__counts")) if t >= start]
            shown = [t for t in shown if t >= start]
            sent = sorted(e["startTime"] for e in page.evaluate(
                "performance.getEntriesByType('resource').map(e => ({name: e.name, startTime: e.startTime}))")
                if "/stream/" in e["name"] and not e["name"].endswith("/close") and e["startTime"] >= start - 1000)
            summary = page.locator("#live-summary").inner_text()
            browser.close()
    finally:
        demo.close()
    updates = shown
    latencies = [u - max([s for s in sent if s <= u], default=float("nan")) for u in updates]
    latencies = [x for x in latencies if x == x]
    server_fps = float(re.search(r"([\d.]+) frames/s", summary).group(1))
    server_ms = float(re.search(r"(\d+) ms per frame", summary).group(1))
    sent_rate = len([s for s in sent if s >= start]) / args.seconds
    shown_rate = len(updates) / args.seconds
    print(f"model {args.model} ({clf.backend}, input {clf.image_size[0]}x{clf.image_size[1]}), 640x480 fake camera, "
          f"{args.seconds:g} s")
    print(f"model alone, one 640x480 frame (baseline): {model_ms:.1f} ms")
    # results the server produced in the window, from the counts shown (first to last), against those displayed
    produced = counts[-1] - counts[0] + 1 if counts else 0
    print(f"page text at the end: {summary!r} (frame count {frame_count(summary)})")
    print(f"frames sent by the browser: {sent_rate:.1f}/s; results displayed: {shown_rate:.1f}/s "
          f"({len(updates)} of the {produced} results produced meanwhile); "
          f"server: {server_fps:.1f} classified frames/s, {server_ms:.0f} ms per frame (received -> result, "
          f"{server_ms / model_ms:.2f}x the model alone)")
    if latencies:
        print(f"display latency (frame sent -> label shown): median {np.median(latencies):.0f} ms, "
              f"90th percentile {np.percentile(latencies, 90):.0f} ms over {len(latencies)} updates")


if __name__ == "__main__":
    main()
