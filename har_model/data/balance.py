"""Class balance: how much larger the largest class is than the smallest, and when that counts as imbalanced.

Real folders are rarely balanced (a few hundred photos of common actions, a few dozen of rare ones). The dataset
report and card state the ratio; training compensates by default when its training split's ratio is above
``IMBALANCE_RATIO`` (balanced sampling or a class-weighted loss, `--class-balance`: ``har_model.train.balancing``).
"""

from __future__ import annotations

from collections.abc import Mapping

IMBALANCE_RATIO = 1.5  # largest / smallest class above this: imbalanced


def class_balance(counts: Mapping[str, int]) -> dict:
    """``{"largest", "largest_count", "smallest", "smallest_count", "ratio", "imbalanced"}`` of per-class counts."""
    largest = max(counts, key=lambda c: (counts[c], c))
    smallest = min(counts, key=lambda c: (counts[c], c))
    ratio = counts[largest] / max(1, counts[smallest])
    return {
        "largest": largest,
        "largest_count": int(counts[largest]),
        "smallest": smallest,
        "smallest_count": int(counts[smallest]),
        "ratio": round(ratio, 2),
        "imbalanced": ratio > IMBALANCE_RATIO,
    }
