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

import functools
import os
import shutil
import time
from pathlib import Path

from transformers import logging as transformers_logging
from transformers import set_seed

from har_model.errors import HarError
from har_model.hub import full_repo_id, push_folder, require_hub
from har_model.model_folder.files import CACHE, CHECKPOINTS, DATASET
from har_model.outputs import Publication, claim_output_dir, staging_name
from har_model.train.config import RunArguments, TrainConfig
from har_model.train.launcher import Processes

def main(argv: list[str] | None = None) -> int:
    return run(TrainConfig.parse(argv))


def run(config: TrainConfig) -> int:
    """One training run: data -> base model -> image cache -> soup members -> shipped model -> reports -> export, push.

    Under a launcher (torchrun, accelerate launch) every process runs this; `Processes` makes it behave like one."""
    t_start = time.time()
    transformers_logging.set_verbosity_warning()
    if config.run.push_to_hub:
        if config.run.hub_strategy != "end":  # the Trainer creates the repo when it starts: fail now, not later
            require_hub(f"--hub-strategy {config.run.hub_strategy}")
        config.run.push_to_hub = full_repo_id(config.run.push_to_hub)  # NAME -> USER/NAME where the Hub says
    out = config.output_dir
    procs = Processes(config.training)  # the Trainer's distributed state: its device, its process group
    with procs.quiet():
        with procs.main_first():  # claiming the model folder
            member_dirs = check_output_dir(out, config, claim=procs.is_main)
        set_seed(config.seed)
        # moved into `out` only when everything below has succeeded; one staging folder for all processes
        with Publication(out, "model", name=procs.share(staging_name()), writer=procs.is_main) as stage:
            summary = _train_into(stage, out, config, member_dirs, t_start, procs)
        with procs.main_first():  # the others wait for the published model and the pushes
            if procs.is_main:
                remove_cache(out)  # kept for --resume until now
                print(summary, flush=True)
                push(config.run, out, out / DATASET)  # last: a failed push (one clear error line) leaves all on disk
        procs.close()
    return 0


