"""Which model to serve, and loading it: one resolver for the app, `predict`, `export-onnx` and `publish-space`.

    resolve_model_dir("outputs/har15")        # a local model folder, as is
    resolve_model_dir("user/har-model")       # a Hub model id: downloaded once (serving files only), then cached
    load_model()                              # HAR_MODEL, else the default below; never raises (the app must start)

The default when HAR_MODEL is not set, first that exists: the model bundled beside app.py (``model/``, what
``publish-space`` writes into a Space), ``outputs/har15`` (what the README's training command writes), the first
model named in the ``models:`` list of the README.md front matter beside app.py (a Space that serves a Hub model).

Imports neither torch nor transformers: with an ONNX export the whole serving path runs without them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from har_model.errors import HarError

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
    "confusion_matrix.png": "Confusion matrix on the test split (rows: true class)",
    "training_curves.png": "Training curves",
    "predictions.png": "Test predictions (mistakes marked)",
}
# What serving reads from a Hub model repo (never the checkpoints or a dataset copy)
HUB_FILES = ["*.json", "*.safetensors", "*.md", "*.png", "examples/*", "onnx/*"]
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def is_hub_id(spec: str | os.PathLike) -> bool:
    """``owner/name`` that is not an existing local path."""
    return bool(REPO_ID.match(str(spec))) and not Path(str(spec)).expanduser().exists()


def resolve_model_dir(spec: str | os.PathLike, *, flag: str = "HAR_MODEL") -> Path:
    """A local model folder as is; otherwise a Hub model id, downloaded (or taken from the local cache).

    ``flag`` names the setting in error messages (``HAR_MODEL``, ``--model``). Raises HarError (one line).
    """
    spec = str(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise HarError(f"{flag}={spec}: is a file; give the model folder that train.py wrote")
    if not REPO_ID.match(spec):
        raise HarError(f"{flag}={spec}: no such model folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(spec, allow_patterns=HUB_FILES))
    except Exception as exc:  # offline, unknown repo, gated, network: all mean "no model"
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        why = ("the Hub is disabled here (HF_HUB_OFFLINE=1) and it is not in the local cache" if offline
               else f"{type(exc).__name__}: {detail}")
        raise HarError(
            f"{flag}={spec}: not a local folder, and it could not be fetched from the Hugging Face Hub ({why})"
        ) from None


def readme_models(folder: Path = APP_ROOT) -> list[str]:
    """The ``models:`` list of ``folder/README.md``'s front matter (a Space names the Hub models it uses there)."""
    try:
        from huggingface_hub import metadata_load

        models = (metadata_load(folder / "README.md") or {}).get("models") or []
    except Exception:  # no README, no front matter, bad YAML: no models named
        return []
    return [str(m) for m in ([models] if isinstance(models, str) else models)]


def default_model_spec(root: Path = APP_ROOT) -> str | None:
    """The model served without HAR_MODEL (see the module docstring), or None when there is none."""
    for folder in (root / BUNDLED_MODEL, root / "outputs" / "har15"):
        if (folder / "config.json").is_file():
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
        from har_model.serve.inference import Classifier

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
    for name in ("config.json", "metrics.json"):
        try:
            info[name.split(".")[0]] = json.loads((model_dir / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    try:
        from huggingface_hub import metadata_load

        info["card"] = metadata_load(model_dir / "README.md") or {}
    except Exception:
        info["card"] = {}
    info["images"] = {n: model_dir / n for n in MODEL_IMAGES if (model_dir / n).is_file()}
    info["examples"] = pick_examples(model_dir / "examples")
    return info


def pick_examples(folder: Path, limit: int = 30) -> list[Path]:
    """Example images from the model folder, one per class first (train.py names them <class>_<k>.jpg)."""
    from har_model.imaging import is_image_path

    if not folder.is_dir():
        return []
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_path(p))
    first, rest, seen = [], [], set()
    for p in files:
        key = p.stem.rsplit("_", 1)[0] if "_" in p.stem else p.stem
        (rest if key in seen else first).append(p)
        seen.add(key)
    return (first + rest)[:limit] if len(first) < limit else first[:limit]


def copy_model_files(src: Path, dst: Path, patterns: list[str] = HUB_FILES) -> Path:
    """Copy the files of model folder ``src`` matching ``patterns`` (relative paths, fnmatch) into ``dst``.

    ``dst`` must not exist or be empty: nothing already there is overwritten. Symlinks (the Hub cache) are copied
    as the files they point to. Returns ``dst``.
    """
    from fnmatch import fnmatch

    src, dst = Path(src), Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise HarError(f"{dst}: already exists and is not empty; choose a new folder (nothing was overwritten)")
    files = [p for p in sorted(src.rglob("*")) if p.is_file() and not p.name.startswith(".")  # no marker
             and any(fnmatch(p.relative_to(src).as_posix(), pat) for pat in patterns)]
    if not (src / "config.json").is_file():
        raise HarError(f"{src}: no config.json (not a saved model folder)")
    try:
        for path in files:
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    except OSError as exc:  # a path through a file, no permission, a full disk
        raise HarError(f"{dst}: cannot write there ({exc.strerror or exc})") from None
    return dst
