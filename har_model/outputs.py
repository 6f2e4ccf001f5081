"""Output folders the project owns, results that appear whole or not at all, and what may leave the machine.

Every folder the project writes (a dataset repository, a model folder) holds ``MARKER`` (``.har_model.json``):

    {"kind": "model", "complete": true, "files": ["README.md", "config.json", ...], "dirs": ["checkpoints"]}

``files`` lists every file the project wrote there, ``dirs`` the folders that are wholly its own (training
checkpoints). That one small file answers every question about the folder:

    claim_output_dir  may we write here? New, empty or ours: yes. A non-empty folder we did not write: refused with
                      one line naming it and --overwrite. Never the input itself, a folder inside it or around it.
    Publication       a result is written into a hidden staging folder inside the output folder and moved into place
                      (os.replace, file by file) only once complete. The marker says "incomplete" only for the
                      moment of those moves, so an interruption or a full disk while writing leaves the previous
                      result as it was, and a stop during the moves leaves a folder every reader refuses.
    require_complete  what every reader calls first: a folder whose marker says incomplete is refused in one line.
    clear_owned       --overwrite: removes exactly what the project wrote there (files, checkpoints, leftovers).
    files_to_push     the upload allow-list: files the project wrote, of the kinds that belong on the Hub (the same
                      list for a model, a dataset and a Space folder).
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import sys
from fnmatch import fnmatch
from pathlib import Path

from har_model.errors import HarError

MARKER = ".har_model.json"
STAGING_PREFIX = ".har_model-staging-"
KINDS = ("dataset", "model", "space")
# What may be pushed, per kind: the files the project writes that belong in a Hub repository (never checkpoints,
# the dataset copy inside a model folder, the marker or anything a user put there). Also the patterns whose stale
# copies a re-push may delete on the Hub.
PUSHED = {
    "dataset": (
        "README.md", "data_report.json", "data/*-*-of-*.parquet", "images/class_distribution.png",
        "images/sample_grid.jpg",
    ),
    "model": (
        "README.md", "config.json", "model.safetensors", "preprocessor_config.json", "metrics.json",
        "training_curves.png", "confusion_matrix.png", "predictions.png", "examples/*.jpg",
        "onnx/model.onnx", "onnx/model_int8.onnx", "onnx/export_info.json",
        "calibration.json",  # a temperature fitted for other weights must not survive a push of new ones
    ),
    # a Space folder (publish-space): the app, the serving modules and the bundled model's serving files
    "space": ("app.py", "requirements.txt", "README.md", "har_model/*.py", "model/*"),
}
# OSErrors a user causes (full disk, no permission, read-only mount, name too long): one line, never a traceback.
USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG}


# --------------------------------------------------------------------------------------------------- marker


def new_marker(kind: str) -> dict:
    return {"kind": kind, "complete": False, "files": [], "dirs": []}


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The folder's marker, or None when the project did not write the folder (no marker)."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        return {**new_marker("damaged"), "kind": None}  # ours, but nothing in it can be trusted
    return {**new_marker(data["kind"]), **data}


def write_marker(folder: str | os.PathLike, marker: dict) -> None:
    atomic_write_text(Path(folder) / MARKER, json.dumps(marker, indent=1, sort_keys=True) + "\n")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary sibling, flushed to disk, renamed over the target."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# ------------------------------------------------------------------------------------------------- claiming


def check_not_input(out: str | os.PathLike, inputs, flag: str = "--output-dir") -> None:
    """Refuse an output folder that is an input, lies inside one, or contains one (writing would mix them up)."""
    target = Path(out).expanduser().resolve()
    for given in inputs:
        if not given or not Path(given).expanduser().exists():
            continue  # a Hub id or nothing: no local folder to collide with
        source = Path(given).expanduser().resolve()
        relation = ("is" if target == source else "is inside" if source in target.parents
                    else "contains" if target in source.parents else None)
        if relation:
            raise HarError(f"{flag} {out}: {relation} the input {given}; choose an output folder outside it")


def claim_output_dir(out: str | os.PathLike, kind: str, *, flag: str = "--output-dir", overwrite: bool = False,
                     inputs=()) -> Path:
    """Make ``out`` a folder of ours to write a ``kind`` into, or refuse in one line (see the module docstring).

    ``overwrite`` is the user's consent to write into a folder the project did not create (its other files are
    kept) or one holding another kind of result (which is cleared)."""
    out = Path(out).expanduser()
    check_not_input(out, inputs, flag)
    if out.exists() and not out.is_dir():
        raise HarError(f"{flag} {out}: exists and is a file, not a folder")
    marker = read_marker(out) if out.is_dir() else None
    if marker is None and out.is_dir() and any(out.iterdir()) and not overwrite:
        raise HarError(f"{flag} {out}: this folder exists and holds files that har_model did not write; choose a new "
                       "or empty folder, or add --overwrite to write into it anyway (its other files are kept)")
    if marker is not None and marker["kind"] not in (None, kind) and not overwrite:
        raise HarError(f"{flag} {out}: holds a har_model {marker['kind']}, not a {kind}; choose another folder, or "
                       "add --overwrite to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        if marker is not None and marker["kind"] != kind:
            clear_owned(out)
        if marker is None or marker["kind"] != kind:
            write_marker(out, new_marker(kind))
        remove_stale_staging(out)
    except OSError as exc:
        raise HarError(f"{flag} {out}: cannot write there ({exc.strerror or exc})") from None
    return out


def own_dir(out: str | os.PathLike, name: str) -> Path:
    """Record ``out/name`` as a folder wholly the project's (e.g. training checkpoints) and return its path."""
    marker = read_marker(out)
    if marker is None:
        raise HarError(f"{out}: not a folder written by har_model")
    if name not in marker["dirs"]:
        write_marker(out, {**marker, "dirs": sorted({*marker["dirs"], name})})
    return Path(out) / name


