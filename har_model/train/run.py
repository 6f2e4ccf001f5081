"""Fine-tuning with transformers' Trainer: `python train.py --data-dir DIR --output-dir OUT`.

The fast CPU recipe (see README "Training speed"): images are decoded and resized once into uint8 tensors and
augmented per step with torch ops; channels-last memory; bf16 autocast where the CPU supports it; the stem and the
first blocks frozen (batch-norm statistics too) with a lower learning rate for the rest of the backbone than for
the new head. Everything else is stock Trainer: evaluation each epoch, best checkpoint on validation macro-F1,
early stopping, `--resume`, TensorBoard when installed, and it runs unchanged under `accelerate launch`/`torchrun`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

from har_model.errors import HarError

DEFAULT_MODEL = "efficientnet-lite0"


def build_parser() -> argparse.ArgumentParser:
    from har_model.data.build import add_data_arguments

    p = argparse.ArgumentParser(
        prog="python train.py",
        description="Fine-tune a pretrained image classifier on a folder of action images (one sub-folder per class) "
        "or a published dataset, evaluate it on a held-out test split and write a model folder that "
        "pipeline('image-classification') and the Hub understand.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_data_arguments(p)  # --data-dir / --dataset, split, validation and --num-workers options, shared with `prepare`
    g = p.add_argument_group("input and output")
    g.add_argument("--output-dir", type=Path, default=None,
                   help="model folder to write (default: outputs/<name of the data folder or dataset>)")
    g.add_argument("--model", default=DEFAULT_MODEL,
                   help="base model: efficientnet-lite0/1/2 (built in, offline), a local model folder or a Hub id")
    g.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUTPUT_DIR/checkpoints")
    g.add_argument("--overwrite", action="store_true", help="start afresh even if OUTPUT_DIR holds checkpoints")

    h = p.add_argument_group("training recipe")
    h.add_argument("--epochs", type=float, default=5.0, help="maximum number of epochs (of each soup member)")
    h.add_argument("--soup", type=int, default=2, metavar="N",
                   help="train N models from the same pretrained weights (training seeds SEED, SEED+1, ...) and "
                   "average their weights into one model of the same size and speed (a model soup, Wortsman et al. "
                   "2022); the soup is shipped when it scores at least as well as its best member on validation, "
                   "else that member is. 1: a single model")
    h.add_argument("--image-size", type=int, default=None,
                   help="training crop size in pixels (default: 256 for the built-in backbones (their native size if larger), "
                   "the training crop size recorded by train.py for a model folder it wrote, the base model's own input size "
                   "for other models)")
    h.add_argument("--eval-size", default="auto",
                   help="input size for validation, test and the saved model: a number, 'same' (= --image-size) or "
                   "'auto' (convolutional models: about 1.3x the training size, rounded to 32, which undoes the "
                   "object enlargement of random-resized-crop training (FixRes); other models: same)")
    h.add_argument("--batch-size", type=int, default=32, help="training batch size per device")
    h.add_argument("--eval-batch-size", type=int, default=64, help="evaluation batch size per device")
    h.add_argument("--learning-rate", type=float, default=2e-3, help="peak learning rate of the new head")
    h.add_argument("--backbone-lr-scale", type=float, default=0.25,
                   help="learning rate of the (unfrozen) backbone relative to the head")
    h.add_argument("--freeze-layers", default="auto",
                   help="freeze the stem and this many of the first backbone blocks ('auto': the first half; 0: none)")
    h.add_argument("--weight-decay", type=float, default=0.01)
    h.add_argument("--warmup-ratio", type=float, default=0.05)
    h.add_argument("--label-smoothing", type=float, default=0.1)
    h.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                   help="mixup strength: blend pairs of training images and their labels with a Beta(ALPHA, ALPHA) "
                   "weight (0 = off)")
    h.add_argument("--gradient-accumulation-steps", type=int, default=1)
    h.add_argument("--early-stopping-patience", type=int, default=3,
                   help="stop after this many evaluations without a better validation macro-F1 (0: never)")
    h.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="bf16 autocast (auto: where the CPU/GPU supports it)")
    h.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory format")
    h.add_argument("--train-seed", type=int, default=None, help="seed for training (default: the --seed of the split)")
    h.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (for quick runs)")
    h.add_argument("--report-to", default="auto",
                   help="'tensorboard', 'none', ... (auto: tensorboard when installed)")

    o = p.add_argument_group("after training")
    o.add_argument("--export-onnx", action="store_true", help="also write ONNX (fp32 + dynamic int8) for fast CPU serving")
    o.add_argument("--num-examples", type=int, default=2, help="test images per class copied to OUT/examples for the app")
    o.add_argument("--push-to-hub", metavar="REPO_ID", help="push the model folder to this Hub repo")
    o.add_argument("--push-dataset", metavar="REPO_ID", help="push the dataset folder to this Hub dataset repo")
    o.add_argument("--private", action="store_true", help="create Hub repos as private")
    return p


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _check_output_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise HarError(f"--output-dir {out}: exists and is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarError(f"--output-dir {out}: cannot create folder ({exc.strerror or exc})") from None


def _default_output_dir(args) -> Path:
    source = args.data_dir or args.dataset
    name = Path(str(source).rstrip("/")).name or "model"
    return Path("outputs") / name.replace("/", "_")


def main_block_list(model):
    """The longest nn.ModuleList in the model: the sequence of backbone blocks (EfficientNet blocks, ViT layers...)."""
    import torch.nn as nn

    best = None
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and (best is None or len(module) > len(best)):
            best = module
    return best


def freeze_early_layers(model, spec: str | int) -> tuple[int, list]:
    """Freeze the embeddings/stem and the first N blocks; return (N, frozen batch-norm modules).

    Frozen batch-norm layers keep their ImageNet statistics (they are put in eval mode on every step).
    """
    import torch.nn as nn

    blocks = main_block_list(model)
    if blocks is None:
        return 0, []
    n = len(blocks) // 2 if str(spec) == "auto" else int(spec)
    if n <= 0:
        return 0, []
    n = min(n, len(blocks))
    frozen_params = set()
    for block in list(blocks)[:n]:
        frozen_params.update(id(p) for p in block.parameters())
    first_block_param = next(blocks.parameters())
    # Everything registered before the first block (the stem / embeddings) is frozen too.
    for p in model.parameters():
        if p is first_block_param:
            break
        frozen_params.add(id(p))
    norms = []
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if params and all(id(p) in frozen_params for p in params):
            for p in params:
                p.requires_grad_(False)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                norms.append(module)
    return n, norms


def _make_clock():
    """A callback that keeps the training wall-clock time in the checkpoints, so a run continued with --resume
    reports the time of all its sessions (the Trainer's own train_runtime counts only the last one)."""
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class TrainingClock(TrainerCallback, ExportableState):
        def __init__(self, seconds_before: float = 0.0):
            self.seconds_before = float(seconds_before)
            self._since = None

        @property
        def seconds(self) -> float:
            return self.seconds_before + (time.time() - self._since if self._since is not None else 0.0)

        def on_train_begin(self, args, state, control, **kw):
            self._since = time.time()

        def on_train_end(self, args, state, control, **kw):
            self.seconds_before, self._since = self.seconds, None

        def state(self) -> dict:
            return {"args": {"seconds_before": self.seconds}, "attributes": {}}

    return TrainingClock()


def _make_trainer_class():
    import torch
    from transformers import Trainer

    class HarTrainer(Trainer):
        """Trainer + frozen BN kept in eval mode, channels-last inputs, train accuracy, head/backbone learning rates."""

        def __init__(self, *a, frozen_norms=(), channels_last=True, backbone_lr_scale=1.0,
                     head_prefixes=("classifier",), mixup_alpha=0.0, **kw):
            super().__init__(*a, **kw)
            self.mixup_alpha = float(mixup_alpha)
            self.frozen_norms, self.channels_last = list(frozen_norms), channels_last
            self.backbone_lr_scale, self.head_prefixes = backbone_lr_scale, tuple(head_prefixes)
            self._train_correct = 0
            self._train_seen = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            for m in self.frozen_norms:
                m.eval()
            if self.channels_last:
                inputs["pixel_values"] = inputs["pixel_values"].contiguous(memory_format=torch.channels_last)
            labels = inputs.get("labels")
            if model.training and self.mixup_alpha > 0 and labels is not None:
                loss, outputs, labels = self._mixup_loss(model, inputs)  # train accuracy: the larger share's label
            else:
                loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                     num_items_in_batch=num_items_in_batch)
            if model.training and labels is not None:
                with torch.no_grad():
                    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[1]
                    self._train_correct += int((logits.argmax(-1) == labels).sum())
                    self._train_seen += int(labels.numel())
            return (loss, outputs) if return_outputs else loss

        def _mixup_loss(self, model, inputs):
            """mixup (Zhang et al., 2018): train on convex blends of two images with the same blend of their
            (label-smoothed) targets; the loss is linear in the target, so it is the blend of the two losses."""
            labels = inputs.pop("labels")
            lam = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
            perm = torch.randperm(labels.numel(), device=labels.device)
            x = inputs["pixel_values"]
            inputs["pixel_values"] = x * lam + x[perm] * (1 - lam)
            outputs = model(**inputs)
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
            eps = self.args.label_smoothing_factor

            def ce(target):
                return torch.nn.functional.cross_entropy(logits.float(), target, label_smoothing=eps)

            return lam * ce(labels) + (1 - lam) * ce(labels[perm]), outputs, labels if lam >= 0.5 else labels[perm]

        def log(self, logs, start_time=None):
            if "loss" in logs and self._train_seen:
                logs["train_accuracy"] = round(self._train_correct / self._train_seen, 4)
                self._train_correct = self._train_seen = 0
            super().log(logs, start_time)

        def create_optimizer(self, model=None):
            if self.optimizer is not None:
                return self.optimizer
            model = model or self.model
            head, backbone_decay, backbone_no_decay, head_no_decay = [], [], [], []
            for name, p in model.named_parameters():
                if not p.requires_grad:
                    continue
                is_head = name.startswith(self.head_prefixes)
                no_decay = p.ndim <= 1
                if is_head:
                    (head_no_decay if no_decay else head).append(p)
                else:
                    (backbone_no_decay if no_decay else backbone_decay).append(p)
            lr, wd = self.args.learning_rate, self.args.weight_decay
            groups = [
                {"params": head, "lr": lr, "weight_decay": wd},
                {"params": head_no_decay, "lr": lr, "weight_decay": 0.0},
                {"params": backbone_decay, "lr": lr * self.backbone_lr_scale, "weight_decay": wd},
                {"params": backbone_no_decay, "lr": lr * self.backbone_lr_scale, "weight_decay": 0.0},
            ]
            self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, fused=True)
            return self.optimizer

    return HarTrainer


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


