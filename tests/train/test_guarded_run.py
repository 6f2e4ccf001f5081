"""train.py writes only into folders it owns, publishes the model whole, resumes only its own run, and keeps the
previous model when a run fails or is interrupted at any write step. Tiny real model, generated images, in-process
(so that the write calls can be made to fail)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

import helpers
from har_model import cli, data, outputs
from har_model.serve.inference import Classifier
from har_model.serve.model import load_model

QUICK = ["--soup", "1", "--epochs", "1", "--batch-size", "8", "--eval-batch-size", "16", "--val-fraction", "0.25",
         "--test-fraction", "0.25", "--num-workers", "1", "--report-to", "none", "--num-examples", "1"]


def train(capsys, *args) -> tuple[int, str]:
    """`python train.py ARGS` in this process: (exit code, stderr)."""
    capsys.readouterr()
    rc = cli.main(["train", *map(str, args)])
    return rc, capsys.readouterr().err


def error_line(err: str) -> str:
    """The one `error:` line of stderr (progress bars may precede it); never a traceback."""
    lines = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): _sha(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return helpers.make_class_folder(tmp_path_factory.mktemp("guarded") / "images", per_class=8)


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, images, tiny_model_dir) -> Path:
    """A finished run: the previous good result of the interruption tests."""
    out = tmp_path_factory.mktemp("good") / "model"
    assert cli.main(["train", "--data-dir", str(images), "--output-dir", str(out), "--model", str(tiny_model_dir),
                     *QUICK]) == 0
    return out


# ------------------------------------------------------------------------------------- folders that are not ours


def test_train_refuses_a_folder_it_did_not_write(tmp_path, images, tiny_model_dir, capsys):
    out = tmp_path / "mine"
    (out / "examples").mkdir(parents=True)
    for name, text in (("notes.txt", "notes"), ("README.md", "my readme"), ("config.json", "{}")):
        (out / name).write_text(text)
    (out / "examples" / "vacation.jpg").write_bytes(b"my photo")
    before = _tree(out)
    rc, err = train(capsys, "--data-dir", images, "--output-dir", out, "--model", tiny_model_dir, *QUICK)
    assert rc == 2 and err.count("\n") == 1 and str(out) in err and "--overwrite" in err
    assert _tree(out) == before


@pytest.mark.parametrize("layout", ["dataset is output", "data inside output", "model is output"])
def test_train_refuses_an_output_folder_overlapping_an_input(tmp_path, good_run, tiny_model_dir, capsys, layout):
    project = tmp_path / "P"
    src = helpers.make_class_folder(project / "data", per_class=3)
    if layout == "dataset is output":
        args, out, relation = ["--dataset", good_run / "dataset"], good_run / "dataset", "is the input"
    elif layout == "data inside output":
        args, out, relation = ["--data-dir", src], project, "contains the input"
    else:
        args, out, relation = ["--data-dir", src, "--model", good_run], good_run, "is the input"
    before = _tree(out)
    rc, err = train(capsys, *args, "--output-dir", out, *QUICK, "--overwrite")
    assert rc == 2 and relation in err and err.count("\n") == 1
    assert _tree(out) == before


def test_an_unwritable_output_folder_is_one_line(tmp_path, images, monkeypatch, capsys):
    def denied(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    rc, err = train(capsys, "--data-dir", images, "--output-dir", tmp_path / "locked", *QUICK)
    assert rc == 2 and err == f"error: --output-dir {tmp_path / 'locked'}: cannot write there (Permission denied)\n"


def test_a_truncated_base_model_is_one_line(tmp_path, images, tiny_model_dir, capsys):
    model = tmp_path / "base"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    rc, err = train(capsys, "--data-dir", images, "--output-dir", tmp_path / "out", "--model", model, *QUICK)
    assert rc == 2 and error_line(err).startswith(f"error: {model}: cannot load as an image classifier")


# --------------------------------------------------------------------------------- what is written and pushed


def test_the_model_folder_is_marked_and_pushes_only_its_files_without_local_paths(good_run):
    marker = outputs.read_marker(good_run)
    assert marker["kind"] == "model" and marker["complete"] and marker["dirs"] == ["cache", "checkpoints"]
    assert outputs.read_marker(good_run / "dataset")["complete"]
    pushed = outputs.files_to_push(good_run, "model")
    assert {"model.safetensors", "config.json", "metrics.json", "README.md"} <= set(pushed)
    assert not [f for f in pushed if f.startswith(("checkpoints/", "dataset/"))]
    root = str(good_run.parent).encode()
    for rel in pushed + [f"dataset/{f}" for f in outputs.files_to_push(good_run / "dataset", "dataset")]:
        assert root not in (good_run / rel).read_bytes(), rel
    metrics = json.loads((good_run / "metrics.json").read_text())
    assert metrics["best_checkpoint"].startswith("checkpoints/checkpoint-")
    assert (good_run / metrics["best_checkpoint"]).is_dir()


def test_class_names_are_kept_as_labels_and_made_safe_as_file_names(tmp_path, capsys, tiny_model_dir):
    from datasets import Dataset, DatasetDict

    names = ["../../../escape-a", "x" * 250, "sitting"]
    rows = [(helpers.synthetic_image(i % 3, i), i % 3) for i in range(24)]
    ds = Dataset.from_dict({"image": [r[0] for r in rows], "label": [r[1] for r in rows]},
                           features=data.features_for(names))
    DatasetDict({"train": ds.select(range(12)), "validation": ds.select(range(12, 18)),
                 "test": ds.select(range(18, 24))}).save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "deep" / "er" / "model"
    rc, err = train(capsys, "--dataset", tmp_path / "ds", "--output-dir", out, "--model", tiny_model_dir, *QUICK)
    assert rc == 0, err[-2000:]
    assert not (out / "examples" / "../../../escape-a_0.jpg").resolve().exists()
    examples = sorted((out / "examples").iterdir())
    assert len(examples) == 3 and all(len(p.name.encode()) < 100 and p.suffix == ".jpg" for p in examples)
    assert json.loads((out / "config.json").read_text())["id2label"] == {str(i): n for i, n in enumerate(names)}
    assert "../../../escape-a" in (out / "README.md").read_text()
    assert Classifier.load(out).labels == names


# ------------------------------------------------------------------------------------------------- --resume


def test_overwrite_starts_afresh_and_resume_continues_the_new_run(tmp_path, images, tiny_model_dir, capsys):
    out = tmp_path / "model"
    base = ["--data-dir", images, "--output-dir", out, "--model", tiny_model_dir, *QUICK]
    assert train(capsys, *base, "--epochs", "2", "--learning-rate", "0.01")[0] == 0
    old_steps = {p.name for p in (out / "checkpoints").glob("checkpoint-*")}
    (out / "notes.txt").write_text("mine")
    rc, err = train(capsys, *base, "--overwrite")
    assert rc == 0, err[-2000:]
    new_steps = {p.name for p in (out / "checkpoints").glob("checkpoint-*")}
    assert max(int(s.split("-")[1]) for s in new_steps) < max(int(s.split("-")[1]) for s in old_steps)
    assert (out / "notes.txt").read_text() == "mine"
    rc, err = train(capsys, *base, "--resume", "--learning-rate", "0.01")  # the old run's flags: refused, says why
    assert rc == 2 and "belong to a different run" in error_line(err) and "--learning-rate 0.002 -> 0.01" in err
    assert train(capsys, *base, "--resume")[0] == 0


def test_resume_with_overwrite_is_refused_in_one_line(tmp_path, good_run, images, tiny_model_dir, capsys):
    out = tmp_path / "model"
    shutil.copytree(good_run, out)
    before = _tree(out)
    rc, err = train(capsys, "--data-dir", images, "--output-dir", out, "--model", tiny_model_dir, *QUICK, "--resume",
                    "--overwrite")
    assert rc == 2 and "--resume and --overwrite contradict each other" in error_line(err)
    assert _tree(out) == before


def test_train_overwrite_into_a_dataset_folder_keeps_it_until_the_model_is_complete(tmp_path, good_run, images,
                                                                                    tiny_model_dir, monkeypatch,
                                                                                    capsys):
    import datasets

    out = tmp_path / "data"
    shutil.copytree(good_run / "dataset", out)
    sizes = {s: len(v) for s, v in data.load_dataset_any(out).items()}

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("har_model.cards.render_model_card", stop)
    args = ["--data-dir", images, "--output-dir", out, "--model", tiny_model_dir, *QUICK, "--overwrite"]
    assert train(capsys, *args)[0] == 130
    monkeypatch.undo()
    assert {s: len(v) for s, v in data.load_dataset_any(out).items()} == sizes
    plain = datasets.load_dataset(str(out))
    assert {s: len(plain[s]) for s in plain} == sizes
    rc, err = train(capsys, *args)
    assert rc == 0, err[-2000:]
    assert outputs.read_marker(out)["kind"] == "model" and load_model(out).problem is None
    assert not (out / "data").exists() and (out / "dataset" / "data").is_dir()


def test_an_incomplete_last_checkpoint_is_skipped_with_a_warning(tmp_path, images, tiny_model_dir, capsys):
    out = tmp_path / "model"
    base = ["--data-dir", images, "--output-dir", out, "--model", tiny_model_dir, *QUICK, "--epochs", "2"]
    assert train(capsys, *base)[0] == 0
    last = max((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    weights = last / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a kill while it was written
    rc, err = train(capsys, *base, "--resume")
    assert rc == 0, err[-2000:]
    assert f"skipping the incomplete checkpoint {last}" in err and "Traceback" not in err


def test_resume_after_the_data_changed_is_refused_before_anything_is_replaced(tmp_path, tiny_model_dir, capsys):
    images = helpers.make_class_folder(tmp_path / "images", per_class=8)
    out = tmp_path / "model"
    base = ["--data-dir", images, "--output-dir", out, "--model", tiny_model_dir, *QUICK]
    assert train(capsys, *base)[0] == 0
    before = _tree(out)
    helpers.synthetic_image(0, 777).save(images / "clapping" / "new.jpg")
    rc, err = train(capsys, *base, "--resume")
    assert rc == 2 and "belong to a different run (the data (images, labels or split))" in error_line(err)
    assert _tree(out) == before  # the dataset copy and the model are as they were


# --------------------------------------------------------------------------- interruptions at each write step


def _fail_nth_save(n_from_end: int):
    """The model's weights are saved for every checkpoint and once for the shipped model; fail one of them."""
    def install(monkeypatch, error, epochs: int):
        from transformers import PreTrainedModel

        real, calls = PreTrainedModel.save_pretrained, []
        target = epochs + 1 - n_from_end  # 1-based index of the failing call

        def save_pretrained(self, *a, **k):
            calls.append(1)
            if len(calls) == target:
                raise error
            return real(self, *a, **k)

        monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_pretrained)

    return install