def require_complete(folder: str | os.PathLike) -> None:
    """Refuse (one line) a folder the project began writing but did not finish. Folders without a marker were
    not written here (a Hub download, someone's save_pretrained): nothing to judge."""
    marker = read_marker(folder)
    if marker is not None and not marker.get("complete"):
        what = f"{marker['kind']} folder" if marker.get("kind") else "folder"
        raise HarError(f"{folder}: incomplete {what} (a har_model run was interrupted or failed before finishing "
                       "it, or is still writing it); run that command again")


def clear_owned(out: str | os.PathLike) -> None:
    """Remove what the project wrote in ``out`` (its files, its folders, staging leftovers) and nothing else."""
    out = Path(out)
    marker = read_marker(out)
    if marker is None:
        return
    clear_run_state(out)
    for rel in marker["files"]:
        path = _inside(out, rel)
        if path is not None:
            path.unlink(missing_ok=True)
    _prune_empty_dirs(out, marker["files"])
    write_marker(out, {**new_marker(marker["kind"] or "damaged"), "kind": marker["kind"]})


def clear_run_state(out: str | os.PathLike, keep: str | os.PathLike | None = None) -> None:
    """Remove the project's own folders in ``out`` (checkpoints) and leftovers of killed runs; keep the finished
    result (it is replaced when the new one is complete), the staging folder of a run still going and ``keep``
    (this run's staging folder, which under a launcher may carry another node's process id)."""
    out = Path(out)
    marker = read_marker(out)
    if marker is None:
        return
    for rel in marker["dirs"]:
        path = _inside(out, rel)
        if path is not None and path.is_dir():
            shutil.rmtree(path)
    remove_stale_staging(out, keep)


