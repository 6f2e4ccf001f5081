"""Pushing a finished folder (dataset repository or model) to the Hugging Face Hub.

The token comes from the argument, ``HF_TOKEN`` or the cached ``hf auth login``; it is never printed,
logged or put in an error message. Every failure (no token, offline, network, permissions) is one
HarError that says the local folder is kept and how to retry.
"""

from __future__ import annotations

import os
from pathlib import Path

from har_model.errors import HarError


def _offline() -> bool:
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(v.strip().upper() in ("1", "ON", "YES", "TRUE") for v in flags)


def resolve_token(token: str | None = None) -> str | None:
    """The explicit token, else ``HF_TOKEN`` / the cached login (``huggingface_hub.get_token``), else None."""
    if token:
        return token
    from huggingface_hub import get_token

    return get_token()


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "model",
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    ignore_patterns: list[str] | None = None,
) -> str:
    """Create ``repo_id`` if needed (``exist_ok``) and upload ``folder`` (less ``ignore_patterns``); return the URL."""
    folder = Path(folder)
    if repo_type not in ("model", "dataset"):
        raise HarError(f"repo_type must be 'model' or 'dataset', got {repo_type!r}")
    if not folder.is_dir():
        raise HarError(f"{folder}: no such folder to push")
    retry = (
        f"The local folder {folder} is kept; retry with `hf upload {repo_id} {folder} --repo-type {repo_type}"
        + "".join(f" --exclude '{pattern}'" for pattern in ignore_patterns or [])
        + "` "
        f"(after `hf auth login` or with HF_TOKEN set)."
    )
    if _offline():
        raise HarError(f"cannot push to the Hub repo {repo_id}: offline mode is on (HF_HUB_OFFLINE). {retry}")
    token = resolve_token(token)
    if not token:
        raise HarError(
            f"cannot push to the Hub repo {repo_id}: no Hugging Face token (set HF_TOKEN or run `hf auth login`). {retry}"
        )
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        api.upload_folder(
            repo_id=url.repo_id,
            folder_path=folder,
            repo_type=repo_type,
            ignore_patterns=ignore_patterns,
            commit_message=commit_message or f"Upload {folder.name} with har_model",
        )
    except Exception as exc:  # network, auth, permissions, bad repo id: all become one clear line
        reason = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, token)
        raise HarError(f"cannot push {folder} to the Hub repo {repo_id}: {reason}. {retry}") from None
    return str(url)