def _train_eval_geometry(model, processor, image_size: int | None, eval_size):
    """(training geometry, evaluation geometry); the processor (saved with the model) is set to the evaluation size.

    Random-resized-crop training shows objects larger than a plain resize of the whole photo does; evaluating a
    convolutional model at ~1.3x the training size makes them match again (Touvron et al., "Fixing the train-test
    resolution discrepancy", 2019). On har15 the Lite0 model trained at 224 scored 78% on validation at 224 and 81%
    at 288 (README, "Fine-tuning on har15").
    """
    from har_model.train.augment import Geometry, scale_processor

    base_size = Geometry.from_processor(processor).out_hw[0]
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
    train_geo = Geometry.from_processor(train_processor)
    if hasattr(model.config, "image_size"):
        model.config.image_size = test_size
    return train_geo, Geometry.from_processor(processor)


def default_image_size(model: str) -> int | None:
    """Default training crop size: a folder written by train.py trains at the crop size it was trained at (its saved
    processor holds the larger evaluation size), a built-in backbone at its fine-tuning size, else the model's own."""
    metrics = Path(model) / "metrics.json"
    if metrics.is_file():
        try:
            crop = json.loads(metrics.read_text())["recipe"]["train_crop_size"]
            return int(crop[0] if isinstance(crop, (list, tuple)) else crop)
        except (ValueError, KeyError, TypeError, IndexError):
            pass  # not one of ours, or an older one: the saved processor's size is the best guess
    from har_model.train import backbones

    return backbones.default_train_size(model)


