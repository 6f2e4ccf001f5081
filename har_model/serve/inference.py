"""The one inference path: model folder -> class probabilities, fast on CPU.

Used by the app, the video code and ``python train.py predict``. Preprocessing is har_model.preprocessing, the one
the training run validates and tests with: it reproduces the model's saved image processor
(``preprocessor_config.json``) so results match ``pipeline("image-classification")``, but normalisation is
done once per batch in numpy instead of per image in Python, JPEGs are decoded at reduced size when the
model input is much smaller (draft mode), and the network runs batched in one of:

    torch        float32, channels-last, inference mode
    torch-bf16   bfloat16 weights and activations (fast only where the CPU has native bf16; not bit-exact)
    onnx         ONNX Runtime on the folder's default ONNX file (``files.choose_onnx_file``): ``onnx/model_int8.onnx``
                 where its agreement gate passed at export (har_model.model_folder.int8), else ``onnx/model.onnx``
    onnx-fp32    ONNX Runtime on ``onnx/model.onnx``, whatever the gate said
    onnx-int8    ONNX Runtime on ``onnx/model_int8.onnx``, whatever the gate said

``auto`` (the default) takes the default ONNX file when the folder has an export, else float32 torch.

    clf = Classifier.load("outputs/har15")
    clf.predict(["a.jpg", pil_image, rgb_frame], top_k=3)  # [[("running", 0.93), ...], ...]
"""

from __future__ import annotations

import argparse
import csv
import glob
import io
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from har_model.calibration import Calibration, answer, decide
from har_model.errors import HarError, command
from har_model.explain import GradCam, overlay, torch_available
from har_model.imaging import is_image_path, open_rgb, to_rgb
from har_model.model_folder.files import CONFIG, ONNX_DIR, ONNX_FP32, ONNX_INT8, choose_onnx_file, read_labels
from har_model.model_folder.int8 import cpu_session
from har_model.model_folder.resolve import resolve_model_dir
from har_model.model_folder.torch_model import load_torch_model
from har_model.outputs import atomic_write_text, require_complete
from har_model.paths import safe_filename
from har_model.preprocessing import Preprocessing, StockPreprocessing, load_preprocessing

BACKENDS = ("auto", "torch", "torch-bf16", "onnx", "onnx-fp32", "onnx-int8")
FORCED_ONNX = {"onnx-fp32": ONNX_FP32, "onnx-int8": ONNX_INT8}  # backends that name one ONNX file

ImageInput = Image.Image | np.ndarray | str | os.PathLike


