"""Output folders the project owns, results that appear whole or not at all, and what may leave the machine.

Every folder the project writes (a dataset repository, a model folder) holds ``MARKER`` (``.har_model.json``):

    {"kind": "model", "complete": true, "files": ["README.md", "config.json", ...], "dirs": ["checkpoints"]}

``files`` lists every file the project wrote there, ``dirs`` the folders that are wholly its own (training
checkpoints). That one small file answers every question about the folder:

    claim_output_dir  may we write here? New, empty or ours: yes. A non-empty folder we did not write: refused with
                      one line naming it and --overwrite. Never the input itself, a folder inside it or around it.
    Publication       a result is written into a hidden staging folder inside the output folder; once complete, the
                      whole new folder is built beside the old one and the two are swapped by one rename (commit),
                      so an interruption or a full disk at any moment leaves the old folder or the new one, whole,
                      to every reader (ours, datasets.load_dataset, pipeline()).
    require_complete  what every reader calls first: a folder whose marker says incomplete is refused in one line.
    clear_owned       removes exactly what the project wrote there (files, checkpoints, leftovers).
    files_to_push     the upload allow-list: files the project wrote, of the kinds that belong on the Hub (the same
                      list for a model, a dataset and a Space folder).
"""

from __future__ import annotations

import ctypes
import errno
import filecmp
import hashlib
import json
import os
import secrets
import shutil
import sys
from fnmatch import fnmatch
from pathlib import Path

from har_model.errors import HarError, command
from har_model.model_folder import files

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
        files.CARD, files.CONFIG, files.WEIGHTS, files.PREPROCESSOR, files.METRICS, *files.FIGURES,
        f"{files.EXAMPLES}/*.jpg",
        *(f"{files.ONNX_DIR}/{name}" for name in (*files.ONNX_FILES, files.ONNX_INFO, files.INT8_GATE)),
        files.CALIBRATION,  # a temperature fitted for other weights must not survive a push of new ones
    ),
    # a Space folder (publish-space): the app, the serving modules and the bundled model's serving files
    "space": ("app.py", "requirements.txt", "README.md", "har_model/*.py", "model/*"),
}
# OSErrors a user causes (full disk, no permission, read-only mount, name too long): one line, never a traceback.
USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG,
               errno.ENOTDIR, errno.EISDIR}  # the last two: a path that runs through a file


# --------------------------------------------------------------------------------------------------- marker

PUSHED_TO = "pushed_to"  # marker key: the Hub repo the folder was last pushed to (a new result drops it)


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


def record_push(folder: str | os.PathLike, repo_id: str) -> None:
    """Remember in the folder's marker that it was pushed to ``repo_id`` (a folder the project did not write: no)."""
    marker = read_marker(folder)
    if marker is not None and marker["kind"] in KINDS:
        write_marker(folder, {**marker, PUSHED_TO: repo_id})


