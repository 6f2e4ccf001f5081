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
    """Re-publish ``new_model`` into ``out`` and stop it: while writing (at_move None) or at the n-th file move of
    the in-place fallback (where no swap folder can be made beside ``out``)."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if at_move is not None and len(calls) == at_move:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(outputs, "_new_swap_folder", lambda out: None)  # the in-place fallback (no folder beside)
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


def test_a_half_moved_model_folder_is_refused_by_every_reader_in_place(tiny_model_dir, tmp_path, image, monkeypatch, capsys):
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
    from har_model.model_folder import onnx as onnx_export

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


def test_an_export_stopped_at_any_step_leaves_a_usable_model(tiny_model_dir, tmp_path, image, monkeypatch, capsys):
    """export-onnx into a finished model, stopped (Ctrl-C, full disk) at each kind of step of its final swap: the
    model is served as before by predict, the app and plain pipeline(); the export is there whole or not at all."""
    import errno

    from transformers import pipeline

    out = _publish_model(tiny_model_dir, tmp_path / "model")
    reference = _publish_model(tiny_model_dir, tmp_path / "reference")
    faults = helpers.PublishFaults(monkeypatch)
    assert cli.main(["export-onnx", "--model", str(reference), "--no-int8"]) == 0
    monkeypatch.undo()
    onnx_files = sorted(p.name for p in (reference / "onnx").iterdir())
    scores = pipeline("image-classification", model=str(out))(str(image))
    seen = set()
    for n in helpers.PublishFaults.spread(faults.names):
        for error in (KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")):
            shutil.rmtree(out / "onnx", ignore_errors=True)
            outputs.write_marker(out, {**outputs.read_marker(out), "files": sorted(
                f for f in outputs.read_marker(out)["files"] if not f.startswith("onnx/"))})
            helpers.PublishFaults(monkeypatch, n, error)
            capsys.readouterr()
            rc = cli.main(["export-onnx", "--model", str(out), "--no-int8"])
            monkeypatch.undo()
            err = capsys.readouterr().err
            exported = (out / "onnx").exists()
            seen.add(exported)
            assert not exported or sorted(p.name for p in (out / "onnx").iterdir()) == onnx_files
            assert ("onnx/model.onnx" in outputs.read_marker(out)["files"]) == exported
            if rc != 0:
                assert ("nothing in it was replaced" if not exported else "new result is complete") in err, err
            outputs.require_complete(out)
            assert cli.main(["predict", "--model", str(out), str(image)]) == 0
            assert load_model(out).problem is None
            assert pipeline("image-classification", model=str(out))(str(image)) == scores
    assert seen == {True, False}


# ------------------------------------------------------------------------------- inconsistent model folders


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """The tiny model with its ONNX export (the app and predict then serve the ONNX file)."""
    out = _publish_model(tiny_model_dir, tmp_path_factory.mktemp("exported") / "model")
    assert cli.main(["export-onnx", "--model", str(out), "--no-int8"]) == 0
    return out


def _readers_refuse(folder, image, capsys, message):
    """predict, the app, export-onnx and publish-space all refuse ``folder`` with one line holding ``message``."""
    capsys.readouterr()
    for argv in (["predict", "--model", str(folder), str(image)],
                 ["export-onnx", "--model", str(folder), "--no-int8"],
                 ["publish-space", "--model", str(folder), "--space", "me/demo", "--dry-run",
                  "--dir", str(folder.parent / "space")]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, (argv, err)
    handle = load_model(folder)
    assert handle.classifier is None and message in handle.problem


@pytest.mark.parametrize("labels", [["a", "b", "c", "d"], ["a", "b"]], ids=["more labels", "fewer labels"])
def test_id2label_that_does_not_match_the_head_is_refused(exported, tmp_path, image, capsys, labels):
    import json

    folder = tmp_path / "model"
    shutil.copytree(exported, folder)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {str(i): name for i, name in enumerate(labels)}
    config["label2id"] = {name: i for i, name in enumerate(labels)}
    (folder / "config.json").write_text(json.dumps(config))
    _readers_refuse(folder, image, capsys, str(folder))
    assert cli.main(["predict", "--model", str(folder), str(image)]) == 2
    assert f"gives 3 scores per image but {folder / 'config.json'} names {len(labels)} classes" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("{}", "no temperature"),
    ('{"temperature": "1.5", "unsure_below": 0.4}', "temperature must be a number"),
    ('{"temperature": 1.5, "unsure_below": [0.4]}', "unsure_below must be a number"),
    ('{"temperature": 1.5, "unsure_below": 0.4, "validation": "good"}', "validation an object"),
    ("[1.5]", "not a JSON object"),
])
def test_a_calibration_of_the_wrong_type_or_shape_is_refused(exported, tmp_path, image, capsys, content, message):
    folder = tmp_path / "model"
    shutil.copytree(exported, folder)
    (folder / "calibration.json").write_text(content)
    _readers_refuse(folder, image, capsys, message)


def test_unusable_output_paths_are_one_line(exported, tmp_path, capsys):
    (tmp_path / "file").write_text("a file, not a folder")
    capsys.readouterr()
    for argv in (["export-onnx", "--model", str(exported), "--output-dir", str(tmp_path / "file" / "sub")],
                 ["publish-space", "--model", str(exported), "--space", "me/demo", "--dry-run",
                  "--dir", str(tmp_path / "file" / "sub")]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error:") and "file/sub" in err and "Traceback" not in err, err
