"""Export a saved image classifier to ONNX (float32, plus a static int8 copy that is served only if it agrees).

    python train.py export-onnx --model outputs/har15          # writes outputs/har15/onnx/model.onnx (+ int8)
    python train.py export-onnx --model user/har-model         # a Hub model: copied to outputs/har-model first
    export_onnx(model_dir)                                     # the same from code (train.py --export-onnx)

The files live in ``<model>/onnx/`` with a dynamic batch axis; the model folder stays loadable by plain
``pipeline()``, and serving (``har_model.serve.inference.Classifier.load(model, backend="auto")``) picks the ONNX
file up. The int8 copy (``model_folder.int8``) is calibrated on the model's own training images and scored against
float32 on its validation split; ``onnx/int8_gate.json`` records the verdict that ``auto`` follows, and the model
card and the app's Model tab show it. The files are written beside the model and moved into ``onnx/`` only when the
export (and its check) succeeded, so a failed export never leaves a half-written file that the app would then load.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

from har_model.calibration import Calibration
from har_model.errors import HarError, command
from har_model.model_folder.files import CARD, ONNX_DIR, ONNX_FP32, ONNX_INFO, ONNX_INT8, read_labels, require_config
from har_model.model_folder.int8 import Gate, build_int8, not_made
from har_model.model_folder.resolve import copy_model_files, is_hub_id, resolve_model_dir
from har_model.model_folder.torch_model import load_torch_model
from har_model.model_folder.write import set_card_section
from har_model.outputs import STAGING_PREFIX, Publication, atomic_write_text, read_marker, require_complete
from har_model.preprocessing import load_preprocessing

OPSET = 17


def export_onnx(model_dir: str | Path, *, quantize: bool = True, check: bool = True) -> dict[str, Path]:
    """Write ``model_dir/onnx/model.onnx`` (float32) and, if ``quantize``, the static int8 ``model_int8.onnx``.

    Returns {"fp32": path, "int8": path} (int8 only when it was made). ``check`` compares the ONNX float32 output
    with torch on a random batch and raises HarError if they disagree (an export bug must not ship silently).
    The int8 gate's verdict is printed and recorded in ``onnx/int8_gate.json`` and the model card.
    """
    model_dir = Path(model_dir)
    require_complete(model_dir)
    require_config(model_dir)
    read_labels(model_dir)  # what every reader checks first: refused here too, before any work
    Calibration.load(model_dir)
    height, width = load_preprocessing(model_dir).output_hw
    model = load_torch_model(model_dir)  # exact no-op squeeze-excite layers need not be in the graph
    card = _card_is_ours(model_dir)
    with Publication(model_dir, "model", merge=True) as stage:
        written, gate = _export(model, stage / ONNX_DIR, height, width, quantize=quantize, check=check,
                                model_dir=model_dir)
        print(gate.summary(), flush=True)
        if card == "finished":  # replaced with the export, like the files it lists
            (stage / CARD).write_text(_card_with_gate(model_dir, gate), encoding="utf-8")
    if card == "staging":  # a training run's own staging folder: the run publishes it, card included
        atomic_write_text(model_dir / CARD, _card_with_gate(model_dir, gate))
    return {kind: model_dir / ONNX_DIR / path.name for kind, path in written.items()}


def _card_is_ours(model_dir: Path) -> str | None:
    """Whether the export may add its section to README.md: "finished" (a model folder whose marker lists the
    card), "staging" (the staging folder of a training run, which writes every file in it), else None (a folder
    from elsewhere: its card is not ours to change)."""
    if not (model_dir / CARD).is_file():
        return None
    if model_dir.name.startswith(STAGING_PREFIX):
        return "staging"
    marker = read_marker(model_dir)
    return "finished" if marker is not None and CARD in marker["files"] else None


def _card_with_gate(model_dir: Path, gate: Gate) -> str:
    return set_card_section((model_dir / CARD).read_text(encoding="utf-8"), "onnx", gate.markdown())


def _export(model, out_dir: Path, height: int, width: int, *, quantize: bool, check: bool,
            model_dir: Path) -> tuple[dict[str, Path], Gate]:
    import torch  # optional: only exporting needs it

    out_dir.mkdir()
    fp32 = out_dir / ONNX_FP32
    reference = _reference_logits(model, height, width) if check else None
    global_pooling(model, height, width)
    example = torch.randn(2, 3, height, width)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _logits_only(model),
            (example,),
            str(fp32),
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    paths = {"fp32": fp32}
    if reference is not None:
        _check_against_torch(fp32, *reference)
    # without int8 a gate is written all the same: one left by an earlier export must not make `auto` serve int8
    gate = build_int8(fp32, out_dir, model_dir) if quantize else not_made(out_dir, "not requested")
    if gate.agreement is not None:
        paths["int8"] = out_dir / ONNX_INT8
    (out_dir / ONNX_INFO).write_text(json.dumps(
        {"opset": OPSET, "input": [None, 3, height, width], "files": {k: p.name for k, p in paths.items()},
         "default": gate.default_file}, indent=2))
    return paths, gate


def global_pooling(model, height: int, width: int) -> int:
    """Replace average pools whose window covers the whole input (so the whole feature map) by a global average
    pool; returns how many.

    transformers' EfficientNet pools with ``AvgPool2d(1280, ceil_mode=True)``: the mean of the feature map in
    float, but it exports as a 1280x1280 AveragePool that ONNX Runtime's int8 graph computes wrongly (the quantized
    model answered one class for every input). GlobalAveragePool is the same mean and quantizes correctly; the
    export's check against torch (reference logits taken before this change) confirms the float graph is unchanged.
    """
    import torch  # optional: only exporting needs it

    replaced = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, torch.nn.AvgPool2d) or not module.ceil_mode or module.padding not in (0, (0, 0)):
            continue
        size = module.kernel_size
        if (min(size) if isinstance(size, tuple) else size) < max(height, width):
            continue  # a local pool: its window does not cover every feature map position
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        setattr(parent, name.rsplit(".", 1)[-1], torch.nn.AdaptiveAvgPool2d(1))
        replaced += 1
    return replaced


def _logits_only(model):
    """Wrap a transformers classifier so that the exported graph has one input and one output."""
    import torch  # optional: only exporting needs it

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner(pixel_values=pixel_values).logits

    return LogitsOnly(model).eval()


def _reference_logits(model, height: int, width: int):
    """(random batch, torch logits) of the model as loaded, before the export changes anything."""
    import torch  # optional: only exporting needs it

    x = torch.randn(3, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return x, model(pixel_values=x).logits.numpy()


def _check_against_torch(path: Path, x, ref: np.ndarray, tol: float = 1e-3) -> None:
    import onnxruntime as ort  # optional: a training install need not have it

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"pixel_values": x.numpy()})[0]
    err = float(np.abs(got - ref).max() / (np.abs(ref).max() + 1e-6))
    if not np.isfinite(err) or err > tol:
        raise HarError(f"{path}: ONNX output differs from torch (relative error {err:.2e}); export failed")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=command("export-onnx"), description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--model", required=True, help=f"model folder written by `{command()}`, or a Hub model id")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="write a copy of the model with its onnx/ here (default: into the model folder itself; "
                        "for a Hub model id outputs/<name>, since the download cache is not written to)")
    p.add_argument("--no-int8", action="store_true",
                   help="skip the static int8 copy (made from the model's dataset/ and served by default only if it "
                        "agrees with float32 on the validation split)")
    args = p.parse_args(argv)
    model_dir = resolve_model_dir(args.model, flag="--model")
    out = args.output_dir or (Path("outputs") / args.model.split("/")[-1] if is_hub_id(args.model) else None)
    if out is not None:
        model_dir = copy_model_files(model_dir, out)
        print(f"copied {args.model} to {out}")
    paths = export_onnx(model_dir, quantize=not args.no_int8)
    for kind, path in paths.items():
        print(f"{kind}: {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
