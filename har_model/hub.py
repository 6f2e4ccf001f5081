"""Pushing a finished folder (dataset repository, model or Space) to the Hugging Face Hub.

The token comes from the argument, ``HF_TOKEN`` or the cached ``hf auth login``; it is never printed,
logged or put in an error message. Every failure (no token, offline, network, permissions) is one
HarError that says the local folder is kept and how to retry.

A push replaces what it publishes: in the same commit as the upload, it deletes the remote files that the project
itself writes into that kind of repository (``REPLACED``) and that the new folder no longer has -- old parquet
shards that ``data/train-*`` would still load, an old ``onnx/model.onnx`` that the app would prefer, old examples.
Nothing else in the repository is touched.

Every push (model, dataset, Space) uploads an explicit allow-list: the files the project wrote into the folder (its
marker's list), of the kinds that belong in the repository (``har_model.outputs.PUSHED``, the same patterns as
``REPLACED``); a ``.env``, notes or checkpoints lying beside them stay local. The retry command printed after a
failed push names exactly that list (``hf upload ... --include FILE`` per file), so it cannot upload more. A
successful push records its repo id in the folder's marker (``har_model.outputs.pushed_to``): training from a pushed
dataset folder names it in the model card's ``datasets:``, and ``publish-space`` names a pushed model in the Space's
``models:``.
"""

from __future__ import annotations

import os
import shlex
from fnmatch import fnmatch
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token

from har_model.errors import HarError
from har_model.outputs import PUSHED, files_to_push, record_push

REPO_TYPES = ("model", "dataset", "space")
# Remote files the project writes (fnmatch patterns, relative to the repository root), per repository type: the
# very list of what is uploaded (one list of "files the project writes")
REPLACED = {kind: list(patterns) for kind, patterns in PUSHED.items()}
SPACE_SDK = "gradio"


def _offline() -> bool:
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(v.strip().upper() in ("1", "ON", "YES", "TRUE") for v in flags)


def resolve_token(token: str | None = None) -> str | None:
    """The explicit token, else ``HF_TOKEN`` / the cached login (``huggingface_hub.get_token``), else None."""
    if token:
        return token
    return get_token()


def require_hub(what: str) -> None:
    """HarError naming ``what`` unless the Hub can be reached with a token (offline mode off, a token known)."""
    if _offline():
        raise HarError(f"{what} needs the Hugging Face Hub, and offline mode is on (HF_HUB_OFFLINE)")
    if not resolve_token():
        raise HarError(f"{what} needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")


def full_repo_id(repo_id: str) -> str:
    """NAME -> USER/NAME for the token's user (as the Hub itself places a repo created as NAME); unchanged where the
    repo id has an owner, or the Hub cannot say (offline, no token: a later push then says why it failed)."""
    if "/" in repo_id or _offline():
        return repo_id
    token = resolve_token()
    if not token:
        return repo_id
    try:
        return f"{HfApi(token=token).whoami()['name']}/{repo_id}"
    except Exception:  # network, auth: the push at the end reports it
        return repo_id


def _scrub(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def commit_operations(folder: Path, remote_files: list[str], *, replaced: list[str], files: list[str]) -> list:
    """One commit's operations: delete the stale remote files matching ``replaced``, then add the local ``files``."""
    keep = set(files)
    stale = [f for f in remote_files
             if f not in keep and f != ".gitattributes" and any(fnmatch(f, pattern) for pattern in replaced)]
    return ([CommitOperationDelete(path_in_repo=f) for f in stale]
            + [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(Path(folder) / rel)) for rel in files])


def _literal(name: str) -> str:
    """A file name as an fnmatch pattern that matches only itself (``hf upload --include`` takes patterns)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def retry_command(folder: Path, repo_id: str, repo_type: str, files: list[str], private: bool = False) -> str:
    """The `hf upload` command that pushes exactly ``files`` (one --include each) and deletes the same stale files
    (``--private``: creating the repository as private, as the push would have)."""
    parts = ["hf", "upload", repo_id, str(folder), "--repo-type", repo_type] + ["--private"] * private
    parts += [arg for rel in files for arg in ("--include", _literal(rel))]
    parts += [arg for pattern in REPLACED[repo_type] for arg in ("--delete", pattern)]
    return shlex.join(parts)


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    repo_type: str = "model",
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Create ``repo_id`` if needed (``exist_ok``; a Space as a Gradio Space) and upload ``folder``'s allow-list
    (``files_to_push``: written by the project for this kind of repository, complete) in one commit that also
    deletes the stale files the project wrote (``REPLACED``); return the URL."""
    folder = Path(folder)
    if repo_type not in REPO_TYPES:
        raise HarError(f"repo_type must be one of {', '.join(REPO_TYPES)}, got {repo_type!r}")
    if not folder.is_dir():
        raise HarError(f"{folder}: no such folder to push")
    files = files_to_push(folder, repo_type)
    retry = (f"The local folder {folder} is kept; retry with `{retry_command(folder, repo_id, repo_type, files, private)}` "
             "(after `hf auth login` or with HF_TOKEN set).")
    if _offline():
        raise HarError(f"cannot push to the Hub repo {repo_id}: offline mode is on (HF_HUB_OFFLINE). {retry}")
    token = resolve_token(token)
    if not token:
        raise HarError(
            f"cannot push to the Hub repo {repo_id}: no Hugging Face token (set HF_TOKEN or run `hf auth login`). {retry}"
        )
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True,
                              **({"space_sdk": SPACE_SDK} if repo_type == "space" else {}))
        remote = api.list_repo_files(url.repo_id, repo_type=repo_type)
        operations = commit_operations(folder, remote, replaced=REPLACED[repo_type], files=files)
        api.create_commit(
            repo_id=url.repo_id,
            repo_type=repo_type,
            operations=operations,
            commit_message=commit_message or f"Upload {folder.name} with har_model",
        )
    except Exception as exc:  # network, auth, permissions, bad repo id: all become one clear line
        reason = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, token)
        raise HarError(f"cannot push {folder} to the Hub repo {repo_id}: {reason}. {retry}") from None
    record_push(folder, url.repo_id)  # the model card, the Space and later runs name the repo the folder now is in
    return str(url)
