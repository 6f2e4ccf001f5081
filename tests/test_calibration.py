"""Temperature scaling, ECE and the unsure threshold (har_model.calibration), on numbers and on a real tiny model."""

from __future__ import annotations

import shutil

import helpers
import numpy as np
import pytest

from har_model import calibration as cal
from har_model.errors import HarError


def _overconfident_model(tiny_model_dir, tmp_path):
    """The tiny model with its head scaled x40: the same predictions, absurdly confident ones."""
    import torch
    from transformers import AutoModelForImageClassification

    folder = tmp_path / "overconfident"
    shutil.copytree(tiny_model_dir, folder)
    model = AutoModelForImageClassification.from_pretrained(folder)
    with torch.no_grad():
        model.classifier.weight.mul_(40.0)
        model.classifier.bias.mul_(40.0)
    model.save_pretrained(folder)
    return folder


def _validation_set(n_per_class=20, seed=100):
    images, labels = [], []
    for label in range(len(helpers.CLASSES)):
        for i in range(n_per_class):
            images.append(np.asarray(helpers.synthetic_image(label, seed + i)))
            labels.append(label)
    return images, np.asarray(labels)


def test_ece_of_perfectly_calibrated_and_overconfident_predictions():
    # 100 predictions at confidence 0.8, 80 right: calibrated (ECE 0); claiming 0.99 instead: ECE 0.19
    probs = np.tile([0.8, 0.2], (100, 1))
    labels = np.array([0] * 80 + [1] * 20)
    assert cal.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-9)
    assert cal.expected_calibration_error(np.tile([0.99, 0.01], (100, 1)), labels) == pytest.approx(0.19, abs=1e-6)


def test_fitted_temperature_recovers_the_one_that_made_the_labels():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, size=(4000, 5))
    labels = np.array([rng.choice(5, p=p) for p in cal.softmax(true_logits)])
    # the model reports logits 3x too large: the fitted temperature undoes it
    assert cal.fit_temperature(3 * true_logits, labels) == pytest.approx(3.0, rel=0.08)
    assert cal.fit_temperature(true_logits / 2, labels) == pytest.approx(0.5, rel=0.08)


def test_overconfident_model_gets_temperature_above_one_and_lower_ece(tiny_model_dir, tmp_path):
    from har_model.serve.inference import Classifier

    clf = Classifier.load(_overconfident_model(tiny_model_dir, tmp_path), backend="torch")
    images, labels = _validation_set()
    logits = clf.predict_logits(images)
    fitted = cal.fit(logits, labels)
    assert fitted.temperature > 1.5
    assert fitted.validation["ece_after"] < fitted.validation["ece_before"]
    assert fitted.validation["nll_after"] < fitted.validation["nll_before"]
    assert cal.report(fitted, logits, labels)["ece_after"] == pytest.approx(fitted.validation["ece_after"], abs=1e-4)


def test_unsure_threshold_separates_mostly_wrong_predictions():
    # top-1 (class 0) confidences 0.4 .. 1.0; the 4 least confident are wrong, the rest right
    conf = np.linspace(0.4, 1.0, 10)
    probs = np.stack([conf, (1 - conf) / 2, (1 - conf) / 2], axis=1)
    labels = np.array([1, 1, 1, 1] + [0] * 6)
    t = cal.unsure_threshold(probs, labels)
    below = probs.max(axis=1) < t
    assert below.sum() >= 4 and (probs.argmax(1)[below] == labels[below]).mean() < 0.5
    assert (probs.argmax(1)[~below] == labels[~below]).all()
    assert cal.unsure_threshold(probs, np.zeros(10, int)) == 0.0  # never wrong: never unsure


def test_decide_is_unsure_exactly_below_the_threshold():
    labels = ["a", "b"]
    assert cal.decide(np.array([0.3, 0.7]), labels, 0.7) == "b"
    assert cal.decide(np.array([0.3, 0.7]), labels, 0.7001) == cal.UNSURE
    assert cal.decide(np.array([0.3, 0.7]), labels, 0.0) == "b"


def test_saved_calibration_round_trips_and_bad_files_are_one_line_errors(tmp_path):
    assert cal.Calibration.load(tmp_path).temperature == 1.0  # no file: uncalibrated, never unsure
    saved = cal.Calibration(1.7, 0.42, validation={"ece_before": 0.1, "ece_after": 0.02})
    saved.save(tmp_path)
    assert cal.Calibration.load(tmp_path) == saved
    (tmp_path / cal.FILENAME).write_text('{"temperature": -1}')
    with pytest.raises(HarError, match="temperature must be > 0"):
        cal.Calibration.load(tmp_path)
    (tmp_path / cal.FILENAME).write_text("not json")
    with pytest.raises(HarError, match="calibration.json: cannot read"):
        cal.Calibration.load(tmp_path)


def test_too_small_a_validation_split_is_not_calibrated():
    """Below MIN_VALIDATION images, or MIN_PER_CLASS of some class: T stays 1 and nothing is unsure."""
    rng = np.random.default_rng(1)

    def split(counts):
        labels = np.repeat(np.arange(len(counts)), counts)
        return 5 * np.eye(len(counts))[labels] + rng.normal(0, 3, (len(labels), len(counts))), labels

    for counts in ([16, 16, 16], [40, 40, 2]):  # 48 in all; a class of 2
        fitted = cal.fit(*split(counts))
        assert (fitted.temperature, fitted.unsure_below, fitted.fitted_on) == (1.0, 0.0, "none")
        assert "calibration needs at least 50, and 3 of every class" in fitted.validation["skipped"]
    fitted = cal.fit(*split([17, 17, 17]))
    assert fitted.fitted_on == "validation" and "skipped" not in fitted.validation and fitted.temperature != 1.0


def test_flip_averaging_is_chosen_only_when_it_scores_higher_on_validation():
    labels = np.array([0, 1, 2, 0, 1, 2])
    right = np.eye(3)[labels] * 4
    wrong = np.eye(3)[(labels + 1) % 3] * 4
    half_right = np.where(np.arange(6)[:, None] < 3, right, wrong)
    # the mirror fixes the single view's mistakes: chosen
    assert cal.choose_views(half_right, right * 2, labels)["flip_average"]
    # the same answers either way: a tie keeps the single view (half the model time)
    tie = cal.choose_views(right, right, labels)
    assert not tie["flip_average"] and tie["validation_macro_f1"]["single"] == tie["validation_macro_f1"]["flip"] == 1.0
    # the mirror makes it worse: not chosen
    assert not cal.choose_views(right, wrong * 3, labels)["flip_average"]
    assert cal.macro_f1(right, labels) == 1.0 and cal.macro_f1(wrong, labels) == 0.0


def test_a_calibration_file_says_whether_to_average_views(tmp_path):
    saved = cal.fit(np.eye(3)[np.arange(60) % 3] * 3, np.arange(60) % 3, flip_average=True)
    saved.save(tmp_path)
    assert cal.Calibration.load(tmp_path).flip_average is True
    (tmp_path / cal.FILENAME).write_text('{"temperature": 1.0, "flip_average": "yes"}')
    with pytest.raises(HarError, match="flip_average must be true or false"):
        cal.Calibration.load(tmp_path)
