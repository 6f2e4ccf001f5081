"""What a training run leaves behind besides the weights: test metrics, plots, examples and the model card.

Computed here from the finished run (a FinishedRun), written with har_model.model_folder.write (the file names and
the run's record, RunRecord, live in har_model.model_folder).

Files written into the model folder:
    metrics.json            test (and validation) metrics, per-class report, confusion matrix, timings, recipe
    training_curves.png     loss and accuracy per epoch, train vs validation
    confusion_matrix.png    test confusion matrix (row-normalised colours, counts written in)
    predictions.png         a grid of test images with true / predicted labels, mistakes marked
    examples/               a few test images per class (for the app's examples; file names from safe_filename)
    calibration.json        temperature and "unsure" threshold fitted on validation (har_model.calibration)
    README.md               the model card, rendered from model_card.md
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import Image as ImageFeature

from har_model import calibration as cal
from har_model import cards
from har_model.data.load import image_bytes
from har_model.data.unlabeled import note_unlabeled
from har_model.explain import GradCam, overlay
from har_model.figures import plot_confusion_matrix, plot_predictions, plot_training_curves
from har_model.imaging import open_rgb
from har_model.model_folder import onnx
from har_model.model_folder.files import CONFUSION_MATRIX, DATASET, PREDICTIONS, TRAINING_CURVES
from har_model.model_folder.record import RECORD_KEY, RunRecord
from har_model.model_folder.write import write_card, write_examples, write_metrics, write_processor
from har_model.outputs import pushed_to
from har_model.train.backbones import builtin_source
from har_model.train.balancing import BalancePlan
from har_model.train.base_model import BaseModel
from har_model.train.config import TrainConfig
from har_model.train.evaluation import classification_report, format_report, prediction_logits
from har_model.train.image_cache import CachedSplits
from har_model.train.soup import SoupResult


def _pick_grid(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int, size: int, seed: int = 0) -> list[int]:
    """About one correct example per class plus some mistakes, deterministic."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(n_labels):
        idx = np.flatnonzero((y_true == c) & (y_pred == c))
        if len(idx):
            chosen.append(int(rng.choice(idx)))
    wrong = np.flatnonzero(y_true != y_pred)
    rng.shuffle(wrong)
    chosen += [int(i) for i in wrong[: max(0, size - len(chosen))]]
    return sorted(chosen[:size])


# ----------------------------------------------------------------------------------------------------------------
# the whole set of outputs


@dataclass
class Predictions:
    """The shipped model's predictions on the test and validation splits (`Trainer.predict` outputs), of each image
    and of its mirror (for the flip-averaging choice, har_model.calibration.choose_views)."""

    test: object
    validation: object
    test_seconds: float
    test_mirrored: object = None
    validation_mirrored: object = None


def predict_splits(trainer, test_ds) -> Predictions:
    """The shipped model (in `trainer`) on the test split and on validation, each view. Under a launcher every
    process runs this (each predicts its share, the Trainer gathers them); only the main one writes the reports."""
    t0 = time.time()
    test = trainer.predict(test_ds, metric_key_prefix="test")
    seconds = time.time() - t0
    # validation metrics and logits of the model we ship (the best checkpoint, not necessarily the last epoch)
    validation = trainer.predict(trainer.eval_dataset, metric_key_prefix="eval")
    return Predictions(test, validation, seconds, trainer.predict(test_ds.mirrored(), metric_key_prefix="mirror"),
                       trainer.predict(trainer.eval_dataset.mirrored(), metric_key_prefix="mirror"))



