"""Class-imbalance compensation: on by default for an imbalanced folder, off with --class-balance none; the balanced
sampler (deterministic per seed and epoch, reached by set_epoch under accelerate, sharded and resumed) and the
class-weighted loss (the formula, also under mixup)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from har_model.train.balancing import (AUTO_METHOD, BalancedSampler, class_weights, plan_balance,
                                       weighted_cross_entropy)

IMBALANCED = [0] * 60 + [1] * 12 + [2] * 6  # 10x


def test_plan_auto_compensates_only_imbalanced_data_and_the_flag_decides_otherwise():
    plan = plan_balance("auto", IMBALANCED, 3)
    assert (plan.method, plan.ratio, plan.chosen_by, plan.counts) == (AUTO_METHOD, 10.0, "auto", (60, 12, 6))
    assert plan.as_recipe() == {"method": AUTO_METHOD, "ratio": 10.0, "chosen_by": "auto", "threshold": 1.5}
    assert plan_balance("auto", [0] * 14 + [1] * 10, 2).method == "none"  # 1.4x: balanced enough
    assert plan_balance("none", IMBALANCED, 3).as_recipe()["chosen_by"] == "flag"
    assert plan_balance("loss", [0, 1], 2).method == "loss"  # asked for: applied even to balanced data


def test_sampler_is_deterministic_per_seed_and_epoch():
    a, b = BalancedSampler(IMBALANCED, seed=3), BalancedSampler(IMBALANCED, seed=3)
    for epoch in (0, 1, 5):
        a.set_epoch(epoch), b.set_epoch(epoch)
        assert list(a) == list(b) and len(list(a)) == len(a) == len(IMBALANCED)
    a.set_epoch(0), b.set_epoch(1)
    assert list(a) != list(b)  # a new draw each epoch
    assert a.indices(0) != BalancedSampler(IMBALANCED, seed=4).indices(0)
    torch.manual_seed(0)
    first = a.indices(2)
    torch.manual_seed(1)
    assert a.indices(2) == first  # the global random state plays no part


def test_sampler_draws_each_class_about_equally_often():
    labels = [0] * 500 + [1] * 50 + [2] * 10
    sampler = BalancedSampler(labels, seed=0)
    drawn = Counter(labels[i] for epoch in range(5) for i in sampler.indices(epoch))
    total = sum(drawn.values())
    assert total == 5 * len(labels)
    for c in range(3):
        assert drawn[c] / total == pytest.approx(1 / 3, abs=0.03), drawn


def test_weighted_loss_is_the_manual_formula():
    torch.manual_seed(0)
    counts = [60, 12, 6]
    logits, labels, eps = torch.randn(16, 3), torch.randint(0, 3, (16,)), 0.1
    w = class_weights(counts)
    inverse = torch.tensor([1 / 60, 1 / 12, 1 / 6])
    torch.testing.assert_close(w, inverse * 3 / inverse.sum())  # ~ 1 / count, mean 1
    logp = torch.log_softmax(logits, -1)
    per_example = (1 - eps) * w[labels] * -logp[torch.arange(16), labels] + eps / 3 * (w * -logp).sum(-1)
    expected = per_example.sum() / w[labels].sum()
    torch.testing.assert_close(weighted_cross_entropy(logits, labels, w, eps), expected)


def _trainer(model_dir, tmp_path, method: str, labels=IMBALANCED, mixup: float = 0.0):
    from transformers import AutoModelForImageClassification, TrainingArguments

    from har_model.train.trainer import HarTrainer

    class Data(torch.utils.data.Dataset):
        def __init__(self):
            self.labels = torch.tensor(labels)

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {"pixel_values": torch.full((3, 32, 32), float(i)), "labels": self.labels[i]}

    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, seed=5, data_seed=5,
                             report_to="none", use_cpu=True, label_smoothing_factor=0.1)
    model = AutoModelForImageClassification.from_pretrained(model_dir)
    return HarTrainer(model=model, args=args, train_dataset=Data(), class_balance=plan_balance(method, labels, 3),
                      mixup_alpha=mixup)


@pytest.mark.parametrize("processes", [1, 2])
def test_set_epoch_reaches_the_sampler_sharded_and_resumed(tiny_model_dir, tmp_path, processes):
    """What the Trainer does each epoch (set_epoch on the loader, then iterate; mid-epoch after --resume: skip the
    trained batches first), with accelerate's sharding over `processes`: every process draws the sequence of the
    epoch it is told, and the processes' batches together are that sequence."""
    from accelerate.data_loader import prepare_data_loader
    from torch.utils.data import DataLoader

    trainer = _trainer(tiny_model_dir, tmp_path, "sampling")
    assert isinstance(trainer.get_train_dataloader().batch_sampler.sampler, BalancedSampler)
    expected = trainer.balanced_sampler.indices(3)
    for skip in (0, 2):  # fresh epoch 3; resumed part-way through epoch 3
        batches = []
        for rank in range(processes):
            sampler = trainer._get_train_sampler()
            loader = prepare_data_loader(DataLoader(trainer.train_dataset, sampler=sampler, batch_size=4),
                                         num_processes=processes, process_index=rank, put_on_device=False)
            if skip:
                loader = trainer.get_resumed_dataloader(loader, skip)
            loader.set_epoch(3)
            assert sampler.epoch == 3
            batches.append([b["pixel_values"][:, 0, 0, 0].long().tolist() for b in loader])
        interleaved = [i for step in zip(*batches) for batch in step for i in batch]
        rest = expected[skip * 4 * processes:]
        assert interleaved[:len(rest)] == rest  # (accelerate evens the last batches up from the start)


