"""`prepare` writes only into folders it owns, whole or not at all, and never loses the previous dataset."""

from __future__ import annotations

import errno
import os
import shutil
from argparse import Namespace
from pathlib import Path

import pytest

import helpers
from har_model import cli, data, outputs
from har_model.data import build
from har_model.errors import HarError


def _prepare(src: Path, out: Path, **kwargs):
    kwargs.setdefault("num_workers", 1)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("verbose", False)
    return data.prepare_dataset(src, out, **kwargs)


def _paths(ds) -> dict[str, list[str]]:
    from datasets import Image as ImageFeature

    return {s: sorted(r["path"] for r in ds[s].cast_column("image", ImageFeature(decode=False))["image"]) for s in ds}


def _run(capsys, *argv) -> tuple[int, str]:
    rc = cli.main([str(a) for a in argv])
    return rc, capsys.readouterr().err.strip()


# ----------------------------------------------------------------------------------------- foreign folders


def test_prepare_refuses_a_folder_it_did_not_write_and_touches_nothing(class_folder, tmp_path, capsys):
    out = tmp_path / "project"
    (out / "data").mkdir(parents=True)
    (out / "README.md").write_text("my project")
    (out / "data" / "train-00000-of-00001.parquet").write_bytes(b"my own parquet")
    rc, err = _run(capsys, "prepare", "--data-dir", class_folder, "--output-dir", out, "--num-workers", "1")
    assert rc == 2 and err.count("\n") == 0
    assert str(out) in err and "--overwrite" in err and "did not write" in err
    assert (out / "README.md").read_text() == "my project"
    assert (out / "data" / "train-00000-of-00001.parquet").read_bytes() == b"my own parquet"
    assert sorted(p.name for p in out.rglob("*")) == ["README.md", "data", "train-00000-of-00001.parquet"]


def test_prepare_overwrite_writes_into_a_foreign_folder_keeping_unrelated_files(class_folder, tmp_path, capsys):
    out = tmp_path / "project"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rc, _ = _run(capsys, "prepare", "--data-dir", class_folder, "--output-dir", out, "--num-workers", "1", "--overwrite")
    assert rc == 0 and (out / "notes.txt").read_text() == "mine"
    assert sum(len(s) for s in data.load_dataset_any(out).values()) == 36


@pytest.mark.parametrize("layout", ["data inside output", "output inside data", "same folder"])
def test_prepare_refuses_output_and_input_that_overlap(tmp_path, capsys, layout):
    project = tmp_path / "P"
    src = helpers.make_class_folder(project / "data" if layout == "data inside output" else project, per_class=3)
    out = {"data inside output": project, "output inside data": project / "out", "same folder": project}[layout]
    before = sorted(p for p in tmp_path.rglob("*"))
    rc, err = _run(capsys, "prepare", "--data-dir", src, "--output-dir", out, "--num-workers", "1", "--overwrite")
    assert rc == 2 and ("the input" in err) and str(out) in err
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_prepare_from_a_dataset_into_itself_is_refused(class_folder, tmp_path, capsys):
    ds_dir = tmp_path / "ds"
    _prepare(class_folder, ds_dir)
    card = (ds_dir / "README.md").read_text()
    rc, err = _run(capsys, "prepare", "--dataset", ds_dir, "--output-dir", ds_dir)
    assert rc == 2 and "is the input" in err
    assert (ds_dir / "README.md").read_text() == card


# --------------------------------------------------------------------------------- failures keep the old one


def test_a_failed_rerun_with_bad_input_keeps_the_previous_dataset(class_folder, tmp_path):
    out = tmp_path / "out"
    before = _paths(_prepare(class_folder, out))
    one_class = tmp_path / "one"
    shutil.copytree(class_folder / "running", one_class / "running")
    with pytest.raises(HarError, match="at least two class folders"):
        _prepare(one_class, out)
    (one_class / "sitting").mkdir()
    for p in (one_class / "running").glob("*.jpg"):
        (one_class / "sitting" / p.name).write_bytes(b"broken")  # found, but nothing usable: fails after decoding
    with pytest.raises(HarError, match="at least two class folders"):
        _prepare(one_class, out)
    assert _paths(data.load_dataset_any(out)) == before


def _fail_second_split(monkeypatch, error):
    real, calls = build._write_split, []

    def write_split(*a, **k):
        calls.append(a[1])
        if len(calls) == 2:  # a kill between shards: train is written, validation is not
            raise error
        return real(*a, **k)

    monkeypatch.setattr(build, "_write_split", write_split)


def _fail_at(target: str):
    def install(monkeypatch, error):
        def boom(*a, **k):
            raise error

        monkeypatch.setattr(target, boom)

    return install


def _fail_while_moving(monkeypatch, error):
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 4:  # the marker says "incomplete", then some shards land, then the stop
            raise error
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


STEPS = {
    "between shards": _fail_second_split,
    "distribution chart": _fail_at("har_model.figures.class_distribution_chart"),
    "sample grid": _fail_at("har_model.figures.sample_grid"),
    "dataset card": _fail_at("har_model.cards.save_card"),
    "moving into place": _fail_while_moving,
}


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")],
                         ids=["ctrl-c", "disk full"])
@pytest.mark.parametrize("step", list(STEPS))
def test_an_interrupted_rerun_leaves_the_previous_dataset_or_a_refused_one(class_folder, tmp_path, monkeypatch,
                                                                         capsys, step, error):
    out = tmp_path / "out"
    before = _paths(_prepare(class_folder, out, seed=1))
    STEPS[step](monkeypatch, error)
    with pytest.raises((KeyboardInterrupt, HarError)) as info:
        _prepare(class_folder, out, seed=2)
    monkeypatch.undo()
    if isinstance(error, OSError):
        assert "No space left on device" in str(info.value)
    if step == "moving into place":  # stopped half-way through the moves: every reader refuses it
        with pytest.raises(HarError, match="incomplete dataset folder"):
            data.load_dataset_any(out)
        with pytest.raises(HarError, match="incomplete dataset folder"):
            build.dataset_from_args(Namespace(data_dir=None, dataset=str(out), seed=1, val_fraction=0.1,
                                              test_fraction=0.1, num_workers=1, near_dup_threshold=5), tmp_path / "x")
        rc, err = _run(capsys, "prepare", "--dataset", out, "--output-dir", tmp_path / "copy")
        assert rc == 2 and "incomplete dataset folder" in err
    else:
        assert _paths(data.load_dataset_any(out)) == before
        assert _paths(data.load_dataset_folder(out)) == before
    assert not list(out.glob(outputs.STAGING_PREFIX + "*"))


def test_train_refuses_an_incomplete_dataset_folder_in_one_line(class_folder, tmp_path, capsys):
    out = tmp_path / "out"
    _prepare(class_folder, out)
    marker = outputs.read_marker(out)
    outputs.write_marker(out, {**marker, "complete": False})  # as a stop during the final moves leaves it
    rc, err = _run(capsys, "train", "--dataset", out, "--output-dir", tmp_path / "model")
    assert rc == 2 and err == (f"error: {out}: incomplete dataset folder (a har_model run was interrupted or failed "
                               "before finishing it, or is still writing it); run that command again")


def test_pushed_dataset_files_hold_no_local_path(class_folder, tmp_path):
    out = tmp_path / "out"
    _prepare(class_folder, out)
    for rel in outputs.files_to_push(out, "dataset"):
        content = (out / rel).read_bytes()
        assert str(tmp_path).encode() not in content, rel
        assert str(class_folder).encode() not in content, rel
