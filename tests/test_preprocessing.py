"""One preprocessing for training and serving: both give exactly the stock image processor's tensors.

The references are transformers' PIL processors (the default classes need torchvision, which is not installed
here; ``AutoImageProcessor`` falls back to the same PIL classes), built offline from their classes with their
default sizes and with other sizes, on non-square images.
"""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
from pathlib import Path

import helpers
import numpy as np
import pytest
from PIL import Image

from har_model import preprocessing as pp
from har_model.errors import HarError
from har_model.preprocessing import Preprocessing, StockPreprocessing, load_preprocessing, preprocessing_for
from har_model.serve.inference import Classifier
from har_model.train.image_cache import CachedImages, decode_images

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(275, 183), (183, 275), (97, 311), (640, 480)]  # width x height
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
FAMILY_MODULES = {"ViT": "vit", "DeiT": "deit", "Beit": "beit", "CLIP": "clip", "Siglip": "siglip", "Bit": "bit",
                  "MobileNetV1": "mobilenet_v1", "MobileNetV2": "mobilenet_v2", "EfficientNet": "efficientnet",
                  "ConvNext": "convnext", "Levit": "levit", "PoolFormer": "poolformer"}


def pil_class(family: str):
    module = importlib.import_module(f"transformers.models.{FAMILY_MODULES[family]}.image_processing_pil_{FAMILY_MODULES[family]}")
    return getattr(module, f"{family}ImageProcessorPil")


def hw(h: int, w: int | None = None) -> dict:
    return {"height": h, "width": w or h}


# name -> (processor class, keyword arguments): each model family's Hub configuration, then other sizes/options
CASES = {
    "vit-default": ("ViT", {}),
    "vit-96x128-bicubic": ("ViT", dict(size=hw(96, 128), resample=3)),
    "deit-default": ("DeiT", {}),
    "deit-80-crop-64x56": ("DeiT", dict(size=hw(80), crop_size=hw(64, 56))),
    "beit-default": ("Beit", {}),
    "beit-112-crop-100": ("Beit", dict(size=hw(112), do_center_crop=True, crop_size=hw(100))),
    "swin-default": ("ViT", dict(resample=3, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)),  # a Swin's processor
    "swin-192": ("ViT", dict(size=hw(192), resample=3, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)),
    "convnext-default-384": ("ConvNext", {}),
    "convnext-224-crop-pct": ("ConvNext", dict(size={"shortest_edge": 224})),
    "convnext-448": ("ConvNext", dict(size={"shortest_edge": 448})),
    "convnext-64-crop-pct-0.95-bilinear": ("ConvNext", dict(size={"shortest_edge": 64}, crop_pct=0.95, resample=2)),
    "clip-default": ("CLIP", {}),
    "clip-96-crop-80": ("CLIP", dict(size={"shortest_edge": 96}, crop_size=hw(80))),
    "siglip-default": ("Siglip", {}),
    "siglip-384": ("Siglip", dict(size=hw(384))),
    "dinov2-default": ("Bit", dict(size={"shortest_edge": 256}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)),
    "dinov2-112-crop-98": ("Bit", dict(size={"shortest_edge": 112}, crop_size=hw(98), image_mean=IMAGENET_MEAN,
                                        image_std=IMAGENET_STD)),
    "resnet-default": ("ConvNext", dict(size={"shortest_edge": 224}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)),
    "resnet-160": ("ConvNext", dict(size={"shortest_edge": 160}, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)),
    "mobilenetv1-default": ("MobileNetV1", {}),
    "mobilenetv2-default": ("MobileNetV2", {}),
    "mobilenetv2-40-crop-32x36": ("MobileNetV2", dict(size={"shortest_edge": 40}, crop_size=hw(32, 36))),
    "efficientnet-default-include-top": ("EfficientNet", {}),
    "efficientnet-b0-nearest": ("EfficientNet", dict(size=hw(224), resample=0)),  # google/efficientnet-b0's
    "efficientnet-no-top-offset-crop": ("EfficientNet", dict(size=hw(240), include_top=False, rescale_offset=True,
                                                             do_center_crop=True, crop_size=hw(200))),
    "efficientnet-lite-320": ("EfficientNet", dict(size=hw(320), resample=2, include_top=False,
                                                   image_mean=[127 / 255] * 3, image_std=[128 / 255] * 3)),
    "vit-shortest-longest-crop": ("ViT", dict(size={"shortest_edge": 100, "longest_edge": 150}, do_center_crop=True,
                                              crop_size=hw(90))),
    # not reproduced: the stock processor runs, exact
    "levit-stock": ("Levit", {}),
    "poolformer-stock": ("PoolFormer", dict(size={"shortest_edge": 96}, crop_size=hw(96), crop_pct=0.9)),
    "vit-padded-stock": ("ViT", dict(size=hw(60), do_pad=True, pad_size=hw(64))),
}
STOCK = {"levit-stock", "poolformer-stock", "vit-padded-stock"}


