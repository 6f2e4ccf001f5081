"""Publish the app as a Hugging Face Space in one command.

    python train.py publish-space --model outputs/har15 --space USER/NAME [--private] [--dir FOLDER] [--dry-run]

The Space folder holds only what serving needs: ``app.py``, the serving part of this package (the modules the app
imports, never the training or dataset stages), a runtime ``requirements.txt``, a README.md whose front matter
configures the Space, and -- for a local model folder -- the model's serving files in ``model/`` (config, image
processor, one ONNX file -- int8 where its agreement gate passed at export, else float32 --, metrics, plots,
examples). A model without an ONNX export is exported first (float32), into the Space's copy, so the Space runs on
numpy, Pillow, onnxruntime, av, gradio and huggingface_hub: no torch, no transformers. A Hub model id is not
bundled: it is named in ``models:`` (and ``preload_from_hub``) and downloaded when the Space starts; the app serves
the first model of ``models:`` when no model is bundled and HAR_MODEL is unset.

``--dry-run`` assembles the folder without pushing (``--dir`` keeps it where you say; otherwise it is a temporary
folder, removed after a successful push and kept after a failed one).
"""

from __future__ import annotations

import argparse
import ast
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData, metadata_load

from har_model.errors import HarError, command
from har_model.hub import push_folder, retry_command
from har_model.model_folder import files
from har_model.model_folder.onnx import export_onnx
from har_model.model_folder.resolve import REPO_ID, copy_model_files, is_hub_id, resolve_model_dir
from har_model.outputs import PUSHED, Publication, claim_output_dir, files_to_push, pushed_to, read_marker
from har_model.serve.inference import Classifier
from har_model.serve.model import APP_ROOT, BUNDLED_MODEL

PACKAGE = "har_model"
SERVING_ENTRY = ("har_model.serve.ui", "har_model.serve.model")  # the app imports these; the rest follows
NOT_SERVING = ("har_model.train", "har_model.data")  # never imported by serving (tests/test_layout.py); a guard
RUNTIME_REQUIREMENTS = "requirements-space.txt"
# Only when the model has no ONNX export (a Hub model without one): the torch backend. The Space runs on CPU, so
# the CPU build (a few hundred MB instead of several GB of CUDA libraries).
TORCH_REQUIREMENTS = ["--extra-index-url https://download.pytorch.org/whl/cpu", "torch>=2.6", "transformers>=5.0,<6",
                      "safetensors>=0.4"]
# Model files a Space serves from: what a model push uploads, less the torch weights (served through the ONNX
# export) and the ONNX files, of which it gets one (bundled_files)
ONNX_PATHS = [f"{files.ONNX_DIR}/{name}" for name in files.ONNX_FILES]
BUNDLED_FILES = [p for p in PUSHED["model"] if p != files.WEIGHTS and p not in ONNX_PATHS]
# The app's tabs, as the Space card lists them (a test checks them against the tabs the app builds)
APP_TABS = (
    ("Image", "upload, webcam or paste; top-5 and the decision"),
    ("Video", "per-frame labels, smoothed, segments"),
    ("Live", "the webcam streamed and classified as it goes"),
    ("Batch", "many photos, CSV"),
    ("Model", "classes, metrics and plots"),
)
HARDWARE = "cpu-basic"
SPACE_TAG = "har_model"  # in the Space card's tags: marks a folder publish-space may replace on a re-run
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"  # the tested one; Spaces' default is older


# --------------------------------------------------------------------------------------------- the package


def _module_file(module: str) -> Path | None:
    base = APP_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path) -> set[str]:
    """har_model.* modules a file imports, at any depth (``from a import b`` counts as a.b when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m.split(".")[0] == PACKAGE and _module_file(m) is not None}


def serving_modules() -> list[Path]:
    """The package files serving needs: every module the app reaches, with the package __init__ files on the way."""
    todo, seen = list(SERVING_ENTRY), set()
    while todo:
        module = todo.pop()
        if module in seen or module.startswith(NOT_SERVING):
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run on import
        todo += sorted(_imported_modules(_module_file(module)))
    return sorted(_module_file(m).relative_to(APP_ROOT) for m in seen)


# --------------------------------------------------------------------------------------------- requirements


def runtime_requirements(needs_torch: bool) -> list[str]:
    """The Space's requirements.txt lines: requirements-space.txt, gradio pinned to the sdk_version, torch if needed."""
    import gradio  # optional here: only publish-space, not the other commands, needs to know its version

    source = APP_ROOT / RUNTIME_REQUIREMENTS
    if not source.is_file():
        raise HarError(f"{source}: missing (the serving requirements publish-space copies into the Space)")
    lines = []
    for raw in source.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            # Spaces install the sdk_version of gradio; pinning it here makes a local venv match the Space
            lines.append(f"gradio=={gradio.__version__}" if line.replace("_", "-").startswith("gradio") else line)
    return lines + (TORCH_REQUIREMENTS if needs_torch else [])