@dataclass
class FinishedRun:
    """What a finished training run hands to the writing of its model folder."""

    config: TrainConfig
    trainer: object  # the Trainer holding the shipped model
    base: BaseModel  # its processor and preprocessing
    result: SoupResult  # the soup's members, their logs, the soup's validation metrics
    predictions: Predictions
    images: CachedSplits  # the decoded splits it was trained and scored on
    test_split: object  # the dataset's test split: the original images, for the figures and examples
    labels: list[str]
    record: RunRecord  # the resolved recipe, written as metrics.json's "recipe"
    started: float  # time.time() at the start of the run
    model_dir: Path  # where the folder will finally live (files may be written into a staging folder first)
    distillation: object = None  # --unlabeled-dir: the student phase (har_model.train.distill.Distillation)


def run_record(config: TrainConfig, base: BaseModel, precision: str, balance: BalancePlan | None) -> RunRecord:
    """The run's record, resolved: the sizes it trained and evaluated at, its precision, blocks frozen, balancing."""
    training, options = config.training, config.run
    return RunRecord(
        epochs=training.num_train_epochs, batch_size=training.per_device_train_batch_size,
        learning_rate=training.learning_rate, backbone_lr_scale=options.backbone_lr_scale,
        frozen_blocks=base.frozen_blocks, weight_decay=training.weight_decay,
        label_smoothing=training.label_smoothing_factor, mixup_alpha=options.mixup, soup=options.soup,
        ema_decay=options.ema_decay,
        warmup_ratio=training.warmup_steps, precision=precision, seed=config.data.seed,
        input_size=list(base.eval_prep.output_hw), train_crop_size=list(base.train_prep.output_hw),
        early_stopping_patience=options.early_stopping_patience,
        class_balance=balance.as_recipe() if balance is not None else None,
        unlabeled=({"method": "noisy-student self-training: soft targets of the shipped model ("
                              + ("on each augmented training crop, every step" if options.distill_targets == "augmented"
                                 else "flip-averaged, on the clean images") + "), student initialised from it",
                    "targets": options.distill_targets,
                    "epochs": options.distill_epochs, "min_confidence": options.unlabeled_min_confidence,
                    "learning_rate_scale": options.distill_lr_scale,
                    "fps": options.unlabeled_fps} if options.unlabeled_dir else None),
    )


def write_model_folder(stage: Path, run: FinishedRun) -> str:
    """The main process's part: the processor, reports and card (and ONNX) beside the weights in `stage`."""
    write_processor(stage, run.base.processor)
    summary = write_outputs(stage, run)
    if run.distillation is not None and (stage / DATASET).is_dir():  # the dataset copy says what joined training
        note_unlabeled(stage / DATASET, run.distillation.report, run.distillation.unlabeled_used)
    if run.config.run.export_onnx:
        onnx.export_onnx(stage)
    return summary


