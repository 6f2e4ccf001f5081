"""Owned output folders, whole-or-nothing publishing, the push allow-list and safe file names (shared modules)."""

from __future__ import annotations

import errno
import json
import os

import pytest

from har_model import cli, hub, outputs
from har_model.errors import HarError
from har_model.paths import safe_filename


def _publish(out, kind="model", files=None):
    files = files or {"README.md": "card", "config.json": "{}"}
    outputs.claim_output_dir(out, kind)
    with outputs.Publication(out, kind) as stage:
        for name, text in files.items():
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            (stage / name).write_text(text)
    return out


def _foreign(folder):
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    (folder / "README.md").write_text("my readme")
    (folder / "examples").mkdir()
    (folder / "examples" / "vacation.jpg").write_bytes(b"\xff\xd8 my photo")
    return folder


# ---------------------------------------------------------------------------------------------- claiming


def test_a_foreign_non_empty_folder_is_refused_and_untouched(tmp_path):
    folder = _foreign(tmp_path / "mine")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    with pytest.raises(HarError) as info:
        outputs.claim_output_dir(folder, "model")
    message = str(info.value)
    assert str(folder) in message and "--overwrite" in message and "\n" not in message
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert not (folder / outputs.MARKER).exists()


def test_new_and_empty_folders_are_claimed(tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "new" / "deeper", tmp_path / "empty"):
        outputs.claim_output_dir(folder, "dataset")
        assert outputs.read_marker(folder) == {"kind": "dataset", "complete": False, "files": [], "dirs": []}
        with pytest.raises(HarError, match="incomplete dataset folder"):
            outputs.require_complete(folder)  # claimed, nothing published yet


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_output_equal_inside_or_containing_the_input_is_refused(tmp_path, where):
    data = tmp_path / "photos"
    data.mkdir()
    out = {"same": data, "inside": data / "out", "around": tmp_path}[where]
    relation = {"same": "is the input", "inside": "is inside the input", "around": "contains the input"}[where]
    with pytest.raises(HarError, match=relation):
        outputs.claim_output_dir(out, "dataset", inputs=[str(data)], overwrite=True)
    assert not (data / "out").exists() and not (tmp_path / outputs.MARKER).exists()


def test_a_file_and_an_unwritable_folder_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "f").write_text("x")
    with pytest.raises(HarError, match="exists and is a file"):
        outputs.claim_output_dir(tmp_path / "f", "model")

    def denied(self, *a, **k):  # the tests may run as root, who may write anywhere: simulate the refusal
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(type(tmp_path), "mkdir", denied)
    with pytest.raises(HarError) as info:
        outputs.claim_output_dir(tmp_path / "locked" / "out", "model", flag="--output-dir")
    assert str(info.value) == f"--output-dir {tmp_path / 'locked' / 'out'}: cannot write there (Permission denied)"


def test_overwrite_writes_into_a_foreign_folder_and_keeps_its_other_files(tmp_path):
    folder = _foreign(tmp_path / "mine")
    outputs.claim_output_dir(folder, "model", overwrite=True)
    with outputs.Publication(folder, "model") as stage:
        (stage / "config.json").write_text("{}")
    assert (folder / "notes.txt").read_text() == "my notes"
    assert (folder / "examples" / "vacation.jpg").exists()
    outputs.clear_owned(folder)  # --overwrite later: only what we wrote goes
    assert not (folder / "config.json").exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted([outputs.MARKER, "README.md", "examples", "notes.txt"])


def test_another_kind_of_result_needs_overwrite(tmp_path):
    _publish(tmp_path / "m", "model")
    with pytest.raises(HarError, match="holds a har_model model, not a dataset"):
        outputs.claim_output_dir(tmp_path / "m", "dataset")
    outputs.claim_output_dir(tmp_path / "m", "dataset", overwrite=True)
    outputs.require_complete(tmp_path / "m")  # the old result stays whole until the new one is complete
    assert (tmp_path / "m" / "config.json").read_text() == "{}"
    with outputs.Publication(tmp_path / "m", "dataset") as stage:
        (stage / "README.md").write_text("a dataset")
    assert not (tmp_path / "m" / "config.json").exists() and outputs.read_marker(tmp_path / "m")["kind"] == "dataset"


# -------------------------------------------------------------------------------------------- publishing


