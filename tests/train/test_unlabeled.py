"""--unlabeled-dir: unlabelled photos and video frames checked like the labelled data, kept out of every split,
taught by the trained model to a student; recorded in metrics.json and both cards; --resume guards them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

import helpers
from har_model.data import prepare_dataset
from har_model.data.unlabeled import scan_unlabeled
from har_model.train.distill import IGNORE, CropTeacher, choose_candidate
from har_model.train.soup import average_state_dicts
from har_model.train.trainer import HarTrainer, freeze_early_layers

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--batch-size", "8", "--eval-batch-size", "16", "--val-fraction", "0.25", "--test-fraction", "0.25",
         "--num-workers", "1", "--report-to", "none", "--learning-rate", "3e-3"]


def run_train(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def blocks(seed: int, size=(96, 72)) -> Image.Image:
    """A picture of random coloured blocks: unlike the labelled shapes, never a near-duplicate of one by chance."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[1] // 12, size[0] // 12, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.NEAREST)


def unlabelled_folder(root: Path, labelled: Path) -> Path:
    """8 new photos (in a sub-folder too), a 3-second clip, one corrupt file, one text file, an exact copy of an
    unlabelled photo, an exact copy of a labelled photo and a resized copy (a near-duplicate) of one of them."""
    root.mkdir(parents=True)
    (root / "more").mkdir()
    for i in range(8):
        blocks(50_000 + i).save(root / ("more" if i % 2 else ".") / f"u{i}.jpg", quality=92)
    frames = [blocks(60_000 + i // 10) for i in range(30)]  # 3 shots of 1 s
    helpers.write_mp4(root / "clip.mp4", frames, fps=10)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    shutil.copy(root / "u0.jpg", root / "u0_copy.jpg")
    return root


@pytest.fixture()
def labelled(tmp_path):
    folder = helpers.make_class_folder(tmp_path / "images", per_class=12)
    dsd = prepare_dataset(folder, tmp_path / "dataset", seed=1, val_fraction=0.25, test_fraction=0.25,
                          num_workers=1, progress=False, verbose=False)
    return folder, dsd


def test_scan_keeps_new_photos_and_frames_and_reports_the_rest(tmp_path, labelled):
    folder, dsd = labelled
    root = unlabelled_folder(tmp_path / "unlabelled", folder)
    test_image = dsd["test"][0]["image"]
    test_image.resize((test_image.width * 2, test_image.height * 2)).save(root / "test_resized.png")  # near-dup
    shutil.copy(next((folder / "running").glob("*.jpg")), root / "labelled_copy.jpg")

    found = scan_unlabeled(root, dsd, fps=1.0, num_workers=1, progress=False)
    report = found.report
    frames = [n for n in found.names if n.startswith("clip.mp4@")]
    assert len(frames) == report["video_frames_sampled"] == 3  # 3 s at 1 frame/s
    assert {"u0.jpg", "more/u1.jpg", "more/u7.jpg"} <= set(found.names)
    assert "u0_copy.jpg" not in found.names and report["copies"] == 1
    assert "labelled_copy.jpg" not in found.names and report["copies_of_labelled"] == 1
    assert "test_resized.png" not in found.names and report["near_duplicates_of_evaluation"] == 1
    assert report["dropped_examples"]["near_duplicates_of_evaluation"] == ["test_resized.png"]
    kinds = {s["path"]: s["kind"] for s in report["skipped"]}
    assert kinds == {"broken.jpg": "decode-error", "notes.txt": "not-image"}
    assert len(found) == report["used"] == 8 + 3
    # the fingerprint follows the images kept
    (root / "u2.jpg").unlink()
    assert scan_unlabeled(root, dsd, num_workers=1, progress=False).fingerprint != found.fingerprint


def test_a_folder_with_nothing_usable_is_one_line(tmp_path, labelled):
    from har_model.errors import HarError

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(HarError, match="no usable image"):
        scan_unlabeled(empty, labelled[1], num_workers=1, progress=False)
    with pytest.raises(HarError, match="no such folder"):
        scan_unlabeled(tmp_path / "missing", labelled[1], num_workers=1, progress=False)


def test_the_teacher_on_crops_answers_as_the_model_did_and_ignores_the_students_steps(tmp_path):
    model = AutoModelForImageClassification.from_pretrained(helpers.make_tiny_model(tmp_path / "m"))
    freeze_early_layers(model, 1)
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = torch.softmax(model.eval()(pixel_values=x).logits, -1)
    model.train()
    teacher = CropTeacher(model, bf16=False)
    assert teacher.prefix is not None and len(teacher.prefix.blocks) == len(model.efficientnet.encoder.blocks)
    got = teacher(x)
    assert torch.allclose(got, want, atol=1e-5) and not got.requires_grad
    with torch.no_grad():  # the student (the model) trains on: its teacher is a copy and does not move
        for p in model.parameters():
            p.add_(0.5)
    assert torch.allclose(teacher(x), want, atol=1e-5) and model.training


def test_the_teacher_on_crops_targets_exactly_the_unlabelled_crops_of_a_batch():
    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    model = lambda pixel_values: {"logits": head(pixel_values)}  # noqa: E731
    seen = []

    def teacher(pixel_values):
        seen.append(pixel_values.clone())
        return torch.softmax(pixel_values.flatten(1)[:, :3] * 3, -1)

    x = torch.randn(4, 3, 2, 2)
    labels = torch.tensor([2, IGNORE, 0, IGNORE])
    stored = torch.full((4, 3), 1 / 3)  # the clean targets, replaced for the unlabelled crops
    trainer = SimpleNamespace(args=SimpleNamespace(label_smoothing_factor=0.1), teacher_on_crops=teacher)
    loss, _ = HarTrainer._soft_target_loss(trainer, model, {"pixel_values": x, "labels": labels}, stored)
    assert len(seen) == 1 and torch.equal(seen[0], x[[1, 3]])
    hard = torch.nn.functional.one_hot(torch.tensor([2, 0]), 3) * 0.9 + 0.1 / 3
    target = torch.stack([hard[0], teacher(x[[1]])[0], hard[1], teacher(x[[3]])[0]])
    want = -(target * torch.log_softmax(head(x), -1)).sum(-1).mean()
    assert torch.allclose(loss, want)
    trainer.teacher_on_crops = None  # clean targets: the stored ones
    loss, _ = HarTrainer._soft_target_loss(trainer, model, {"pixel_values": x, "labels": labels}, stored)
    target[[1, 3]] = 1 / 3
    assert torch.allclose(loss, -(target * torch.log_softmax(head(x), -1)).sum(-1).mean())


def test_the_candidate_whose_better_view_scores_highest_on_validation_is_shipped():
    teacher, student = {"single": 0.80, "flip": 0.81}, {"single": 0.82, "flip": 0.80}

    def choice(average: dict, first: dict = teacher) -> str:
        return choose_candidate({"teacher": first, "student": student, "average": average})

    assert choice({"single": 0.79, "flip": 0.83}) == "average"  # its flip-averaged view beats every other figure
    assert choice({"single": 0.81, "flip": 0.82}) == "student"
    assert choice(student, first={"single": 0.7, "flip": 0.9}) == "teacher"
    # ties: the student before the teacher (as the soup's rule), the average only when strictly better
    assert choose_candidate({"teacher": student, "student": student, "average": student}) == "student"
    assert choose_candidate({"teacher": {"single": 0.82, "flip": 0.0}, "student": {"single": 0.81, "flip": 0.0},
                             "average": {"single": 0.82, "flip": 0.82}}) == "teacher"


@pytest.mark.parametrize("targets", ["clean", "augmented"])
def test_training_with_unlabelled_images_records_it_and_keeps_them_out_of_the_splits(tmp_path, tiny_model_dir,
                                                                                     targets):
    images = helpers.make_class_folder(tmp_path / "images", per_class=12)
    unlabelled = unlabelled_folder(tmp_path / "unlabelled", images)
    out = tmp_path / "model"
    args = ["--data-dir", images, "--output-dir", out, "--model", tiny_model_dir, *QUICK, "--soup", "1",
            "--epochs", "1", "--unlabeled-dir", unlabelled, "--distill-epochs", "1",
            "--unlabeled-min-confidence", "0", "--distill-targets", targets]
    proc = run_train(*args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "unlabelled: 11 images used" in proc.stdout and "2 unusable files" in proc.stdout
    assert ("answers again on each of their training crops" in proc.stdout) == (targets == "augmented")

    metrics = json.loads((out / "metrics.json").read_text())
    semi = metrics["semi_supervised"]
    assert semi["unlabeled_found"] == 11 and semi["unlabeled_used"] == 11
    # the shipped weights are the candidate validation chose: the teacher (the member's best checkpoint), the student
    # (its best checkpoint) or their average
    views = semi["validation_views"]
    assert list(views) == ["teacher", "student", "average"] and semi["shipped"] == choose_candidate(views)
    assert semi["student_validation_macro_f1"] == views["student"]["single"]
    student_steps = sorted((out / "checkpoints" / "student").glob("checkpoint-*"), key=lambda p: int(p.name[11:]))
    best = json.loads((student_steps[-1] / "trainer_state.json").read_text())["best_model_checkpoint"]
    candidates = {"teacher": load_file(out / metrics["best_checkpoint"] / "model.safetensors"),
                  "student": load_file(out / "checkpoints" / "student" / Path(best).name / "model.safetensors")}
    candidates["average"] = average_state_dicts([candidates["teacher"], candidates["student"]])
    shipped = load_file(out / "model.safetensors")
    assert all(torch.equal(v, candidates[semi["shipped"]][k]) for k, v in shipped.items())
    assert f"shipping the {semi['shipped']}" in proc.stdout
    assert semi["report"]["video_frames_sampled"] == 3 and len(semi["report"]["skipped"]) == 2
    assert metrics["recipe"]["unlabeled"]["epochs"] == 1 and metrics["recipe"]["unlabeled"]["fps"] == 1
    assert semi["targets"] == metrics["recipe"]["unlabeled"]["targets"] == targets
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["flip_average"] == metrics["views"]["flip_average"]  # serving does what validation chose
    card = (out / "README.md").read_text()
    assert ("Two views" if calibration["flip_average"] else "One view") in card
    assert "11 of 11 usable" in card and f"shipped: the {semi['shipped']} (the best of the three)" in card
    assert f"their weight average {views['average']['single']:.4f} / {views['average']['flip']:.4f}" in card
    assert ("on the crop the student sees" in card) == (targets == "augmented")

    # the unlabelled images are in no split: the dataset holds exactly the 36 labelled images
    from datasets import load_dataset

    dsd = load_dataset(str(out / "dataset"))
    assert sum(len(dsd[s]) for s in dsd) == 36
    assert metrics["num_train"] + metrics["num_validation"] + metrics["num_test"] == 36
    report = json.loads((out / "dataset" / "data_report.json").read_text())
    assert report["unlabeled"]["used_in_training"] == 11
    assert "Unlabelled images used in training" in (out / "dataset" / "README.md").read_text()

    # --resume with another unlabelled folder: one line, nothing changed
    (unlabelled / "u2.jpg").unlink()
    before = (out / "model.safetensors").read_bytes()
    proc = run_train(*args, "--resume")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "unlabelled images" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and (out / "model.safetensors").read_bytes() == before
