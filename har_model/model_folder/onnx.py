"""Export a saved image classifier to ONNX (float32, plus a dynamic-int8 quantized copy) for ONNX Runtime.

    python train.py export-onnx --model outputs/har15          # writes outputs/har15/onnx/model.onnx (+ int8)
    python train.py export-onnx --model user/har-model         # a Hub model: copied to outputs/har-model first
    export_onnx(model_dir)                                     # the same from code (train.py --export-onnx)

The files live in ``<model>/onnx/`` with a dynamic batch axis; the model folder stays loadable by plain
``pipeline()``, and serving (``har_model.serve.inference.Classifier.load(model, backend="auto")``) picks the ONNX
file up. They are written beside the model and moved into ``onnx/`` only when the export (and its check)
succeeded, so a failed export never leaves a half-written file that the app would then load.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

from har_model.calibration import Calibration
from har_model.errors import HarError
from har_model.model_folder.files import ONNX_DIR, ONNX_FILES, ONNX_INFO, read_labels, require_config
from har_model.model_folder.resolve import copy_model_files, is_hub_id, resolve_model_dir
from har_model.model_folder.torch_model import load_torch_model
from har_model.outputs import Publication, require_complete
from har_model.preprocessing import load_preprocessing

OPSET = 17


def export_onnx(model_dir: str | Path, *, quantize: bool = True, check: bool = True) -> dict[str, Path]:
    """Write ``model_dir/onnx/model.onnx`` (float32) and, if ``quantize``, ``model_int8.onnx``.

    Returns {"fp32": path, "int8": path}. ``check`` compares the ONNX float32 output with torch on a random
    batch and raises HarError if they disagree (an export bug must not ship silently).
    """
    model_dir = Path(model_dir)
    require_complete(model_dir)
    require_config(model_dir)
    read_labels(model_dir)  # what every reader checks first: refused here too, before any work
    Calibration.load(model_dir)
    height, width = load_preprocessing(model_dir).output_hw
    model = load_torch_model(model_dir)  # exact no-op squeeze-excite layers need not be in the graph
    with Publication(model_dir, "model", merge=True) as stage:
        written = _export(model, stage / ONNX_DIR, height, width, quantize=quantize, check=check)
    return {kind: model_dir / ONNX_DIR / path.name for kind, path in written.items()}


def _export(model, out_dir: Path, height: int, width: int, *, quantize: bool, check: bool) -> dict[str, Path]:
    import torch  # optional: only exporting needs it

    out_dir.mkdir()
    fp32 = out_dir / ONNX_FILES[0]
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
    if check:
        _check_against_torch(fp32, model, height, width)
    if quantize:
        paths["int8"] = quantize_dynamic_int8(fp32, out_dir / ONNX_FILES[1])
    (out_dir / ONNX_INFO).write_text(
        json.dumps({"opset": OPSET, "input": [None, 3, height, width], "files": {k: p.name for k, p in paths.items()}}, indent=2)
    )
    return paths


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


def quantize_dynamic_int8(src: Path, dst: Path) -> Path:
    """Dynamic (weights int8, activations quantized on the fly) quantization of an ONNX file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic  # optional: the onnx package, export only
    from onnxruntime.quantization.shape_inference import quant_pre_process  # as above

    pre = dst.with_name(dst.stem + "_pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        source = pre
    except Exception:  # pre-processing is an optimisation; quantize the plain export if it fails
        source = src
    try:
        quantize_dynamic(str(source), str(dst), weight_type=QuantType.QInt8)
    finally:
        if pre.exists():
            pre.unlink()
    return dst


def _check_against_torch(path: Path, model, height: int, width: int, tol: float = 1e-3) -> None:
    import onnxruntime as ort  # optional: a training install need not have it
    import torch  # optional: only exporting needs it

    x = torch.randn(3, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = model(pixel_values=x).logits.numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"pixel_values": x.numpy()})[0]
    err = float(np.abs(got - ref).max() / (np.abs(ref).max() + 1e-6))
    if not np.isfinite(err) or err > tol:
        raise HarError(f"{path}: ONNX output differs from torch (relative error {err:.2e}); export failed")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python train.py export-onnx", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--model", required=True, help="model folder written by `python train.py`, or a Hub model id")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="write a copy of the model with its onnx/ here (default: into the model folder itself; "
                        "for a Hub model id outputs/<name>, since the download cache is not written to)")
    p.add_argument("--no-int8", action="store_true", help="skip the dynamic int8 quantized copy")
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
