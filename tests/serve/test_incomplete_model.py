"""Readers of a model folder (predict, the app, export-onnx) refuse one whose writing did not finish, and serve
the previous model when a re-run failed before its files were moved into place."""

from __future__ import annotations

import os
import shutil

import pytest

import helpers
from har_model import cli, outputs
from har_model.serve.inference import Classifier
from har_model.serve.ui import load_model


def _publish_model(src, out):
    """``src`` (a saved model) published into ``out`` as training does."""
    outputs.claim_output_dir(out, "model")
    with outputs.Publication(out, "model") as stage:
        for f in src.iterdir():
            shutil.copy(f, stage / f.name)
    return out


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "x.jpg"
    helpers.synthetic_image(1, 3).save(path)
    return path


def _interrupted_republish(out, new_model, monkeypatch, at_move: int | None):
    """Re-publish ``new_model`` into ``out`` and stop it: while writing (at_move None) or at the n-th file move."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if at_move is not None and len(calls) == at_move:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        with outputs.Publication(out, "model") as stage:
            for f in new_model.iterdir():
                shutil.copy(f, stage / f.name)
            if at_move is None:
                raise KeyboardInterrupt
    monkeypatch.undo()


def test_an_interrupted_rewrite_keeps_serving_the_previous_model(tiny_model_dir, tmp_path, image, monkeypatch, capsys):
    out = _publish_model(tiny_model_dir, tmp_path / "model")
    before = Classifier.load(out).predict_proba([image])
    other = helpers.make_tiny_model(tmp_path / "other", classes=("a", "b", "c", "d"))
    _interrupted_republish(out, other, monkeypatch, at_move=None)
    assert Classifier.load(out).labels == list(helpers.CLASSES)
    assert (Classifier.load(out).predict_proba([image]) == before).all()
    assert cli.main(["predict", "--model", str(out), str(image)]) == 0
    handle = load_model(out)
    assert handle.problem is None and handle.classifier.labels == list(helpers.CLASSES)


def test_a_half_moved_model_folder_is_refused_by_every_reader(tiny_model_dir, tmp_path, image, monkeypatch, capsys):
    out = _publish_model(tiny_model_dir, tmp_path / "model")
    other = helpers.make_tiny_model(tmp_path / "other", classes=("a", "b", "c", "d"))
    _interrupted_republish(out, other, monkeypatch, at_move=3)  # marker "incomplete", one file moved, stop
    capsys.readouterr()
    assert cli.main(["predict", "--model", str(out), str(image)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "incomplete model folder" in err and str(out) in err
    handle = load_model(out)
    assert handle.classifier is None and "incomplete model folder" in handle.problem
    assert cli.main(["export-onnx", "--model", str(out)]) == 2
    assert "incomplete model folder" in capsys.readouterr().err
    assert not (out / "onnx").exists()


def test_a_failed_onnx_export_leaves_no_file_behind(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from har_model.serve import onnx_export

    out = _publish_model(tiny_model_dir, tmp_path / "model")

    def disagree(*a, **k):
        raise onnx_export.HarError("ONNX output differs from torch")

    monkeypatch.setattr(onnx_export, "_check_against_torch", disagree)
    assert cli.main(["export-onnx", "--model", str(out), "--no-int8"]) == 2
    assert not (out / "onnx").exists() and not list(out.glob(outputs.STAGING_PREFIX + "*"))
    monkeypatch.undo()
    assert cli.main(["export-onnx", "--model", str(out), "--no-int8"]) == 0
    assert "onnx/model.onnx" in outputs.read_marker(out)["files"] and outputs.read_marker(out)["complete"]
    assert Classifier.load(out).backend == "onnx:model.onnx"


def test_a_truncated_safetensors_file_is_one_line(tiny_model_dir, tmp_path, image, capsys):
    out = tmp_path / "model"
    shutil.copytree(tiny_model_dir, out)
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    assert cli.main(["predict", "--model", str(out), "--backend", "torch", str(image)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: cannot load the model") and err.count("\n") == 1