def _train_into(stage: Path, out: Path, config: TrainConfig, member_dirs: list[Path], t_start: float,
                procs: Processes) -> str:
    """The run proper: the shipped files go to `stage`, the checkpoints to `out`/checkpoints."""
    # the heavy part (datasets, the Trainer, the models) is imported here: `--help` and bad options stay quick
    from transformers import EarlyStoppingCallback

    from har_model.data import dataset_from_args
    from har_model.train import balancing, base_model, checkpoints, distill, image_cache, reports, soup, trainer

    recipe = config.run
    with procs.main_first():  # building the dataset, then reading it
        dsd = dataset_from_args(config.data, stage / DATASET, build=procs.is_main, shown_as=out / DATASET)
        unlabeled = scan_unlabeled(config, dsd, procs.is_main)
        key = (checkpoints.start_run(out, config, dsd, stage, unlabeled.fingerprint if unlabeled else None)
               if procs.is_main else "")
    dsd = fewer_samples(dsd, recipe.max_train_samples, recipe.max_eval_samples, config.seed)
    labels = list(dsd["train"].features["label"].names)
    load_model = functools.partial(base_model.load_base_model, recipe.model, labels, image_size=recipe.image_size,
                                   eval_size=recipe.eval_size, freeze_layers=recipe.freeze_layers,
                                   channels_last=not recipe.no_channels_last)
    base = load_model(report=procs.index == 0)
    with procs.main_first():  # decoding the images, then mapping them
        store = image_cache.run_store(out, recipe, key, build=procs.is_main, shared=procs.count > 1)
        workers = config.data.num_workers or os.cpu_count() or 1
        images = image_cache.cache_splits(dsd, base.train_prep, base.eval_prep, workers, store)
    bf16 = trainer.use_bf16(recipe.precision, config.training.device)
    balance = balancing.plan_balance(recipe.class_balance, images.train.labels, len(labels))
    print_plan(config, base, images, len(labels), bf16, procs.count, balance)

    new_trainer = functools.partial(trainer.make_trainer, config=config, images=images, labels=labels, bf16=bf16,
                                    balance=balance)
    # --hub-strategy other than `end`: the members' Trainers push while they train (the evaluator never pushes)
    member_trainer = functools.partial(new_trainer, hub=config.run.hub_strategy != "end", weight_average=True)
    members = soup.train_members(member_dirs, config.seed, first_model=base.model, new_trainer=member_trainer,
                                 new_model=lambda: load_model(report=False).model, resume=recipe.resume)
    evaluator = new_trainer(base.model, out / CHECKPOINTS, config.seed)  # the shipped model: evaluated, saved
    # it never trains: early stopping would only warn that the soup's and the teacher's scores are not eval_macro_f1
    evaluator.pop_callback(EarlyStoppingCallback)
    result = soup.cook_soup(evaluator, members)
    distilled = None
    if unlabeled is not None:  # the shipped model teaches a student (har_model.train.distill)
        student_dir = out / CHECKPOINTS / "student"
        distilled = distill.distill(
            evaluator, unlabeled, labelled=images.train, train_prep=base.train_prep, eval_prep=base.eval_prep,
            new_model=lambda: load_model(report=False).model,
            new_trainer=lambda model, seed, data, epochs: new_trainer(
                model, student_dir, seed, balance=None, train_dataset=data, epochs=epochs,
                learning_rate=config.training.learning_rate * recipe.distill_lr_scale),
            seed=config.seed + recipe.soup, epochs=recipe.distill_epochs, min_confidence=recipe.unlabeled_min_confidence,
            num_workers=workers, targets=recipe.distill_targets, resume_from=checkpoints.last_complete(student_dir) if recipe.resume and
            student_dir.is_dir() else None)
        if distilled.shipped != "teacher":
            result.validation = None  # the soup's validation figures are not the shipped model's any more
    predictions = reports.predict_splits(evaluator, images.test)  # every process predicts its share
    evaluator.save_model(str(stage))  # the Trainer writes from the main process only
    finished = reports.FinishedRun(config=config, trainer=evaluator, base=base, result=result, predictions=predictions,
                                   images=images, test_split=dsd["test"], labels=labels,
                                   record=reports.run_record(config, base, precision_name(bf16, config), balance),
                                   started=t_start, model_dir=out, distillation=distilled)
    summary = ""
    # the others wait here, so nobody still reads the staged dataset when the main process moves it into place
    with procs.main_first():
        if procs.is_main:
            summary = reports.write_model_folder(stage, finished)
    return summary


# ----------------------------------------------------------------------------------------------------------------
# the steps of a run that need no heavy imports


def check_output_dir(out: Path, config: TrainConfig, *, claim: bool = True) -> list[Path]:
    """Claim the model folder (new, empty or ours; never the input, inside it or around it); return the checkpoint
    folder of each soup member (checkpoints/ itself for a single model). Refuses to start over silently where
    checkpoints exist, and to resume where there are none. `claim=False`: check only (the other processes of a
    launched run, after the main one has claimed it)."""
    soup, resume, overwrite = config.run.soup, config.run.resume, config.run.overwrite
    if resume and overwrite:
        raise HarError("--resume and --overwrite contradict each other: --resume continues the checkpoints in "
                       f"{out}, --overwrite starts afresh and removes them; give one of them")
    if claim:
        claim_output_dir(out, "model", overwrite=overwrite, inputs=[config.data.data_dir, config.data.dataset,
                                                                    config.run.model])
    ckpt_dir = out / CHECKPOINTS
    member_dirs = [ckpt_dir] if soup == 1 else [ckpt_dir / f"member-{i}" for i in range(soup)]
    if resume:
        if not any(d.is_dir() and any(d.glob("checkpoint-*")) for d in member_dirs):
            raise HarError(f"--resume: no checkpoint found in {ckpt_dir}" + (f" for a soup of {soup}" if soup > 1 else ""))
    elif ckpt_dir.is_dir() and any(ckpt_dir.rglob("checkpoint-*")) and not overwrite:
        raise HarError(f"{out} already holds checkpoints: continue with --resume, or start afresh with --overwrite")
    return member_dirs


