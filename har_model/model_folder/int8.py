"""Static int8 of the ONNX export, and the agreement gate that decides whether serving uses it.

    gate = build_int8(model_dir / "onnx/model.onnx", out_dir, model_dir)   # at export: model_int8.onnx + the gate
    read_gate(model_dir)                                                    # what was decided (card, Model tab)

Quantization: ONNX Runtime static QDQ, int8 weights per output channel, uint8 activations whose ranges are calibrated
(min / max) on ``CALIBRATION_IMAGES`` training images of the model's own dataset (``dataset/`` in the model folder),
through the model's own preprocessing. The gate scores int8 against float32 on the validation split: int8 becomes
the default of the ``auto`` backend (``files.choose_onnx_file``) only if top-1 agreement >= ``MIN_AGREEMENT`` and
validation macro-F1 drops by at most ``MAX_F1_DROP`` points; otherwise float32 stays and the reason is recorded.
The verdict (agreement, both F1s, both speeds) is written to ``onnx/int8_gate.json``.

What was measured on the quick-recipe har15 model (benchmarks/README.md, "Static int8"): MinMax on 100-300 images
agrees on ~96.8% of the validation images; Percentile / Entropy on 24 images ~97.0%, but they hold a histogram of
every tensor (~0.15 GB per 320 px image; 200 images filled 24 GB), so MinMax stays. Leaving the depthwise and
projection convolutions in float reached 98.3%, but ran slower than float32 and needs the session option
``disabled_optimizers=["WeightBiasQuantization"]`` (else ONNX Runtime re-quantizes the excluded weights per tensor).
On x86 CPUs without VNNI, int8 runs on ONNX Runtime's exact kernels (``cpu_session``): the default ones saturate
there (82.6% agreement on a default-recipe model, 97.1% exact); 7-bit weights (``reduce_range``) avoid the
saturation too, but lose precision on every CPU (94.5%), so the file stays full-range and portable.

Imports numpy and the standard library only at the top: the app reads the gate (``read_gate``) without
onnxruntime's quantization tools or pyarrow, which only the export needs.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from har_model.hardware import cpu_has_vnni
from har_model.model_folder.files import DATASET, INT8_GATE, ONNX_DIR, ONNX_FP32, ONNX_INT8, read_optional
from har_model.preprocessing import load_preprocessing

MIN_AGREEMENT = 0.99  # top-1 agreement with float32 on the validation split
MAX_F1_DROP = 0.5  # validation macro-F1 points (of 100) int8 may lose
CALIBRATION_IMAGES = 300
MAX_GATE_IMAGES = 2000  # a larger validation split is sampled (seeded): the gate must not dominate the export
GATE_THREADS = 2  # speed as a free Space (2 CPU cores) sees it
BATCH = 32


@dataclass
class Gate:
    """The gate's verdict on one int8 file. ``passed``: serve int8 by default; ``reason`` says why (not)."""

    passed: bool
    reason: str
    agreement: float | None = None  # top-1 agreement of int8 with float32 on the validation images; None: no int8
    f1_fp32: float | None = None  # validation macro-F1 (0..1)
    f1_int8: float | None = None
    images: int = 0
    speed: dict = field(default_factory=dict)  # {"fp32": img/s, "int8": img/s, "batch": 32, "threads": 2, "vnni": ..}
    thresholds: dict = field(default_factory=lambda: {"min_agreement": MIN_AGREEMENT, "max_f1_drop_points": MAX_F1_DROP})
    calibration: dict = field(default_factory=dict)  # how int8 was made (method, images, per-channel, ...)

    @property
    def default_file(self) -> str:
        return ONNX_INT8 if self.passed else ONNX_FP32

    def _kernels_note(self) -> str:
        """Where the export ran on an x86 CPU without VNNI, int8 ran on exact but slower kernels (``cpu_session``)."""
        if self.speed.get("vnni") is False:
            return "; CPU without VNNI: exact int8 kernels, about float32's speed"
        return ""

    def summary(self) -> str:
        """One line: what serving uses and why, with the figures (printed at export, shown in the Model tab)."""
        if self.agreement is None:
            return f"int8: not made ({self.reason}); serving float32"
        figures = (f"agreement with float32 {100 * self.agreement:.1f}% on {self.images} validation images, "
                   f"macro-F1 {self.f1_fp32:.3f} (float32) vs {self.f1_int8:.3f} (int8)")
        if self.speed.get("fp32") and self.speed.get("int8"):
            figures += (f", {self.speed['int8']:.0f} (int8) vs {self.speed['fp32']:.0f} (float32) img/s "
                        f"({self.speed['int8'] / self.speed['fp32']:.2f}x, batch {self.speed['batch']}, "
                        f"{self.speed['threads']} threads{self._kernels_note()})")
        verdict = "passed: serving int8" if self.passed else f"failed ({self.reason}): serving float32"
        return f"int8 gate {verdict}; {figures}"

    def markdown(self) -> str:
        """The model card's section on the ONNX files: which one serves by default and the gate's figures."""
        lines = ["## Serving on CPU: ONNX float32 and int8", ""]
        if self.agreement is None:
            lines.append(f"`onnx/{ONNX_FP32}` (float32) is served; no int8 copy was made: {self.reason}.")
            return "\n".join(lines) + "\n"
        served = f"`onnx/{ONNX_INT8}` (int8)" if self.passed else f"`onnx/{ONNX_FP32}` (float32)"
        lines += [
            f"{served} is served by default. The int8 copy is static ONNX Runtime quantization (int8 weights per "
            f"output channel, uint8 activations calibrated on {self.calibration.get('images', '?')} training images); "
            f"it becomes the default only if it agrees with float32 on at least "
            f"{100 * self.thresholds['min_agreement']:g}% of the validation images and loses at most "
            f"{self.thresholds['max_f1_drop_points']:g} points of macro-F1 "
            f"({'passed' if self.passed else 'failed: ' + self.reason}).",
            "",
            "| | float32 | int8 |",
            "|---|---|---|",
            f"| validation macro-F1 ({self.images} images) | {self.f1_fp32:.4f} | {self.f1_int8:.4f} |",
            f"| top-1 agreement with float32 | 100% | {100 * self.agreement:.1f}% |",
        ]
        if self.speed:
            lines.append(f"| images/s (batch {self.speed['batch']}, {self.speed['threads']} threads, at export"
                         f"{self._kernels_note()}) | "
                         f"{self.speed['fp32']:.0f} | {self.speed['int8']:.0f} |")
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict:
        """What ``onnx/int8_gate.json`` holds: the verdict, its figures, and the file ``auto`` serves."""
        return {**asdict(self), "default": self.default_file}

    def write(self, out_dir: Path) -> None:
        (out_dir / INT8_GATE).write_text(json.dumps(self.as_json(), indent=2), encoding="utf-8")


