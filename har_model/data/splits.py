"""Stratified, grouped, seeded train / validation / test split.

Per class, the duplicate groups are shuffled with a generator seeded from (seed, class name), then
placed largest first into the split that is furthest below its target size. Each split gets at least
one group of every class. Seeding per class means that adding images to one class leaves the split of
the others unchanged; the same input and seed always give the same split.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from har_model.errors import HarError

SPLITS = ("train", "validation", "test")


def check_fractions(val_fraction: float, test_fraction: float) -> dict[str, float]:
    """{split: fraction}, or HarError when a fraction is outside (0, 1) or they leave nothing to train on."""
    for name, f in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not 0.0 < f < 1.0:
            raise HarError(f"{name} must be between 0 and 1 (exclusive), got {f}")
    train = 1.0 - val_fraction - test_fraction
    if train <= 0.0:
        raise HarError(
            f"--val-fraction {val_fraction} + --test-fraction {test_fraction} leave nothing for training (must sum < 1)"
        )
    return {"train": train, "validation": val_fraction, "test": test_fraction}


def _class_rng(seed: int, class_name: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\0{class_name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def grouped_stratified_split(
    labels: Sequence[int],
    groups: Sequence[int],
    class_names: Sequence[str],
    fractions: dict[str, float],
    *,
    seed: int = 42,
) -> dict[str, list[int]]:
    """Sorted indices for each split in ``fractions`` (e.g. ``check_fractions(0.1, 0.1)``).

    Images sharing a group id and a label always land in the same split (label conflicts are resolved
    before splitting). Ties go to the first split named. Raises HarError for a class with fewer groups
    than there are splits.
    """
    names = tuple(fractions)
    by_class: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (label, group) in enumerate(zip(labels, groups)):
        by_class[label][group].append(i)
    out: dict[str, list[int]] = {s: [] for s in names}
    for label in sorted(by_class):
        name = class_names[label]
        class_groups = [by_class[label][g] for g in sorted(by_class[label])]
        n_images = sum(len(g) for g in class_groups)
        if len(class_groups) < len(names):
            raise HarError(
                f"class '{name}' has too few images to split: {n_images} usable image(s) in {len(class_groups)} "
                f"distinct picture group(s), at least {len(names)} needed (one for each of "
                f"{'/'.join(names)}); add images or remove the folder"
            )
        order = _class_rng(seed, name).permutation(len(class_groups))
        shuffled = [class_groups[k] for k in order]
        shuffled.sort(key=len, reverse=True)  # stable: equal sizes keep their shuffled order
        for split, members in _assign(shuffled, fractions, n_images).items():
            out[split].extend(members)
    return {s: sorted(v) for s, v in out.items()}


def _assign(groups: list[list[int]], fractions: dict[str, float], n_images: int) -> dict[str, list[int]]:
    names = tuple(fractions)
    targets = {s: fractions[s] * n_images for s in names}
    placed: dict[str, list[list[int]]] = {s: [] for s in names}
    counts = dict.fromkeys(names, 0)
    for g in groups:
        split = max(names, key=lambda s: targets[s] - counts[s])  # ties: the first named (train)
        placed[split].append(g)
        counts[split] += len(g)
    # a split left empty takes the smallest group of the split that is furthest above its target
    for split in names:
        if not placed[split]:
            donors = [s for s in names if len(placed[s]) > 1]
            donor = max(donors, key=lambda s: counts[s] - targets[s])
            g = min(placed[donor], key=len)
            placed[donor].remove(g)
            placed[split].append(g)
            counts[donor] -= len(g)
            counts[split] += len(g)
    return {s: [i for g in placed[s] for i in g] for s in names}
