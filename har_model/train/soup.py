"""A model soup (Wortsman et al., 2022): train N models from the same pretrained weights with different seeds,
average their weights into one model of the same size and speed, and ship it when it scores at least as well as
its best member on validation (else that member).

    train_members  -- the member loop: each member trained by its own Trainer, which ends with the loop
    cook_soup      -- average the members' best checkpoints, compare on validation, load the winner
    SoupResult     -- what the loop leaves: members (seed, time, score, checkpoint, log), the soup's summary
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from transformers import Trainer, set_seed

from har_model.train import ema
from har_model.train.checkpoints import last_complete
from har_model.train.trainer import TrainingClock


@dataclass
class Member:
    """One trained member: its seed, training time, best validation macro-F1 and checkpoint, log and weights."""

    seed: int
    train_seconds: float
    validation_macro_f1: float | None
    best_checkpoint: str | None
    log_history: list[dict]
    state: dict  # the weights of its best checkpoint, or of its weight average where that scored higher
    weight_average: dict | None = None  # the EMA's decay, validation macro-F1 and whether it was kept (train.ema)

    def summary(self) -> dict:
        return {"seed": self.seed, "train_seconds": self.train_seconds,
                "validation_macro_f1": self.validation_macro_f1, "best_checkpoint": self.best_checkpoint,
                "weight_average": self.weight_average}


@dataclass
class SoupResult:
    """The members and what was shipped; `soup` and `validation` are None for a single model."""

    members: list[Member]
    soup: dict | None = None  # metrics.json "soup": members, the soup's validation macro-F1, what was shipped
    validation: dict | None = None  # the shipped soup's validation metrics (already measured: not measured twice)

    @property
    def train_seconds(self) -> float:
        return sum(m.train_seconds for m in self.members)

    @property
    def last(self) -> Member:
        """The last member: its training log, best checkpoint and score are the ones metrics.json reports."""
        return self.members[-1]


def train_member(trainer: Trainer, seed: int, resume_from: str | None) -> Member:
    """Train (or finish) one member; its Trainer loads the best checkpoint at the end, and the weight average
    (har_model.train.ema, where the Trainer keeps one) replaces it if it scores higher on validation."""
    trainer.train(resume_from_checkpoint=resume_from)
    best_f1 = trainer.state.best_metric
    average = ema.choose(trainer, best_f1, resume_from)
    return Member(
        seed=seed,
        train_seconds=round(TrainingClock.of(trainer).seconds, 1),
        validation_macro_f1=average["validation_macro_f1"] if average and average["shipped"] == "average" else best_f1,
        best_checkpoint=trainer.state.best_model_checkpoint,
        log_history=list(trainer.state.log_history),
        state={k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
        weight_average=average,
    )


def train_members(member_dirs: Sequence[Path], seed: int, *, first_model, new_model: Callable[[], object],
                  new_trainer: Callable[[object, Path, int], Trainer], resume: bool) -> list[Member]:
    """Train one member per folder with seeds seed, seed+1, ...: the first on `first_model`, the others on
    `new_model()` (the same pretrained backbone with a new random head). `new_trainer(model, folder, seed)`."""
    members = []
    for i, member_dir in enumerate(member_dirs):
        member_seed = seed + i
        model = first_model
        if i:
            set_seed(member_seed)  # a new random head and new augmentations; the same pretrained backbone
            model = new_model()
        if len(member_dirs) > 1:
            print(f"soup member {i + 1} of {len(member_dirs)} (training seed {member_seed})", flush=True)
        resume_from = last_complete(member_dir) if resume and member_dir.is_dir() else None
        members.append(train_member(new_trainer(model, member_dir, member_seed), member_seed, resume_from))
    return members


def average_state_dicts(states: list[dict]) -> dict:
    """Element-wise mean of floating-point tensors (weights and BatchNorm statistics); integer buffers (BatchNorm's
    batch counter) are taken from the first."""
    first = states[0]
    return {k: (sum(s[k].float() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in first.items()}


def cook_soup(evaluator: Trainer, members: list[Member]) -> SoupResult:
    """Load what to ship into `evaluator.model`: a single member's best checkpoint, or the weight average of the
    members' (a uniform model soup) unless it scores lower macro-F1 on validation than the best member."""
    model = evaluator.model
    if len(members) == 1:
        model.load_state_dict(members[0].state)
        return SoupResult(members)
    model.load_state_dict(average_state_dicts([m.state for m in members]))
    validation = {k.removeprefix("soup_"): v for k, v in evaluator.evaluate(metric_key_prefix="soup").items()
                  if k.startswith("soup_")}
    soup_f1 = validation["macro_f1"]
    best = max(range(len(members)), key=lambda i: members[i].validation_macro_f1 or 0.0)
    shipped = "soup"
    if soup_f1 < (members[best].validation_macro_f1 or 0.0):
        model.load_state_dict(members[best].state)
        shipped, validation = f"member {best + 1}", None  # write_outputs measures the member's
    member_f1 = ", ".join(f"{m.validation_macro_f1:.4f}" for m in members)
    print(f"model soup: validation macro-F1 {soup_f1:.4f} (members: {member_f1}); shipping the {shipped}", flush=True)
    summary = {"members": [m.summary() for m in members], "soup_validation_macro_f1": soup_f1, "shipped": shipped}
    return SoupResult(members, summary, validation)