def images() -> list[Image.Image]:
    return [helpers.synthetic_image(i % 3, i, size) for i, size in enumerate(SIZES)]


def png(image: Image.Image) -> dict:
    buf = io.BytesIO()
    image.save(buf, format="PNG")  # lossless: the decoded pixels are the original ones
    return {"bytes": buf.getvalue(), "path": None}


def training_eval_tensors(processor, pictures) -> np.ndarray:
    """What the training run validates and tests on: the cached, normalised evaluation images."""
    prep = preprocessing_for(processor)
    pixels = decode_images([png(im) for im in pictures], prep=prep, train=False)
    cached = CachedImages(pixels, [0] * len(pictures), prep, augment=False)
    return np.stack([cached[i]["pixel_values"].numpy() for i in range(len(cached))])


class Recorder:
    """A model runner that records the batches Classifier feeds the network."""

    micro_batch = 64

    def __init__(self):
        self.batches = []

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        self.batches.append(pixel_values.copy())
        return np.zeros((len(pixel_values), 2), np.float32)


def classifier_tensors(model_dir: Path, pictures) -> np.ndarray:
    recorder = Recorder()
    clf = Classifier(model_dir, ["a", "b"], load_preprocessing(model_dir), recorder, "recorder")
    clf.predict_proba(pictures)
    return np.concatenate(recorder.batches)


@pytest.mark.parametrize("case", list(CASES))
def test_training_and_serving_tensors_equal_the_processor(case, tmp_path):
    from transformers import AutoImageProcessor

    family, kwargs = CASES[case]
    processor = pil_class(family)(**kwargs)
    processor.save_pretrained(tmp_path)
    pictures = images()
    reference = np.concatenate([processor(im, return_tensors="np")["pixel_values"] for im in pictures])
    served = load_preprocessing(tmp_path)
    assert isinstance(served, StockPreprocessing if case in STOCK else Preprocessing)

    trained = training_eval_tensors(AutoImageProcessor.from_pretrained(tmp_path), pictures)  # as load_backbone does
    for name, ours in (("training", trained), ("Classifier", classifier_tensors(tmp_path, pictures))):
        assert ours.shape == reference.shape and ours.dtype == np.float32, name
        np.testing.assert_allclose(ours, reference, atol=1e-4, rtol=0, err_msg=name)


@pytest.mark.parametrize("family", sorted(pp.CLASS_DEFAULTS))
def test_class_defaults_and_options_match_transformers(family):
    """The table of class defaults is the installed transformers', and every option of each class is handled."""
    cls = pil_class(family)
    options = set(cls.valid_kwargs.__annotations__)
    handled = pp.MODELLED_OPTIONS | pp.NO_EFFECT_OPTIONS | pp.MUST_BE_OFF_OPTIONS
    assert options <= handled, f"{family}: options not handled: {options - handled}"
    for key, ours in pp.CLASS_DEFAULTS[family].items():
        theirs = getattr(cls, key, None)
        if isinstance(theirs, (list, tuple)):
            theirs = tuple(theirs)
        assert (bool(theirs) == ours) if isinstance(ours, bool) else theirs == ours, (family, key, theirs, ours)