# --------------------------------------------------------------------------------------------- the card


def _model_card_metadata(model_dir: Path | None) -> dict:
    if model_dir is None:
        return {}
    try:
        return metadata_load(model_dir / files.CARD) or {}
    except Exception:  # no card or unreadable front matter: the Space card just says less
        return {}


def _metrics(model_dir: Path | None) -> dict:
    return files.read_optional(model_dir, files.METRICS) if model_dir else {}


def _labels(model_dir: Path | None) -> list[str]:
    """The class names where the folder has a readable config.json (else none: the card just says less)."""
    try:
        return files.read_labels(model_dir) if model_dir else []
    except (HarError, OSError):
        return []


def short_description(labels: list[str]) -> str:
    """The Hub shows at most 60 characters."""
    text = f"Name the action in photos and videos ({len(labels)} classes)" if labels else "Name the action in photos and videos"
    return text[:60]


def render_space_card(*, space_id: str, hub_model: str | None, model_dir: Path | None, model_ids: list[str],
                      needs_torch: bool, dataset_ids: list[str] | None = None) -> str:
    """README.md of the Space: complete front matter and a short description of the model with its test metrics.
    ``models:`` = ``model_ids``; ``datasets:`` = the model card's, else ``dataset_ids``."""
    import gradio  # optional here: only publish-space needs its version

    card_meta, metrics, labels = _model_card_metadata(model_dir), _metrics(model_dir), _labels(model_dir)
    datasets = card_meta.get("datasets")
    datasets = datasets or dataset_ids  # the model card's, else where the model folder's dataset copy was pushed
    data = SpaceCardData(
        title="Human Action Recognition",
        sdk="gradio",
        sdk_version=gradio.__version__,
        python_version=PYTHON_VERSION,
        app_file="app.py",
        license=card_meta.get("license") or "apache-2.0",
        models=model_ids or None,
        datasets=([datasets] if isinstance(datasets, str) else datasets) or None,
        tags=["image-classification", "human-action-recognition", "video", SPACE_TAG],
        emoji="🏃",
        colorFrom="indigo",
        colorTo="green",
        pinned=False,
        short_description=short_description(labels),
        suggested_hardware=HARDWARE,
        **({"preload_from_hub": [hub_model]} if hub_model else {}),
    )
    return str(SpaceCard.from_template(data, template_str=_card_body(space_id, hub_model, metrics, labels, needs_torch)))