def test_publication_replaces_the_result_and_removes_only_its_own_stale_files(tmp_path):
    out = _publish(tmp_path / "m", files={"README.md": "v1", "examples/a_0.jpg": "a", "onnx/model.onnx": "o"})
    (out / "examples" / "user.jpg").write_text("mine")
    with outputs.Publication(out, "model") as stage:
        (stage / "README.md").write_text("v2")
    assert (out / "README.md").read_text() == "v2"
    assert not (out / "examples" / "a_0.jpg").exists() and not (out / "onnx").exists()
    assert (out / "examples" / "user.jpg").read_text() == "mine"
    marker = outputs.read_marker(out)
    assert marker["complete"] and marker["files"] == ["README.md"]
    assert not list(out.glob(outputs.STAGING_PREFIX + "*"))


@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError(errno.ENOSPC, "No space left on device")])
def test_a_failure_while_writing_leaves_the_previous_result(tmp_path, failure):
    out = _publish(tmp_path / "m", files={"README.md": "v1"})
    with pytest.raises(KeyboardInterrupt if failure is KeyboardInterrupt else HarError) as info:
        with outputs.Publication(out, "model") as stage:
            (stage / "README.md").write_text("v2, half")
            raise failure
    if failure is not KeyboardInterrupt:
        assert "No space left on device" in str(info.value) and "nothing in it was replaced" in str(info.value)
    assert (out / "README.md").read_text() == "v1"
    outputs.require_complete(out)
    assert not list(out.glob(outputs.STAGING_PREFIX + "*"))