def _fail_at(target: str):
    def install(monkeypatch, error, epochs: int):
        def boom(*a, **k):
            raise error

        monkeypatch.setattr(target, boom)

    return install


def _fail_swap(step: str):
    def install(monkeypatch, error, epochs: int):
        # commits: 1 the dataset copy's, 2 the ONNX export's (both into the staging folder), 3 the run's
        helpers.PublishFaults(monkeypatch, error=error, fail_on=step, commit=3)

    return install


STEPS = {
    "dataset card": _fail_at("har_model.cards.save_card"),
    "checkpoint": _fail_nth_save(1),
    "final weights": _fail_nth_save(0),
    "confusion matrix": _fail_at("har_model.train.reports.plot_confusion_matrix"),
    "model card": _fail_at("har_model.cards.render_model_card"),
    "onnx export": _fail_at("har_model.model_folder.onnx.export_onnx"),
    "swap inside the onnx export": lambda monkeypatch, error, epochs: helpers.PublishFaults(
        monkeypatch, error=error, fail_on="_renameat2_exchange", commit=2),
    "swap: linking what stays": _fail_swap("link"),
    "swap: moving the new files": _fail_swap("replace"),
    "swap: the exchange": _fail_swap("_renameat2_exchange"),
    "swap: removing the old folder": _fail_swap("_renameat2_exchange+1"),
}


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")],
                         ids=["ctrl-c", "disk-full"])