def _head_prefixes(model) -> tuple:
    """Parameter-name prefixes of the classification head (the new, randomly initialised part)."""
    names = [n for n, _ in model.named_parameters()]
    for cand in ("classifier", "head", "fc", "score"):
        if any(n.startswith(cand) for n in names):
            return (cand,)
    return (names[-1].rsplit(".", 1)[0],)


# ----------------------------------------------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None, *, export=None) -> int:
    """``export(model_dir)`` is called for ``--export-onnx`` (the command line passes the serving stage's ONNX
    export: the training stage never imports serving)."""
    args = build_parser().parse_args(argv)
    return run(args, export=export)


def run(args, *, export=None) -> int:  # noqa: C901 - the one linear story of a training run
    t_start = time.time()
    if not args.data_dir and not args.dataset:
        raise HarError("give the images with --data-dir FOLDER (one sub-folder per class) or --dataset HUB_ID_OR_FOLDER")
    if args.mixup < 0:
        raise HarError(f"--mixup {args.mixup}: give 0 (off) or a positive Beta alpha such as 0.2")
    if args.soup < 1:
        raise HarError(f"--soup {args.soup}: give 1 (a single model) or more members")
    out = Path(args.output_dir) if args.output_dir else _default_output_dir(args)
    _check_output_dir(out)
    ckpt_dir = out / "checkpoints"
    # one checkpoint folder per soup member (checkpoints/ itself for a single model)
    member_dirs = [ckpt_dir] if args.soup == 1 else [ckpt_dir / f"member-{i}" for i in range(args.soup)]
    if args.resume:
        if not any(d.is_dir() and any(d.glob("checkpoint-*")) for d in member_dirs):
            raise HarError(f"--resume: no checkpoint found in {ckpt_dir}"
                           + (f" for a soup of {args.soup}" if args.soup > 1 else ""))
    elif ckpt_dir.is_dir() and any(ckpt_dir.rglob("checkpoint-*")) and not args.overwrite:
        raise HarError(f"{out} already holds checkpoints: continue with --resume, or start afresh with --overwrite")

    import torch
    import transformers
    from transformers import EarlyStoppingCallback, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from har_model import data
    from har_model.train import backbones
    from har_model.train.augment import CachedImages, decode_images
    from har_model.train.evaluation import compute_metrics_fn
    from har_model.hardware import cpu_has_bf16

    transformers.logging.set_verbosity_warning()
    seed = args.seed if args.train_seed is None else args.train_seed
    set_seed(seed)

    # ---- data: validated, de-duplicated, split (written as a dataset repo folder in OUT/dataset)
    dataset_dir = out / "dataset"
    dsd = data.dataset_from_args(args, dataset_dir)
    labels = list(dsd["train"].features["label"].names)

    # ---- model (rebuilt from the same pretrained weights for every soup member)
    image_size = args.image_size or default_image_size(args.model)
    channels_last = not args.no_channels_last

    def build_model():
        model, processor = backbones.load_backbone(args.model, labels)
        train_geo, geo = _train_eval_geometry(model, processor, image_size, args.eval_size)
        n_frozen, frozen_norms = freeze_early_layers(model, args.freeze_layers)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model, processor, train_geo, geo, n_frozen, frozen_norms

    model, processor, train_geo, geo, n_frozen, frozen_norms = build_model()
    use_bf16 = args.precision == "bf16" or (
        args.precision == "auto" and (torch.cuda.is_available() and torch.cuda.is_bf16_supported() or
                                      not torch.cuda.is_available() and cpu_has_bf16())
    )

    # ---- decode and resize every image once (shared by all soup members)
    workers = args.num_workers or os.cpu_count() or 1
    from datasets import Image as ImageFeature

    def cached(split: str, train: bool) -> CachedImages:
        ds = dsd[split].cast_column("image", ImageFeature(decode=False))
        g = train_geo if train else geo
        pixels = decode_images(ds["image"], geo=g, train=train, num_workers=workers, desc=f"decoding {split}")
        return CachedImages(pixels, ds["label"], g, augment=train)

    train_ds, val_ds, test_ds = cached("train", True), cached("validation", False), cached("test", False)

    report_to = args.report_to
    if report_to == "auto":
        try:
            import tensorboard  # noqa: F401

            report_to = "tensorboard"
        except ImportError:
            report_to = "none"

    print(
        f"training {args.model} on {len(train_ds)} images ({len(labels)} classes), validating on {len(val_ds)}, "
        f"testing on {len(test_ds)}; training crops {train_geo.out_hw[0]}x{train_geo.out_hw[1]}, evaluation input "
        f"{geo.out_hw[0]}x{geo.out_hw[1]}, {'bf16' if use_bf16 else 'fp32'}, "
        f"{n_frozen} blocks frozen" + (f"; a soup of {args.soup} models" if args.soup > 1 else ""),
        flush=True,
    )
    members = []
    for i, member_dir in enumerate(member_dirs):
        member_seed = seed + i
        if i:
            set_seed(member_seed)  # a new random head and new augmentations; the same pretrained backbone
            model, _, _, _, _, frozen_norms = build_model()
        if args.soup > 1:
            print(f"soup member {i + 1} of {args.soup} (training seed {member_seed})", flush=True)
        resume = get_last_checkpoint(str(member_dir)) if args.resume and member_dir.is_dir() else None
        callbacks = [_make_clock()] + (
            [EarlyStoppingCallback(args.early_stopping_patience)] if args.early_stopping_patience > 0 else [])
        trainer = _make_trainer_class()(
            model=model,
            args=_training_arguments(args, member_dir, out, member_seed, use_bf16, report_to),
            train_dataset=train_ds,
            eval_dataset=val_ds,
            compute_metrics=compute_metrics_fn(labels),
            callbacks=callbacks,
            frozen_norms=frozen_norms,
            channels_last=channels_last,
            backbone_lr_scale=args.backbone_lr_scale,
            head_prefixes=_head_prefixes(model),
            mixup_alpha=args.mixup,
        )
        trainer.train(resume_from_checkpoint=resume)
        # the clock in the handler: on --resume the Trainer swaps in the one restored from the checkpoint
        clock = next(c for c in trainer.callback_handler.callbacks if type(c).__name__ == "TrainingClock")
        members.append({
            "seed": member_seed,
            "train_seconds": round(clock.seconds, 1),
            "validation_macro_f1": trainer.state.best_metric,
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "state": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},  # the best checkpoint
        })
    train_seconds = sum(m["train_seconds"] for m in members)
    soup, validation = cook_soup(trainer, members) if len(members) > 1 else (None, None)

    # ---- save the model (best checkpoint or soup), evaluate on the held-out test split, write the reports
    from har_model.train.reports import write_outputs

    trainer.save_model(str(out))
    (out / "training_args.bin").unlink(missing_ok=True)  # a pickle: kept in checkpoints/ for --resume, not shipped
    processor.save_pretrained(str(out))
    summary = write_outputs(
        trainer=trainer,
        out=out,
        labels=labels,
        test_ds=test_ds,
        test_split=dsd["test"],
        args=args,
        train_seconds=train_seconds,
        total_seconds_start=t_start,
        precision="bf16" if use_bf16 else "fp32",
        frozen_blocks=n_frozen,
        geo=geo,
        train_geo=train_geo,
        soup=soup,
        validation=validation,
    )

    if args.export_onnx:
        if export is None:
            raise HarError("--export-onnx: run training through `python train.py`, which provides the ONNX export")
        export(out)
    print(summary, flush=True)
    _push(args, out, dataset_dir)  # last: a failed push (one clear error line) leaves everything above on disk
    return 0