def write_outputs(out: Path, run: FinishedRun) -> str:
    """Write every report file of the shipped model into `out` (the staging folder); return a short printable
    summary. Checkpoint paths are recorded relative to `run.model_dir`, so that no local path is published."""
    config, trainer, result, labels, model_dir = run.config, run.trainer, run.result, run.labels, run.model_dir
    test_ds = run.images.test
    pred, val_pred, eval_seconds = run.predictions.test, run.predictions.validation, run.predictions.test_seconds
    y_true, val_true = np.asarray(pred.label_ids), np.asarray(val_pred.label_ids)
    # what serving will answer: the single view, or the mean of each image's and its mirror's logits where that
    # scored higher on validation (har_model.calibration.choose_views); pipeline() always answers the single view
    p = run.predictions
    val_views = (prediction_logits(val_pred), prediction_logits(p.validation_mirrored))
    test_views = (prediction_logits(pred), prediction_logits(p.test_mirrored))
    views = cal.choose_views(*val_views, val_true)
    flip = views["flip_average"]
    logits, val_logits = (sum(test_views) / 2, sum(val_views) / 2) if flip else (test_views[0], val_views[0])
    probs = torch.softmax(torch.as_tensor(logits), -1).numpy()
    y_pred = probs.argmax(-1)
    test = classification_report(y_pred, y_true, labels)
    single = classification_report(test_views[0].argmax(-1), y_true, labels) if flip else test  # pipeline()'s
    views["test_macro_f1"] = {"single": round(single["macro_f1"], 5),
                              "flip": round(cal.macro_f1(sum(test_views) / 2, y_true), 5)}
    views["test_single_view"] = {"accuracy": single["accuracy"], "macro_f1": single["macro_f1"]}
    log_history = result.last.log_history  # the per-epoch story (of the last soup member)
    train_seconds, soup = result.train_seconds, result.soup
    if run.distillation is not None:  # the student's training counts too
        train_seconds += run.distillation.train_seconds
    val = result.validation or {k.removeprefix("eval_"): v for k, v in val_pred.metrics.items() if k.startswith("eval_")}
    calibration = calibrate(out, val_logits, val_true, logits, y_true, flip)
    epochs_run = max((row.get("epoch", 0) for row in log_history), default=0)
    precision = run.record.precision
    metrics = {
        "test": test,
        "validation": val,
        "labels": labels,
        **base_model_record(config.run.model),
        **dataset_record(config),
        "num_train": len(trainer.train_dataset),
        "num_validation": len(trainer.eval_dataset),
        "num_test": len(test_ds),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - run.started, 1),
        "test_eval_seconds": round(eval_seconds, 1),
        "processes": config.training.world_size,  # > 1 under torchrun / accelerate launch
        "epochs_run": epochs_run,
        "best_checkpoint": relative_path(result.last.best_checkpoint, model_dir),
        "best_validation_macro_f1": result.last.validation_macro_f1,
        RECORD_KEY: run.record.as_json(),  # the run's record, read back with RunRecord.read
        "calibration": calibration,  # temperature + unsure threshold from validation; ECE before/after on test
        "views": views,  # flip averaging: validation and test macro-F1 of each choice, whether serving uses it
        "semi_supervised": run.distillation.summary() if run.distillation is not None else None,  # --unlabeled-dir
        # --ema-decay: each member's moving average of its weights, its validation macro-F1 and whether it was kept
        "weight_average": [m.weight_average for m in result.members] if any(m.weight_average for m in result.members)
        else None,
        "soup": _relative_checkpoints(soup, model_dir),  # members (seed, time, validation macro-F1), the soup's validation macro-F1, what was shipped
        "log_history": log_history,  # of the last soup member
    }
    write_metrics(out, metrics)
    plot_training_curves(log_history, out / TRAINING_CURVES)
    plot_confusion_matrix(test["confusion_matrix"], labels, out / CONFUSION_MATRIX)

    # predictions grid and examples use the original test images (not the resized tensors)
    raw = run.test_split.cast_column("image", ImageFeature(decode=False))["image"]

    def original(i: int):
        return open_rgb(image_bytes(raw[i]))

    grid = _pick_grid(y_true, y_pred, len(labels), size=max(12, min(24, len(labels) + 9)), seed=config.data.seed)
    # float pixels were normalised by a stock image processor: no picture to draw the heatmap on
    heatmaps = not test_ds.pixels.is_floating_point()
    plot_predictions(
        [explained(trainer.model, test_ds, i) if heatmaps and y_pred[i] != y_true[i] else original(i) for i in grid],
        [labels[y_true[i]] for i in grid], [labels[y_pred[i]] for i in grid],
        [float(probs[i, y_pred[i]]) for i in grid], out / PREDICTIONS,
        note="mistakes show the model's input with a Grad-CAM heatmap of the predicted class",
    )
    write_examples(out, _examples(y_true, labels, original, config.run.num_examples))

    write_card(out, cards.render_model_card(metrics=metrics, config=config, out=model_dir))
    soup_text = f" x {len(soup['members'])} soup members (shipped: the {soup['shipped']})" if soup else ""
    if run.distillation is not None:
        d = run.distillation
        soup_text += (f", then a student on {d.unlabeled_used} unlabelled images for {d.epochs:g} epochs "
                      f"(shipped: the {d.shipped})")
    vf = views["validation_macro_f1"]
    soup_text += (f"; served with flip averaging (validation macro-F1 {vf['single']:.4f} -> {vf['flip']:.4f}; pipeline() "
                  f"single view: test macro-F1 {single['macro_f1']:.4f})" if flip else "")
    return (
        f"\n{format_report(test)}\n\n"
        f"test accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f} on {len(test_ds)} held-out images; "
        f"trained {epochs_run:g} epochs{soup_text} in {train_seconds / 60:.1f} min ({precision}).\n"
        f"model folder: {model_dir} (pipeline('image-classification', model='{model_dir}'))"
    )


