"""Fine-tuning with transformers' Trainer: `python train.py --data-dir DIR --output-dir OUT`.

The fast CPU recipe (see README "Training speed"): images are decoded and resized once into uint8 tensors and
augmented per step with torch ops; channels-last memory; bf16 autocast where the CPU supports it; the stem and the
first blocks frozen (batch-norm statistics too) with a lower learning rate for the rest of the backbone than for
the new head. Everything else is stock Trainer: evaluation each epoch, best checkpoint on validation macro-F1,
early stopping, `--resume`, TensorBoard when installed, and it runs unchanged under `accelerate launch`/`torchrun`.

The model folder is ours or refused (``har_model.outputs``): everything the run ships -- the dataset copy, weights,
reports, card, ONNX -- is written into a staging folder inside it and moved into place only at the end, so a failed
or interrupted run leaves the previous model. Checkpoints live in ``checkpoints/`` with ``run.json`` (the data,
classes and flags they belong to), which ``--resume`` checks (``har_model.train.checkpoints``).
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from pathlib import Path

from har_model.errors import HarError
from har_model.hub import push_folder
from har_model.outputs import Publication, claim_output_dir, clear_run_state, own_dir

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
    g.add_argument("--overwrite", action="store_true", help="start afresh: remove the old run's checkpoints (the files train.py wrote are replaced "
                   "when the new model is complete); also writes into an existing folder that har_model did not "
                   "create (its other files are kept)")

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
# main


def main(argv: list[str] | None = None, *, export=None) -> int:
    """``export(model_dir)`` is called for ``--export-onnx`` (the command line passes the serving stage's ONNX
    export: the training stage never imports serving)."""
    args = build_parser().parse_args(argv)
    return run(args, export=export)


def run(args, *, export=None) -> int:
    """One training run: data -> base model -> image cache -> soup members -> shipped model -> reports -> export, push."""
    # imported here, not at the top: `--help` and argument errors need none of torch, the Trainer or datasets
    from transformers import set_seed

    t_start = time.time()
    check_recipe(args)
    out = Path(args.output_dir) if args.output_dir else default_output_dir(args)
    member_dirs = check_output_dir(out, args)
    seed = args.seed if args.train_seed is None else args.train_seed
    set_seed(seed)
    with Publication(out, "model") as stage:  # moved into `out` only when everything below has succeeded
        summary = _train_into(stage, out, args, member_dirs, seed, t_start, export)
    print(summary, flush=True)
    push(args, out, out / "dataset")  # last: a failed push (one clear error line) leaves everything above on disk
    return 0


def _train_into(stage: Path, out: Path, args, member_dirs: list[Path], seed: int, t_start: float, export) -> str:
    """The run proper: the shipped files go to `stage`, the checkpoints to `out`/checkpoints."""
    from har_model.data import dataset_from_args
    from har_model.train.augment import cache_splits
    from har_model.train.base_model import load_base_model
    from har_model.train.reports import write_outputs
    from har_model.train.soup import cook_soup, train_members
    from har_model.train.trainer import make_trainer, resolve_report_to, use_bf16

    dsd = dataset_from_args(args, stage / "dataset")
    start_checkpoints(out, args, dsd)
    labels = list(dsd["train"].features["label"].names)
    load_model = functools.partial(load_base_model, args.model, labels, image_size=args.image_size,
                                   eval_size=args.eval_size, freeze_layers=args.freeze_layers,
                                   channels_last=not args.no_channels_last)
    base = load_model()
    images = cache_splits(dsd, base.train_prep, base.eval_prep, args.num_workers or os.cpu_count() or 1)
    bf16 = use_bf16(args.precision)
    print_plan(args, base, images, len(labels), bf16)

    new_trainer = functools.partial(make_trainer, args=args, images=images, labels=labels, bf16=bf16,
                                    report_to=resolve_report_to(args.report_to))
    members = train_members(member_dirs, seed, first_model=base.model, new_model=lambda: load_model().model,
                            new_trainer=new_trainer, resume=args.resume)
    evaluator = new_trainer(base.model, out / "checkpoints", seed)  # the shipped model: validation, test, saving
    result = cook_soup(evaluator, members)

    save_model(evaluator, base.processor, stage)
    summary = write_outputs(trainer=evaluator, result=result, out=stage, labels=labels, test_ds=images.test,
                            test_split=dsd["test"], args=args, total_seconds_start=t_start,
                            precision="bf16" if bf16 else "fp32", frozen_blocks=base.frozen_blocks, eval_prep=base.eval_prep,
                            train_prep=base.train_prep, model_dir=out)
    if args.export_onnx:
        if export is None:
            raise HarError("--export-onnx: run training through `python train.py`, which provides the ONNX export")
        export(stage)
    return summary


# ----------------------------------------------------------------------------------------------------------------
# the steps of a run that need no heavy imports


def check_recipe(args) -> None:
    if not args.data_dir and not args.dataset:
        raise HarError("give the images with --data-dir FOLDER (one sub-folder per class) or --dataset HUB_ID_OR_FOLDER")
    if args.mixup < 0:
        raise HarError(f"--mixup {args.mixup}: give 0 (off) or a positive Beta alpha such as 0.2")
    if args.soup < 1:
        raise HarError(f"--soup {args.soup}: give 1 (a single model) or more members")


def default_output_dir(args) -> Path:
    source = args.data_dir or args.dataset
    name = Path(str(source).rstrip("/")).name or "model"
    return Path("outputs") / name.replace("/", "_")


def check_output_dir(out: Path, args) -> list[Path]:
    """Claim the model folder (new, empty or ours; never the input, inside it or around it); return the checkpoint
    folder of each soup member (checkpoints/ itself for a single model). Refuses to start over silently where
    checkpoints exist, and to resume where there are none."""
    claim_output_dir(out, "model", overwrite=args.overwrite, inputs=[args.data_dir, args.dataset, args.model])
    soup, resume, overwrite = args.soup, args.resume, args.overwrite
    ckpt_dir = out / "checkpoints"
    member_dirs = [ckpt_dir] if soup == 1 else [ckpt_dir / f"member-{i}" for i in range(soup)]
    if resume:
        if not any(d.is_dir() and any(d.glob("checkpoint-*")) for d in member_dirs):
            raise HarError(f"--resume: no checkpoint found in {ckpt_dir}" + (f" for a soup of {soup}" if soup > 1 else ""))
    elif ckpt_dir.is_dir() and any(ckpt_dir.rglob("checkpoint-*")) and not overwrite:
        raise HarError(f"{out} already holds checkpoints: continue with --resume, or start afresh with --overwrite")
    return member_dirs


def start_checkpoints(out: Path, args, dsd) -> None:
    """With the data loaded (the input checks passed): --resume checks that the checkpoints belong to this run;
    a fresh run (--overwrite) removes the old run's checkpoints. Then records what this run is."""
    from har_model.train.checkpoints import check_resume, run_fingerprint, write_run

    fingerprint = run_fingerprint(args, dsd)
    if args.resume:
        check_resume(out / "checkpoints", fingerprint)
    else:
        clear_run_state(out)  # old checkpoints must not be resumed later as if they were this run's
    write_run(own_dir(out, "checkpoints"), fingerprint)