def pushed_to(folder: str | os.PathLike) -> str | None:
    """The Hub repo a dataset or model folder of ours was last pushed to (since it was last written), or None."""
    marker = read_marker(folder) if Path(folder).is_dir() else None
    return marker.get(PUSHED_TO) if marker is not None else None


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
    kept) or one holding another kind of result (replaced, whole, when the new one is complete)."""
    out = Path(out).expanduser()
    check_not_input(out, inputs, flag)
    if out.parent.is_dir():
        try:
            remove_stale_swaps(out)  # first: a run killed half-way through a swap may have taken `out` away
        except OSError as exc:
            raise HarError(f"{flag} {out}: cannot write there ({exc.strerror or exc})") from None
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
        if marker is None or marker["kind"] is None:
            clear_owned(out)  # a damaged marker: only the leftovers of killed runs can go
            write_marker(out, new_marker(kind))
        elif marker["kind"] != kind:
            # replaced only when the new result is complete (Publication); until then the old one stays readable.
            # Its run state (checkpoints) is not part of the new result: dropped then, not now.
            write_marker(out, {**marker, "dirs": [], "stale": sorted({*marker["dirs"], *marker.get("stale", [])})})
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
    for rel in [*marker["dirs"], *marker.get("stale", [])]:
        path = _inside(out, rel)
        if path is not None and path.is_dir():
            shutil.rmtree(path)
    remove_stale_staging(out, keep)


def remove_stale_staging(out: Path, keep: str | os.PathLike | None = None) -> None:
    """Delete what killed runs left (their process is gone): staging folders except ``keep``, temporary files of
    atomic writes, and the swap folders beside ``out`` (see ``commit``)."""
    for stage in out.glob(STAGING_PREFIX + "*"):
        if keep is not None and stage.name == Path(keep).name:
            continue
        pid = stage.name[len(STAGING_PREFIX):].split("-")[0]
        if not (pid.isdigit() and _alive(int(pid))):
            shutil.rmtree(stage, ignore_errors=True)
    for tmp in [*out.glob(f".{MARKER}.tmp-*"), *out.glob(f"*/.{MARKER}.tmp-*")]:  # ours by name, nothing else
        pid = tmp.name.rsplit(".tmp-", 1)[1]
        if tmp.is_file() and not (pid.isdigit() and _alive(int(pid))):
            tmp.unlink(missing_ok=True)
    remove_stale_swaps(out)


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


def write_error(exc: OSError, out: str | os.PathLike, *, state: str = "old") -> HarError:
    """A full disk, a permission or a name problem while writing ``out``, as one line that says what ``out`` now
    holds (``state``: "old", "new" or "incomplete")."""
    name = Path(exc.filename).name if exc.filename else ""
    detail = f"{exc.strerror or exc}" + (f": {name}" if name else "")
    return HarError(f"cannot write {out} ({detail}); {HOLDS[state].format(out=out)}")


HOLDS = {  # what the output folder holds after a failure, by the moment it came (see commit)
    "old": "nothing in it was replaced",
    "new": "the new result is complete and in place (only removing the previous one failed: the next run does it)",
    "incomplete": "it was left incomplete and every reader refuses it; run the command again",
}


def staging_name() -> str:
    """A new staging folder name: the writing process's id (``remove_stale_staging`` checks it) and a random part."""
    return f"{STAGING_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"


