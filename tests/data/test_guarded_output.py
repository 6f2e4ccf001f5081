"""`prepare` writes only into folders it owns, whole or not at all, and never loses the previous dataset."""

from __future__ import annotations

import errno
import os
import shutil
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


STEPS = {
    "between shards": _fail_second_split,
    "distribution chart": _fail_at("har_model.figures.class_distribution_chart"),
    "sample grid": _fail_at("har_model.figures.sample_grid"),
    "dataset card": _fail_at("har_model.cards.save_card"),
}


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")],
                         ids=["ctrl-c", "disk full"])
@pytest.mark.parametrize("step", list(STEPS))
def test_an_interrupted_rerun_leaves_the_previous_dataset(class_folder, tmp_path, monkeypatch, step, error):
    out = tmp_path / "out"
    before = _paths(_prepare(class_folder, out, seed=1))
    STEPS[step](monkeypatch, error)
    with pytest.raises((KeyboardInterrupt, HarError)) as info:
        _prepare(class_folder, out, seed=2)
    monkeypatch.undo()
    if isinstance(error, OSError):
        assert "No space left on device" in str(info.value)
    assert _paths(data.load_dataset_any(out)) == before
    assert _paths(data.load_dataset_folder(out)) == before
    assert not list(out.glob(outputs.STAGING_PREFIX + "*"))


def _plain(out) -> dict[str, list[str]]:
    """The dataset as plain `datasets.load_dataset(folder)` reads it (no marker check): file names per split."""
    import datasets

    return _paths(datasets.load_dataset(str(out)))


def test_a_stop_at_any_kind_of_swap_step_leaves_the_old_or_the_new_dataset_whole(class_folder, tmp_path, monkeypatch):
    """The final swap, stopped (Ctrl-C, full disk) at each kind of step: our reader and plain
    `datasets.load_dataset` both get the old dataset or the new one, never a mix; the error says which."""
    out = tmp_path / "out"
    old = _paths(_prepare(class_folder, out, seed=1))
    old_plain = _plain(out)
    shutil.copytree(out, tmp_path / "new")
    faults = helpers.PublishFaults(monkeypatch)
    new = _paths(_prepare(class_folder, tmp_path / "new", seed=2))
    monkeypatch.undo()
    new_plain = _plain(tmp_path / "new")
    assert new != old and new_plain != old_plain
    seen = set()
    for n in helpers.PublishFaults.spread(faults.names):
        for error in (KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")):
            helpers.PublishFaults(monkeypatch, n, error)
            try:
                _prepare(class_folder, out, seed=2)
                message = ""
            except (KeyboardInterrupt, HarError) as exc:
                message = str(exc)
            monkeypatch.undo()
            got, plain = _paths(data.load_dataset_any(out)), _plain(out)
            assert (got, plain) in ((old, old_plain), (new, new_plain)), (n, faults.names[n], error)
            state = "old" if got == old else "new"
            seen.add(state)
            if message:
                assert ("nothing in it was replaced" if state == "old" else "new result is complete") in message
            if state == "new":  # back to the old one for the next step
                _prepare(class_folder, out, seed=1)
    assert seen == {"old", "new"}
    assert not list(tmp_path.glob(outputs.SWAP_PREFIX + "*"))


def test_prepare_overwrite_into_a_model_folder_keeps_the_model_until_the_dataset_is_complete(class_folder, tmp_path,
                                                                                            tiny_model_dir, capsys):
    from transformers import pipeline

    out = tmp_path / "model"
    outputs.claim_output_dir(out, "model")
    with outputs.Publication(out, "model") as stage:
        for f in tiny_model_dir.iterdir():
            shutil.copy(f, stage / f.name)
    image = next((class_folder / "running").iterdir())
    labels = {r["label"] for r in pipeline("image-classification", model=str(out))(str(image))}
    broken = tmp_path / "broken"
    (broken / "a").mkdir(parents=True)
    (broken / "b").mkdir()
    (broken / "a" / "x.jpg").write_bytes(b"not an image")
    capsys.readouterr()
    rc, err = _run(capsys, "prepare", "--data-dir", broken, "--output-dir", out, "--overwrite", "--num-workers", "1")
    assert rc == 2 and err.count("\n") == 0
    assert {r["label"] for r in pipeline("image-classification", model=str(out))(str(image))} == labels
    outputs.require_complete(out)
    rc, err = _run(capsys, "prepare", "--data-dir", class_folder, "--output-dir", out, "--overwrite", "--num-workers", "1")
    assert rc == 0, err
    assert not (out / "model.safetensors").exists() and not (out / "config.json").exists()
    assert sum(len(s) for s in data.load_dataset_any(out).values()) == 36


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
