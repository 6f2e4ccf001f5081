"""The model folder's file names, and reading the small files in it.

A model folder is what ``python train.py`` writes and everything else reads (``predict``, the app, ``export-onnx``,
``publish-space``, ``pipeline("image-classification")``):

    config.json               transformers config with the real id2label        CONFIG
    preprocessor_config.json  the image processor, at the evaluation size      PREPROCESSOR
    model.safetensors         the weights                                       WEIGHTS
    calibration.json          temperature and "unsure" threshold               CALIBRATION
    metrics.json              test / validation metrics and the run's record   METRICS
    README.md                 the model card                                    CARD
    *.png, examples/          figures and a few test images for the app        FIGURES, EXAMPLES
    onnx/model.onnx           the ONNX export (float32)                         ONNX_DIR, ONNX_FP32
    onnx/model_int8.onnx      its static int8 copy, served where the gate       ONNX_INT8, INT8_GATE
                              in onnx/int8_gate.json passed (choose_onnx_file)
    dataset/, checkpoints/    the dataset copy and --resume state (kept local)  DATASET, CHECKPOINTS

Needs only the standard library: serving an ONNX export imports this without torch or transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

from har_model.errors import HarError

CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
WEIGHTS = "model.safetensors"
CALIBRATION = "calibration.json"
METRICS = "metrics.json"
CARD = "README.md"
TRAINING_CURVES = "training_curves.png"
CONFUSION_MATRIX = "confusion_matrix.png"
PREDICTIONS = "predictions.png"
FIGURES = (TRAINING_CURVES, CONFUSION_MATRIX, PREDICTIONS)
EXAMPLES = "examples"
ONNX_DIR = "onnx"
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model_int8.onnx"  # static int8 (model_folder.int8): served by default only where its gate passed
ONNX_FILES = (ONNX_FP32, ONNX_INT8)
ONNX_INFO = "export_info.json"
INT8_GATE = "int8_gate.json"  # the agreement gate's verdict on the int8 file, written at export
TRAINING_ARGS = "training_args.bin"  # the Trainer's pickle: kept in checkpoints/ for --resume, never shipped
DATASET = "dataset"
CHECKPOINTS = "checkpoints"
CACHE = "cache"  # the decoded training images (memory-mapped), kept for --resume, removed after a finished run


def read_json(path: Path, missing_hint: str) -> dict:
    """A JSON object from ``path``; a missing, unreadable or non-object file is one HarError line."""
    if not path.is_file():
        raise HarError(f"{path.parent}: no {path.name} ({missing_hint})")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HarError(f"{path}: cannot read ({exc})") from None
    if not isinstance(data, dict):
        raise HarError(f"{path}: not a JSON object")
    return data


def read_optional(model_dir: str | Path, name: str) -> dict:
    """A JSON object the folder may lack (metrics.json of a model from elsewhere): {} when missing or unreadable."""
    try:
        data = json.loads((Path(model_dir) / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_labels(model_dir: str | Path) -> list[str]:
    """The class names, in output order, from config.json's id2label (0..N-1); one HarError line otherwise."""
    path = Path(model_dir) / CONFIG
    config = read_json(path, "not a saved model folder")
    id2label = config.get("id2label") or {}
    try:
        labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    except (ValueError, TypeError):
        raise HarError(f"{path}: id2label keys must be integers") from None
    if not labels or [int(k) for k in sorted(id2label, key=int)] != list(range(len(labels))):
        raise HarError(f"{path}: id2label must map 0..N-1 to class names")
    return labels


def require_config(model_dir: str | Path) -> None:
    """Refuse (one line) a folder without config.json: not a saved model."""
    if not (Path(model_dir) / CONFIG).is_file():
        raise HarError(f"{model_dir}: no {CONFIG} (not a saved model folder)")


def int8_gate_passed(model_dir: str | Path) -> bool:
    """Whether ``onnx/int8_gate.json`` records that int8 agreed with float32 (no file, or an unreadable one: no)."""
    return read_optional(Path(model_dir) / ONNX_DIR, INT8_GATE).get("passed") is True


def choose_onnx_file(model_dir: str | Path) -> Path | None:
    """The ONNX file serving uses by default (the ``auto`` backend, and what publish-space bundles): int8 where its
    agreement gate passed at export, else float32; where only one of the two exists (a Space bundle ships one),
    that one; None without an export."""
    fp32, int8 = (Path(model_dir) / ONNX_DIR / name for name in ONNX_FILES)
    order = (int8, fp32) if int8_gate_passed(model_dir) else (fp32, int8)
    return next((path for path in order if path.is_file()), None)


def has_onnx(model_dir: str | Path) -> bool:
    """Whether the folder has an ONNX export that serving can use (float32 or int8)."""
    return choose_onnx_file(model_dir) is not None