class Publication:
    """``with Publication(out, kind) as stage:`` write the whole result under ``stage``; on success it replaces the
    previous result in ``out`` (files of the old result that the new one lacks are removed), on any failure it is
    dropped and ``out`` is left as it was. ``merge``: add to the result instead of replacing it (export-onnx).

    ``out`` is normally claimed first (``claim_output_dir``); a ``merge`` into a folder without a marker (a model
    folder from elsewhere) adds the new files and does not claim the folder.

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
        progress = {"state": "old"}
        try:
            if exc_type is None:
                commit(self.out, self.stage, self.kind, merge=self.merge, progress=progress)
        except OSError as err:
            raise write_error(err, self.out, state=progress["state"]) from None
        except KeyboardInterrupt:  # the command line prints this (exit 130): say what the folder holds now
            raise KeyboardInterrupt(f"{self.out}: {HOLDS[progress['state']].format(out=self.out)}") from None
        finally:
            shutil.rmtree(self.stage, ignore_errors=True)
        if exc_type is not None and issubclass(exc_type, OSError) and exc.errno in USER_ERRNOS:
            raise write_error(exc, self.out) from None
        return False


def commit(out: Path, stage: Path, kind: str, *, merge: bool = False, progress: dict | None = None) -> None:
    """Make the files of ``stage`` the result in ``out`` (``merge``: added to it), all at once for every reader.

    The complete new folder is built beside ``out`` (a swap folder in the same parent: hard links to what stays --
    the user's files, checkpoints, with ``merge`` the old result -- and the staged files), then the two folders are
    exchanged in one rename (``renameat2(RENAME_EXCHANGE)``; elsewhere two renames, undone if the second is
    interrupted), and the previous folder is removed. Up to the exchange ``out`` is the old folder, untouched;
    after it, the new one: a reader (ours, ``datasets.load_dataset``, ``pipeline()``) never sees a mix.

    A link ``out`` stays: the folder it points to is swapped. Where no folder can be made beside ``out`` (its parent
    is not writable, ``out`` is a mount point),
    the files are moved in one by one with the marker saying "incomplete" meanwhile, so a stop leaves a folder our
    readers refuse. ``progress["state"]`` tells the caller what ``out`` holds if this raises."""
    progress = progress if progress is not None else {}
    progress["state"] = "old"
    new = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*")
                 if not p.is_dir() and not _temporary(p.relative_to(stage).parts[0]))
    if out.is_symlink():  # the folder it points to is swapped (the link stays; readers follow it)
        out = out.resolve()
    remove_stale_swaps(out)  # a killed earlier run (e.g. an export, which claims nothing) may have left one
    swap = _new_swap_folder(out)
    if swap is None:
        return _commit_in_place(out, stage, kind, new, merge=merge, progress=progress)
    _ACTIVE.add(swap.name)
    try:
        try:
            _build_beside(out, stage, swap, kind, new, merge=merge)
            old = _exchange(out, swap)
        except BaseException:
            shutil.rmtree(swap, ignore_errors=True)  # hard links and staged copies only: out is untouched
            raise
        progress["state"] = "new"
        _retire(old, out)
    finally:
        _ACTIVE.discard(swap.name)


SWAP_PREFIX = ".har_model-swap-"


def _temporary(name: str) -> bool:
    """A staging or swap folder (of this result or of one nested in it): never part of a result."""
    return name.startswith((STAGING_PREFIX, SWAP_PREFIX))
RENAME_EXCHANGE = 2  # linux/fs.h
_ACTIVE: set[str] = set()  # swap folders of commits running in this process (never stale)


def _swap_tag(out: Path) -> str:
    """Swap folders beside ``out`` are named after it (a hash: any name length fits) and the writing process."""
    return SWAP_PREFIX + hashlib.sha1(out.name.encode("utf-8", "surrogatepass")).hexdigest()[:10] + "-"


def _new_swap_folder(out: Path) -> Path | None:
    if os.path.ismount(out):
        return None
    swap = out.parent / f"{_swap_tag(out)}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        swap.mkdir()
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return None  # a folder we may write into but not beside: the in-place moves
        raise
    return swap


def _build_beside(out: Path, stage: Path, swap: Path, kind: str, new: list[str], *, merge: bool) -> None:
    """``swap`` becomes the complete new ``out``: what stays (linked), the staged files (moved), the marker."""
    marker = read_marker(out)
    final = None
    old = set(marker["files"]) if marker else set()
    if marker is not None:
        # a new result drops what was pushed before (it is not what was pushed); an addition (merge) keeps it
        final = {k: v for k, v in marker.items() if k != "stale" and (merge or k != PUSHED_TO)}
        final.update(kind=kind, complete=True, files=sorted(old | set(new)) if merge else new)
        write_marker(swap, {**final, "complete": False})  # first: a leftover swap folder is recognisably ours
    dropped = set() if merge else old  # the old result's files: not carried over
    _link_tree(out, swap, skip_files=dropped | {MARKER}, skip_dirs=set(marker.get("stale", [])) if marker else set())
    _move_all(stage, swap, new)
    _prune_empty_dirs(swap, dropped - set(new))
    if final is not None:
        write_marker(swap, final)
    shutil.copymode(out, swap)


def _link_tree(src: Path, dst: Path, *, skip_files: set[str], skip_dirs: set[str]) -> None:
    """Recreate ``src`` under ``dst`` with hard links (copies where the file system refuses links), less
    ``skip_files``, the top-level ``skip_dirs``, staging folders and temporary files."""
    for root, dirnames, filenames in os.walk(src):
        rel_root = Path(root).relative_to(src)
        if rel_root == Path("."):
            dirnames[:] = [d for d in dirnames if d not in skip_dirs and not _temporary(d)]
        for name in list(dirnames):
            if (Path(root) / name).is_symlink():  # a link to a folder stays a link, never followed
                os.symlink(os.readlink(Path(root) / name), dst / rel_root / name)
                dirnames.remove(name)
            else:
                (dst / rel_root / name).mkdir()
        for name in filenames:
            rel = (rel_root / name).as_posix()
            if rel in skip_files or name.startswith(f".{MARKER}.tmp-"):
                continue
            _link(Path(root) / name, dst / rel)


def _link(src: Path, dst: Path) -> None:
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
        return
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        shutil.copy2(src, dst)  # a file system without hard links (or a file we may not link): a copy


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Exchange two folders atomically (Linux >= 3.15); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _exchange(out: Path, swap: Path) -> Path:
    """Put ``swap`` in the place of ``out``; return where the previous ``out`` now is."""
    if _renameat2_exchange(out, swap):
        return swap
    aside = swap.with_name(swap.name + "-old")
    os.rename(out, aside)
    try:
        os.rename(swap, out)
    except BaseException:
        os.rename(aside, out)  # a stop between the two renames: the old folder goes back
        raise
    return aside


def _retire(old: Path, out: Path, *, leftover_ok: bool = True) -> bool:
    """Remove the folder a swap took out of ``out``: the files also in ``out`` (hard links, or equal copies), the
    files and folders its marker lists, staging leftovers. Anything else appeared there during the swap: it is
    moved into ``out`` (never deleted) when ``leftover_ok``, else kept. False when something is left."""
    try:
        marker = read_marker(old)
        listed = {MARKER, *(marker["files"] if marker else [])}
        for rel in [*(marker["dirs"] if marker else []), *(marker.get("stale", []) if marker else [])]:
            path = _inside(old, rel)
            if path is not None and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
        for path in old.iterdir():
            if _temporary(path.name) and path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
        for root, dirnames, filenames in os.walk(old, topdown=False):
            for name in [*filenames, *(d for d in dirnames if (Path(root) / d).is_symlink())]:
                path = Path(root) / name
                rel = path.relative_to(old).as_posix()
                twin = out / rel
                if rel in listed or name.startswith(f".{MARKER}.tmp-") or _same(path, twin, filecmp):
                    path.unlink()
                elif leftover_ok and not (twin.exists() or twin.is_symlink()):
                    twin.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(path, twin)
            for name in dirnames:
                try:
                    (Path(root) / name).rmdir()
                except OSError:
                    pass  # not empty: kept
        old.rmdir()
        return True
    except OSError:
        return False  # out holds the new result; what is left here goes at the next run (remove_stale_swaps)


def _same(path: Path, twin: Path, filecmp) -> bool:
    try:
        if path.is_symlink() or twin.is_symlink():
            return path.is_symlink() and twin.is_symlink() and os.readlink(path) == os.readlink(twin)
        a, b = path.stat(), twin.stat()
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) or (a.st_size == b.st_size and filecmp.cmp(path, twin, False))
    except OSError:
        return False


def remove_stale_swaps(out: Path) -> None:
    """Swap folders beside ``out`` left by a killed process: the previous folder put back where a kill between two
    renames left none, otherwise removed as far as it holds nothing but copies and our own files (the rest is
    kept, and named)."""
    out = Path(out).resolve() if Path(out).is_symlink() else Path(out)
    for swap in sorted(out.parent.glob(_swap_tag(out) + "*")):
        pid = swap.name[len(_swap_tag(out)):].split("-")[0]
        if swap.name in _ACTIVE or (pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid))):
            continue
        if swap.name.endswith("-old") and not (out.exists() or out.is_symlink()):
            os.rename(swap, out)  # killed between the two renames: the previous folder, whole, goes back
        elif not _retire(swap, out, leftover_ok=False) or swap.exists():
            print(f"note: {swap} holds files left by an interrupted replacement of {out} that are nowhere else; "
                  "look through them, then delete the folder", file=sys.stderr)


def _commit_in_place(out: Path, stage: Path, kind: str, new: list[str], *, merge: bool, progress: dict) -> None:
    """The fallback of ``commit``: the files moved into ``out`` one by one, the marker "incomplete" meanwhile."""
    if merge and read_marker(out) is None:
        return _move_all(stage, out, new)
    marker = read_marker(out) or new_marker(kind)
    if not merge:  # a new result: what was pushed before is not it
        marker.pop(PUSHED_TO, None)
    old = set(marker["files"])
    gone = set() if merge else old - set(new)
    progress["state"] = "incomplete"
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
    for rel in marker.get("stale", []):  # the run state of the kind of result replaced
        path = _inside(out, rel)
        if path is not None and path.is_dir():
            shutil.rmtree(path)
    final = {k: v for k, v in marker.items() if k != "stale"}
    write_marker(out, {**final, "kind": kind, "complete": True, "files": sorted((old | set(new)) - gone)})
    progress["state"] = "new"


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
                       f"folders written by `{command()}` / `{command('prepare')}` are pushed")
    require_complete(folder)
    return [rel for rel in marker["files"]
            if any(fnmatch(rel, pattern) for pattern in PUSHED[kind]) and (folder / rel).is_file()]

