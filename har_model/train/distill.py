"""Learning from unlabelled images (`--unlabeled-dir`): the trained model teaches a student on more pictures.

After the soup (har_model.train.soup) the shipped model is the teacher. It labels every unlabelled image with soft
targets: its probabilities on the clean evaluation view, averaged with the mirrored view (a steadier guess than
either). Images where its top probability is below --unlabeled-min-confidence are left out. The student starts
from the teacher's weights and trains --distill-epochs more epochs, at --distill-lr-scale times the members' peak
learning rates (it refines a trained model rather than restarting it), over the labelled images (their labels, label
smoothed) and the unlabelled ones (the teacher's probabilities), both with the members' training augmentation: the
student learns under noise what the teacher answered without it (Xie et al. 2020, "Noisy Student"; soft targets as
in Hinton et al. 2015). By default the teacher's targets are computed once, on the clean views. With
--distill-targets augmented the teacher answers again at every step, on the very crop the student sees ("a good
teacher is patient and consistent", Beyer et al. 2022): the clean answers then only choose which images take part.
That teacher is a frozen copy of the soup run as one folded inference network (har_model.train.frozen_prefix: all
its blocks are frozen), on the unlabelled images of each batch only.

Then three candidates are scored on validation, each single view and flip-averaged: the teacher, the student and
their equal-weight average (the student starts from the teacher's weights, so the two average like soup members;
WiSE-FT, Wortsman et al. 2022, interpolates a fine-tuned model with its start the same way). The one whose better view
scores highest is shipped (a tie goes to the student, then the teacher), so a folder of unhelpful pictures cannot make
the model worse on validation; which view it serves is chosen afterwards by the same figures
(har_model.calibration.choose_views). Unlabelled images never reach validation or test (har_model.data.unlabeled drops
near-duplicates of those splits).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import Trainer

from har_model.calibration import choose_views, softmax
from har_model.data.unlabeled import UnlabeledImages
from har_model.train.augment import Augmenter
from har_model.train.evaluation import prediction_logits
from har_model.train.frozen_prefix import FrozenPrefix
from har_model.train.image_cache import CachedImages, decode_images
from har_model.train.soup import average_state_dicts, train_member
from har_model.train.trainer import TrainingClock

IGNORE = -100  # the label of an unlabelled image: no hard target, not counted in the training accuracy
CANDIDATES = ("student", "teacher", "average")  # what may be shipped; equal validation scores: the earlier one


@dataclass
class Distillation:
    """What the student phase did, for metrics.json ("semi_supervised"), the record and the card."""

    unlabeled_found: int
    unlabeled_used: int  # at or above the confidence threshold
    min_confidence: float
    targets: str  # "clean" (computed once) or "augmented" (the teacher on each training crop)
    epochs: float
    teacher_validation_macro_f1: float  # single view, as the members' and the soup's figures
    student_validation_macro_f1: float
    validation_views: dict  # candidate -> {"single": macro-F1, "flip": macro-F1} on validation
    shipped: str  # "student", "teacher" or "average" (of the two)
    train_seconds: float
    log_history: list[dict]
    report: dict  # har_model.data.unlabeled's report (files, frames, what was left out)

    def summary(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "log_history"}


class SoftTargetImages(torch.utils.data.Dataset):
    """Labelled and unlabelled cached images for the student: `labels` (IGNORE for unlabelled) and `targets`
    (the teacher's probabilities; zeros for labelled images, whose target is their label)."""

    def __init__(self, labelled: CachedImages, unlabeled_pixels: torch.Tensor, teacher_probs: np.ndarray, prep):
        self.labelled, self.unlabeled = labelled, unlabeled_pixels
        self.probs = torch.as_tensor(teacher_probs, dtype=torch.float32)
        self.augmenter = Augmenter(prep)
        self.labels = torch.cat([labelled.labels, torch.full((len(unlabeled_pixels),), IGNORE)])
        self._zeros = torch.zeros(self.probs.shape[1])
        self._n = len(labelled)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if i < self._n:
            return {**self.labelled[i], "targets": self._zeros}
        j = i - self._n
        return {"pixel_values": self.augmenter(self.unlabeled[j]), "labels": self.labels[i], "targets": self.probs[j]}


class CropTeacher:
    """The teacher's probabilities for training crops, computed as the student trains (--distill-targets augmented):
    a frozen copy of the model in evaluation mode, its stem and blocks folded into one inference network, under the
    run's autocast."""

    def __init__(self, model: torch.nn.Module, bf16: bool):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.bf16 = bf16
        self.prefix = FrozenPrefix.build(self.model, torch.bfloat16 if bf16 else torch.float32)

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor) -> torch.Tensor:
        fast = self.prefix.replacing(train=False) if self.prefix else contextlib.nullcontext()
        with fast, torch.autocast(pixel_values.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(pixel_values=pixel_values).logits
        return torch.softmax(logits.float(), -1)


def _values(images) -> list[dict]:
    """Encoded images as the undecoded `datasets.Image` values decode_images reads."""
    return [{"bytes": data, "path": None} for data in images]


def teacher_probabilities(teacher: Trainer, images: CachedImages) -> np.ndarray:
    """The teacher's probabilities, averaged over the image and its mirror (Trainer.predict: batched, bf16 as the
    run, shared out under a launcher)."""
    probs = []
    for view in (images, images.mirrored()):
        probs.append(softmax(prediction_logits(teacher.predict(view, metric_key_prefix="teacher"))))
    return (probs[0] + probs[1]) / 2


def validation_views(trainer: Trainer) -> dict:
    """Validation macro-F1 of the model in `trainer`, single view and flip-averaged (as choose_views scores them)."""
    single = trainer.predict(trainer.eval_dataset, metric_key_prefix="candidate")
    mirrored = trainer.predict(trainer.eval_dataset.mirrored(), metric_key_prefix="candidate")
    return choose_views(prediction_logits(single), prediction_logits(mirrored),
                        np.asarray(single.label_ids))["validation_macro_f1"]


def choose_candidate(scores: dict) -> str:
    """The candidate whose better view scores the highest validation macro-F1; of equal ones the earliest in
    CANDIDATES (max keeps the first of equal maxima)."""
    return max(CANDIDATES, key=lambda c: max(scores[c].values()))


def distill(teacher: Trainer, unlabeled: UnlabeledImages, *, labelled: CachedImages, train_prep, eval_prep,
            new_model: Callable[[], object], new_trainer: Callable[..., Trainer], seed: int, epochs: float,
            min_confidence: float, num_workers: int, targets: str = "clean",
            resume_from: str | None = None) -> Distillation:
    """Train the student; load the best on validation of teacher, student and their average into `teacher.model`.
    `new_trainer(model, seed, train_dataset, epochs)` makes the student's Trainer (its checkpoints, its schedule);
    `targets`: "clean" or "augmented" (--distill-targets); `resume_from`: the student's checkpoint to continue
    (--resume)."""
    teacher_state = {k: v.detach().clone() for k, v in teacher.model.state_dict().items()}
    scores = {"teacher": validation_views(teacher)}
    teacher_f1 = scores["teacher"]["single"]
    clean = decode_images(_values(unlabeled.images), prep=eval_prep, train=False, num_workers=num_workers,
                          desc="decoding unlabelled (teacher)")
    probs = teacher_probabilities(teacher, CachedImages(clean, [0] * len(clean), eval_prep, augment=False))
    del clean
    keep = np.flatnonzero(probs.max(-1) >= min_confidence)
    print(f"teacher (validation macro-F1 {teacher_f1:.4f}) labelled {len(probs)} unlabelled images; {len(keep)} at "
          f"confidence >= {min_confidence:g} join the {len(labelled)} labelled ones for {epochs:g} student epochs"
          + ("; it answers again on each of their training crops" if targets == "augmented" else ""), flush=True)
    pixels = decode_images(_values(unlabeled.images[i] for i in keep), prep=train_prep, train=True, num_workers=num_workers,
                           desc="decoding unlabelled (student)")
    student = new_model()
    student.load_state_dict(teacher.model.state_dict())  # the student starts where the teacher is
    trainer = new_trainer(student, seed, SoftTargetImages(labelled, pixels, probs[keep], train_prep), epochs)
    if targets == "augmented":
        trainer.teacher_on_crops = CropTeacher(teacher.model, bf16=trainer.args.bf16)
    member = train_member(trainer, seed, resume_from)
    states = {"teacher": teacher_state, "student": member.state,
              "average": average_state_dicts([teacher_state, member.state])}
    for name in ("student", "average"):
        teacher.model.load_state_dict(states[name])
        scores[name] = validation_views(teacher)
    shipped = choose_candidate(scores)
    teacher.model.load_state_dict(states[shipped])
    student_f1 = scores["student"]["single"]
    table = ", ".join(f"{c} {v['single']:.4f} / {v['flip']:.4f}" for c, v in scores.items())
    print(f"student: validation macro-F1 single view / flip-averaged: {table}; shipping the {shipped}", flush=True)
    return Distillation(
        unlabeled_found=len(unlabeled), unlabeled_used=int(len(keep)), min_confidence=min_confidence, targets=targets,
        epochs=epochs,
        teacher_validation_macro_f1=teacher_f1, student_validation_macro_f1=student_f1, validation_views=scores,
        shipped=shipped,
        train_seconds=round(TrainingClock.of(trainer).seconds, 1), log_history=member.log_history,
        report=unlabeled.report,
    )
