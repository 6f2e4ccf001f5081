"""Checkpoints that `--resume` can trust: whose run they belong to, and whether each was written completely.

    run_fingerprint     the data (every image and label of every split), the class names and the flags that shape
                        the training (recipe, schedule, base model, seeds), recorded as checkpoints/run.json
    check_resume        `--resume` refuses checkpoints of another run and says what differs
    last_complete       the newest checkpoint written completely; a newer one cut short (a kill while saving) is
                        skipped with a warning and removed, so every retry does not fail on it again
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import sys
import zipfile
from pathlib import Path

from datasets import Image as ImageFeature

from har_model.data.load import image_bytes
from har_model.errors import HarError
from har_model.model_folder.files import CHECKPOINTS, WEIGHTS
from har_model.outputs import atomic_write_text, clear_run_state, own_dir
from har_model.train.config import TrainConfig

RUN_FILE = "run.json"
# The flags that change what training does (its data order, model, objective or learning rates), by their
# command-line name, and where the TrainConfig holds each. How long to train (--epochs, --max-steps,
# --early-stopping-patience) may change: continuing a run for more epochs is what --resume is for. Output,
# logging, export and push options are not among them either.
RESUME_FLAGS = {
    "model": ("run", "model"), "soup": ("run", "soup"), "batch_size": ("training", "per_device_train_batch_size"),
    "gradient_accumulation_steps": ("training", "gradient_accumulation_steps"),
    "learning_rate": ("training", "learning_rate"), "backbone_lr_scale": ("run", "backbone_lr_scale"),
    "freeze_layers": ("run", "freeze_layers"), "weight_decay": ("training", "weight_decay"),
    "warmup_ratio": ("training", "warmup_steps"), "label_smoothing": ("training", "label_smoothing_factor"),
    "mixup": ("run", "mixup"), "image_size": ("run", "image_size"), "eval_size": ("run", "eval_size"),
    "precision": ("run", "precision"), "train_seed": ("run", "train_seed"), "seed": ("data", "seed"),
    "class_balance": ("run", "class_balance"), "max_train_samples": ("run", "max_train_samples"),
    "max_eval_samples": ("run", "max_eval_samples"), "unlabeled_fps": ("run", "unlabeled_fps"),
    "unlabeled_min_confidence": ("run", "unlabeled_min_confidence"), "distill_lr_scale": ("run", "distill_lr_scale"),
    "distill_targets": ("run", "distill_targets"),
}
# A flag added after runs were recorded without it: such a run used this value
_ADDED_FLAGS = {"distill_targets": "clean"}
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def data_fingerprint(dsd) -> str:
    """A hash of every split's images (encoded bytes) and labels, in order, and the class names."""
    digest = hashlib.sha256()
    digest.update(json.dumps(dsd["train"].features["label"].names).encode())
    for split in sorted(dsd):
        raw = dsd[split].cast_column("image", ImageFeature(decode=False))
        digest.update(f"|{split}|{len(raw)}|".encode())
        for row in raw:
            digest.update(hashlib.sha256(image_bytes(row["image"])).digest())
            digest.update(struct.pack("<q", int(row["label"])))
    return digest.hexdigest()


def start_run(out: Path, config: TrainConfig, dsd, stage: Path, unlabeled: str | None = None) -> str:
    """With the data loaded (the input checks passed): --resume checks that the checkpoints belong to this run;
    a fresh run (--overwrite) removes the old run's checkpoints and image cache. Then records what this run is and
    returns its data fingerprint (which names the image cache). `unlabeled`: the fingerprint of the --unlabeled-dir
    images (har_model.data.unlabeled), None without."""
    fingerprint = run_fingerprint(resume_flags(config), dsd, unlabeled)
    if config.run.resume:
        check_resume(out / CHECKPOINTS, fingerprint)
    else:
        clear_run_state(out, keep=stage)  # old checkpoints must not be resumed later as if they were this run's
    write_run(own_dir(out, CHECKPOINTS), fingerprint)
    return fingerprint["data"]


