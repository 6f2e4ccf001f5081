"""Class-imbalance compensation in training: balanced sampling or a class-weighted loss (`--class-balance`).

    plan_balance      -- what a run does: the method, the training split's largest/smallest class ratio, and whether
                         the flag or `auto` chose it (recorded in metrics.json's recipe and the model card)
    BalancedSampler   -- draws len(train) indices per epoch, each class about equally often (with replacement)
    class_weights     -- per-class loss weights ~ 1 / count, mean 1
    weighted_cross_entropy -- cross-entropy with those weights and the run's label smoothing

`auto` (the default) compensates when the training split's largest class is more than IMBALANCE_RATIO times its
smallest (``har_model.data.balance``), with AUTO_METHOD, the method that scored the higher validation macro-F1 on an
imbalanced subset of har15 (benchmarks/imbalance.py; benchmarks/README.md "Class imbalance"); `none` turns it off.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from har_model.data.balance import IMBALANCE_RATIO, class_balance
from har_model.errors import HarError

CHOICES = ("auto", "sampling", "loss", "none")
AUTO_METHOD = "sampling"  # chosen on validation macro-F1 (benchmarks/README.md "Class imbalance")
METHOD_NAMES = {"sampling": "balanced sampling", "loss": "class-weighted loss", "none": "no compensation"}


@dataclass(frozen=True)
class BalancePlan:
    """How one run compensates for class imbalance; `counts`: training images per class (label order)."""

    method: str  # "sampling", "loss" or "none"
    ratio: float  # largest / smallest training class
    chosen_by: str  # "auto" or "flag"
    counts: tuple[int, ...]

    @property
    def on(self) -> bool:
        return self.method != "none"

    def as_recipe(self) -> dict:
        """metrics.json's recipe entry (threshold: the ratio above which `auto` compensates)."""
        return {"method": self.method, "ratio": self.ratio, "chosen_by": self.chosen_by, "threshold": IMBALANCE_RATIO}

    def describe(self) -> str:
        """For the run's plan line, e.g. 'classes 9.33x imbalanced: balanced sampling (auto)'."""
        state = "imbalanced" if self.ratio > IMBALANCE_RATIO else "balanced"
        return f"classes {self.ratio:g}x {state}: {METHOD_NAMES[self.method]}" + (
            " (auto)" if self.chosen_by == "auto" else f" (--class-balance {self.method})")


def class_counts(labels: Sequence[int] | torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(torch.as_tensor(labels, dtype=torch.long), minlength=num_classes).tolist()


def plan_balance(option: str, labels: Sequence[int] | torch.Tensor, num_classes: int) -> BalancePlan:
    """`option` is --class-balance; `labels` the training split's. An explicit method applies even to balanced data."""
    if option not in CHOICES:
        raise HarError(f"--class-balance {option}: give one of {', '.join(CHOICES)}")
    counts = class_counts(labels, num_classes)
    balance = class_balance({str(c): n for c, n in enumerate(counts)})
    if option == "auto":
        method = AUTO_METHOD if balance["imbalanced"] else "none"
    else:
        method = option
    return BalancePlan(method, balance["ratio"], "auto" if option == "auto" else "flag", tuple(counts))


class BalancedSampler(torch.utils.data.Sampler[int]):
    """Draws `num_samples` (default: all) training indices per epoch, with replacement, each with probability
    proportional to 1 / (count of its class): every class is drawn about equally often.

    The draw depends only on (seed, epoch), never on global random state: under torchrun / accelerate every process
    holds the same sampler and accelerate's BatchSamplerShard hands each process its own batches of the same
    sequence, and `--resume` skips the already-trained batches of that same sequence. The Trainer calls
    `set_epoch(epoch)` before each epoch (through accelerate's DataLoaderShard.set_epoch, also for a sharded or
    resumed loader: tests/train/test_balancing.py); without it, each full pass moves on to the next epoch itself.
    """

    def __init__(self, labels: Sequence[int] | torch.Tensor, seed: int, num_samples: int | None = None):
        labels = torch.as_tensor(labels, dtype=torch.long)
        counts = torch.bincount(labels).double()
        self.weights = 1.0 / counts[labels]
        self.seed, self.epoch = int(seed), 0
        self.num_samples = len(labels) if num_samples is None else int(num_samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def indices(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(hash_seed(self.seed, epoch))
        return torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        epoch = self.epoch
        yield from self.indices(epoch)
        if self.epoch == epoch:  # a full pass that nobody numbered: the next one draws anew
            self.epoch = epoch + 1


def hash_seed(seed: int, epoch: int) -> int:
    """One 63-bit generator seed per (seed, epoch), well mixed (numpy's SeedSequence): neighbouring seeds and epochs
    give unrelated draws."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch)]).generate_state(1, np.uint64)[0] >> 1)


def class_weights(counts: Sequence[int]) -> torch.Tensor:
    """Loss weight of each class ~ 1 / its training count, normalised to mean 1 (the loss keeps its scale, so the
    learning rate means the same); a class without training images counts as one."""
    w = 1.0 / torch.as_tensor(counts, dtype=torch.float32).clamp(min=1)
    return w * (len(w) / w.sum())


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                           label_smoothing: float = 0.0) -> torch.Tensor:
    """PyTorch's weighted cross-entropy with label smoothing: per example (1 - eps) * w[y] * -log p_y +
    eps / C * sum_c w[c] * -log p_c, summed and divided by the sum of w[y] over the batch."""
    return torch.nn.functional.cross_entropy(logits.float(), labels, weight=weights.to(logits.device),
                                             label_smoothing=label_smoothing)