@pytest.mark.parametrize("config, output_hw", [
    ({"image_processor_type": "CLIPImageProcessor"}, (224, 224)),  # a missing option: the class default
    ({"image_processor_type": "DeiTImageProcessor", "do_center_crop": None}, (256, 256)),  # null: off
    ({"image_processor_type": "ViTImageProcessor", "size": 64}, (64, 64)),  # an int size: a square for ViT
])
def test_saved_configs_mean_what_transformers_reads_in_them(config, output_hw, tmp_path):
    from transformers import AutoImageProcessor

    (tmp_path / pp.CONFIG_NAME).write_text(json.dumps(config))
    prep = load_preprocessing(tmp_path)
    assert isinstance(prep, Preprocessing) and prep.output_hw == output_hw
    picture = images()[0]
    ref = AutoImageProcessor.from_pretrained(tmp_path)(picture, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(prep.normalize(prep.resize_crop(picture)[None]), ref, atol=1e-4, rtol=0)


def test_a_processor_that_cannot_run_is_one_clear_error(tmp_path):
    (tmp_path / pp.CONFIG_NAME).write_text(json.dumps({"image_processor_type": "ViTImageProcessor", "size": None}))
    with pytest.raises(HarError, match="fails on a test image"):
        load_preprocessing(tmp_path)


def test_serving_needs_neither_torch_nor_transformers(tmp_path):
    pil_class("CLIP")(size={"shortest_edge": 64}, crop_size=hw(56)).save_pretrained(tmp_path)
    code = (
        "import sys; sys.modules['torch'] = sys.modules['transformers'] = None\n"
        "from PIL import Image\n"
        "from har_model.preprocessing import load_preprocessing\n"
        f"prep = load_preprocessing({str(tmp_path)!r})\n"
        "x = prep.normalize(prep.resize_crop(Image.new('RGB', (90, 60), (10, 20, 30)))[None])\n"
        "assert x.shape == (1, 3, 56, 56) and 'torch' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_fallback_is_said_once(tmp_path, capsys):
    pil_class("Levit")().save_pretrained(tmp_path)
    pp._SAID.clear()
    for _ in range(2):
        load_preprocessing(tmp_path)
    err = capsys.readouterr().err
    assert err.count("using the stock image processor") == 1 and "LevitImageProcessor" in err, err


def test_inputs_of_varying_size_are_one_clear_error(tmp_path):
    pil_class("Siglip")(size=64).save_pretrained(tmp_path)  # an int size without default_to_square: shortest edge
    prep = load_preprocessing(tmp_path)
    assert prep.shortest_edge == 64 and prep.crops == ()
    with pytest.raises(HarError, match="vary in size"):
        prep.output_hw


def test_fixres_scaling_keeps_the_aspect_keeping_rule():
    """Scaling a CLIP-style processor for FixRes scales its shortest edge and crop; it still keeps the aspect ratio."""
    processor = pil_class("CLIP")(size={"shortest_edge": 64}, crop_size=hw(64))
    pp.scale_processor(processor, 1.5)
    prep = preprocessing_for(processor)
    assert (prep.shortest_edge, prep.crops) == (96, ((96, 96),))
    picture = images()[2]
    ref = processor(picture, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(prep.normalize(prep.resize_crop(picture)[None]), ref, atol=1e-4, rtol=0)


# ------------------------------------------------------------------------------------------ end to end


def _tiny_convnext(folder: Path) -> Path:
    """A random ConvNext of a few thousand weights, saved with an aspect-keeping processor (shortest edge + crop_pct)."""
    import torch
    from transformers import ConvNextConfig, ConvNextForImageClassification

    torch.manual_seed(0)
    config = ConvNextConfig(num_channels=3, patch_size=4, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1],
                            id2label={0: "a", 1: "b"}, label2id={"a": 0, "b": 1}, image_size=64)
    ConvNextForImageClassification(config).save_pretrained(folder)
    pil_class("ConvNext")(size={"shortest_edge": 64}, crop_pct=0.875).save_pretrained(folder)
    return folder


def _wide_and_tall_folder(root: Path, per_class: int = 14) -> Path:
    """Class folders of non-square pictures (wide and tall), so squashing and centre-cropping see different things."""
    shapes = [(150, 64), (64, 150), (120, 80), (96, 72)]
    for label, name in enumerate(helpers.CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            helpers.synthetic_image(label, i, shapes[i % len(shapes)]).save(root / name / f"{i:03d}.png")
    return root


def test_metrics_json_describes_the_model_pipeline_serves(tmp_path):
    """train.py on a Hub-style backbone with an aspect-keeping processor: the test confusion matrix in metrics.json
    is the one pipeline() gives on the saved test split."""
    from datasets import load_dataset
    from sklearn.metrics import confusion_matrix
    from transformers import pipeline

    base, out = _tiny_convnext(tmp_path / "convnext"), tmp_path / "model"
    data = _wide_and_tall_folder(tmp_path / "images")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--data-dir", str(data), "--output-dir", str(out), "--model", str(base),
         "--soup", "1", "--epochs", "2", "--batch-size", "8", "--eval-batch-size", "16", "--val-fraction", "0.2",
         "--test-fraction", "0.3", "--num-workers", "1", "--report-to", "none", "--near-dup-threshold", "-1",
         "--precision", "fp32"],  # bf16 evaluation (on CPUs that have it) could flip a near tie against fp32 pipeline()
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert json.loads((out / pp.CONFIG_NAME).read_text())["size"] == {"shortest_edge": 96}  # FixRes: 64 -> 96

    metrics = json.loads((out / "metrics.json").read_text())
    test = load_dataset(str(out / "dataset"))["test"]
    names = test.features["label"].names
    pipe = pipeline("image-classification", model=str(out), device=-1)
    predicted = [names.index(rows[0]["label"]) for rows in pipe(list(test["image"]), top_k=1)]
    expected = confusion_matrix(test["label"], predicted, labels=range(len(names))).tolist()
    assert len(set(predicted)) > 1, "the test model must give varied predictions"
    assert metrics["test"]["confusion_matrix"] == expected