def _view(folder):
    """What a reader sees: every file but the marker, with its content."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != outputs.MARKER}


OLD = {"README.md": "v1", "config.json": "v1", "examples/a_0.jpg": "a", "onnx/model.onnx": "o",
       "dataset/.har_model.json": '{"kind": "dataset", "complete": true, "files": ["data.parquet"], "dirs": []}',
       "dataset/data.parquet": "d1"}
NEW = {"README.md": "v2", "config.json": "v2", "examples/b_0.jpg": "b",
       "dataset/.har_model.json": '{"kind": "dataset", "complete": true, "files": ["data.parquet"], "dirs": []}',
       "dataset/data.parquet": "d2"}
USERS = {".env": b"HF_TOKEN=hf_x", "notes.txt": b"mine", "examples/vacation.jpg": b"photo",
         "checkpoints/checkpoint-1/x.bin": b"ckpt"}


def _with_user_files(out):
    for rel, content in USERS.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(content)
    outputs.own_dir(out, "checkpoints")
    return out


def _republish(out, files, merge=False):
    with outputs.Publication(out, "model", merge=merge) as stage:
        for name, text in files.items():
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            (stage / name).write_text(text)


@pytest.mark.parametrize("merge", [False, True], ids=["replace", "merge (export-onnx)"])
def test_a_stop_or_a_full_disk_at_any_step_of_the_swap_leaves_the_old_or_the_new_folder_whole(tmp_path, monkeypatch,
                                                                                               merge):
    """Every step of the final swap, interrupted and out of disk: the folder is the old or the new one, whole
    (also to a reader that ignores the marker), the user's files are there, and the error says which it is."""
    import helpers

    added = {"onnx/model.onnx": "o2", "onnx/export_info.json": "{}"} if merge else NEW
    reference = _with_user_files(_publish(tmp_path / "ref", files=OLD))
    old_view = _view(reference)
    faults = helpers.PublishFaults(monkeypatch)
    _republish(reference, added, merge)
    monkeypatch.undo()
    new_view, steps = _view(reference), faults.names
    assert "_renameat2_exchange" in steps and len(steps) > 20 and new_view != old_view
    seen = set()
    for n in range(len(steps)):
        for error in (KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")):
            out = _with_user_files(_publish(tmp_path / f"m{n}-{type(error).__name__}", files=OLD))
            helpers.PublishFaults(monkeypatch, n, error)
            try:
                _republish(out, added, merge)
                outcome = "no error"
            except (KeyboardInterrupt, HarError) as exc:
                outcome = str(exc)
            monkeypatch.undo()
            view = _view(out)
            assert view in (old_view, new_view), (n, steps[n], error)
            state = "old" if view == old_view else "new"
            seen.add(state)
            outputs.require_complete(out)  # our readers accept it
            assert outputs.read_marker(out)["files"] == outputs.read_marker(reference)["files"] or state == "old"
            if outcome != "no error":
                assert ("nothing in it was replaced" if state == "old" else "the new result is complete") in outcome
            outputs.claim_output_dir(out, "model")  # the next run clears what this one left
            assert not list(tmp_path.glob(outputs.SWAP_PREFIX + "*")), (n, steps[n], error)
            assert not list(out.glob(outputs.STAGING_PREFIX + "*"))
            assert _view(out) == view
    assert seen == {"old", "new"}


def test_a_kill_between_the_two_renames_is_undone_by_the_next_run(tmp_path, monkeypatch):
    """Where folders cannot be exchanged in one call, a stop between the two renames puts the old one back; a
    kill there (nothing runs any more) is repaired by the next claim."""
    out = _with_user_files(_publish(tmp_path / "m", files=OLD))
    before = _view(out)
    monkeypatch.setattr(outputs, "_renameat2_exchange", lambda a, b: False)
    real_rename = os.rename

    def killed(src, dst):
        if str(dst) == str(out) and not str(src).endswith("-old"):  # the second rename (not the undo)
            raise KeyboardInterrupt
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", killed)
    with pytest.raises(KeyboardInterrupt, match="nothing in it was replaced"):
        _republish(out, NEW)
    assert _view(out) == before
    monkeypatch.setattr(outputs, "_exchange", lambda out, swap: real_rename(out, swap.with_name(swap.name + "-old"))
                        or pytest.fail("killed"))
    with pytest.raises(BaseException):
        _republish(out, NEW)
    monkeypatch.undo()
    assert not out.exists()  # as a kill between the renames leaves it
    outputs.claim_output_dir(out, "model")
    assert _view(out) == before and not list(tmp_path.glob(outputs.SWAP_PREFIX + "*"))


def test_files_appearing_during_the_swap_are_moved_into_the_new_folder(tmp_path, monkeypatch):
    out = _with_user_files(_publish(tmp_path / "m", files=OLD))
    real = outputs._renameat2_exchange

    def exchange(a, b):
        (a / "written meanwhile.txt").write_text("late")  # not linked: the old folder alone has it
        return real(a, b)

    monkeypatch.setattr(outputs, "_renameat2_exchange", exchange)
    _republish(out, NEW)
    assert (out / "written meanwhile.txt").read_text() == "late" and (out / ".env").read_bytes() == USERS[".env"]
    assert not list(tmp_path.glob(outputs.SWAP_PREFIX + "*"))


def test_without_renameat2_the_swap_is_two_renames(tmp_path, monkeypatch):
    out = _with_user_files(_publish(tmp_path / "m", files=OLD))
    monkeypatch.setattr(outputs, "_renameat2_exchange", lambda a, b: False)
    _republish(out, NEW)
    assert _view(out) == {**{k: v.encode() for k, v in NEW.items() if not k.endswith(outputs.MARKER)}, **USERS}
    assert not list(tmp_path.glob(outputs.SWAP_PREFIX + "*"))


def test_a_linked_output_folder_keeps_its_link_and_swaps_what_it_points_to(tmp_path):
    real = _with_user_files(_publish(tmp_path / "elsewhere" / "model", files=OLD))
    (tmp_path / "outputs").mkdir()
    link = tmp_path / "outputs" / "model"
    link.symlink_to(real, target_is_directory=True)
    _republish(link, NEW)
    assert link.is_symlink() and link.resolve() == real.resolve()
    assert _view(link) == {**{k: v.encode() for k, v in NEW.items() if not k.endswith(outputs.MARKER)}, **USERS}
    assert not list((tmp_path / "elsewhere").glob(outputs.SWAP_PREFIX + "*"))


def test_a_folder_that_cannot_get_a_sibling_is_filled_in_place_and_refused_if_stopped(tmp_path, monkeypatch):
    out = _publish(tmp_path / "m", files={"README.md": "v1", "config.json": "v1"})
    monkeypatch.setattr(outputs, "_new_swap_folder", lambda out: None)  # e.g. a read-only parent folder
    real_replace, calls = os.replace, []

    def stop_on_second_move(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # 1: the marker says "incomplete", 2: first file, 3: second file
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", stop_on_second_move)
    with pytest.raises(KeyboardInterrupt, match="left incomplete"):
        _republish(out, {"README.md": "v2", "config.json": "v2"})
    monkeypatch.undo()
    with pytest.raises(HarError, match="incomplete model folder"):
        outputs.require_complete(out)


def test_a_stray_marker_temp_file_is_removed_by_the_next_claim(tmp_path):
    out = _publish(tmp_path / "m")
    stray = out / f".{outputs.MARKER}.tmp-999999999"
    stray.write_text("{")
    mine = out / ".notes.tmp-999999999"
    mine.write_text("not ours")
    outputs.claim_output_dir(out, "model")
    assert not stray.exists() and mine.exists()


def test_a_killed_runs_staging_folder_is_removed_by_the_next_claim(tmp_path):
    out = _publish(tmp_path / "m")
    stale = out / f"{outputs.STAGING_PREFIX}999999999-abc"
    stale.mkdir()
    (stale / "README.md").write_text("half")
    outputs.claim_output_dir(out, "model")
    assert not stale.exists()


class FakeKernel32:
    """The three Windows calls `_windows_process_alive` makes, for processes 10 (running), 11 (exited with 0),
    12 (not ours to open) and none other."""

    def __init__(self):
        self.closed, self.error = [], 0

    def OpenProcess(self, access, inherit, pid):
        self.error = 5 if pid == 12 else 87  # access denied / invalid parameter (no such process)
        return {10: 1010, 11: 1011}.get(pid, 0)

    def GetLastError(self):
        return self.error

    def GetExitCodeProcess(self, handle, code_ref):
        code_ref._obj.value = 259 if handle == 1010 else 0  # STILL_ACTIVE
        return 1

    def CloseHandle(self, handle):
        self.closed.append(handle)


def test_on_windows_staging_owners_are_probed_not_killed(tmp_path, monkeypatch):
    """os.kill(pid, 0) terminates the process on Windows: there the owner of a staging folder is looked up."""
    kernel32 = FakeKernel32()
    monkeypatch.setattr(outputs, "sys", type("FakeSys", (), {"platform": "win32"}))
    monkeypatch.setattr(outputs, "_windows_process_alive",
                        lambda pid, _real=outputs._windows_process_alive: _real(pid, kernel32))
    monkeypatch.setattr(os, "kill", lambda *a: pytest.fail("os.kill called on Windows"))
    out = _publish(tmp_path / "m")
    for pid in (10, 11, 12, 13):
        (out / f"{outputs.STAGING_PREFIX}{pid}-abc").mkdir()
    outputs.claim_output_dir(out, "model")
    assert sorted(p.name.split("-")[-2] for p in out.glob(outputs.STAGING_PREFIX + "*")) == ["10", "12"]
    assert kernel32.closed == [1010, 1011]


def test_a_marker_never_leads_outside_the_folder(tmp_path):
    out = _publish(tmp_path / "m")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    marker = outputs.read_marker(out)
    outputs.write_marker(out, {**marker, "files": [*marker["files"], "../victim.txt", str(victim)], "dirs": [".."]})
    outputs.clear_owned(out)
    assert victim.read_text() == "keep" and out.is_dir()


# ------------------------------------------------------------------------------------------------ pushing


def test_push_refuses_folders_the_project_did_not_write_or_finish(tmp_path):
    _foreign(tmp_path / "mine")
    with pytest.raises(HarError, match="not a model folder written by har_model"):
        hub.push_folder(tmp_path / "mine", "me/model", token="hf_fake")
    outputs.claim_output_dir(tmp_path / "new", "model")
    with pytest.raises(HarError, match="incomplete"):
        hub.push_folder(tmp_path / "new", "me/model", token="hf_fake")


# ------------------------------------------------------------------------------------------ names -> paths


@pytest.mark.parametrize("name", ["../../../escape-a", "/etc/passwd", "..", ".hidden", "a/b\\c", "x" * 250,
                                  "ééé" * 100, "tab\there", "", "-rf"])
def test_safe_filename_stays_one_short_harmless_component(tmp_path, name):
    safe = safe_filename(name)
    assert safe and "/" not in safe and "\\" not in safe and not safe.startswith((".", "-"))
    assert len(safe.encode()) <= 80
    (tmp_path / f"{safe}_0.jpg").write_bytes(b"x")
    assert (tmp_path / f"{safe}_0.jpg").resolve().parent == tmp_path.resolve()


def test_safe_filename_keeps_ordinary_names_and_distinguishes_cleaned_ones():
    assert safe_filename("running") == "running" and safe_filename("riding bike") == "riding bike"
    assert safe_filename("sitting_down-2") == "sitting_down-2" and safe_filename("Bücher") == "Bücher"
    assert safe_filename("a/b") != safe_filename("a_b") and safe_filename("x" * 250) != safe_filename("x" * 251)


# ------------------------------------------------------------------------------------------- the command line


def test_a_full_disk_is_one_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    import har_model.serve.inference as inference

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(inference, "main", full)
    assert cli.main(["predict", "--model", "m", "x.jpg"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'x'}: No space left on device\n"


def test_a_marker_is_small_json(tmp_path):
    out = _publish(tmp_path / "m")
    data = json.loads((out / outputs.MARKER).read_text())
    assert data == {"kind": "model", "complete": True, "files": ["README.md", "config.json"], "dirs": []}
