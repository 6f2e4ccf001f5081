"""The resolved record of the run that wrote a model folder: sizes, preprocessing, augmentation and recipe.

Resolved means as the run did it, not as it was asked: ``frozen_blocks`` is a number where the flag said "auto",
``precision`` is bf16, fp16 or fp32, the sizes are the pixels the run trained and evaluated at. Training builds it once
and writes it as ``metrics.json``'s ``recipe``; whoever needs it reads it back with ``RunRecord.read(folder)`` (a
run that fine-tunes a folder again trains at its crop size; the model card lists it), as nanoGPT rebuilds its
``GPTConfig(**checkpoint["model_args"])``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from har_model.model_folder.files import METRICS, read_optional

RECORD_KEY = "recipe"  # where metrics.json holds it


@dataclass(frozen=True)
class RunRecord:
    """What the run that wrote the folder did (fields in the order metrics.json lists them)."""

    epochs: float
    batch_size: int
    learning_rate: float
    backbone_lr_scale: float
    frozen_blocks: int
    weight_decay: float
    label_smoothing: float
    mixup_alpha: float
    soup: int
    warmup_ratio: float
    precision: str  # "bf16", "fp16" or "fp32"
    seed: int  # of the split
    input_size: list[int]  # [height, width] of validation, test and the saved model
    train_crop_size: list[int]  # [height, width] of the training crops
    early_stopping_patience: int
    ema_decay: str | None = None  # --ema-decay as given: "auto", a decay, or "0" (off); None: before it existed
    class_balance: dict | None = None  # {"method", "ratio", "chosen_by"} (har_model.train.balancing)
    unlabeled: dict | None = None  # --unlabeled-dir: {"method", "epochs", "min_confidence", "learning_rate_scale",
    #                                "fps"} (har_model.train.distill)

    def as_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def read(cls, model_dir: str | Path) -> RunRecord | None:
        """The record in ``model_dir/metrics.json``; None for a folder without one (not written by train.py)."""
        recipe = read_optional(model_dir, METRICS).get(RECORD_KEY)
        if not isinstance(recipe, dict):
            return None
        try:
            return cls(**{f.name: recipe[f.name] for f in dataclasses.fields(cls) if f.name in recipe})
        except TypeError:  # an older folder lacking a field: no record to trust
            return None

    @property
    def train_size(self) -> int:
        """The training crop's height (a side of the square crops)."""
        crop = self.train_crop_size
        return int(crop[0] if isinstance(crop, (list, tuple)) else crop)