def remove_stale_staging(out: Path, keep: str | os.PathLike | None = None) -> None:
    """Delete staging folders left by runs that were killed (their process is gone), except ``keep``."""
    for stage in out.glob(STAGING_PREFIX + "*"):
        if keep is not None and stage.name == Path(keep).name:
            continue
        pid = stage.name[len(STAGING_PREFIX):].split("-")[0]
        if not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(stage, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process there, not probe it
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _windows_process_alive(pid: int, kernel32=None) -> bool:
    """OpenProcess + GetExitCodeProcess: alive while the exit code is STILL_ACTIVE; a process we may not open
    (access denied) counts as alive, one that does not exist as gone."""
    import ctypes

    kernel32 = kernel32 or ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return kernel32.GetLastError() == 5  # ERROR_ACCESS_DENIED: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _inside(out: Path, rel: str) -> Path | None:
    """``out/rel`` when it really lies inside ``out`` (a marker is data: never trust it with ``..``)."""
    path = out / rel
    if Path(rel).is_absolute() or out.resolve() not in path.resolve().parents:
        return None
    return path


def _prune_empty_dirs(out: Path, rels) -> None:
    for parent in sorted({p for rel in rels for p in Path(rel).parents if str(p) != "."}, key=lambda p: -len(p.parts)):
        try:
            (out / parent).rmdir()
        except OSError:
            pass  # not empty (someone else's files, or still ours) or already gone


# ------------------------------------------------------------------------------------------------ publishing


def write_error(exc: OSError, out: str | os.PathLike) -> HarError:
    """A full disk, a permission or a name problem while writing ``out``, as one line."""
    name = Path(exc.filename).name if exc.filename else ""
    detail = f"{exc.strerror or exc}" + (f": {name}" if name else "")
    return HarError(f"cannot write {out} ({detail}); nothing in it was replaced")


def staging_name() -> str:
    """A new staging folder name: the writing process's id (``remove_stale_staging`` checks it) and a random part."""
    return f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


class Publication:
    """``with Publication(out, kind) as stage:`` write the whole result under ``stage``; on success it replaces the
    previous result in ``out`` (files of the old result that the new one lacks are removed), on any failure it is
    dropped and ``out`` is left as it was. ``merge``: add to the result instead of replacing it (export-onnx).

    ``out`` is normally claimed first (``claim_output_dir``); in a folder without a marker (a model folder from
    elsewhere) a ``merge`` only moves the new files into place and does not claim the folder.

    Several processes of one run (``har_model.train.launcher``) share one staging folder: all of them are given
    the same ``name`` (``staging_name()`` of process 0), only the one with ``writer=True`` creates and publishes
    it; the others just read what it wrote there."""

    def __init__(self, out: str | os.PathLike, kind: str, *, merge: bool = False, name: str | None = None,
                 writer: bool = True):
        self.out, self.kind, self.merge, self.writer = Path(out), kind, merge, writer
        self.stage = self.out / (name or staging_name())

    def __enter__(self) -> Path:
        if self.writer:
            try:
                self.stage.mkdir()
            except OSError as exc:
                raise write_error(exc, self.out) from None
        return self.stage

    def __exit__(self, exc_type, exc, tb) -> bool:
        if not self.writer:
            return False
        try:
            if exc_type is None:
                commit(self.out, self.stage, self.kind, merge=self.merge)
        except OSError as err:
            raise write_error(err, self.out) from None
        finally:
            shutil.rmtree(self.stage, ignore_errors=True)
        if exc_type is not None and issubclass(exc_type, OSError) and exc.errno in USER_ERRNOS:
            raise write_error(exc, self.out) from None
        return False


def commit(out: Path, stage: Path, kind: str, *, merge: bool = False) -> None:
    """Move every file of ``stage`` into ``out`` and record the new result in the marker (see Publication)."""
    new = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if not p.is_dir())
    if merge and read_marker(out) is None:
        return _move_all(stage, out, new)
    marker = read_marker(out) or new_marker(kind)
    old = set(marker["files"])
    gone = set() if merge else old - set(new)
    write_marker(out, {**marker, "kind": kind, "complete": False, "files": sorted(old | set(new))})
    for rel in new:  # a nested result (the dataset inside a model folder) is incomplete until its marker lands
        if Path(rel).name == MARKER and (out / rel).is_file():
            inner = read_marker((out / rel).parent)
            write_marker((out / rel).parent, {**inner, "complete": False})
    _move_all(stage, out, new)
    for rel in gone:
        path = _inside(out, rel)
        if path is not None:
            path.unlink(missing_ok=True)
    _prune_empty_dirs(out, gone)
    write_marker(out, {**marker, "kind": kind, "complete": True, "files": sorted((old | set(new)) - gone)})


def _move_all(stage: Path, out: Path, rels) -> None:
    for rel in sorted(rels, key=lambda r: Path(r).name == MARKER):  # markers last
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage / rel, out / rel)


# ---------------------------------------------------------------------------------------------------- pushing


def files_to_push(folder: str | os.PathLike, kind: str) -> list[str]:
    """The files of ``folder`` that a push uploads: written by the project (the marker's list), complete, and of
    a kind that belongs in a Hub ``kind`` repository (``PUSHED``). Anything else in the folder stays local."""
    folder = Path(folder)
    marker = read_marker(folder)
    if marker is None or marker["kind"] != kind:
        raise HarError(f"{folder}: not a {kind} folder written by har_model (no {MARKER} for a {kind}); only "
                       "folders written by `python train.py` / `prepare` are pushed")
    require_complete(folder)
    return [rel for rel in marker["files"]
            if any(fnmatch(rel, pattern) for pattern in PUSHED[kind]) and (folder / rel).is_file()]