@pytest.mark.parametrize("step", list(STEPS))
def test_an_interrupted_rerun_keeps_the_previous_model_or_is_refused(tmp_path, good_run, images, tiny_model_dir,
                                                                    monkeypatch, capsys, step, error):
    if isinstance(error, OSError) and step in ("checkpoint", "model card", "onnx export"):
        pytest.skip("one failure kind is enough at these steps")
    if isinstance(error, OSError) and step == "swap: removing the old folder":
        pytest.skip("deleting frees space; a failure there only leaves the old folder for the next run")
    out = tmp_path / "model"
    shutil.copytree(good_run, out)
    before = _tree(out)
    before_data = {s: len(v) for s, v in data.load_dataset_any(out / "dataset").items()}
    STEPS[step](monkeypatch, error, epochs=1)
    rc, err = train(capsys, "--data-dir", images, "--output-dir", out, "--model", tiny_model_dir, *QUICK,
                    "--overwrite", "--seed", "7", "--export-onnx")
    monkeypatch.undo()
    assert rc == (130 if isinstance(error, KeyboardInterrupt) else 2), err[-2000:]
    if isinstance(error, OSError):
        assert "No space left on device" in error_line(err)
    assert "Traceback" not in err
    image = images / "running" / "img_000.jpg"
    kept = {k: v for k, v in _tree(out).items() if not k.startswith("checkpoints/")}
    old = {k: v for k, v in before.items() if not k.startswith("checkpoints/")}
    if step == "swap: removing the old folder":  # after the exchange: the new model, whole
        assert kept != old and "the new result is complete" in error_line(err)
        assert outputs.read_marker(out)["complete"] and (out / "onnx" / "model.onnx").is_file()
    else:
        assert kept == old
        assert {s: len(v) for s, v in data.load_dataset_any(out / "dataset").items()} == before_data
        if step.startswith("swap"):
            assert "nothing in it was replaced" in error_line(err)
    assert load_model(out).problem is None
    assert cli.main(["predict", "--model", str(out), str(image)]) == 0
    _plain_readers_agree(out, image)
    outputs.claim_output_dir(out, "model", overwrite=True)  # what the next run does first: clears the leftovers
    assert not list(out.glob(outputs.STAGING_PREFIX + "*")) and not list(tmp_path.glob(outputs.SWAP_PREFIX + "*"))


def _plain_readers_agree(out: Path, image: Path) -> None:
    """Plain `pipeline()` and `datasets.load_dataset` (which ignore the marker) read one consistent folder: the
    labels of config.json, the weights and calibration that go with them, the dataset the card describes."""
    import datasets
    from transformers import pipeline

    labels = set(json.loads((out / "config.json").read_text())["id2label"].values())
    assert {r["label"] for r in pipeline("image-classification", model=str(out))(str(image), top_k=None)} == labels
    plain = datasets.load_dataset(str(out / "dataset"))
    ours = data.load_dataset_any(out / "dataset")
    assert {s: len(plain[s]) for s in plain} == {s: len(ours[s]) for s in ours}
