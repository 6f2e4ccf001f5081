"""The grouped stratified split on its own (no files needed); the duplicate grouping is in test_dedup.py."""

from __future__ import annotations

import numpy as np
import pytest

from har_model.errors import HarError
from har_model.data.splits import SPLITS, check_fractions, grouped_stratified_split

NAMES = ["a", "b", "c"]


def _split(labels, groups, seed=42, val=0.1, test=0.1):
    return grouped_stratified_split(labels, groups, NAMES, check_fractions(val, test), seed=seed)


def test_fractions_are_met_per_class_with_singleton_groups():
    labels = [k for k in range(3) for _ in range(100)]
    out = _split(labels, list(range(300)))
    for label in range(3):
        sizes = [sum(1 for i in out[s] if labels[i] == label) for s in SPLITS]
        assert sizes == [80, 10, 10]
    assert sorted(i for s in SPLITS for i in out[s]) == list(range(300))


def test_groups_never_cross_splits_and_sizes_stay_close():
    rng = np.random.default_rng(0)
    labels, groups = [], []
    for label in range(3):
        for g in range(60):
            size = int(rng.choice([1, 1, 1, 2, 3, 5]))
            labels += [label] * size
            groups += [label * 1000 + g] * size
    out = _split(labels, groups, val=0.15, test=0.2)
    where = {}
    for s in SPLITS:
        for i in out[s]:
            assert where.setdefault(groups[i], s) == s
    n = len(labels)
    for s, f in (("validation", 0.15), ("test", 0.2)):
        assert abs(len(out[s]) / n - f) < 0.03


def test_same_seed_same_split_other_seed_other_split():
    labels = [k for k in range(3) for _ in range(40)]
    groups = [i // 2 for i in range(120)]
    assert _split(labels, groups, seed=5) == _split(labels, groups, seed=5)
    assert _split(labels, groups, seed=5) != _split(labels, groups, seed=6)


def test_adding_images_to_one_class_leaves_the_others_alone():
    labels = [k for k in range(3) for _ in range(30)]
    before = _split(labels, list(range(90)))
    more = labels + [2] * 10
    after = _split(more, list(range(100)))
    for s in SPLITS:
        assert [i for i in before[s] if labels[i] < 2] == [i for i in after[s] if more[i] < 2]


def test_every_split_gets_a_group_even_when_groups_are_big():
    labels = [0] * 12 + [1] * 12 + [2] * 12
    groups = [0] * 10 + [1, 2] + [3] * 10 + [4, 5] + [6] * 10 + [7, 8]  # one big group + two singles per class
    out = _split(labels, groups)
    for label in range(3):
        assert all(any(labels[i] == label for i in out[s]) for s in SPLITS)


def test_class_with_too_few_groups_is_a_clear_error():
    labels = [0] * 10 + [1] * 4 + [2] * 10
    groups = list(range(10)) + [10, 10, 10, 11] + list(range(20, 30))
    with pytest.raises(HarError, match="class 'b' has too few images to split: 4 usable image\\(s\\) in 2 distinct"):
        _split(labels, groups)
