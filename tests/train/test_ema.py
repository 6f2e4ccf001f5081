"""Weight averaging along a run (--ema-decay, har_model.train.ema): the average itself, the choice on validation,
and a run with it switched off."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from har_model.errors import HarError
from har_model.train import ema

ROOT = Path(__file__).resolve().parents[2]


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_the_average_follows_its_formula_batch_norm_statistics_included():
    model = small_model()
    avg = ema.WeightEma("0.9")
    avg.start(model, None, total_steps=5)
    assert avg.decay == 0.9
    expected = {k: v.clone().float() for k, v in model.state_dict().items() if v.is_floating_point()}
    for n in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(1.0)
        model[1].num_batches_tracked += 1
        avg.on_step_end(None, None, None)
        d = min(0.9, (1 + n) / (10 + n))  # the warm-up weighs the first steps more
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                expected[k] = d * expected[k] + (1 - d) * v.float()
    averaged = avg.averaged_state(model)
    for k, v in expected.items():
        torch.testing.assert_close(averaged[k], v, msg=k)
    assert averaged["1.num_batches_tracked"] == model.state_dict()["1.num_batches_tracked"]  # integers as they are
    assert not torch.equal(averaged["0.weight"], model.state_dict()["0.weight"])


def test_decay_auto_spans_a_fifth_of_the_steps_and_bad_values_are_one_line():
    assert ema.resolve_decay("auto", 1045) == pytest.approx(1 - 1 / 209)
    assert ema.resolve_decay("0.998", 10) == 0.998
    assert ema.callbacks("0") == [] and isinstance(ema.callbacks("auto")[0], ema.WeightEma)
    for bad in ("1", "-0.1", "often"):
        with pytest.raises(HarError, match="--ema-decay"):
            ema.parse_decay(bad)


class StubTrainer:
    """What ema.choose uses of a Trainer: its callbacks, model, state and a validation score per weights."""

    def __init__(self, model, average, score):
        self.model, self.score, self.evaluated = model, score, None
        self.callback_handler = SimpleNamespace(callbacks=[average])
        self.state = SimpleNamespace(max_steps=10)

    def pop_callback(self, kind):
        return None

    def evaluate(self, metric_key_prefix="eval"):
        self.evaluated = {k: v.clone() for k, v in self.model.state_dict().items()}  # the weights scored
        return {f"{metric_key_prefix}_macro_f1": self.score}


@pytest.mark.parametrize("score, kept", [(0.9, "average"), (0.8, "best checkpoint"), (0.7, "best checkpoint")])
def test_the_average_is_kept_only_where_it_scores_higher_on_validation(score, kept):
    model = small_model()
    average = ema.WeightEma("0.5")
    average.start(model, None, total_steps=10)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # training moved on: the best checkpoint differs from the average
    best = {k: v.clone() for k, v in model.state_dict().items()}
    averaged = average.averaged_state(model)
    trainer = StubTrainer(model, average, score)
    record = ema.choose(trainer, best_f1=0.8, checkpoint=None)
    assert all(torch.equal(trainer.evaluated[k], v) for k, v in averaged.items())  # the average was scored
    assert record["shipped"] == kept and record["validation_macro_f1"] == score
    assert record["best_checkpoint_macro_f1"] == 0.8
    want = averaged if kept == "average" else best
    for k, v in model.state_dict().items():
        assert torch.equal(v, want[k]), k


def test_by_default_the_run_keeps_no_average(tmp_path, tiny_model_dir):
    """Off by default (it did not beat the noise on har15): no callback, no files, nothing in the reports."""
    import helpers

    images = helpers.make_class_folder(tmp_path / "images", per_class=8)
    out = tmp_path / "model"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--data-dir", str(images), "--output-dir", str(out), "--model",
         str(tiny_model_dir), "--soup", "1", "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.25",
         "--test-fraction", "0.25", "--num-workers", "1", "--report-to", "none", "--num-examples", "0"],
        capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["weight_average"] is None and metrics["recipe"]["ema_decay"] == "0"
    assert not list(out.rglob("ema.safetensors"))
    assert "weight average" not in proc.stdout and "(EMA)" not in (out / "README.md").read_text()
