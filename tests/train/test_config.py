"""TrainConfig: the command line of `train`, typed (our options, the data options of `prepare`, TrainingArguments)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from har_model.errors import HarError
from har_model.train.config import HIDDEN, OUR_NAMES, TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def _help(*command: str) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *command, "--help"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _entries(help_text: str) -> dict[str, str]:
    """{first option string: its help text} for every option listed by --help."""
    entries, current = {}, None
    for line in help_text.split("\n\n", 2)[-1].splitlines():
        if re.match(r"^  -", line):
            names = re.findall(r"(?:^|, )(--?[a-z0-9-]+)", line.strip().split("  ")[0])
            current = names[0]
            assert current not in entries, f"{current} listed twice"
            entries[current] = line.strip()[len(line.strip().split("  ")[0]):].strip()
        elif current and line.startswith("    "):
            entries[current] += " " + line.strip()
        elif not line.startswith(" "):
            current = None
    return {option: text.strip() for option, text in entries.items()}


def test_help_lists_every_option_once_with_its_default_and_help():
    import dataclasses

    from transformers import TrainingArguments

    text = _help()
    entries = _entries(text)
    for option, help_ in entries.items():
        assert help_, f"{option} has no help text"
        if option in ("-h",) or re.fullmatch(r"turn --[a-z0-9-]+ off", help_):
            continue
        assert help_.count("(default:") <= 1, option
        assert re.search(r"default", help_, re.I), f"{option} does not say its default: {help_}"
    # every TrainingArguments field is an option (under our name or its own), except the few the run sets itself
    shown = {line.split()[0] for line in text.splitlines() if line.startswith("  --")} | set(entries)
    for f in dataclasses.fields(TrainingArguments):
        if f.init and f.name not in HIDDEN:
            assert OUR_NAMES.get(f.name, "--" + f.name.replace("_", "-")) in text, f.name
    for option, default in {"--epochs": "5.0", "--learning-rate": "0.002", "--batch-size": "32", "--soup": "2",
                            "--report-to": "auto", "--lr-scheduler-type": "cosine", "--seed": "42",
                            "--eval-strategy": "epoch", "--warmup-ratio": "0.05", "--model": "efficientnet-lite0"}.items():
        assert entries[option].endswith(f"(default: {default})"), (option, entries[option])
    assert "--output-dir" in shown and "--data-dir" in shown and "--per-device-train-batch-size" in text
    assert "--push-to-hub REPO_ID" in text and "--hub-token" not in text  # ours pushes the model folder


def test_prepare_and_train_share_the_data_options():
    import dataclasses

    from har_model.data import DataArguments

    train, prepare = _entries(_help()), _entries(_help("prepare"))
    for f in dataclasses.fields(DataArguments):
        option = "--" + f.name.replace("_", "-")
        assert train[option] == prepare[option], option


def test_defaults_are_our_recipe_and_names_are_ours_or_transformers():
    config = TrainConfig.parse(["--data-dir", "imgs"])
    t = config.training
    assert (t.learning_rate, t.num_train_epochs, t.per_device_train_batch_size, t.per_device_eval_batch_size) == (2e-3, 5.0, 32, 64)
    assert (t.weight_decay, t.warmup_steps, t.label_smoothing_factor, t.save_total_limit) == (0.01, 0.05, 0.1, 2)
    assert t.eval_strategy == t.save_strategy == t.logging_strategy == "epoch" and t.lr_scheduler_type == "cosine"
    assert t.load_best_model_at_end and t.metric_for_best_model == "macro_f1" and not t.remove_unused_columns
    assert (config.run.model, config.run.soup, config.data.seed, config.seed) == ("efficientnet-lite0", 2, 42, 42)
    assert config.output_dir == Path("outputs/imgs")
    same = [TrainConfig.parse(["--dataset", "x", *argv]).training for argv in
            (["--epochs", "3", "--batch-size", "4"], ["--num-train-epochs", "3", "--per_device_train_batch_size=4"])]
    assert same[0].num_train_epochs == same[1].num_train_epochs == 3.0
    assert same[0].per_device_train_batch_size == same[1].per_device_train_batch_size == 4
    flat = TrainConfig.parse(["--dataset", "x", "--train-seed", "7", "--label-smoothing", "0"]).as_namespace()
    assert (flat.seed, flat.train_seed, flat.label_smoothing, flat.epochs, flat.dataset) == (42, 7, 0.0, 5.0, "x")


def test_report_to_takes_a_list():
    config = TrainConfig.parse(["--data-dir", "x", "--report-to", "tensorboard", "wandb"])
    assert config.training.report_to == ["tensorboard", "wandb"]
    assert TrainConfig.parse(["--data-dir", "x", "--report-to", "none"]).training.report_to in ([], "none", ["none"])


def test_training_arguments_given_on_the_command_line_reach_the_trainer(tiny_model_dir, tmp_path):
    import torch

    import helpers
    from har_model.preprocessing import preprocessing_for
    from har_model.train.image_cache import CachedImages, CachedSplits
    from har_model.train.backbones import load_backbone
    from har_model.train.trainer import make_trainer

    config = TrainConfig.parse(["--data-dir", "x", "--logging-strategy", "steps", "--logging-steps", "3",
                                "--report-to", "none", "--dataloader-num-workers", "0", "--adam-beta1", "0.8",
                                "--learning_rate=0.01", "--backbone-lr-scale", "0.5", "--no-load-best-model-at-end"])
    model, processor = load_backbone(str(tiny_model_dir), list(helpers.CLASSES), report=False)
    prep = preprocessing_for(processor)
    split = CachedImages(torch.zeros((4, 3, *prep.output_hw), dtype=torch.uint8), [0, 1, 2, 0], prep, augment=False)
    trainer = make_trainer(model, tmp_path / "member-1", 43, config=config, images=CachedSplits(split, split, split),
                           labels=list(helpers.CLASSES), bf16=False)
    args = trainer.args
    assert (args.logging_strategy, args.logging_steps, args.report_to, args.dataloader_num_workers) == ("steps", 3, [], 0)
    assert (args.output_dir, args.seed, args.data_seed) == (str(tmp_path / "member-1"), 43, 43)
    assert not args.load_best_model_at_end and args.eval_strategy == "epoch"  # the others keep our defaults
    optimizer = trainer.create_optimizer()
    assert {g["lr"] for g in optimizer.param_groups} == {0.01, 0.005}  # head, backbone x --backbone-lr-scale
    assert all(g["betas"] == (0.8, 0.999) for g in optimizer.param_groups)  # --adam-beta1 reached the optimizer


@pytest.mark.parametrize("argv, expected", [
    (["--output-dir", "o"], "--data-dir"),
    (["--data-dir", "x", "--mixup", "-1"], "--mixup"),
    (["--data-dir", "x", "--soup", "0"], "--soup"),
    (["--data-dir", "x", "--eval-strategy", "no"], "Trainer options"),  # best checkpoint needs evaluations
])
def test_bad_options_are_one_clear_error(argv, expected):
    with pytest.raises(HarError, match=expected) as info:
        TrainConfig.parse(argv)
    assert "\n" not in str(info.value)
