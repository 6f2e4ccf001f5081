"""The base model a run fine-tunes: a new head for our classes, its input sizes, its early layers frozen.

    load_base_model      -- all of it, for one soup member (each gets a new random head)
    default_image_size   -- the training crop size when --image-size is not given
    train_eval_preprocessing -- the training and (larger, FixRes) evaluation preprocessing; the processor saved
                                with the model gets the latter
"""

from __future__ import annotations

import copy
from dataclasses import dataclass


from har_model.errors import HarError
from har_model.model_folder.record import RunRecord
from har_model.train import backbones
from har_model.preprocessing import Preprocessing, StockPreprocessing, preprocessing_for, scale_processor
from har_model.train.trainer import prepare_model

# Models without position embeddings or fixed-size layers: they take any input size, so they can be evaluated at
# a larger size than they were trained at.
_CONV_MODEL_TYPES = {"efficientnet", "resnet", "convnext", "convnextv2", "regnet", "mobilenet_v1", "mobilenet_v2", "bit"}
FIXRES_RATIO = 1.3


def _check_size(flag: str, size: int) -> int:
    if size < 16:
        raise HarError(f"{flag} {size}: too small (at least 16 pixels)")
    return size


def _parse_eval_size(spec, train_size: int, model_type: str | None) -> int:
    spec = str(spec).strip().lower()
    if spec == "same":
        return train_size
    if spec == "auto":
        if model_type not in _CONV_MODEL_TYPES:
            return train_size
        return max(32, int(round(train_size * FIXRES_RATIO / 32)) * 32)
    try:
        size = int(spec)
    except ValueError:
        raise HarError(f"--eval-size {spec!r}: give a number of pixels, 'same' or 'auto'") from None
    return _check_size("--eval-size", size)


def train_eval_preprocessing(model, processor, image_size: int | None, eval_size):
    """(training, evaluation) preprocessing (har_model.preprocessing, as serving does it); the processor (saved with the model) is set to the evaluation size.

    Random-resized-crop training shows objects larger than a plain resize of the whole photo does; evaluating a
    convolutional model at ~1.3x the training size makes them match again (Touvron et al., "Fixing the train-test
    resolution discrepancy", 2019). On har15 the Lite0 model trained at 224 scored 78% on validation at 224 and 81%
    at 288 (README, "Fine-tuning on har15").
    """
    base_size = preprocessing_for(processor).output_hw[0]
    train_size = _check_size("--image-size", image_size) if image_size is not None else base_size
    model_type = getattr(model.config, "model_type", None)
    test_size = _parse_eval_size(eval_size, train_size, model_type)
    if image_size is not None and image_size != base_size and model_type not in _CONV_MODEL_TYPES:
        raise HarError(f"--image-size {image_size}: {model_type or 'this'} models take only {base_size} pixels "
                       "(position embeddings); leave --image-size out")
    if test_size != train_size and model_type not in _CONV_MODEL_TYPES:
        raise HarError(f"--eval-size {test_size}: {model_type or 'this'} models take only their training size; "
                       "use --eval-size same")
    train_processor = copy.deepcopy(processor)
    scale_processor(train_processor, train_size / base_size)
    scale_processor(processor, test_size / base_size)  # both scaled from the base sizes: no double rounding
    train_prep = preprocessing_for(train_processor)
    if hasattr(model.config, "image_size"):
        model.config.image_size = test_size
    return train_prep, preprocessing_for(processor)


def default_image_size(model: str) -> int | None:
    """Default training crop size: a folder written by train.py trains at the crop size it was trained at (its run
    record; its saved processor holds the larger evaluation size), a built-in backbone at its fine-tuning size, else
    the model's own."""
    record = RunRecord.read(model)
    if record is not None:
        try:
            return record.train_size
        except (ValueError, TypeError, IndexError):
            pass  # a damaged record: the saved processor's size is the best guess
    return backbones.default_train_size(model)


@dataclass
class BaseModel:
    """A loaded base model ready for fine-tuning, its processor (set to the evaluation size) and its preprocessing."""

    model: object
    processor: object
    train_prep: Preprocessing | StockPreprocessing  # training crops: size and normalisation
    eval_prep: Preprocessing | StockPreprocessing  # validation, test and the saved model
    frozen_blocks: int


def load_base_model(name: str, labels: list[str], *, image_size: int | None, eval_size, freeze_layers,
                    channels_last: bool, report: bool = True) -> BaseModel:
    """`name` with a new head for `labels` (random: draws from torch's generator), sized, frozen, channels-last.
    `report`: say what happened to the head (once a run: every soup member gets the same)."""
    model, processor = backbones.load_backbone(name, labels, report=report)
    train_prep, eval_prep = train_eval_preprocessing(model, processor, image_size or default_image_size(name), eval_size)
    model, frozen_blocks = prepare_model(model, freeze_layers, channels_last)
    return BaseModel(model, processor, train_prep, eval_prep, frozen_blocks)
