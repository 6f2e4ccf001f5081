"""Class-activation heatmaps: which part of the image made the model choose a class (Grad-CAM).

Grad-CAM (Selvaraju et al., 2017): the gradient of the class's logit with respect to a feature map, averaged over
positions, weights the map's channels; the positive part of the weighted sum is the heatmap. It costs one forward
and one backward pass per image, and works on the model as trained (no extra layers). Where it looks:

    convolutional models (the built-in EfficientNets)   the last convolutional feature map (EfficientNet: after
                                                        its top 1x1 conv + batch norm + activation, 10x10 at 320)
    ViT family (ViT, DeiT, BEiT, DINOv2, ...)           the patch tokens entering the last transformer block (the
                                                        block's own output reaches the head only through the
                                                        [CLS] token, so its patch tokens carry no gradient)

Used by training (the mistakes in the report's prediction grid) and serving (the app's heatmap toggle, `predict
--explain`). Needs torch, imported lazily: serving an ONNX export runs without it, only heatmaps are unavailable.
"""

from __future__ import annotations

import math
import importlib.util
from dataclasses import dataclass

import numpy as np
from PIL import Image

from har_model.errors import HarError
from har_model.model_folder.torch_model import load_torch_model


def torch_available() -> bool:
    """Whether torch is installed (without importing it: an ONNX-only server need not pay for it)."""
    return importlib.util.find_spec("torch") is not None


@dataclass
class Heatmap:
    cam: np.ndarray  # [h, w] float32 in 0..1 on the feature grid (1 = the strongest evidence)
    class_index: int  # the class it explains
    logits: np.ndarray  # [C] raw logits of the forward pass


class GradCam:
    """Grad-CAM for one transformers image classifier (kept in eval mode; its weights are not changed)."""

    def __init__(self, model):
        self.model = model.eval()
        self.layer, self.kind = find_target_layer(model)

    @classmethod
    def from_pretrained(cls, model_dir) -> "GradCam":
        return cls(load_torch_model(model_dir, strip=False, purpose=" for heatmaps"))

    def __call__(self, pixel_values, class_index: int | None = None) -> Heatmap:
        """``pixel_values``: one normalised image, [3, H, W] or [1, 3, H, W] (numpy or torch)."""
        import torch  # optional: an ONNX-only install serves without heatmaps

        x = torch.as_tensor(np.asarray(pixel_values) if not torch.is_tensor(pixel_values) else pixel_values)
        weight = next(self.model.parameters())
        # the input requires grad so that the graph exists even where every weight is frozen
        x = x.reshape(1, *x.shape[-3:]).to(device=weight.device, dtype=weight.dtype).requires_grad_(True)
        store: dict = {}

        def keep(t):
            store["acts"] = t
            t.register_hook(lambda g: store.__setitem__("grads", g))

        if self.kind == "conv":
            handle = self.layer.register_forward_hook(lambda m, args, out: keep(out))
        else:  # the hidden states entering the last block
            handle = self.layer.register_forward_pre_hook(
                lambda m, args, kwargs: keep(args[0] if args else kwargs["hidden_states"]), with_kwargs=True)
        try:
            with torch.enable_grad():
                logits = self.model(pixel_values=x).logits[0]
                k = int(logits.argmax()) if class_index is None else int(class_index)
                if not 0 <= k < logits.shape[-1]:
                    raise HarError(f"class index {k}: the model has {logits.shape[-1]} classes")
                logits[k].backward()
        finally:
            handle.remove()
            self.model.zero_grad(set_to_none=True)
        acts, grads = store["acts"].detach().float().cpu(), store["grads"].detach().float().cpu()
        if self.kind == "conv":  # [1, C, h, w]
            cam = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1))[0]
        else:  # [1, T, D]: the last h*w tokens are the patches (extra tokens such as [CLS] come first)
            gh, gw = _patch_grid(self.model, x.shape[-2:], acts.shape[1])
            patches, pgrads = acts[0, -gh * gw :], grads[0, -gh * gw :]
            cam = torch.relu((patches * pgrads.mean(0)).sum(-1)).reshape(gh, gw)
        cam = cam.numpy().astype(np.float32)
        peak = float(cam.max())
        return Heatmap(cam / peak if peak > 0 else cam, k, logits.detach().float().cpu().numpy())


def find_target_layer(model):
    """(module, "conv" | "tokens"): where Grad-CAM reads the features of this model; HarError when unknown."""
    import torch  # optional: as above

    efficientnet = getattr(model, "efficientnet", None)
    if efficientnet is not None:
        return efficientnet.encoder.top_activation, "conv"
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    if base is not None and getattr(model.config, "patch_size", None):
        for path in ("layers", "encoder.layer", "encoder.layers", "blocks", "encoder.blocks"):  # across versions
            layers = base.get_submodule(path) if _has_submodule(base, path) else None
            if isinstance(layers, torch.nn.ModuleList) and len(layers):
                return layers[-1], "tokens"
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if convs:
        return convs[-1], "conv"
    raise HarError(f"heatmaps: no convolutional feature map or ViT-style encoder found in {type(model).__name__}")


def _has_submodule(module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True


def _patch_grid(model, hw, num_tokens: int) -> tuple[int, int]:
    patch = model.config.patch_size
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    gh, gw = int(hw[0]) // ph, int(hw[1]) // pw
    if gh * gw > num_tokens:  # unusual tokenisation: assume a square grid of the trailing tokens
        gh = gw = int(math.isqrt(num_tokens))
    return gh, gw


def colorize(cam: np.ndarray) -> np.ndarray:
    """[h, w] in 0..1 -> [h, w, 3] uint8 in a blue-green-yellow-red ("jet"-like) colour map."""
    x = np.clip(cam, 0, 1)[..., None]
    rgb = np.clip(1.5 - np.abs(4 * x - np.array([3.0, 2.0, 1.0])), 0, 1)
    return (rgb * 255).astype(np.uint8)


def upsample(cam: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """The feature-grid heatmap resized (bilinear) to an image size (width, height)."""
    return np.asarray(Image.fromarray(np.asarray(cam, np.float32), "F").resize(size_wh, Image.Resampling.BILINEAR))


def overlay(rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The heatmap blended over an RGB uint8 image of any size (the heatmap is stretched to it)."""
    rgb = np.asarray(rgb, np.uint8)
    heat = colorize(upsample(cam, (rgb.shape[1], rgb.shape[0])))
    return (rgb * (1 - alpha) + heat * alpha).round().astype(np.uint8)
