"""Which model the app serves, and loading it (a folder or a Hub id, through har_model.model_folder.resolve).

    load_model()                              # HAR_MODEL, else the default below; never raises (the app must start)

The default when HAR_MODEL is not set, first that exists: the model bundled beside app.py (``model/``, what
``publish-space`` writes into a Space), ``outputs/har15`` (what the README's training command writes), the first
model named in the ``models:`` list of the README.md front matter beside app.py (a Space that serves a Hub model).

Imports neither torch nor transformers: with an ONNX export the whole serving path runs without them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from huggingface_hub import metadata_load

from har_model.errors import HarError
from har_model.imaging import is_image_path
from har_model.model_folder import files
from har_model.model_folder.resolve import REPO_ID, resolve_model_dir
from har_model.serve.inference import Classifier

log = logging.getLogger("har_model.serve.model")

APP_ROOT = Path(__file__).resolve().parents[2]  # the folder of app.py: the repository, or a Space folder
BUNDLED_MODEL = "model"  # the model folder publish-space bundles into a Space, beside app.py
DEFAULT_MODEL = APP_ROOT / "outputs" / "har15"
TRAIN_HINT = (
    "Train one with `python train.py --data-dir DIR --output-dir outputs/har15` (DIR holds one sub-folder "
    "of images per action), or set `HAR_MODEL` to a model folder or a Hugging Face Hub model id, "
    "e.g. `HAR_MODEL=outputs/har15 python app.py`."
)
MODEL_IMAGES = {
    files.CONFUSION_MATRIX: "Confusion matrix on the test split (rows: true class)",
    files.TRAINING_CURVES: "Training curves",
    files.PREDICTIONS: "Test predictions (mistakes marked)",
}


def readme_models(folder: Path = APP_ROOT) -> list[str]:
    """The ``models:`` list of ``folder/README.md``'s front matter (a Space names the Hub models it uses there)."""
    try:
        models = (metadata_load(folder / files.CARD) or {}).get("models") or []
    except Exception:  # no README, no front matter, bad YAML: no models named
        return []
    return [str(m) for m in ([models] if isinstance(models, str) else models)]


def default_model_spec(root: Path = APP_ROOT) -> str | None:
    """The model served without HAR_MODEL (see the module docstring), or None when there is none."""
    for folder in (root / BUNDLED_MODEL, root / "outputs" / "har15"):
        if (folder / files.CONFIG).is_file():
            return str(folder)
    models = readme_models(root)
    return models[0] if models else None


@dataclass
class ModelHandle:
    """The shared classifier, or the reason there is none (shown in the UI instead of crashing)."""

    source: str
    classifier: object | None = None
    model_dir: Path | None = None
    problem: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The model as the app's answers and pages name it: a Hub id as is, a local folder by its name only
        (an absolute path says where the server keeps its files)."""
        return self.source if REPO_ID.match(self.source) and not Path(self.source).is_absolute() \
            else Path(self.source).name or self.source

    def public(self, text: str | None) -> str | None:
        """``text`` (a problem, a message) with the model's local paths and the app folder replaced by names."""
        if not text:
            return text
        for path in sorted({p for p in (self.source, str(self.model_dir or ""), _resolved(self.model_dir or self.source))
                            if p and p != self.name}, key=len, reverse=True):
            text = text.replace(path, self.name)
        return text.replace(f"{APP_ROOT}{os.sep}", "").replace(str(APP_ROOT), ".")

    def shown_files(self) -> list[Path]:
        """The only model files the app serves to browsers: the example images and the report plots it shows."""
        return [*self.info.get("examples", []), *self.info.get("images", {}).values()]

    def require(self):
        if self.classifier is None:
            raise HarError(self.public(self.problem) or "no model loaded")
        return self.classifier


def _resolved(path) -> str:
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError, ValueError):
        return ""


def load_model(spec: str | os.PathLike | None = None, backend: str | None = None) -> ModelHandle:
    """Load the classifier named by ``spec`` (default: env HAR_MODEL, else ``default_model_spec()``). Never raises."""
    if spec is None:
        spec = os.environ.get("HAR_MODEL") or default_model_spec()
    backend = backend or os.environ.get("HAR_BACKEND", "auto")
    handle = ModelHandle(source=str(spec if spec is not None else DEFAULT_MODEL))
    try:
        if spec is None:
            raise HarError(f"No model found at {DEFAULT_MODEL} (the default).")
        handle.model_dir = resolve_model_dir(spec)
        handle.classifier = Classifier.load(handle.model_dir, backend=backend)
        h, w = handle.classifier.image_size
        handle.classifier.predict_proba([np.zeros((h, w, 3), np.uint8)])  # warm up: the first user is not slower
        handle.info = read_model_info(handle.model_dir)
    except HarError as exc:
        handle.problem = f"{str(exc).rstrip('.')}. {TRAIN_HINT}"
    except Exception as exc:  # a broken model folder must not stop the app from starting
        log.exception("loading the model from %s failed", spec)
        handle.problem = f"{spec}: the model could not be loaded ({type(exc).__name__}: {exc}). {TRAIN_HINT}"
    if handle.problem:
        log.warning(handle.problem)
    return handle


def read_model_info(model_dir: Path) -> dict:
    """What the Model tab shows, from whatever of config.json / metrics.json / README.md / *.png exists."""
    info: dict = {"model_dir": str(model_dir)}
    for key, name in (("config", files.CONFIG), ("metrics", files.METRICS)):
        info[key] = files.read_optional(model_dir, name)
    try:
        info["card"] = metadata_load(model_dir / files.CARD) or {}
    except Exception:  # no card or unreadable front matter: the Model tab says less
        info["card"] = {}
    info["images"] = {n: model_dir / n for n in MODEL_IMAGES if (model_dir / n).is_file()}
    info["examples"] = pick_examples(model_dir / files.EXAMPLES)
    return info


def pick_examples(folder: Path, limit: int = 30) -> list[Path]:
    """Example images from the model folder, one per class first (train.py names them <class>_<k>.jpg)."""
    if not folder.is_dir():
        return []
    images = sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p))
    first, rest, seen = [], [], set()
    for p in images:
        key = p.stem.rsplit("_", 1)[0] if "_" in p.stem else p.stem
        (rest if key in seen else first).append(p)
        seen.add(key)
    return (first + rest)[:limit] if len(first) < limit else first[:limit]