def scan_unlabeled(config: TrainConfig, dsd, is_main: bool):
    """--unlabeled-dir's images and video frames, checked and de-duplicated against the labelled splits
    (har_model.data.unlabeled); None without the option. Every process scans (the result is the same)."""
    if not config.run.unlabeled_dir:
        return None
    from har_model.data.unlabeled import describe
    from har_model.data.unlabeled import scan_unlabeled as scan

    found = scan(config.run.unlabeled_dir, dsd, fps=config.run.unlabeled_fps, min_side=config.data.min_side,
                 max_pixels=config.data.max_pixels, near_dup_threshold=config.data.near_dup_threshold,
                 num_workers=config.data.num_workers, progress=is_main)
    if is_main:
        print(describe(found.report), flush=True)
    return found


def fewer_samples(dsd, max_train: int | None, max_eval: int | None, seed: int):
    """--max-train-samples / --max-eval-samples, as in transformers' example script: that many images of the training
    / validation split, drawn at random with the seed (the test split stays whole)."""
    from datasets import DatasetDict  # with the heavy part of the run (see _train_into)

    limits = {"train": max_train, "validation": max_eval}
    return DatasetDict({name: split.shuffle(seed=seed).select(range(limits[name]))
                        if limits.get(name) is not None and limits[name] < len(split) else split
                        for name, split in dsd.items()})


def precision_name(bf16: bool, config: TrainConfig) -> str:
    return "bf16" if bf16 else "fp16" if config.training.fp16 else "fp32"


def remove_cache(out: Path) -> None:
    shutil.rmtree(out / CACHE, ignore_errors=True)  # the image cache: kept for --resume until the run finished


def print_plan(config: TrainConfig, base, images, num_labels: int, bf16: bool, processes: int = 1,
               balance=None) -> None:
    train_hw, eval_hw, soup = base.train_prep.output_hw, base.eval_prep.output_hw, config.run.soup
    where = f"{processes} processes on {config.training.device.type}" if processes > 1 else config.training.device.type
    lr, scale = config.training.learning_rate, config.run.backbone_lr_scale
    rates = f"learning rate {lr:g}" if scale == 1 else f"learning rate {lr:g} for the head, {lr * scale:g} for the backbone"
    print(
        f"training {config.run.model} on {len(images.train)} images ({num_labels} classes), validating on "
        f"{len(images.validation)}, testing on {len(images.test)}; training crops {train_hw[0]}x{train_hw[1]}, "
        f"evaluation input {eval_hw[0]}x{eval_hw[1]}, {precision_name(bf16, config)}, {rates}, stem + "
        f"{base.frozen_blocks} blocks frozen" + (f"; a soup of {soup} models" if soup > 1 else "") + f"; {where}, images cached in "
        + ("memory" if images.place == "ram" else "OUT/cache (memory-mapped)")
        + (f"; {balance.describe()}" if balance is not None and (balance.on or balance.chosen_by == "flag") else ""),
        flush=True,
    )


def push(args: RunArguments, out: Path, dataset_dir: Path) -> None:
    if args.push_dataset:
        if not dataset_dir.is_dir():
            raise HarError(f"--push-dataset: {dataset_dir} does not exist (the dataset came from --dataset; push that instead)")
        url = push_folder(dataset_dir, args.push_dataset, repo_type="dataset", private=args.private)
        print(f"dataset pushed: {url}")
    if args.push_to_hub:
        url = push_folder(out, args.push_to_hub, repo_type="model", private=args.private)
        print(f"model pushed: {url}")