def average_state_dicts(states: list[dict]) -> dict:
    """Element-wise mean of floating-point tensors (weights and BatchNorm statistics); integer buffers (BatchNorm's
    batch counter) are taken from the first."""
    first = states[0]
    return {k: (sum(s[k].float() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in first.items()}


def cook_soup(trainer, members: list[dict]) -> tuple[dict, dict | None]:
    """Load the weight average of the members' best checkpoints into `trainer.model` (a uniform model soup), or,
    if the soup scores lower macro-F1 on validation than the best member, that member. Returns what was done and,
    when the soup is shipped, its validation metrics (so they are not measured twice)."""
    model = trainer.model
    model.load_state_dict(average_state_dicts([m["state"] for m in members]))
    validation = {k.removeprefix("soup_"): v for k, v in trainer.evaluate(metric_key_prefix="soup").items()
                  if k.startswith("soup_")}
    soup_f1 = validation["macro_f1"]
    best = max(range(len(members)), key=lambda i: members[i]["validation_macro_f1"] or 0.0)
    shipped = "soup"
    if soup_f1 < (members[best]["validation_macro_f1"] or 0.0):
        model.load_state_dict(members[best]["state"])
        shipped, validation = f"member {best + 1}", None  # write_outputs measures the member's
    member_f1 = ", ".join(f"{m['validation_macro_f1']:.4f}" for m in members)
    print(f"model soup: validation macro-F1 {soup_f1:.4f} (members: {member_f1}); shipping the {shipped}", flush=True)
    return {
        "members": [{k: v for k, v in m.items() if k != "state"} for m in members],
        "soup_validation_macro_f1": soup_f1,
        "shipped": shipped,
    }, validation


def _training_arguments(args, ckpt_dir: Path, out: Path, seed: int, use_bf16: bool, report_to: str):
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_ratio,  # a float < 1 is a fraction of all steps
        lr_scheduler_type="cosine",
        label_smoothing_factor=args.label_smoothing,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        bf16=use_bf16,
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        restore_callback_states_from_checkpoint=True,  # early-stopping patience and the training clock
        remove_unused_columns=False,
        report_to=report_to,
        disable_tqdm=False,
    )


def _push(args, out: Path, dataset_dir: Path) -> None:
    from har_model.hub import push_folder

    if args.push_dataset:
        if not dataset_dir.is_dir():
            raise HarError(f"--push-dataset: {dataset_dir} does not exist (the dataset came from --dataset; push that instead)")
        url = push_folder(dataset_dir, args.push_dataset, repo_type="dataset", private=args.private)
        print(f"dataset pushed: {url}")
    if args.push_to_hub:
        url = push_folder(out, args.push_to_hub, repo_type="model", private=args.private)
        print(f"model pushed: {url}")
