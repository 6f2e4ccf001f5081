"""Grad-CAM heatmaps (har_model.explain) on a tiny model trained here to find a shape anywhere in the picture."""

from __future__ import annotations

import helpers
import numpy as np
import pytest

from har_model.errors import HarError
from har_model.explain import GradCam, colorize, overlay

SIZE = 64


def _quadrant_masses(cam: np.ndarray) -> list[float]:
    h, w = cam.shape
    total = float(cam.sum()) or 1.0
    return [float(q.sum()) / total for q in (cam[: h // 2, : w // 2], cam[: h // 2, w // 2 :], cam[h // 2 :, : w // 2], cam[h // 2 :, w // 2 :])]


@pytest.fixture(scope="module")
def shape_model(tmp_path_factory):
    """The tiny EfficientNet (64x64 input, 16x16 last feature map) trained on the 3 shape classes in any quadrant."""
    import torch

    from har_model.preprocessing import load_preprocessing

    folder = helpers.make_tiny_model(tmp_path_factory.mktemp("shape_model"), image_size=SIZE)
    prep = load_preprocessing(folder)

    def pixels(img):
        return torch.from_numpy(prep.normalize(prep.resize_crop(img)[None]))

    images = [helpers.quadrant_image(c, q, s) for s in range(10) for c in range(3) for q in range(4)]
    labels = [c for s in range(10) for c in range(3) for q in range(4)]
    model = helpers.train_tiny_model(folder, images, labels, epochs=12, seed=0)
    return folder, model, pixels


@pytest.mark.parametrize("quadrant", [0, 1, 2, 3])
def test_heatmap_mass_lies_in_the_shapes_quadrant_and_the_peak_moves_with_it(shape_model, quadrant):
    _, model, pixels = shape_model
    cam = GradCam(model)
    for seed in (200, 201):
        heat = cam(pixels(helpers.quadrant_image(0, quadrant, seed)), class_index=0)
        masses = _quadrant_masses(heat.cam)
        assert masses[quadrant] > 0.5, masses  # a quarter would be no localisation at all
        peak = np.unravel_index(int(heat.cam.argmax()), heat.cam.shape)
        assert (peak[0] >= heat.cam.shape[0] // 2) * 2 + (peak[1] >= heat.cam.shape[1] // 2) == quadrant
        assert heat.cam.shape == (16, 16) and heat.cam.max() == pytest.approx(1.0)


def test_predicted_class_by_default_and_one_backward_pass(shape_model):
    import torch

    _, model, pixels = shape_model
    x = pixels(helpers.quadrant_image(2, 3, 300))
    calls = {"forward": 0}
    handle = model.register_forward_hook(lambda *a: calls.__setitem__("forward", calls["forward"] + 1))
    try:
        heat = GradCam(model)(x)
    finally:
        handle.remove()
    with torch.no_grad():
        logits = model(pixel_values=x).logits[0].numpy()
    assert calls["forward"] == 1 and heat.class_index == int(logits.argmax())
    np.testing.assert_allclose(heat.logits, logits, atol=1e-4)
    assert all(p.grad is None for p in model.parameters())  # no gradient left behind
    with pytest.raises(HarError, match="class index 7"):
        GradCam(model)(x, class_index=7)


def test_vit_family_uses_the_patch_tokens():
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=3)
    model = ViTForImageClassification(config)
    cam = GradCam(model)
    assert cam.kind == "tokens"
    heat = cam(torch.randn(1, 3, 32, 32), class_index=1)
    assert heat.cam.shape == (4, 4) and heat.class_index == 1 and heat.cam.max() == pytest.approx(1.0)


def test_overlay_keeps_the_image_size_and_colours_hot_spots_red():
    rgb = np.full((40, 60, 3), 128, np.uint8)
    cam = np.zeros((4, 4), np.float32)
    cam[0, 0] = 1.0
    out = overlay(rgb, cam)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert out[0, 0, 0] > out[0, 0, 2] and out[-1, -1, 2] > out[-1, -1, 0]  # hot: red, cold: blue
    assert tuple(colorize(np.array([[1.0]]))[0, 0]) == (127, 0, 0)  # jet: dark red at the top, dark blue at 0
    assert tuple(colorize(np.array([[0.0]]))[0, 0]) == (0, 0, 127)
