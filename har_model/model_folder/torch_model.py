"""The saved weights as a torch model for inference (the torch backend, the ONNX export, heatmaps).

    load_torch_model(model_dir)       float32, eval mode, exact no-op layers removed
    strip_noop_squeeze_excite(model)  the graph clean-up: built-in EfficientNet-Lite models carry squeeze-excite
                                      layers that are exact no-ops (the stock class cannot leave them out)

torch and transformers are imported inside the functions: serving an ONNX export needs neither.
"""

from __future__ import annotations

from pathlib import Path

from har_model.errors import HarError


def load_torch_model(model_dir: str | Path, *, strip: bool = True, purpose: str = ""):
    """The folder's classifier in float32 and eval mode; ``strip``: without its no-op squeeze-excite layers (then it
    is for inference only: do not ``save_pretrained`` it). A folder that does not load is one HarError line."""
    import torch  # optional: an ONNX-only install serves without it
    from transformers import AutoModelForImageClassification  # optional, as torch

    try:
        model = AutoModelForImageClassification.from_pretrained(model_dir, dtype=torch.float32)
    except Exception as exc:  # OSError, ValueError, safetensors' own errors, ...: all mean "not usable"
        raise HarError(f"{model_dir}: cannot load the model{purpose} ({str(exc).splitlines()[0]})") from None
    model.eval()
    if strip:
        strip_noop_squeeze_excite(model)
    return model


def strip_noop_squeeze_excite(model) -> int:
    """Replace the squeeze-excite layers of an EfficientNet that are exact no-ops by ``nn.Identity``; returns how many.

    A layer is a no-op when its gate is exactly 1.0 whatever the input (zero expand weights, sigmoid(bias) == 1.0
    in float32), as in the converted Lite models; outputs stay bit-identical and inference gets faster (see
    benchmarks/backbones_cpu.py). For inference only: a stripped model lacks layers the stock class expects, so
    do not ``save_pretrained`` it. Other models (e.g. EfficientNet-B0..B7, real squeeze-excite) are left as they are.
    """
    import torch  # optional: only torch models have layers to strip
    from transformers.models.efficientnet.modeling_efficientnet import EfficientNetSqueezeExciteLayer  # as torch

    blocks = [m for m in model.modules() if hasattr(m, "squeeze_excite")]  # EfficientNet blocks, wherever they sit
    stripped = 0
    for block in blocks:
        se = getattr(block, "squeeze_excite", None)
        if not isinstance(se, EfficientNetSqueezeExciteLayer) or se.expand.bias is None:
            continue
        with torch.no_grad():
            gate = torch.sigmoid(se.expand.bias.float())
            if not se.expand.weight.any() and bool((gate == 1.0).all()):
                block.squeeze_excite = torch.nn.Identity()
                stripped += 1
    return stripped