def test_weighted_loss_in_training_and_under_mixup(tiny_model_dir, tmp_path):
    from har_model.train.balancing import class_weights

    labels = torch.tensor([0, 0, 0, 1, 2, 0, 1, 2])
    inputs = {"pixel_values": torch.randn(8, 3, 32, 32), "labels": labels}
    w = class_weights([60, 12, 6])
    for mixup in (0.0, 0.4):
        trainer = _trainer(tiny_model_dir, tmp_path, "loss", mixup=mixup)
        model = trainer.model.train()
        torch.manual_seed(0)
        loss = trainer.compute_loss(model, dict(inputs))
        torch.manual_seed(0)
        if mixup:
            lam = float(torch.distributions.Beta(mixup, mixup).sample())
            perm = torch.randperm(8)
            x = inputs["pixel_values"]
            logits = model(pixel_values=(x * lam + x[perm] * (1 - lam)).contiguous(memory_format=torch.channels_last)).logits
            expected = lam * weighted_cross_entropy(logits, labels, w, 0.1) + (1 - lam) * weighted_cross_entropy(
                logits, labels[perm], w, 0.1)
        else:
            logits = model(pixel_values=inputs["pixel_values"]).logits
            expected = weighted_cross_entropy(logits, labels, w, 0.1)
        torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)
        model.eval()  # evaluation: the plain loss, comparable with and without compensation
        plain = trainer.compute_loss(model, dict(inputs))
        torch.testing.assert_close(plain, torch.nn.functional.cross_entropy(
            model(pixel_values=inputs["pixel_values"]).logits, labels, label_smoothing=0.1), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def imbalanced_runs(tmp_path_factory, tiny_model_dir):
    """train.py on a generated folder with 4x more images of one class: by default and with --class-balance none."""
    import helpers
    from test_run import QUICK, run_train

    root = tmp_path_factory.mktemp("imbalanced")
    images = helpers.make_class_folder(root / "images", per_class={"clapping": 24, "running": 6, "sitting": 6})
    runs = {}
    for name, extra in (("default", []), ("none", ["--class-balance", "none"])):
        out = root / name
        proc = run_train("--data-dir", images, "--output-dir", out, "--model", tiny_model_dir, *QUICK, "--epochs",
                         "1", "--soup", "1", "--num-examples", "0", "--val-fraction", "0.2", "--test-fraction", "0.2",
                         *extra)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        runs[name] = (out, proc)
    return runs


def test_compensation_is_on_by_default_and_recorded(imbalanced_runs):
    out, proc = imbalanced_runs["default"]
    recipe = json.loads((out / "metrics.json").read_text())["recipe"]
    assert recipe["class_balance"] == {"method": AUTO_METHOD, "ratio": pytest.approx(4.0, abs=0.7), "chosen_by": "auto",
                                       "threshold": 1.5}
    plan_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("training ")]
    assert len(plan_lines) == 1 and "x imbalanced: " in plan_lines[0] and plan_lines[0].endswith("(auto)")
    card = (out / "README.md").read_text()
    assert "| class imbalance (largest / smallest training class) |" in card
    assert "**Class imbalance.**" in card and "`--class-balance none` turns it off" in card


def test_compensation_is_off_with_the_flag(imbalanced_runs):
    out, proc = imbalanced_runs["none"]
    recipe = json.loads((out / "metrics.json").read_text())["recipe"]
    assert recipe["class_balance"]["method"] == "none" and recipe["class_balance"]["chosen_by"] == "flag"
    assert "no compensation (--class-balance none)" in proc.stdout
    card = (out / "README.md").read_text()
    assert "; no compensation (--class-balance none) |" in card and "**Class imbalance.**" not in card