def as_rgb_image(image: ImageInput, draft_size: tuple[int, int] | None = None) -> Image.Image:
    """Any accepted input -> RGB PIL image (files via open_rgb; numpy frames are RGB, HxW, HxWx3 or HxWx4)."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and float(arr.max()) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[..., 0]
        if arr.ndim == 2:
            return Image.fromarray(arr, "L").convert("RGB")
        if arr.ndim == 3 and arr.shape[2] in (3, 4):
            return to_rgb(Image.fromarray(np.ascontiguousarray(arr), "RGB" if arr.shape[2] == 3 else "RGBA"))
        raise HarError(f"image array of shape {image.shape}: expected (H, W), (H, W, 3) or (H, W, 4)")
    if isinstance(image, (str, os.PathLike)):
        return open_rgb(image, draft_size=draft_size)
    raise HarError(f"cannot classify an object of type {type(image).__name__}: give a path, PIL image or array")


# --------------------------------------------------------------------------------------------- runners


class _TorchRunner:
    """A transformers model in channels-last layout, float32 or bfloat16, run under inference_mode.

    ``micro_batch``: larger batches are split into chunks of this size. On CPUs with ~1 MiB of L2 per core the
    activations of a big batch spill to memory and every image gets slower (measured in
    benchmarks/inference_speed.py); bf16 halves the activations, so its sweet spot is larger.
    """

    def __init__(self, model_dir: Path, bf16: bool, num_threads: int | None):
        import torch  # optional: an ONNX-only install serves without it

        if num_threads:
            torch.set_num_threads(num_threads)
        self.torch = torch
        model = load_torch_model(model_dir)  # built-in EfficientNet-Lite models: their no-op layers skipped
        self.dtype = torch.bfloat16 if bf16 else torch.float32
        self.micro_batch = 4 if bf16 else 2
        self.model = model.to(dtype=self.dtype, memory_format=torch.channels_last)

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(pixel_values).to(dtype=self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            logits = self.model(pixel_values=x).logits
        return logits.float().numpy()


class _OnnxRunner:
    """An ONNX Runtime CPU session (graph optimisations on: batch-norm folded into convs, activations fused)."""

    micro_batch = 2

    def __init__(self, path: Path, num_threads: int | None):
        import onnxruntime  # noqa: F401  (optional: without it the torch backend serves; a forced ONNX one raises)

        try:
            self.session = cpu_session(path, num_threads)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise HarError(f"{path}: cannot load the ONNX model ({str(exc).splitlines()[0]})") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: pixel_values})[0]


def _check_head(model_dir: Path, runner, prep, labels: list[str], onnx_path: Path | None) -> None:
    """One forward pass of a blank image: the model must give one score per class of config.json's id2label
    (an edited config, or an ONNX file of another model, would otherwise fail every request with an IndexError)."""
    h, w = prep.output_hw
    try:
        logits = runner(np.zeros((1, 3, h, w), np.float32))
    except Exception as exc:  # a graph that does not take this input: not a usable model either
        raise HarError(f"{onnx_path or model_dir}: the model does not run on a {h}x{w} image "
                       f"({str(exc).splitlines()[0][:200]})") from None
    if logits.ndim != 2 or logits.shape[1] != len(labels):
        raise HarError(f"{onnx_path or model_dir}: the model gives {logits.shape[-1]} scores per image but "
                       f"{model_dir / CONFIG} names {len(labels)} classes (id2label); they must match")


# --------------------------------------------------------------------------------------------- classifier


class Classifier:
    """A saved image classifier ready for fast batched CPU inference.

    Probabilities are calibrated with the folder's ``calibration.json`` (temperature fitted on validation, see
    har_model.calibration); ``unsure_below`` (from the same file, changeable) is the top-1 probability under which
    ``decide`` answers "unsure" instead of a class.
    """

    def __init__(self, model_dir: Path, labels: list[str], prep: Preprocessing | StockPreprocessing, runner,
                 backend: str, calibration: Calibration | None = None):
        self.model_dir = model_dir
        self.labels = labels
        self.preprocessing = prep
        self.image_size = prep.output_hw
        self.backend = backend
        self._run = runner
        self.calibration = calibration or Calibration(fitted_on="none")
        self.unsure_below = self.calibration.unsure_below
        self._grad_cam = None  # loaded at the first heatmap (needs torch)

    @classmethod
    def load(
        cls, model_dir: str | Path, *, backend: str = "auto", num_threads: int | None = None, onnx_file: str | None = None
    ) -> "Classifier":
        """Load ``model_dir`` (as written by save_pretrained) with the requested backend.

        ``auto`` uses the default ONNX file of ``model_dir/onnx/`` (int8 only where its agreement gate passed) when
        there is one and onnxruntime is importable, else float32 torch. ``onnx-fp32`` / ``onnx-int8`` (or
        ``onnx_file``, a name in ``onnx/``) force one file.
        Raises HarError naming the folder when it is not a usable model.
        """
        model_dir = Path(model_dir)
        if backend not in BACKENDS:
            raise HarError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if not model_dir.is_dir():
            raise HarError(f"{model_dir}: no such model folder")
        require_complete(model_dir)  # a run stopped while writing it: refuse rather than serve a mix of two runs
        labels = read_labels(model_dir)
        prep = load_preprocessing(model_dir)
        calibration = Calibration.load(model_dir)
        onnx_file = FORCED_ONNX.get(backend, onnx_file)
        onnx_path = choose_onnx_file(model_dir) if onnx_file is None else model_dir / ONNX_DIR / onnx_file
        if onnx_path is not None and not onnx_path.is_file():
            hint = (f" (backend {backend}; `{command('export-onnx')} --model {model_dir}` writes it from a model "
                    "folder with its dataset/)" if backend in FORCED_ONNX else "")
            raise HarError(f"{onnx_path}: no such ONNX file{hint}")
        backend = "onnx" if backend in FORCED_ONNX else backend
        if backend == "auto":
            backend = "torch"
            if onnx_path is not None:
                try:
                    import onnxruntime  # noqa: F401  (optional: is it installed?)

                    backend = "onnx"
                except ImportError:
                    pass
        if backend == "onnx":
            if onnx_path is None:
                raise HarError(f"{model_dir}: no ONNX model in {ONNX_DIR}/ (run `{command('export-onnx')} --model {model_dir}`)")
            runner = _OnnxRunner(onnx_path, num_threads)
            backend = f"onnx:{onnx_path.name}"
        else:
            runner = _TorchRunner(model_dir, bf16=backend == "torch-bf16", num_threads=num_threads)
        _check_head(model_dir, runner, prep, labels, onnx_path if backend.startswith("onnx") else None)
        return cls(model_dir, labels, prep, runner, backend, calibration)

    # -- preprocessing

    def load_pixels(self, image: ImageInput) -> np.ndarray:
        """One input -> uint8 (H, W, 3) at the model's input size. Raises HarError for unreadable files."""
        return self.preprocessing.resize_crop(as_rgb_image(image, self.preprocessing.draft_size))

    def _logits(self, pixels: list[np.ndarray]) -> np.ndarray:
        """The served logits: of the images, or the mean of each image's and its mirror's where the folder's
        calibration chose flip averaging on validation (both views in one call)."""
        batch = self.preprocessing.normalize(np.stack(pixels))
        step = self._run.micro_batch
        flip = self.calibration.flip_average
        if flip:
            step = max(1, step // 2)  # each call carries both views
        logits = [self._views(batch[i : i + step], flip) for i in range(0, len(batch), step)]
        return np.concatenate(logits) if len(logits) > 1 else logits[0]

    def _views(self, batch: np.ndarray, flip: bool) -> np.ndarray:
        if not flip:
            return self._run(batch)
        both = self._run(np.ascontiguousarray(np.concatenate([batch, batch[..., ::-1]])))
        return (both[: len(batch)] + both[len(batch) :]) / 2

    def _forward(self, pixels: list[np.ndarray]) -> np.ndarray:
        return self.calibration.probs(self._logits(pixels))

    def predict_logits(self, images: Sequence[ImageInput], batch_size: int = 32) -> np.ndarray:
        """[N, C] raw (uncalibrated) logits, e.g. to fit a calibration on a saved model's validation split."""
        images = list(images)
        chunks = [self._logits([self.load_pixels(im) for im in images[i : i + batch_size]])
                  for i in range(0, len(images), max(1, batch_size))]
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, len(self.labels)), np.float32)

    # -- prediction

    def predict_proba(self, images: Sequence[ImageInput], batch_size: int = 32) -> np.ndarray:
        """[N, C] float32 softmax probabilities, in ``labels`` order. Raises HarError on an unreadable input."""
        if isinstance(images, (str, os.PathLike, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        images = list(images)
        out = np.empty((len(images), len(self.labels)), np.float32)
        for start in range(0, len(images), max(1, batch_size)):
            chunk = images[start : start + batch_size]
            out[start : start + len(chunk)] = self._forward([self.load_pixels(im) for im in chunk])
        return out

    def predict(self, images: Sequence[ImageInput], top_k: int = 5, batch_size: int = 32) -> list[list[tuple[str, float]]]:
        """For each input, the ``top_k`` (label, probability) pairs, most likely first."""
        return [self.top_k(p, top_k) for p in self.predict_proba(images, batch_size=batch_size)]

    def decide(self, probs: np.ndarray, unsure_below: float | None = None) -> str:
        """The top label of one probability row, or "unsure" when its probability is below the threshold."""
        return decide(probs, self.labels, self.unsure_below if unsure_below is None else unsure_below)

    def explain(self, image: ImageInput, class_index: int | None = None, min_side: int = 256):
        """(heatmap over the image, class index, calibrated probabilities) for the predicted or a chosen class.

        Grad-CAM (har_model.explain): one extra forward and backward pass in float32 torch, whatever the serving
        backend. The overlay shows the model's input (resized and centre-cropped), scaled up to ``min_side``.
        """
        if not torch_available():
            raise HarError("heatmaps need PyTorch (pip install torch); classification itself works without it")
        if self._grad_cam is None:
            runner_model = getattr(self._run, "model", None)
            reuse = runner_model is not None and self.backend == "torch"  # float32 weights already in memory
            self._grad_cam = GradCam(runner_model) if reuse else GradCam.from_pretrained(self.model_dir)
        rgb = as_rgb_image(image, self.preprocessing.draft_size)
        pixels = self.preprocessing.resize_crop(rgb)
        heat = self._grad_cam(self.preprocessing.normalize(pixels[None]), class_index)
        shown = pixels if pixels.dtype == np.uint8 else np.asarray(rgb.resize(self.image_size[::-1]))
        scale = max(1.0, min_side / min(shown.shape[:2]))
        if scale > 1:
            size = (round(shown.shape[1] * scale), round(shown.shape[0] * scale))
            shown = np.asarray(Image.fromarray(shown).resize(size, Image.Resampling.BICUBIC))
        return overlay(shown, heat.cam), heat.class_index, self.calibration.probs(heat.logits[None])[0]

    def answer(self, probs: np.ndarray, unsure_below: float | None = None, k: int = 5) -> dict:
        """The decision, its confidence and the top ``k`` of one probability row as data (calibration.answer)."""
        return answer(probs, list(self.labels), self.unsure_below if unsure_below is None else unsure_below, k)

    def top_k(self, probs: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-probs, kind="stable")[: max(1, k)]
        return [(self.labels[i], float(probs[i])) for i in order]

    def predict_files(self, paths: Iterable[str | Path], batch_size: int = 32) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
        """(path, probabilities or None, error or None) per file, in order; unreadable files do not stop the run."""
        pending: list[tuple[str, np.ndarray]] = []

        def flush():
            probs = self._forward([p for _, p in pending])
            for (path, _), row in zip(pending, probs):
                yield path, row, None
            pending.clear()

        for path in paths:
            try:
                pending.append((str(path), self.load_pixels(path)))
            except HarError as exc:
                yield from flush() if pending else ()
                yield str(path), None, str(exc)
                continue
            if len(pending) >= batch_size:
                yield from flush()
        if pending:
            yield from flush()


# --------------------------------------------------------------------------------------------- CLI


def expand_paths(inputs: Sequence[str]) -> list[Path]:
    """Files as given, folders recursively (image extensions only, sorted), globs expanded (sorted)."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and is_image_path(p)))
        elif path.exists():
            found.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True))
            files = [m for m in matches if m.is_file() and is_image_path(m)]
            for m in matches:
                if m.is_dir():
                    files.extend(sorted(p for p in m.rglob("*") if p.is_file() and is_image_path(p)))
            if not files:
                raise HarError(f"{item}: no images match this pattern")
            found.extend(files)
        else:
            raise HarError(f"{item}: no such file or folder")
    if not found:
        raise HarError(f"no images found in {', '.join(inputs)}")
    return found


EXIT_CODES = """exit status: 0 every image was classified; 1 some inputs could not be read (the others are still
listed, the failed ones with their error); 2 a usage or model error (one line on stderr); 130 interrupted."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=command("predict"), description="Classify images with a trained model.",
                                epilog=EXIT_CODES, allow_abbrev=False)
    p.add_argument("paths", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    p.add_argument("--model", required=True, help=f"model folder (as written by `{command()}`) or a Hub model id")
    p.add_argument("--top-k", type=int, default=1, help="how many classes to show per image (default 1)")
    p.add_argument("--csv", help="write the results to this CSV file instead of printing a table")
    p.add_argument("--overwrite", action="store_true", help="with --csv: replace an existing file")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto: the ONNX export when there is one (int8 where its agreement gate passed at export, "
                        "else float32), else torch; onnx-fp32 / onnx-int8 force one ONNX file")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the model (default: all cores)")
    p.add_argument("--unsure-below", type=float, default=None, metavar="P",
                   help="say 'unsure' when the top (calibrated) probability is below P; default: the threshold "
                        "chosen on validation and saved in the model's calibration.json (0 = always name a class)")
    p.add_argument("--explain", metavar="FOLDER", default=None,
                   help="also write a Grad-CAM heatmap over each input to FOLDER (one PNG per image; needs torch)")
    p.add_argument("--explain-class", metavar="LABEL", default=None,
                   help="with --explain: show the evidence for this class instead of the predicted one")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.top_k < 1:
        raise HarError("--top-k must be at least 1")
    if args.batch_size < 1:
        raise HarError("--batch-size must be at least 1")
    if args.unsure_below is not None and not 0 <= args.unsure_below <= 1:
        raise HarError(f"--unsure-below {args.unsure_below}: give a probability between 0 and 1")
    if args.csv and not Path(args.csv).resolve().parent.is_dir():
        raise HarError(f"{args.csv}: folder {Path(args.csv).parent} does not exist")
    if args.csv and (Path(args.csv).exists() or Path(args.csv).is_symlink()):
        if Path(args.csv).is_dir() or not args.overwrite:
            raise HarError(f"--csv {args.csv}: " + ("is a folder; give a file name" if Path(args.csv).is_dir() else
                           "exists; add --overwrite to replace it, or give a new file name"))
    paths = expand_paths(args.paths)
    explain_dir = _explain_folder(args.explain) if args.explain else None
    try:
        from transformers.utils import logging as hf_logging  # optional: an ONNX export is served without it

        hf_logging.disable_progress_bar()  # one table on stdout, errors as one line on stderr
    except ImportError:  # serving an ONNX export needs no transformers
        pass
    model_dir = resolve_model_dir(args.model, flag="--model")
    clf = Classifier.load(model_dir, backend=args.backend, num_threads=args.threads)
    if args.unsure_below is not None:
        clf.unsure_below = args.unsure_below
    explain_class = None
    if args.explain_class is not None:
        if args.explain_class not in clf.labels:
            raise HarError(f"--explain-class {args.explain_class}: not a class of this model ({', '.join(clf.labels)})")
        explain_class = clf.labels.index(args.explain_class)
    k = min(args.top_k, len(clf.labels))
    header = ["path", "prediction"] + [f"{what}_{i}" for i in range(1, k + 1) for what in ("label", "score")] + ["error"]
    rows: list[list[str]] = []
    n_errors = 0
    for path, probs, error in clf.predict_files(paths, batch_size=args.batch_size):
        row = [path]
        if probs is None:
            n_errors += 1
            row += [""] * (2 * k + 1) + [error or ""]
        else:
            row.append(clf.decide(probs))
            if explain_dir is not None:
                _write_heatmap(clf, path, explain_dir, len(rows), explain_class)
            for label, score in clf.top_k(probs, k):
                row += [label, f"{score:.4f}"]
            row.append("")
        rows.append(row)
    if args.csv:
        out = Path(args.csv)
        buffer = io.StringIO(newline="")
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(rows)
        try:
            atomic_write_text(out, buffer.getvalue())  # whole or not at all: an older CSV is never half replaced
        except OSError as exc:
            raise HarError(f"--csv {out}: cannot write ({exc.strerror or exc})") from None
        if explain_dir is not None:
            print(f"heatmaps (Grad-CAM) written to {explain_dir}")
        print(f"wrote {len(rows)} rows to {out} ({n_errors} unreadable) with backend {clf.backend}; {_calibration_note(clf)}")
    else:
        _print_table(header, rows)
        if explain_dir is not None:
            print(f"\nheatmaps (Grad-CAM) written to {explain_dir}")
        print(f"\n{len(rows)} images, {n_errors} unreadable, backend {clf.backend}; {_calibration_note(clf)}")
    if n_errors:
        print(f"error: {n_errors} of {len(rows)} inputs could not be read (listed above with the reason)", file=sys.stderr)
    return 1 if n_errors else 0


HEATMAP_SUFFIX = ".heatmap.png"


def _explain_folder(folder: str) -> Path:
    """The --explain folder: created if missing; an existing one may hold only heatmaps this command wrote."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise HarError(f"--explain {folder}: is a file; give a folder for the heatmaps")
    if out.is_dir():
        foreign = [p.name for p in out.iterdir() if not p.name.endswith(HEATMAP_SUFFIX)]
        if foreign:
            raise HarError(f"--explain {folder}: the folder holds other files ({foreign[0]}, ...); give a new or empty folder")
    elif not out.resolve().parent.is_dir():
        raise HarError(f"--explain {folder}: folder {out.parent} does not exist")
    out.mkdir(exist_ok=True)
    return out


def _write_heatmap(clf: "Classifier", path: str, folder: Path, index: int, class_index: int | None) -> Path:
    """<index>_<file name, sanitised>.heatmap.png: the Grad-CAM overlay of one input."""
    image, _, _ = clf.explain(path, class_index)
    out = folder / f"{index:04d}_{safe_filename(Path(path).stem, max_bytes=80, fallback='image')}{HEATMAP_SUFFIX}"
    Image.fromarray(image).save(out)
    return out


def _calibration_note(clf: Classifier) -> str:
    t = clf.calibration.temperature
    scores = f"scores calibrated (temperature {t:.2f})" if clf.calibration.fitted_on != "none" else "scores uncalibrated"
    return f"{scores}, 'unsure' below {clf.unsure_below:.2f}"


def _print_table(header: list[str], rows: list[list[str]]) -> None:
    # drop the error column when nothing failed, keep the table narrow
    if all(not r[-1] for r in rows):
        header, rows = header[:-1], [r[:-1] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    print(line(header))
    print(line(["-" * w for w in widths]))
    for r in rows:
        print(line(r))
    sys.stdout.flush()
