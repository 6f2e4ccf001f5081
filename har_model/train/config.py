"""The options of a training run, typed: `TrainConfig.parse(argv)`, with transformers' HfArgumentParser.

    DataArguments         input, validation and split (har_model.data.options: the same options as `prepare`)
    RunArguments          ours: the model folder, the base model, the soup, sizes, freezing, mixup, after training
    HarTrainingArguments  transformers' TrainingArguments with our defaults; every option on the command line except
                          the few the run sets itself (HIDDEN)
    TrainConfig           the three parts of one run, checked

Options are spelt with dashes (`--learning-rate`); the underscore spelling of the transformers examples
(`--learning_rate`) is accepted too, and so are the flags of transformers' example script
examples/pytorch/image-classification/run_image_classification.py: aliases where we have the concept
(`--model_name_or_path` = `--model`, `--train_dir` = `--data-dir`, ...), options of their own where it is cheap to
give the script's meaning (`--max_train_samples`, `--hub_strategy`, ...), and a one-line refusal saying why and what
to use for the rest (REFUSED). No option is ever matched by a prefix: `--bf16` is `--bf16`, never `--bf16-full-eval`.
`--help` lists our options and the common Trainer ones; `--help-all` every TrainingArguments field. This module imports transformers' TrainingArguments (and so torch), which
`--help` needs anyway; the Trainer, datasets and the models are imported only once a run starts.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import importlib.util
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from transformers import HfArgumentParser, TrainingArguments
from transformers.hf_argparser import string_to_bool
from transformers.trainer_utils import IntervalStrategy, SaveStrategy, SchedulerType

from har_model.data.balance import IMBALANCE_RATIO
from har_model.data.options import DataArguments, HelpFormatter
from har_model.errors import HarError, command
from har_model.hardware import has_accelerator

DEFAULT_MODEL = "efficientnet-lite0"

USAGE = "%(prog)s [--data-dir FOLDER | --dataset ID_OR_FOLDER] [--output-dir OUT] [--model MODEL] [OPTION ...]"
DESCRIPTION = (
    "Fine-tune a pretrained image classifier on a folder of action images (one sub-folder per class) or a published "
    "dataset, evaluate it on a held-out test split and write a model folder that pipeline('image-classification') "
    "and the Hub understand."
)

# TrainingArguments the run sets itself, or that are options of ours under the same name, so they are not taken
# from TrainingArguments: the checkpoint folder of each soup member (under --output-dir), the seeds of each member
# (--train-seed), bf16 / fp16 (--precision; our --bf16 / --fp16 set it), resuming (--resume), the Hub (our
# --push-to-hub, --hub-model-id, --hub-strategy, --private; a token never goes on a command line) and the do_*
# switches of the transformers example scripts (ours: this command always trains and evaluates).
HIDDEN = {
    "output_dir", "seed", "data_seed", "bf16", "fp16", "resume_from_checkpoint", "do_train", "do_eval", "do_predict",
    "push_to_hub", "hub_model_id", "hub_private_repo", "hub_strategy", "hub_token", "hub_always_push", "hub_revision",
}
# TrainingArguments with a shorter name of ours (the transformers name is accepted too)
OUR_NAMES = {
    "num_train_epochs": "--epochs",
    "per_device_train_batch_size": "--batch-size",
    "per_device_eval_batch_size": "--eval-batch-size",
    "label_smoothing_factor": "--label-smoothing",
    "warmup_steps": "--warmup-ratio",
}

# The example script's names for options we have (its spelling with dashes; underscores are turned into dashes)
ALIASES = {
    "model": "--model-name-or-path",
    "dataset": "--dataset-name",
    "data_dir": "--train-dir",
    "val_fraction": "--train-val-split",
    "overwrite": "--overwrite-output-dir",
    "private": "--hub-private-repo",
}
_TOKEN = "a token never goes on a command line: set HF_TOKEN or run `hf auth login`"
# Flags of the example script (and TrainingArguments) that do not apply here: why, and what to use instead
REFUSED = {
    "--validation-dir": "validation and test are split off the one image folder (grouped, so near-duplicates never "
                        "straddle two splits): put every image in --train_dir / --data-dir and set --val-fraction, or "
                        "give a dataset with its own splits to --dataset",
    "--dataset-config-name": "--dataset loads a Hub dataset's default configuration: load the one you need with "
                             "datasets, save_to_disk it, and give that folder to --dataset",
    "--model-type": "training from scratch is not offered: give a pretrained model with --model",
    "--config-name": "the config always comes with --model (a Hub id or a folder with config.json)",
    "--image-processor-name": "the image processor always comes with --model (a Hub id or a folder with "
                              "preprocessor_config.json)",
    "--feature-extractor-name": "the image processor always comes with --model (a Hub id or a folder with "
                                "preprocessor_config.json)",
    "--cache-dir": "downloads go to the Hugging Face cache: set HF_HOME to move it",
    "--model-revision": "--model takes a Hub id's default revision: download another one with `hf download ID "
                        "--revision REV --local-dir DIR` and give --model DIR",
    "--token": _TOKEN, "--use-auth-token": _TOKEN, "--hub-token": _TOKEN, "--push-to-hub-token": _TOKEN,
    "--trust-remote-code": "har_model never runs code from a model repository: use a model stock transformers "
                           "supports",
    "--push-to-hub-model-id": "renamed in transformers: use --hub_model_id USER_OR_ORG/NAME",
    "--push-to-hub-organization": "renamed in transformers: use --hub_model_id ORG/NAME",
    "--resume-from-checkpoint": "use --resume: it continues from OUTPUT_DIR/checkpoints and checks that they belong "
                                "to this run",
    "--hub-revision": "the model is pushed to the repository's main branch",
    "--hub-always-push": "a push still running when the next checkpoint is saved is not interrupted; that "
                         "checkpoint's push is skipped, as the Trainer does by default",
    "--data-seed": "the order of the training data follows the training seed: use --train-seed",
}

INPUT_OUTPUT, RECIPE, AFTER = "input and output", "training recipe", "after training"
EXAMPLE = "flags of transformers' run_image_classification.py"
OTHER_TRAINER = "other Trainer options (transformers TrainingArguments: the common ones; every one with --help-all)"
GROUPS = {  # --help lists the groups in this order; the TrainingArguments of our recipe are listed with it
    "data": [], INPUT_OUTPUT: [],
    RECIPE: ["num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size", "learning_rate",
             "weight_decay", "warmup_steps", "label_smoothing_factor", "gradient_accumulation_steps", "max_steps",
             "report_to"],
    AFTER: [], EXAMPLE: [], OTHER_TRAINER: [],
}
EXAMPLE_TEXT = (
    "transformers' examples/pytorch/image-classification/run_image_classification.py: its flags work here with the "
    "script's meaning, spelt with _ or -; its names for options we have are listed beside ours (--model_name_or_path, "
    "--dataset_name, --train_dir, --train_val_split, --overwrite_output_dir, --hub_private_repo). Refused, each with "
    "the reason and what to use: " + ", ".join(sorted(f.replace("-", "_").replace("__", "--", 1) for f in REFUSED))
    + "."
)
# The TrainingArguments --help shows besides our recipe's; --help-all shows all of them
COMMON_TRAINER = {
    "lr_scheduler_type", "eval_strategy", "eval_steps", "save_strategy", "save_steps", "save_total_limit",
    "logging_strategy", "logging_steps", "load_best_model_at_end", "metric_for_best_model", "remove_unused_columns",
    "dataloader_num_workers", "optim", "torch_compile", "run_name", "use_cpu",
    "max_grad_norm", "bf16_full_eval", "fp16_full_eval",
}


def _opt(default, text: str, group: str = RECIPE, **kw):
    return field(default=default, metadata={"help": text, "group": group, **kw})


@dataclass
class RunArguments:
    """Our options: where the model goes, what it starts from and the parts of the recipe the Trainer lacks."""

    _argument_group_name = RECIPE

    output_dir: str | None = _opt(None, "model folder to write (default: outputs/<name of the data folder or "
                                  "dataset>)", INPUT_OUTPUT)
    model: str = _opt(DEFAULT_MODEL, "base model: efficientnet-lite0/1/2 (built in, offline), a local model folder "
                      "or a Hub id", INPUT_OUTPUT)
    resume: bool = _opt(False, "continue from the last checkpoint in OUTPUT_DIR/checkpoints", INPUT_OUTPUT)
    overwrite: bool = _opt(False, "start afresh: remove the old run's checkpoints (the files train.py wrote are "
                           "replaced when the new model is complete); also writes into an existing folder that "
                           "har_model did not create (its other files are kept)", INPUT_OUTPUT)

    soup: int = _opt(2, "train N models from the same pretrained weights (training seeds SEED, SEED+1, ...) and "
                     "average their weights into one model of the same size and speed (a model soup, Wortsman et "
                     "al. 2022); the soup is shipped when it scores at least as well as its best member on "
                     "validation, else that member is. 1: a single model", metavar="N")
    image_size: int | None = _opt(None, "training crop size in pixels (default: 256 for the built-in backbones "
                                  "(their native size if larger), the training crop size recorded by train.py for a "
                                  "model folder it wrote, the base model's own input size for other models)")
    eval_size: str = _opt("auto", "input size for validation, test and the saved model: a number, 'same' "
                          "(= --image-size) or 'auto' (convolutional models: about 1.3x the training size, rounded "
                          "to 32, which undoes the object enlargement of random-resized-crop training (FixRes); "
                          "other models: same)")
    backbone_lr_scale: float = _opt(0.25, "learning rate of the (unfrozen) backbone relative to the head")
    freeze_layers: str = _opt("auto", "freeze the stem and this many of the first backbone blocks ('auto': the "
                              "first half; 0: none)")
    mixup: float = _opt(0.0, "mixup strength: blend pairs of training images and their labels with a "
                        "Beta(ALPHA, ALPHA) weight (0 = off)", metavar="ALPHA")
    ema_decay: str = _opt("0", "weight averaging along each member's run: an exponential moving average of its "
                          "weights after every step (Polyak/EMA), shipped instead of the member's best checkpoint only "
                          "where it scores higher on validation; a decay below 1 such as 0.998, auto (the average "
                          "spans about the last fifth of the member's steps) or 0 (off, the default: measured on "
                          "har15 it changed macro-F1 by less than the noise, see benchmarks/README.md)",
                          metavar="DECAY")
    class_balance: Literal["auto", "sampling", "loss", "none"] = _opt(
        "auto", f"compensate for class imbalance: balanced sampling (each class drawn about equally often) or a "
        f"class-weighted loss; auto: when the largest training class is more than {IMBALANCE_RATIO:g}x the smallest, "
        f"with the method that measured better (the model card says which); none: off")
    unlabeled_dir: str | None = _opt(None, "a folder of unlabelled photos and/or videos of the same actions (sub-folders "
                                     "included): after the soup, the shipped model labels them with its probabilities "
                                     "and a student starting from it trains on labelled + unlabelled images (noisy-student "
                                     "self-training); whichever of teacher, student and their weight average scores "
                                     "best on validation is shipped. Never used for validation or test", INPUT_OUTPUT, metavar="DIR")
    unlabeled_fps: float = _opt(1.0, "frames per second sampled from each video in --unlabeled-dir", metavar="FPS")
    unlabeled_min_confidence: float = _opt(0.3, "unlabelled images whose top teacher probability is below this are "
                                           "left out", metavar="P")
    distill_epochs: float = _opt(2.0, "epochs of the student over the labelled + unlabelled images (--unlabeled-dir)",
                                 metavar="N")
    distill_targets: Literal["clean", "augmented"] = _opt(
        "clean", "what the teacher answers for an unlabelled image: clean (once, on the image and its mirror, before "
        "the student trains) or augmented (every step, on the very crop the student sees: consistent teaching, "
        "Beyer et al. 2022; the teacher's forward pass on those images costs student time)")
    distill_lr_scale: float = _opt(0.25, "the student's peak learning rates relative to the members' (it refines a "
                                   "trained model: a full restart would knock it out of the soup's basin)",
                                   metavar="X")
    early_stopping_patience: int = _opt(3, "stop after this many evaluations without a better validation macro-F1 "
                                        "(0: never)")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = _opt(
        "auto", "mixed precision: bf16 or fp16 autocast, or none (auto: bf16 where the CPU/GPU supports it, else "
        "fp32); --bf16 and --fp16 say the same")
    no_channels_last: bool = _opt(False, "keep NCHW memory format")
    train_seed: int | None = _opt(None, "seed for training (default: the --seed of the split)")
    cache_memory: float | None = _opt(None, "GB of memory the decoded training images may take; a larger cache "
                                      "is a memory-mapped file in OUTPUT_DIR/cache, as under torchrun / accelerate "
                                      "launch (default: half the memory available at the start; 0: always the file)",
                                      metavar="GB")

    export_onnx: bool = _opt(False, "also write ONNX (fp32 + static int8, served only if it agrees) for fast CPU serving", AFTER)
    num_examples: int = _opt(2, "test images per class copied to OUT/examples for the app", AFTER)
    push_to_hub: str | None = _opt(None, "push the finished model folder to the Hub: to REPO_ID, else to "
                                   "--hub-model-id, else to the output folder's name under your user", AFTER,
                                   metavar="REPO_ID")
    push_dataset: str | None = _opt(None, "push the dataset folder to this Hub dataset repo", AFTER,
                                    metavar="REPO_ID")
    private: bool = _opt(False, "create Hub repos as private", AFTER)
    model_license: str | None = _opt(None, "license id of the model card, e.g. apache-2.0, cc-by-nc-4.0, other "
                                     "(default: --license, the data's)", AFTER, metavar="ID")

    hub_model_id: str | None = _opt(None, "the Hub repo of --push-to-hub, USER_OR_ORG/NAME or NAME (under your user); "
                                    "default: the output folder's name under your user", EXAMPLE)
    hub_strategy: Literal["end", "every_save", "checkpoint", "all_checkpoints"] = _opt(
        "end", "with --push-to-hub, what the Trainer pushes while it trains, as in transformers: end (nothing; the "
        "finished model folder at the end), every_save (the weights at each checkpoint), checkpoint (also the latest "
        "checkpoint as last-checkpoint/, to resume elsewhere), all_checkpoints (every checkpoint); a soup's members "
        "push in turn, and the finished model replaces their weights at the end", EXAMPLE)
    max_train_samples: int | None = _opt(None, "train on this many training images only, drawn at random with the "
                                         "seed (for quick runs; validation and test stay whole)", EXAMPLE, metavar="N")
    max_eval_samples: int | None = _opt(None, "validate (best checkpoint, early stopping, calibration) on this many "
                                        "validation images only, drawn at random with the seed; the test split stays "
                                        "whole", EXAMPLE, metavar="N")
    bf16: bool = _opt(False, "= --precision bf16", EXAMPLE)
    fp16: bool = _opt(False, "= --precision fp16", EXAMPLE)
    do_train: bool = _opt(False, "accepted: this command always trains, then evaluates on validation and test (to "
                          f"evaluate a trained model only, use `{command('predict')}`)", EXAMPLE)
    do_eval: bool = _opt(False, "accepted (see --do-train)", EXAMPLE)
    do_predict: bool = _opt(False, "accepted (see --do-train)", EXAMPLE)
    ignore_mismatched_sizes: bool = _opt(False, "accepted: the classification head is always replaced by a new one "
                                         "for your classes", EXAMPLE)


def _trainer_default(name: str, default=None, text: str | None = None, *, factory=None):
    """A TrainingArguments field with our default (and help text); the rest of its metadata as transformers has it."""
    meta = dict(TrainingArguments.__dataclass_fields__[name].metadata)
    if text:
        meta["help"] = text
    return field(default_factory=factory, metadata=meta) if factory else field(default=default, metadata=meta)


def _report_to_auto() -> list[str] | str:
    """'auto': TensorBoard when it is installed, else nothing."""
    return ["tensorboard"] if importlib.util.find_spec("tensorboard") is not None else "none"


@dataclass
class HarTrainingArguments(TrainingArguments):
    """TrainingArguments with our recipe as the defaults: evaluation and a checkpoint each epoch, the best checkpoint
    on validation macro-F1, a cosine schedule with warmup, label smoothing, a high head learning rate."""

    _argument_group_name = OTHER_TRAINER

    num_train_epochs: float = _trainer_default("num_train_epochs", 5.0, "maximum number of epochs (of each soup member)")
    per_device_train_batch_size: int = _trainer_default("per_device_train_batch_size", 32,
                                                        "training batch size per device")
    per_device_eval_batch_size: int = _trainer_default("per_device_eval_batch_size", 64,
                                                       "evaluation batch size per device")
    learning_rate: float = _trainer_default(
        "learning_rate", 2e-3, "peak learning rate of the new classification head only (unlike the example script's "
        "one rate for all weights): the unfrozen backbone gets LEARNING_RATE x --backbone-lr-scale and the stem and "
        "the first half of the blocks stay frozen (--freeze-layers); for the example script's meaning add "
        "--backbone-lr-scale 1 --freeze-layers 0")
    weight_decay: float = _trainer_default("weight_decay", 0.01, "AdamW weight decay (not of biases and norms)")
    warmup_steps: float = _trainer_default("warmup_steps", 0.05, "learning-rate warmup: a fraction of all steps "
                                           "(below 1) or a number of steps")
    label_smoothing_factor: float = _trainer_default("label_smoothing_factor", 0.1, "label smoothing of the loss")
    max_steps: int = _trainer_default("max_steps", -1, "stop after this many optimizer steps (for quick runs; -1: "
                                      "train for --epochs)")
    report_to: list[str] = _trainer_default("report_to", text="where to log: tensorboard, wandb, trackio, ... "
                                            "(several allowed), or none; auto: tensorboard when installed",
                                            factory=lambda: ["auto"])
    lr_scheduler_type: SchedulerType | str = _trainer_default("lr_scheduler_type", "cosine")
    eval_strategy: IntervalStrategy | str = _trainer_default("eval_strategy", "epoch")
    save_strategy: SaveStrategy | str = _trainer_default("save_strategy", "epoch")
    logging_strategy: IntervalStrategy | str = _trainer_default("logging_strategy", "epoch")
    save_total_limit: int | None = _trainer_default("save_total_limit", 2)
    load_best_model_at_end: bool = _trainer_default("load_best_model_at_end", True)
    metric_for_best_model: str | None = _trainer_default("metric_for_best_model", "macro_f1",
                                                         "validation metric that picks the best checkpoint: macro_f1, "
                                                         "accuracy or loss")
    greater_is_better: bool | None = _trainer_default("greater_is_better", True)
    # early-stopping patience and the training clock continue where they were
    restore_callback_states_from_checkpoint: bool = _trainer_default("restore_callback_states_from_checkpoint", True)
    remove_unused_columns: bool = _trainer_default("remove_unused_columns", False)
    disable_tqdm: bool | None = _trainer_default("disable_tqdm", False)
    # every trainable parameter gets a gradient each step (frozen ones are not handed to DDP): no extra graph walk
    ddp_find_unused_parameters: bool | None = _trainer_default("ddp_find_unused_parameters", False)

    def __post_init__(self):
        if self.report_to in ("auto", ["auto"]):
            self.report_to = _report_to_auto()
        # The device is the Trainer's choice (CUDA, MPS, XPU, ...). Where there is no accelerator at all it must be
        # told so: only then do the processes of torchrun / accelerate launch train as one (DDP over gloo).
        self.use_cpu = self.use_cpu or not has_accelerator()
        super().__post_init__()


@dataclass
class TrainConfig:
    """Everything one training run is told: data options, our options and the Trainer's."""

    data: DataArguments
    run: RunArguments
    training: HarTrainingArguments

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> TrainConfig:
        """From the command line (`--help` prints the options and exits; a bad option exits with status 2)."""
        return ConfigParser().parse(argv)

    @property
    def seed(self) -> int:
        """The training seed of the first soup member."""
        return self.data.seed if self.run.train_seed is None else self.run.train_seed

    @property
    def output_dir(self) -> Path:
        """--output-dir, or outputs/<name of the data folder or dataset>."""
        if self.run.output_dir:
            return Path(self.run.output_dir)
        name = Path(str(self.data.data_dir or self.data.dataset).rstrip("/")).name or "model"
        return Path("outputs") / name.replace("/", "_")

    def check(self) -> TrainConfig:
        if not self.data.data_dir and not self.data.dataset:
            raise HarError("give the images with --data-dir FOLDER (one sub-folder per class) or --dataset HUB_ID_OR_FOLDER")
        if self.run.mixup < 0:
            raise HarError(f"--mixup {self.run.mixup}: give 0 (off) or a positive Beta alpha such as 0.2")
        if self.run.ema_decay != "auto":
            from har_model.train.ema import parse_decay  # with the run's heavy imports: --help stays quick

            parse_decay(self.run.ema_decay)
        if self.run.cache_memory is not None and self.run.cache_memory < 0:
            raise HarError(f"--cache-memory {self.run.cache_memory}: give a number of GB (0: keep the cache on disk)")
        if self.run.unlabeled_dir is not None and self.run.distill_epochs <= 0:
            raise HarError(f"--distill-epochs {self.run.distill_epochs}: give a positive number of epochs (or leave out "
                           "--unlabeled-dir)")
        if self.run.distill_lr_scale <= 0:
            raise HarError(f"--distill-lr-scale {self.run.distill_lr_scale}: give a positive factor, e.g. 0.25")
        if not 0 <= self.run.unlabeled_min_confidence < 1:
            raise HarError(f"--unlabeled-min-confidence {self.run.unlabeled_min_confidence}: give a probability from 0 "
                           "(keep every image) to below 1")
        if self.run.unlabeled_fps <= 0:
            raise HarError(f"--unlabeled-fps {self.run.unlabeled_fps}: give a positive number of frames per second")
        if self.run.soup < 1:
            raise HarError(f"--soup {self.run.soup}: give 1 (a single model) or more members")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self.run, name) is not None and getattr(self.run, name) < 1:
                raise HarError(f"--{name} {getattr(self.run, name)}: give a number of images (1 or more)")
        if (self.run.do_eval or self.run.do_predict) and not self.run.do_train:
            raise HarError("--do_eval / --do_predict without --do_train: this command always trains; to evaluate a "
                           f"trained model use `{command('predict')} --model MODEL FOLDER`")
        self._precision_from_switches()
        self._hub_repo_from_flags()
        return self

    def _precision_from_switches(self) -> None:
        """--bf16 / --fp16 (the TrainingArguments switches) are --precision bf16 / fp16; fp16 is the Trainer's."""
        asked = [p for p in ("bf16", "fp16") if getattr(self.run, p)]
        if len(asked) > 1 or (asked and self.run.precision not in ("auto", asked[0])):
            given = [f"--{p}" for p in asked] + ([f"--precision {self.run.precision}"] if self.run.precision != "auto" else [])
            raise HarError(f"{' and '.join(given)}: choose one precision")
        if asked:
            self.run.precision = asked[0]
        self.training.fp16 = self.run.precision == "fp16"

    def _hub_repo_from_flags(self) -> None:
        """--push-to-hub [REPO_ID] with --hub-model-id, as the example script takes them: run.push_to_hub becomes the
        repo id to push to (NAME alone: under the user, as the Hub makes it), or None for no push."""
        push, model_id = self.run.push_to_hub, self.run.hub_model_id
        if push is not None and push.strip().lower() in ("false", "no", "0"):
            push = None
        elif push is not None and push.strip().lower() in ("", "true", "yes", "1"):
            push = model_id or self.output_dir.resolve().name
        elif push is not None and model_id and model_id != push:
            raise HarError(f"--push-to-hub {push} and --hub-model-id {model_id}: give the repo once")
        if push is None and self.run.hub_strategy != "end":
            raise HarError(f"--hub-strategy {self.run.hub_strategy} pushes while training: add --push-to-hub")
        self.run.push_to_hub = push