def explained(model, test_ds, i: int) -> np.ndarray:
    """Test image ``i`` as the model saw it (resized, centre-cropped) with the Grad-CAM heatmap of its prediction."""
    heat = GradCam(model)(test_ds[i]["pixel_values"])
    return overlay(test_ds.pixels[i].permute(1, 2, 0).numpy(), heat.cam)


def relative_path(path: str | None, root: Path) -> str | None:
    """``path`` relative to ``root`` (a checkpoint inside the model folder), else its last part: metrics.json is
    published and must not carry the user's or the machine's folder names."""
    if not path:
        return path
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(root).resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return Path(path).name


def _relative_checkpoints(soup: dict | None, root: Path) -> dict | None:
    if not soup:
        return soup
    members = [{**m, "best_checkpoint": relative_path(m.get("best_checkpoint"), root)} for m in soup["members"]]
    return {**soup, "members": members}


def _local(source: str) -> Path | None:
    path = Path(str(source).rstrip("/")).expanduser()
    return path if path.exists() else None


def base_model_record(model: str) -> dict:
    """metrics.json's base model, never a local path: a Hub id as is (`base_model_hub_id`); a built-in backbone by
    name with the package and license of its weights (`base_model_source`); a local folder by the Hub repo it was
    pushed to, else by its name only."""
    source = builtin_source(model)
    if source is not None:
        return {"base_model": model, "base_model_hub_id": None, "base_model_source": source}
    folder = _local(model)
    hub_id = (pushed_to(folder) if folder is not None else model) or None
    return {"base_model": hub_id or folder.name, "base_model_hub_id": hub_id, "base_model_source": None}


def dataset_record(config) -> dict:
    """metrics.json's dataset, never a local path: its Hub id where known (--push-dataset, a Hub --dataset, or the
    repo a --dataset folder was pushed to; `dataset_hub_id`), else the folder's name."""
    data = config.data
    folder = _local(data.dataset or data.data_dir)
    hub_id = config.run.push_dataset or (pushed_to(folder) if folder is not None else data.dataset) or None
    return {"dataset": hub_id or folder.name, "dataset_hub_id": hub_id}


def calibrate(out: Path, val_logits, val_labels, test_logits, test_labels, flip_average: bool = False) -> dict:
    """Fit the temperature and unsure threshold on the served validation logits (never on test), save them with
    the flip-averaging choice as calibration.json and report ECE before / after on both splits."""
    fitted = cal.fit(np.asarray(val_logits, np.float32), np.asarray(val_labels), flip_average=flip_average)
    fitted.save(out)
    skipped = fitted.validation.get("skipped")
    if skipped:
        print(f"calibration skipped: {skipped}; scores stay the softmax of the logits (T = 1) and no image is "
              "called unsure", flush=True)
    return {"validation": fitted.validation, "test": cal.report(fitted, np.asarray(test_logits, np.float32), test_labels),
            "unsure_target": fitted.unsure_target, "file": cal.FILENAME, "skipped": skipped}


def _examples(y_true: np.ndarray, labels: list[str], original, per_class: int):
    """(class name, k, image): the first ``per_class`` test images of each class."""
    for c, name in enumerate(labels):
        for k, i in enumerate(np.flatnonzero(y_true == c)[:max(0, per_class)]):
            yield name, k, original(int(i))
