"""Finding a model folder: a local folder as is, or a Hub model id downloaded (serving files only) and cached.

    resolve_model_dir("outputs/har15")        # a local model folder, as is
    resolve_model_dir("user/har-model")       # a Hub model id: downloaded once, then taken from the cache
    copy_model_files(src, dst, patterns)      # a copy of some of a folder's files (export-onnx, publish-space)
"""

from __future__ import annotations

import os
import re
from fnmatch import fnmatch
from pathlib import Path

from har_model.errors import HarError
from har_model.model_folder.files import require_config

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
    from huggingface_hub import snapshot_download  # only a Hub id needs the Hub client (slow to import)

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


def copy_model_files(src: Path, dst: Path, patterns: list[str] = HUB_FILES) -> Path:
    """Copy the files of model folder ``src`` matching ``patterns`` (relative paths, fnmatch) into ``dst``.

    ``dst`` must not exist or be empty: nothing already there is overwritten. Symlinks (the Hub cache) are copied
    as the files they point to. Returns ``dst``.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise HarError(f"{dst}: already exists and is not empty; choose a new folder (nothing was overwritten)")
    files = [p for p in sorted(src.rglob("*")) if p.is_file() and not p.name.startswith(".")  # no marker
             and any(fnmatch(p.relative_to(src).as_posix(), pat) for pat in patterns)]
    require_config(src)
    try:
        for path in files:
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    except OSError as exc:  # a path through a file, no permission, a full disk
        raise HarError(f"{dst}: cannot write there ({exc.strerror or exc})") from None
    return dst
