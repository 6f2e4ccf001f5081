"""Frames per second of the app's full video path: decode + classify + smooth + draw + encode.

    python benchmarks/video_fps.py [--model DIR] [--seconds 10] [--size 1280x720] [--fps 30]

Model: --model, else the lead's ``outputs/har15`` when it exists, else a random-head EfficientNet-Lite0 from
``har_model.train.backbones`` (same network size as the default model; speed does not depend on the weights).
Clip: a slideshow with a slow pan over real photos from ../shared/data/har15 when present (never saved in the
repo), else synthetic frames, encoded to H.264 in /tmp. Baseline in the same run: the prototype's way
(every frame, one at a time); then every frame batched, then the app's default sampling rate. Prints fps,
the real-time factor (clip seconds / processing seconds; > 1 means faster than the clip plays) and ratios.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from har_model.serve.video import DEFAULT_SAMPLE_FPS, DEFAULT_WINDOW, analyse_video  # noqa: E402

HAR15 = ROOT.parent / "shared" / "data" / "har15"


def default_model() -> Path:
    trained = ROOT / "outputs" / "har15"
    if (trained / "config.json").is_file() and any(trained.glob("*.safetensors")):
        return trained
    out = Path(tempfile.gettempdir()) / "har_bench_lite0"
    if not (out / "config.json").is_file():
        from har_model.train.backbones import load_backbone

        labels = sorted(p.name for p in HAR15.iterdir() if p.is_dir()) if HAR15.is_dir() else [f"action_{i}" for i in range(15)]
        model, processor = load_backbone("efficientnet-lite0", labels)
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return out


def make_clip(path: Path, seconds: float, size: tuple[int, int], fps: int) -> Path:
    import av
    from PIL import Image

    w, h = size
    photos = sorted(HAR15.rglob("*.jpg"))[:: max(1, len(list(HAR15.rglob("*.jpg"))) // 8)][:8] if HAR15.is_dir() else []
    rng = np.random.default_rng(0)
    n = int(seconds * fps)
    per_photo = max(1, n // max(1, len(photos) or 4))
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "23"}
        base = None
        for i in range(n):
            if i % per_photo == 0:
                if photos:
                    img = Image.open(photos[(i // per_photo) % len(photos)]).convert("RGB")
                else:
                    img = Image.fromarray(rng.integers(0, 255, (9, 16, 3), dtype=np.uint8))
                base = np.asarray(img.resize((int(w * 1.2), int(h * 1.2)), Image.BILINEAR))
            k = (i % per_photo) / per_photo  # slow pan across the enlarged photo
            x, y = int(k * (base.shape[1] - w)), int(k * (base.shape[0] - h))
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[y : y + h, x : x + w]), format="rgb24")
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def decode_only(path: Path) -> float:
    import av

    t = time.perf_counter()
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for f in c.decode(stream):
            f.to_ndarray(format="rgb24", width=640, height=360)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--backend", default="auto")
    args = ap.parse_args()
    from har_model.serve.inference import Classifier

    model_dir = args.model or default_model()
    clf = Classifier.load(model_dir, backend=args.backend)
    clf.predict_proba([np.zeros((*clf.image_size, 3), np.uint8)] * 2)  # warm up
    w, h = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", args.seconds, (w, h), args.fps)
        print(f"model: {model_dir} ({clf.backend}, input {clf.image_size[0]}x{clf.image_size[1]}, {len(clf.labels)} classes)")
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work on the machine slows every row)")
        print(f"clip: {args.seconds:g} s, {w}x{h} @ {args.fps} fps = {int(args.seconds * args.fps)} frames, H.264; output scaled to 640 px")
        t_dec = decode_only(clip)
        print(f"\n{'run':<44} {'sec':>7} {'fps':>7} {'x real time':>12}")
        print(f"{'decode only (lower bound)':<44} {t_dec:7.2f} {args.seconds * args.fps / t_dec:7.1f} {args.seconds / t_dec:12.2f}")
        runs = [
            ("baseline: every frame, one at a time", dict(sample_fps=None, batch_size=1)),
            ("every frame, batched (16)", dict(sample_fps=None)),
            (f"default: {DEFAULT_SAMPLE_FPS:g} fps sampled, window {DEFAULT_WINDOW}", dict(sample_fps=DEFAULT_SAMPLE_FPS)),
        ]
        results = {}
        for name, kw in runs:
            r = analyse_video(clip, clf, window=DEFAULT_WINDOW, out_path=Path(tmp) / "out.mp4", max_seconds=1e9, **kw)
            results[name] = r
            print(f"{name:<44} {r.seconds:7.2f} {r.fps_processed:7.1f} {r.duration / r.seconds:12.2f}   {r.stats}")
        base, every, default = (results[n] for n, _ in runs)
        print(f"\nspeed-up, every frame batched vs baseline: {base.seconds / every.seconds:.2f}x")
        print(f"speed-up, default sampling vs baseline:     {base.seconds / default.seconds:.2f}x")
        verdict = "faster" if default.seconds < default.duration else "SLOWER"
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        print(f"default settings process the clip {verdict} than it plays ({default.seconds:.2f} s for {default.duration:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
