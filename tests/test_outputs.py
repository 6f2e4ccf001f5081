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
    assert not (tmp_path / "m" / "config.json").exists()


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


def test_a_stop_while_moving_files_into_place_leaves_a_refused_folder(tmp_path, monkeypatch):
    out = _publish(tmp_path / "m", files={"README.md": "v1", "config.json": "v1"})
    real_replace, calls = os.replace, []

    def stop_on_second_move(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # 1: the marker says "incomplete", 2: first file, 3: second file
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", stop_on_second_move)
    with pytest.raises(KeyboardInterrupt):
        with outputs.Publication(out, "model") as stage:
            (stage / "README.md").write_text("v2")
            (stage / "config.json").write_text("v2")
    monkeypatch.setattr(os, "replace", real_replace)
    with pytest.raises(HarError, match="incomplete model folder"):
        outputs.require_complete(out)


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