class _Group:
    """Adds one dataclass field's option to an argument group, under our option names: dashes only (underscores
    are turned into dashes before parsing), OUR_NAMES first, the example script's name (ALIASES) after ours; our
    on/off options are plain switches (the example script's take an optional true/false, as in transformers)."""

    def __init__(self, group, name: str, metavar: str | None, switch: bool):
        self.group, self.name, self.metavar, self.switch = group, name, metavar, switch

    def add_argument(self, *names: str, **kwargs) -> None:
        names = [n for n in names if "_" not in n]
        if self.name in ALIASES and not self.switch:
            names.append(ALIASES[self.name])
        if kwargs.get("action") == "store_false":  # the --no-X of a TrainingArguments flag that is on by default
            kwargs["help"] = f"turn --{self.name.replace('_', '-')} off"
        elif self.switch:
            kwargs = {"action": "store_true", "default": kwargs["default"], "help": kwargs["help"]}
        else:
            if self.name == "push_to_hub":  # a switch, as in TrainingArguments, or our --push-to-hub REPO_ID
                kwargs.update(nargs="?", const="")
            if self.name in OUR_NAMES:
                names.insert(0, OUR_NAMES[self.name])
            kwargs["metavar"] = self.metavar or names[0].removeprefix("--").upper().replace("-", "_")
            if kwargs.get("nargs") == "?" and kwargs.get("const") is True:
                kwargs["metavar"] = "{true,false}"
            elif kwargs.get("choices") and len(kwargs["choices"]) <= 4:
                kwargs["metavar"] = "{" + ",".join(map(str, kwargs["choices"])) + "}"
        self.group.add_argument(*names, dest=self.name, **{k: v for k, v in kwargs.items() if k != "dest"})
        if self.switch and self.name in ALIASES:  # the example script's name, with its optional true/false
            self.group.add_argument(ALIASES[self.name], dest=self.name, nargs="?", const=True, type=string_to_bool,
                                    default=kwargs["default"], metavar="{true,false}", help=f"= {names[0]}")