def read_gate(model_dir: str | Path) -> Gate | None:
    """The recorded gate of ``model_dir/onnx``, or None when there is none (or it cannot be read)."""
    data = read_optional(Path(model_dir) / ONNX_DIR, INT8_GATE)
    data.pop("default", None)
    try:
        return Gate(**data) if data else None
    except TypeError:  # a gate file of another version: as if there were none (auto then serves float32)
        return None


def not_made(out_dir: Path, reason: str) -> Gate:
    """Record that there is no int8 copy (and why): a stale gate of an earlier export must not stay behind."""
    gate = Gate(passed=False, reason=reason)
    gate.write(out_dir)
    return gate


# --------------------------------------------------------------------------------------------- the data


def split_pixels(model_dir: Path, split: str, limit: int | None, seed: int = 0):
    """(uint8 (N, H, W, 3) pixels through the model's preprocessing, int labels) of ``dataset/``'s split, or None.

    Reads the parquet files of the dataset copy train.py keeps in the model folder, ``limit`` rows at most (a
    seeded sample); images that do not decode are skipped (the dataset was validated when it was built).
    """
    import pyarrow.parquet as pq  # optional: a dependency of datasets, present where models are exported
    from PIL import Image

    paths = sorted((model_dir / DATASET / "data").glob(f"{split}-*.parquet"))
    if not paths or any({"image", "label"} - set(pq.ParquetFile(p).schema_arrow.names) for p in paths):
        return None
    total = sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
    keep = np.arange(total) if limit is None or total <= limit else np.sort(
        np.random.default_rng(seed).choice(total, size=limit, replace=False))
    prep = load_preprocessing(model_dir)
    pixels, labels, start = [], [], 0
    for path in paths:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256, columns=["image", "label"]):
            rows = keep[(keep >= start) & (keep < start + batch.num_rows)] - start
            start += batch.num_rows
            images, labs = batch.column("image").to_pylist(), batch.column("label").to_pylist()
            for i in rows:
                try:
                    with Image.open(io.BytesIO(images[i]["bytes"])) as img:
                        pixels.append(prep.resize_crop(img.convert("RGB")))
                except Exception:  # noqa: BLE001 - PIL raises many types; a bad image is skipped, not fatal
                    continue
                labels.append(int(labs[i]))
    return (np.stack(pixels), np.asarray(labels)) if pixels else None


# --------------------------------------------------------------------------------------------- quantization


