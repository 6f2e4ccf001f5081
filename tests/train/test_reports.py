"""The training report's prediction grid shows each mistake with a Grad-CAM heatmap (har_model.train.reports)."""

from __future__ import annotations

import helpers
import numpy as np


def test_mistakes_are_drawn_with_the_heatmap_of_the_predicted_class(tiny_model_dir, tmp_path):
    from transformers import AutoModelForImageClassification

    from har_model.figures import plot_predictions
    from har_model.preprocessing import load_preprocessing
    from har_model.train.image_cache import CachedImages, decode_images
    from har_model.train.reports import explained

    model = AutoModelForImageClassification.from_pretrained(tiny_model_dir).eval()
    for p in model.parameters():  # as after training with frozen layers: gradients must still reach the features
        p.requires_grad_(False)
    prep = load_preprocessing(tiny_model_dir)
    blobs = []
    for i in range(3):
        path = tmp_path / f"{i}.jpg"
        helpers.synthetic_image(i, i).save(path)
        blobs.append({"bytes": path.read_bytes(), "path": None})
    ds = CachedImages(decode_images(blobs, prep=prep, train=False), [0, 1, 2], prep, augment=False)
    shown = explained(model, ds, 1)
    plain = ds.pixels[1].permute(1, 2, 0).numpy()
    assert shown.shape == plain.shape and shown.dtype == np.uint8 and not np.array_equal(shown, plain)
    path = plot_predictions([shown, plain], ["a", "b"], ["b", "b"], [0.6, 0.9], tmp_path / "grid.png", note="heatmaps")
    assert path.stat().st_size > 0