def print_plan(args, base, images, num_labels: int, bf16: bool) -> None:
    train_hw, eval_hw = base.train_prep.output_hw, base.eval_prep.output_hw
    print(
        f"training {args.model} on {len(images.train)} images ({num_labels} classes), validating on "
        f"{len(images.validation)}, testing on {len(images.test)}; training crops {train_hw[0]}x{train_hw[1]}, "
        f"evaluation input {eval_hw[0]}x{eval_hw[1]}, {'bf16' if bf16 else 'fp32'}, {base.frozen_blocks} blocks "
        "frozen" + (f"; a soup of {args.soup} models" if args.soup > 1 else ""),
        flush=True,
    )


def save_model(trainer, processor, out: Path) -> None:
    trainer.save_model(str(out))
    (out / "training_args.bin").unlink(missing_ok=True)  # a pickle: kept in checkpoints/ for --resume, not shipped
    processor.save_pretrained(str(out))


def push(args, out: Path, dataset_dir: Path) -> None:
    if args.push_dataset:
        if not dataset_dir.is_dir():
            raise HarError(f"--push-dataset: {dataset_dir} does not exist (the dataset came from --dataset; push that instead)")
        url = push_folder(dataset_dir, args.push_dataset, repo_type="dataset", private=args.private)
        print(f"dataset pushed: {url}")
    if args.push_to_hub:
        url = push_folder(out, args.push_to_hub, repo_type="model", private=args.private)
        print(f"model pushed: {url}")