class _Refused(argparse.Action):
    """A flag of the example script that does not apply here: one line saying why and what to use."""

    def __init__(self, option_strings, dest, reason: str = "", **kwargs):
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, default=argparse.SUPPRESS)
        self.reason = reason

    def __call__(self, parser, namespace, values, option_string=None):
        raise HarError(f"{option_string.replace('-', '_').replace('__', '--', 1)}: {self.reason}")


class _HelpAll(argparse.Action):
    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=kwargs.get("help"))

    def __call__(self, parser, namespace, values, option_string=None):
        ConfigParser(every_option=True).print_help()
        parser.exit()


class ConfigParser(HfArgumentParser):
    """HfArgumentParser over DataArguments, RunArguments and HarTrainingArguments, with our groups and names.
    Never matches an option by a prefix (`--bf16` is not `--bf16-full-eval`); `every_option`: --help lists every
    TrainingArguments field, not only the common ones (all are accepted either way)."""

    dataclass_types = (DataArguments, RunArguments, HarTrainingArguments)

    def __init__(self, every_option: bool = False):
        argparse.ArgumentParser.__init__(self, prog=command(), usage=USAGE, description=DESCRIPTION,
                                         formatter_class=HelpFormatter, allow_abbrev=False)
        self.add_argument("--help-all", action=_HelpAll, help="show this help with every Trainer option and exit")
        self.epilog = EXAMPLE_TEXT
        self.groups = {name: self.add_argument_group(name) for name in GROUPS}
        self.group_of = {name: group for group, names in GROUPS.items() for name in names}
        self.options = {dtype: [] for dtype in self.dataclass_types}  # the fields each dataclass gets from argv
        for dtype in self.dataclass_types:
            self._add_dataclass_arguments(dtype)
        for flag, reason in REFUSED.items():
            self.add_argument(flag, action=_Refused, reason=reason)
        if not every_option:
            for action in self.groups[OTHER_TRAINER]._group_actions:  # noqa: SLF001 - argparse has no public way
                if action.dest not in COMMON_TRAINER:
                    action.help = argparse.SUPPRESS

    @staticmethod
    def trainer_options() -> list[str]:
        """The TrainingArguments fields that are options (all but HIDDEN)."""
        return [f.name for f in dataclasses.fields(HarTrainingArguments) if f.init and f.name not in HIDDEN]

    def _add_dataclass_arguments(self, dtype) -> None:
        hints = typing.get_type_hints(dtype)
        for f in dataclasses.fields(dtype):
            if not f.init or (dtype is HarTrainingArguments and f.name in HIDDEN):
                continue
            f = copy.copy(f)  # HfArgumentParser rewrites the field's type; the dataclass keeps its own
            f.type = hints[f.name]
            meta = dict(f.metadata)
            group_name = meta.pop("group", None) or self.group_of.get(f.name) or dtype._argument_group_name
            group = self.groups[group_name]
            metavar = meta.pop("metavar", None)
            f.metadata = meta
            switch = dtype is RunArguments and f.type is bool and group_name != EXAMPLE
            self._parse_dataclass_field(_Group(group, f.name, metavar, switch), f)
            self.options[dtype].append(f.name)

    def parse(self, argv: list[str] | None) -> TrainConfig:
        namespace = self.parse_args(dashed(argv))
        parts = [dtype(**{name: getattr(namespace, name) for name in self.options[dtype]})
                 for dtype in (DataArguments, RunArguments)]
        try:
            training = HarTrainingArguments(**{name: getattr(namespace, name) for name in self.options[HarTrainingArguments]})
        except ValueError as exc:  # TrainingArguments' own checks of its options
            raise HarError(f"Trainer options: {str(exc).strip().splitlines()[0]}") from None
        return TrainConfig(*parts, training).check()


def dashed(argv: list[str] | None) -> list[str] | None:
    """`--learning_rate=3` -> `--learning-rate=3`: the transformers examples' spelling of an option is ours too."""
    def dash(arg: str) -> str:
        name, eq, value = arg.partition("=")
        return name.replace("_", "-") + eq + value if arg.startswith("--") else arg

    return [dash(a) for a in (sys.argv[1:] if argv is None else argv)]