def _card_body(space_id: str, hub_model: str | None, metrics: dict, labels: list[str], needs_torch: bool) -> str:
    test = metrics.get("test") or {}
    source = f"[`{hub_model}`](https://huggingface.co/{hub_model}) (downloaded when the Space starts)" if hub_model \
        else "the model bundled in `model/`"
    lines = [
        "---", "{{ card_data }}", "---", "", "# Human action recognition", "",
        f"Names what a person is doing in a photo, a webcam snapshot or a video, with {source}.",
    ]
    if labels:
        lines += ["", f"Classes ({len(labels)}): {', '.join(labels)}."]
    if isinstance(test.get("accuracy"), (int, float)):
        f1 = f", macro-F1 **{test['macro_f1']:.3f}**" if isinstance(test.get("macro_f1"), (int, float)) else ""
        n = metrics.get("num_test")
        lines += ["", f"Measured on the held-out test split{f' ({n} images)' if n else ''}: accuracy "
                      f"**{test['accuracy']:.3f}**{f1}."]
    backend = "PyTorch (the model has no ONNX export)" if needs_torch else "ONNX Runtime on CPU (no PyTorch needed)"
    lines += [
        "", f"Runs on {backend}. Tabs: " + ", ".join(f"{name} ({what})" for name, what in APP_TABS) + ".",
        "", "API (`pip install gradio_client`):", "", "```python", "from gradio_client import Client, handle_file", "",
        f'client = Client("{space_id}")',
        'label, headline, answer = client.predict(handle_file("photo.jpg"), api_name="/classify_image")',
        'answer  # {"decision": "unsure" or the action, "confidence": ..., "unsure_below": ..., "top_k": [...]}',
        "```", "",
        "Published with the har_model project's `python train.py publish-space`. Set the variable `HAR_MODEL` (a Hub "
        "model id) in the Space's settings to serve another model.", "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- assembling


def written_by_publish_space(folder: Path) -> bool:
    """A Space folder from an earlier run: its card carries our tag, and it is not a checkout of this project (which
    also has app.py and har_model/, but with train.py and the training stage)."""
    if folder.resolve() == APP_ROOT or (folder / "train.py").exists() or (folder / PACKAGE / "train").exists():
        return False
    try:
        meta = metadata_load(folder / "README.md") or {}
    except Exception:  # no README or unreadable front matter: not ours
        return False
    return meta.get("sdk") == "gradio" and SPACE_TAG in (meta.get("tags") or []) and (folder / "app.py").is_file()


def claim_space_folder(folder: Path) -> Path:
    """A new or empty folder, or one that publish-space wrote before (its own files are then replaced; a Space
    folder from before the marker existed is recognised by its card). Anything else is refused in one line."""
    legacy = (folder.is_dir() and read_marker(folder) is None and any(folder.iterdir())
              and written_by_publish_space(folder))
    try:
        return claim_output_dir(folder, "space", flag="--dir", overwrite=legacy)
    except HarError as exc:
        if "did not write" not in str(exc):
            raise
        raise HarError(f"--dir {folder}: not empty and not a Space folder written by publish-space; "
                       "choose a new or empty folder (nothing was changed)") from None


def bundled_files(model_dir: Path) -> list[str]:
    """BUNDLED_FILES with the one ONNX file the app would serve (``files.choose_onnx_file``): int8 where its
    agreement gate passed at export (a quarter of the download, faster on the Space's 2 cores, the same answer on
    >= 99% of the validation images), else float32; the torch weights instead when there is no export."""
    chosen = files.choose_onnx_file(model_dir)
    return BUNDLED_FILES + [f"{files.ONNX_DIR}/{chosen.name}" if chosen is not None else files.WEIGHTS]


def bundle_model(model_dir: Path, folder: Path) -> Path:
    """Copy the serving files into ``folder/model``; export ONNX into that copy when the model has none."""
    Classifier.load(model_dir)  # a folder every other reader refuses (unfinished, inconsistent) is not shipped either
    target = folder / BUNDLED_MODEL
    exported = files.has_onnx(model_dir)
    copy_model_files(model_dir, target, bundled_files(model_dir))
    if not exported:
        from transformers.utils import logging as hf_logging  # optional: only an export needs transformers

        hf_logging.disable_progress_bar()  # stderr keeps to one error line when a later step fails
        print(f"{model_dir} has no ONNX export: exporting one into the Space's copy", flush=True)
        export_onnx(target, quantize=False)
        (target / files.WEIGHTS).unlink()  # served through ONNX Runtime: the torch weights stay home
    return target


def assemble_space(model: str, space_id: str, folder: Path, model_ids: list[str] | None = None) -> dict:
    """Write the Space folder whole or not at all (a failure keeps the previous one); return what went in
    (``needs_torch``, ``bundled``, ``models``)."""
    out = claim_space_folder(folder)
    with Publication(out, "space") as stage:
        return _assemble(model, space_id, stage, list(model_ids or []))


def _assemble(model: str, space_id: str, folder: Path, model_ids: list[str]) -> dict:
    hub_model, dataset_ids = (model if is_hub_id(model) else None), []
    if hub_model:
        try:  # look inside to see whether it has an ONNX export (and read its card and metrics)
            model_dir = resolve_model_dir(hub_model, flag="--model")
        except HarError as exc:
            print(f"note: {exc}; assuming it has no ONNX export (the Space then installs torch)", flush=True)
            model_dir = None
        needs_torch = model_dir is None or not files.has_onnx(model_dir)
        model_ids = [hub_model] + [m for m in model_ids if m != hub_model]
    else:
        source = resolve_model_dir(model, flag="--model")
        model_dir = bundle_model(source, folder)
        needs_torch = False
        # where train.py --push-to-hub (or any push of the folder) put this model: the model page lists the Space
        model_ids = model_ids or ([pushed_to(source)] if pushed_to(source) else [])
        dataset_ids = [pushed_to(source / "dataset")] if pushed_to(source / "dataset") else []
    for rel in serving_modules():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(APP_ROOT / rel, folder / rel)
    shutil.copyfile(APP_ROOT / "app.py", folder / "app.py")
    (folder / "requirements.txt").write_text("\n".join(runtime_requirements(needs_torch)) + "\n", encoding="utf-8")
    card = render_space_card(space_id=space_id, hub_model=hub_model, model_dir=model_dir, model_ids=model_ids,
                             needs_torch=needs_torch, dataset_ids=dataset_ids)
    (folder / "README.md").write_text(card, encoding="utf-8")
    return {"needs_torch": needs_torch, "bundled": hub_model is None, "models": model_ids}


def publish_space(model: str, space_id: str, *, private: bool = False, folder: Path | None = None,
                  dry_run: bool = False, model_ids: list[str] | None = None) -> Path:
    """Assemble the Space folder and (unless ``dry_run``) push it; return the folder (kept unless temporary)."""
    if not REPO_ID.match(space_id):
        raise HarError(f"--space {space_id}: give a Space id as USER/NAME")
    for model_id in model_ids or []:
        if not REPO_ID.match(model_id):
            raise HarError(f"--model-id {model_id}: give a Hub model id as USER/NAME")
    temporary = folder is None
    folder = Path(tempfile.mkdtemp(prefix="har_space_")) if temporary else Path(folder)
    facts = assemble_space(model, space_id, folder, model_ids)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"Space folder {folder}: {size / 1e6:.1f} MB, "
          f"{'model bundled' if facts['bundled'] else 'model from the Hub: ' + facts['models'][0]}, "
          f"runtime {'with' if facts['needs_torch'] else 'without'} torch", flush=True)
    again = command_line(model, space_id, private=private, folder=None if temporary else folder, model_ids=model_ids)
    if dry_run:
        upload = retry_command(folder, space_id, "space", files_to_push(folder, "space"), private)
        print(f"dry run: nothing pushed. Push it with `{again}` or `{upload}`.")
        return folder
    try:
        url = push_folder(folder, space_id, repo_type="space", private=private,
                          commit_message=f"Publish the har_model app ({Path(model).name})")
    except HarError as exc:
        raise HarError(f"{exc} Or run `{again}` again.") from None
    print(f"Space pushed: {url}")
    if temporary:
        shutil.rmtree(folder, ignore_errors=True)
    return folder