def quantize_static_int8(src: Path, dst: Path, calibration: np.ndarray, normalize) -> dict:
    """QDQ int8 of ``src`` calibrated on ``calibration`` (uint8 pixels; ``normalize`` makes model inputs).

    Returns the settings used (recorded with the gate).
    """
    from onnxruntime.quantization import (  # optional: the onnx package, export only
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process  # as above

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.starts = iter(range(0, len(calibration), 8))

        def get_next(self):
            start = next(self.starts, None)
            return None if start is None else {"pixel_values": normalize(calibration[start : start + 8])}

    pre = dst.with_name(dst.stem + "_pre.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # folds constants, infers shapes
        quantize_static(
            str(pre), str(dst), Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,  # keeps per-batch minima / maxima only: small memory
        )
    finally:
        pre.unlink(missing_ok=True)
    return {"format": "QDQ", "weights": "int8, per output channel", "activations": "uint8", "method": "MinMax",
            "images": int(len(calibration))}


# --------------------------------------------------------------------------------------------- the gate


def macro_f1(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean F1 over the classes present in ``labels`` or ``predicted``."""
    scores = []
    for c in np.union1d(labels, predicted):
        tp = int(np.sum((predicted == c) & (labels == c)))
        fp = int(np.sum((predicted == c) & (labels != c)))
        fn = int(np.sum((predicted != c) & (labels == c)))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def cpu_session(path: Path, num_threads: int | None = None):
    """An ONNX Runtime CPU session as serving and the gate run one (float32 or int8 file alike).

    - graph optimisations on (batch norm folded into convolutions, activations fused);
    - idle worker threads sleep instead of spinning: on shared CPUs (Spaces, CI) spinning threads steal the cores
      the others need, which made every batch several times slower in benchmarks/inference_speed.py;
    - exact int8 on x86 CPUs without VNNI: there ONNX Runtime's uint8 x int8 kernels add pairs of products in
      saturating 16-bit arithmetic (VPMADDUBSW), which clips a full-range int8 model's sums (agreement with float32
      fell from 97% to 83% on the har15 model). ``session.x64quantprecision`` makes it convert the weights to
      uint8 at load and use its exact uint8 x uint8 kernels: as accurate as on a VNNI CPU, about as fast as
      float32. Where the CPU has VNNI the option is left off (it would replace the fast VNNI kernels); on other
      architectures ONNX Runtime ignores it.
    """
    import onnxruntime as ort  # optional: a training install need not have it

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if num_threads:
        opts.intra_op_num_threads = num_threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not cpu_has_vnni():
        opts.add_session_config_entry("session.x64quantprecision", "1")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _predict(path: Path, pixels: np.ndarray, normalize) -> tuple[np.ndarray, float]:
    """(top-1 class per image, images per second of the model alone at batch BATCH)."""
    session = cpu_session(path, GATE_THREADS)
    session.run(None, {"pixel_values": normalize(pixels[:1])})  # warm up
    out, seconds = [], 0.0
    for start in range(0, len(pixels), BATCH):
        batch = normalize(pixels[start : start + BATCH])
        t0 = time.perf_counter()
        out.append(session.run(None, {"pixel_values": batch})[0].argmax(1))
        seconds += time.perf_counter() - t0
    return np.concatenate(out), len(pixels) / max(seconds, 1e-9)


def score(fp32: Path, int8: Path, pixels: np.ndarray, labels: np.ndarray, normalize, *,
          min_agreement: float = MIN_AGREEMENT, max_f1_drop: float = MAX_F1_DROP) -> Gate:
    """Score ``int8`` against ``fp32`` on validation pixels and decide."""
    ref, fp32_ips = _predict(fp32, pixels, normalize)
    got, int8_ips = _predict(int8, pixels, normalize)
    agreement = float(np.mean(ref == got))
    f1_fp32, f1_int8 = macro_f1(labels, ref), macro_f1(labels, got)
    drop = 100 * (f1_fp32 - f1_int8)
    problems = []
    if agreement < min_agreement:
        problems.append(f"agreement {100 * agreement:.1f}% < {100 * min_agreement:g}%")
    if drop > max_f1_drop:
        problems.append(f"macro-F1 drop {drop:.2f} points > {max_f1_drop:g}")
    return Gate(passed=not problems, reason="; ".join(problems) or "within the thresholds", agreement=agreement,
                f1_fp32=f1_fp32, f1_int8=f1_int8, images=int(len(pixels)),
                speed={"fp32": round(fp32_ips, 1), "int8": round(int8_ips, 1), "batch": BATCH, "threads": GATE_THREADS,
                       "vnni": cpu_has_vnni()},
                thresholds={"min_agreement": min_agreement, "max_f1_drop_points": max_f1_drop})


def build_int8(fp32: Path, out_dir: Path, model_dir: Path) -> Gate:
    """Quantize ``fp32`` into ``out_dir/model_int8.onnx``, gate it, write ``out_dir/int8_gate.json``; return the gate.

    Without the model's dataset (a Hub model, a folder from elsewhere) nothing is quantized: int8 that was never
    compared with float32 on the model's own data is not served.
    """
    normalize = load_preprocessing(model_dir).normalize
    calibration = split_pixels(model_dir, "train", CALIBRATION_IMAGES, seed=1)
    validation = split_pixels(model_dir, "validation", MAX_GATE_IMAGES)
    if calibration is None or validation is None:
        return not_made(out_dir, f"no {DATASET}/ with train and validation splits in the model folder to calibrate "
                                 "and check int8 on")
    settings = quantize_static_int8(fp32, out_dir / ONNX_INT8, calibration[0], normalize)
    # the thresholds are read at call time (not bound as defaults): a test may change them
    gate = score(fp32, out_dir / ONNX_INT8, *validation, normalize, min_agreement=MIN_AGREEMENT,
                 max_f1_drop=MAX_F1_DROP)
    gate.calibration = settings
    gate.write(out_dir)
    return gate
