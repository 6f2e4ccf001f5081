"""Extra cost of a Grad-CAM heatmap per image, against classifying the same image.

    python benchmarks/heatmap_cost.py [--model DIR] [--images 20]

Model: --model, else a random-head EfficientNet-Lite0 at 320x320 from har_model.train.backbones (speed does not
depend on the weights). Images: photos from ../shared/data/har15 when present, else generated ones. Baseline in
the same run: ``Classifier.predict_proba`` one image at a time with the model folder's serving backend (ONNX when
exported) and with float32 torch; then ``Classifier.explain`` (one float32 torch forward + backward, colouring and
upscaling the overlay). Prints ms per image and the ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from har_model.serve.inference import Classifier  # noqa: E402

HAR15 = ROOT.parent / "shared" / "data" / "har15"


def default_model() -> Path:
    out = Path(tempfile.gettempdir()) / "har_bench_lite0_320"
    if not (out / "config.json").is_file():
        from har_model.train.backbones import load_backbone

        model, processor = load_backbone("efficientnet-lite0", [f"action_{i}" for i in range(15)])
        processor.size = {"height": 320, "width": 320}
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return out


def images(n: int) -> list:
    from PIL import Image

    if HAR15.is_dir():
        files = sorted(HAR15.rglob("*.jpg"))[:: max(1, len(list(HAR15.rglob("*.jpg"))) // n)][:n]
        return [Image.open(f).convert("RGB") for f in files]
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for _ in range(n)]


def per_image_ms(fn, imgs) -> float:
    fn(imgs[0])  # warm-up
    t0 = time.perf_counter()
    for im in imgs:
        fn(im)
    return 1000 * (time.perf_counter() - t0) / len(imgs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--images", type=int, default=20)
    args = p.parse_args()
    model = Path(args.model) if args.model else default_model()
    imgs = images(args.images)
    serving = Classifier.load(model)
    torch_clf = Classifier.load(model, backend="torch")
    rows = [
        (f"classify ({serving.backend})", per_image_ms(lambda im: serving.predict_proba([im]), imgs)),
        ("classify (torch float32)", per_image_ms(lambda im: torch_clf.predict_proba([im]), imgs)),
        ("heatmap (Grad-CAM, torch float32)", per_image_ms(lambda im: serving.explain(im), imgs)),
    ]
    print(f"model {model}, input {serving.image_size[0]}x{serving.image_size[1]}, {len(imgs)} images, one at a time")
    base = rows[0][1]
    for name, ms in rows:
        print(f"{name:<36} {ms:8.1f} ms/image  {ms / base:5.2f}x")
    print(f"heatmap extra cost per image: {rows[2][1]:.1f} ms = {rows[2][1] / base:.2f}x a {serving.backend} "
          f"classification, {rows[2][1] / rows[1][1]:.2f}x a torch float32 one")


if __name__ == "__main__":
    main()