def command_line(model: str, space_id: str, *, private: bool = False, folder: Path | None = None,
                 model_ids: list[str] | None = None) -> str:
    """The publish-space command with every flag given (less --dry-run), quoted for a shell: to retry, or to push."""
    words = [*command("publish-space").split(), "--model", str(model), "--space", space_id]
    words += ["--private"] * private + (["--dir", str(folder)] if folder is not None else [])
    for model_id in model_ids or []:
        words += ["--model-id", model_id]
    return shlex.join(words)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=command("publish-space"), description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--model", required=True,
                   help="model folder written by train.py (bundled into the Space) or a Hub model id (loaded at start)")
    p.add_argument("--space", required=True, metavar="USER/NAME", help="the Space repository to create or update")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument("--dir", type=Path, default=None, metavar="FOLDER",
                   help="assemble the Space in FOLDER and keep it (default: a temporary folder)")
    p.add_argument("--dry-run", action="store_true", help="assemble the folder, do not push")
    p.add_argument("--model-id", action="append", default=[], metavar="USER/NAME",
                   help="a Hub model to name in the Space's `models:`; repeatable (default: the repo the model "
                        "folder was pushed to by train.py --push-to-hub, if it was)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    publish_space(args.model, args.space, private=args.private, folder=args.dir, dry_run=args.dry_run,
                  model_ids=args.model_id)
    return 0