def resume_flags(config: TrainConfig) -> dict:
    """{command-line name: value} of the RESUME_FLAGS of a run."""
    return {name: getattr(getattr(config, part), field) for name, (part, field) in RESUME_FLAGS.items()}


def run_fingerprint(flags: dict, dsd, unlabeled: str | None = None) -> dict:
    """What run.json records: the data, the unlabelled images, the class names and the ``flags`` (``resume_flags``)
    of a run."""
    return {
        "data": data_fingerprint(dsd),
        "unlabeled": unlabeled,
        "labels": list(dsd["train"].features["label"].names),
        "flags": {name: _plain(flags.get(name)) for name in RESUME_FLAGS},
    }


def _plain(value):
    return value if value is None or isinstance(value, (bool, int, float, str)) else str(value)


def write_run(ckpt_dir: Path, fingerprint: dict) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(ckpt_dir / RUN_FILE, json.dumps(fingerprint, indent=1) + "\n")


def check_resume(ckpt_dir: Path, fingerprint: dict) -> None:
    """Refuse (one line) to continue checkpoints that another run wrote: different data, classes or flags."""
    path = ckpt_dir / RUN_FILE
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        raise HarError(f"--resume: {path} is missing or unreadable, so these checkpoints cannot be matched to this "
                       "run; start afresh with --overwrite") from None
    differences = []
    if recorded.get("data") != fingerprint["data"]:
        differences.append("the data (images, labels or split)")
    if recorded.get("unlabeled") != fingerprint.get("unlabeled"):
        differences.append("the unlabelled images (--unlabeled-dir: " + ("added" if not recorded.get("unlabeled") else
                           "left out" if not fingerprint.get("unlabeled") else "a changed folder") + ")")
    if recorded.get("labels") != fingerprint["labels"]:
        differences.append("the class names")
    flags = recorded.get("flags", {})
    for name, value in fingerprint["flags"].items():
        was = flags.get(name, _ADDED_FLAGS.get(name))
        if was != value:
            differences.append(f"--{name.replace('_', '-')} {was} -> {value}")
    if differences:
        raise HarError(f"--resume: the checkpoints in {ckpt_dir} belong to a different run ({'; '.join(differences)}); "
                       "resume with the same data and flags, or start afresh with --overwrite")


def incomplete_reason(checkpoint: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed from (None when it is complete). The Trainer writes the trainer
    state last; the weights and the optimizer files are checked for truncation too (a full disk)."""
    state = checkpoint / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError):
        return "no readable trainer_state.json"
    weights = checkpoint / WEIGHTS
    if not weights.is_file() or not _safetensors_whole(weights):
        return f"{WEIGHTS} is missing or cut short"
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        path = checkpoint / name
        if path.exists() and not zipfile.is_zipfile(path):  # torch.save writes a zip: its end record must be there
            return f"{name} is cut short"
    return None


def _safetensors_whole(path: Path) -> bool:
    """A safetensors file whose header parses and whose tensors all fit in the file."""
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size >= 8 + n + end
    except (OSError, ValueError, struct.error, KeyError, TypeError):
        return False


def checkpoints(folder: Path) -> list[Path]:
    """``folder/checkpoint-N`` folders, newest (largest N) first."""
    found = [(int(m.group(1)), p) for p in Path(folder).glob("checkpoint-*") if (m := _CHECKPOINT.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def last_complete(folder: Path, warn=None) -> str | None:
    """The newest complete checkpoint in ``folder``; newer incomplete ones are reported and removed."""
    warn = warn or (lambda message: print(message, file=sys.stderr, flush=True))
    for checkpoint in checkpoints(folder):
        reason = incomplete_reason(checkpoint)
        if reason is None:
            return str(checkpoint)
        warn(f"warning: skipping the incomplete checkpoint {checkpoint} ({reason}); resuming from the one before")
        shutil.rmtree(checkpoint, ignore_errors=True)  # ours, unusable: it must not be picked up again
    return None
