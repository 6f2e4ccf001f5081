"""TrainConfig: the command line of `train`, typed (our options, the data options of `prepare`, TrainingArguments)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from har_model.errors import HarError
from har_model.train import checkpoints
from har_model.train.config import HIDDEN, OUR_NAMES, TrainConfig

ROOT = Path(__file__).resolve().parents[2]


def _help(*command: str) -> str:
    flag = [] if command and command[-1].startswith("--help") else ["--help"]
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *command, *flag], capture_output=True, text=True,
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

    text = _help("--help-all")
    entries = _entries(text)
    for option, help_ in entries.items():
        assert help_, f"{option} has no help text"
        if option in ("-h", "--help-all") or re.fullmatch(r"turn --[a-z0-9-]+ off", help_):
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
    assert "--push-to-hub [REPO_ID]" in text and "--hub-token " not in text  # a token never goes on a command line


def test_help_shows_ours_and_the_common_trainer_options_and_help_all_every_one():
    short, full = _help(), _help("--help-all")
    assert len(short.splitlines()) < 0.6 * len(full.splitlines())
    for option in ("--learning-rate", "--epochs", "--soup", "--eval-strategy", "--logging-steps", "--save-total-limit",
                   "--model-name-or-path", "--train-dir", "--push-to-hub", "--hub-model-id", "--hub-strategy",
                   "--bf16", "--fp16", "--max-train-samples", "--image-column-name", "--help-all"):
        assert option in short, option
    for option in ("--fsdp", "--deepspeed", "--adam-beta1", "--torch-compile-mode"):
        assert option not in short and option in full, option
    # what --learning-rate sets is said plainly
    assert "new classification head only" in " ".join(_entries(short)["--learning-rate"].split())
    assert "--validation_dir" in short  # the refused example-script flags are named


def test_no_option_is_matched_by_a_prefix():
    with pytest.raises(SystemExit):
        TrainConfig.parse(["--data-dir", "x", "--bf16-full"])  # was silently --bf16-full-eval
    config = TrainConfig.parse(["--data-dir", "x", "--bf16"])
    assert config.run.precision == "bf16" and not config.training.bf16_full_eval and not config.training.fp16
    fp16 = TrainConfig.parse(["--data-dir", "x", "--fp16"])
    assert fp16.run.precision == "fp16" and fp16.training.fp16
    assert TrainConfig.parse(["--data-dir", "x", "--bf16", "False"]).run.precision == "auto"
    with pytest.raises(HarError, match="choose one precision"):
        TrainConfig.parse(["--data-dir", "x", "--bf16", "--fp16"])
    with pytest.raises(HarError, match="choose one precision"):
        TrainConfig.parse(["--data-dir", "x", "--fp16", "--precision", "bf16"])


def test_the_example_scripts_names_are_our_options():
    config = TrainConfig.parse(["--model_name_or_path", "m", "--train_dir", "imgs", "--train_val_split", "0.2",
                                "--overwrite_output_dir", "--hub_private_repo", "--output_dir", "o"])
    assert (config.run.model, config.data.data_dir, config.data.val_fraction) == ("m", "imgs", 0.2)
    assert config.run.overwrite and config.run.private and config.output_dir == Path("o")
    config = TrainConfig.parse(["--data-dir", "x", "--hub_private_repo", "True", "--overwrite_output_dir", "false"])
    assert config.run.private and not config.run.overwrite
    assert TrainConfig.parse(["--dataset_name", "user/set"]).data.dataset == "user/set"
    accepted = TrainConfig.parse(["--data-dir", "x", "--do_train", "--do_eval", "--do_predict",
                                  "--ignore_mismatched_sizes", "--remove_unused_columns", "False"])
    assert accepted.run.do_train and not accepted.training.remove_unused_columns
    with pytest.raises(HarError, match="predict"):
        TrainConfig.parse(["--data-dir", "x", "--do_eval"])  # evaluation only: not this command


@pytest.mark.parametrize("argv, repo", [
    (["--push_to_hub"], "out-name"),  # the output folder's name (under the user, as the Hub makes it)
    (["--push_to_hub", "--hub_model_id", "org/name"], "org/name"),
    (["--push-to-hub", "user/x"], "user/x"),
    (["--push_to_hub", "True", "--hub_model_id", "x"], "x"),
    (["--push_to_hub", "False", "--hub_model_id", "x"], None),
    (["--hub_model_id", "x"], None),  # as in the Trainer: a repo name alone pushes nothing
    ([], None),
])
def test_push_to_hub_is_a_switch_with_hub_model_id(argv, repo):
    assert TrainConfig.parse(["--data-dir", "x", "--output-dir", "outputs/out-name", *argv]).run.push_to_hub == repo


def test_hub_strategy_hands_the_trainer_its_hub_arguments():
    from har_model.train.trainer import hub_arguments, training_arguments

    config = TrainConfig.parse(["--data-dir", "x", "--push_to_hub", "--hub_model_id", "u/m", "--hub_strategy",
                                "checkpoint", "--hub_private_repo"])
    args = training_arguments(config.training, Path("ckpt"), 3, bf16=False, hub=hub_arguments(config.run))
    assert (args.push_to_hub, args.hub_model_id, args.hub_strategy, args.hub_private_repo) == (True, "u/m", "checkpoint", True)
    assert not training_arguments(config.training, Path("ckpt"), 3, bf16=False).push_to_hub  # the evaluator's
    with pytest.raises(HarError, match="--push-to-hub"):
        TrainConfig.parse(["--data-dir", "x", "--hub_strategy", "every_save"])
    with pytest.raises(HarError, match="--push-to-hub u/a and --hub-model-id u/b"):
        TrainConfig.parse(["--data-dir", "x", "--push-to-hub", "u/a", "--hub_model_id", "u/b"])


@pytest.mark.parametrize("strategy, pushed", [("every_save", [None]), ("checkpoint", [None, "last-checkpoint"])])
def test_hub_strategy_pushes_while_training_as_the_trainer_does(tiny_model_dir, tmp_path, monkeypatch, strategy, pushed):
    """The members' Trainers push at each save (the Hub at its boundary: HfApi's create_repo and upload_folder)."""
    from concurrent.futures import Future

    import huggingface_hub
    import torch
    from huggingface_hub import RepoUrl

    import helpers
    from har_model.preprocessing import preprocessing_for
    from har_model.train.backbones import load_backbone
    from har_model.train.image_cache import CachedImages, CachedSplits
    from har_model.train.trainer import make_trainer

    created, uploads = [], []

    def upload_folder(api, **kw):
        uploads.append(kw)
        done = Future()
        done.set_result(None)
        return done

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda api, repo_id, **kw: created.append((repo_id, kw)) or RepoUrl(f"https://huggingface.co/me/{repo_id}"))
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    config = TrainConfig.parse(["--data-dir", "x", "--push_to_hub", "--hub_model_id", "har-x", "--hub_strategy",
                                strategy, "--hub_private_repo", "--epochs", "1", "--report-to", "none",
                                "--batch-size", "4"])
    model, processor = load_backbone(str(tiny_model_dir), list(helpers.CLASSES), report=False)
    prep = preprocessing_for(processor)
    split = CachedImages(torch.zeros((4, 3, *prep.output_hw), dtype=torch.uint8), [0, 1, 2, 0], prep, augment=False)
    trainer = make_trainer(model, tmp_path / "member", 42, config=config, images=CachedSplits(split, split, split),
                           labels=list(helpers.CLASSES), bf16=False, hub=True)
    trainer.train()
    assert created == [("har-x", {"token": None, "private": True, "exist_ok": True})]
    assert [u.get("path_in_repo") for u in uploads] == pushed and all(u["repo_id"] == "me/har-x" for u in uploads)
    assert uploads[0]["folder_path"] == str(tmp_path / "member") and "epoch 1" in uploads[0]["commit_message"]


def test_hub_strategy_needs_the_hub_before_training_starts(tmp_path):
    from har_model.train.run import run

    config = TrainConfig.parse(["--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"), "--push_to_hub",
                                "--hub_strategy", "every_save"])
    with pytest.raises(HarError, match="hub-strategy every_save needs the Hugging Face Hub"):
        run(config)  # the tests run offline
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag, says", [
    ("--validation_dir", "--val-fraction"),
    ("--token", "HF_TOKEN"),
    ("--hub-token", "HF_TOKEN"),
    ("--trust_remote_code", "never runs code"),
    ("--push_to_hub_model_id", "--hub_model_id"),
    ("--resume_from_checkpoint", "--resume"),
    ("--model_type", "--model"),
])
def test_flags_that_do_not_apply_are_refused_with_the_reason_and_what_to_use(flag, says):
    with pytest.raises(HarError) as info:
        TrainConfig.parse(["--data-dir", "x", flag, "value"])
    message = str(info.value)
    assert message.startswith(flag.replace("-", "_").replace("__", "--", 1) + ": ") and says in message
    assert "\n" not in message and "value" not in message


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
    config = TrainConfig.parse(["--dataset", "x", "--train-seed", "7", "--label-smoothing", "0"])
    flat = checkpoints.resume_flags(config)  # the options under their command-line names, as run.json records them
    assert (flat["seed"], flat["train_seed"], flat["label_smoothing"], config.training.num_train_epochs,
            config.data.dataset) == (42, 7, 0.0, 5.0, "x")


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
