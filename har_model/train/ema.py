"""Weight averaging along a run: an exponential moving average (EMA, Polyak averaging) of a member's weights.

The soup (har_model.train.soup) averages across runs; this averages along one, at no training cost: after every
optimizer step the average moves a little towards the new weights (``avg += (1 - decay) * (w - avg)``), batch-norm
statistics included. The average is scored on validation once the member has finished and replaces the member's
best checkpoint only where it scores higher, so it can only be shipped where it helped on validation.

    WeightEma      -- the Trainer callback keeping the average (saved in each checkpoint for --resume, and at the end)
    resolve_decay  -- --ema-decay ("auto", a number, 0) -> the decay for a member of so many steps
    choose         -- score the average on validation and keep the better of it and the best checkpoint
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback

from har_model.errors import HarError
from har_model.outputs import atomic_write_bytes

EMA_FILE = "ema.safetensors"  # in each checkpoint folder, and the final average beside them
# "auto": the average spans about the last fifth of the member's steps (one epoch of the default 5), where the
# cosine schedule has slowed down: early weights, far from the end point, would only blur it
AUTO_SPAN = 0.2


def resolve_decay(spec: str, total_steps: int) -> float:
    """--ema-decay: 'auto' -> 1 - 1/(AUTO_SPAN x steps); a number in [0, 1) as given; 0 is off."""
    if str(spec) == "auto":
        return 1.0 - 1.0 / max(1.0, AUTO_SPAN * total_steps)
    return parse_decay(spec)


def parse_decay(spec: str) -> float:
    try:
        decay = float(spec)
    except ValueError:
        decay = -1.0
    if not 0.0 <= decay < 1.0:
        raise HarError(f"--ema-decay {spec}: give auto, 0 (off) or a decay below 1 such as 0.998")
    return decay


class WeightEma(TrainerCallback):
    """Keeps the moving average of the model's floating-point state (weights and batch-norm statistics) in fp32."""

    def __init__(self, spec: str):
        self.spec = spec
        self.decay: float | None = None
        self.updates = 0
        self._avg: list[torch.Tensor] | None = None
        self._live: list[torch.Tensor] | None = None
        self._names: list[str] = []

    @property
    def started(self) -> bool:
        return self._avg is not None

    def on_step_begin(self, args, state, control, model=None, **kw):
        if self._avg is None:  # the first step: the model holds its starting (or resumed) weights by now
            resumed = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            self.start(model, resumed if state.global_step else None, state.max_steps)

    def on_step_end(self, args, state, control, **kw):
        # timm's warm-up: while few steps are averaged, weigh the new ones more (the first weights hold a random head)
        n = self.updates = self.updates + 1
        decay = min(self.decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(self._avg, [t.float() for t in self._live], 1.0 - decay)

    def on_train_end(self, args, state, control, **kw):
        # the final average, beside the member's checkpoints: the last checkpoint holds it only where the last step
        # was saved and kept (not so with --save-strategy best or --save-total-limit 1)
        if self._avg is not None and args.should_save:
            self.save(Path(args.output_dir))

    def save(self, folder: Path) -> None:
        """Write the average (and how many steps it holds) as folder/ema.safetensors; HarTrainer calls this for
        each checkpoint before the Trainer writes the checkpoint's trainer_state.json."""
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {**self.state_dict(), "_updates": torch.tensor(self.updates)}
        atomic_write_bytes(folder / EMA_FILE, _serialise(tensors))

    def start(self, model, checkpoint: Path | None, total_steps: int) -> None:
        """Begin from the model's weights, or continue the average saved in `checkpoint` (--resume), for a member
        of `total_steps` optimizer steps (what --ema-decay auto scales with)."""
        self.decay = resolve_decay(self.spec, total_steps)
        state = model.state_dict()
        self._names = [k for k, v in state.items() if v.is_floating_point()]
        self._live = [state[k] for k in self._names]
        saved = checkpoint / EMA_FILE if checkpoint is not None else None
        if saved is not None and saved.is_file():
            tensors = load_file(str(saved))
            self._avg = [tensors[k].to(live.device, torch.float32) for k, live in zip(self._names, self._live)]
            self.updates = int(tensors["_updates"])
        else:
            if saved is not None:
                print(f"warning: {saved} is missing: the weight average starts again from {checkpoint}",
                      file=sys.stderr, flush=True)
            self._avg = [t.detach().float().clone() for t in self._live]

    def state_dict(self) -> dict:
        return {k: v for k, v in zip(self._names, self._avg)}

    def averaged_state(self, model) -> dict:
        """The model's state dict with the averaged floating-point tensors (integer buffers as they are)."""
        state = dict(model.state_dict())
        for k, v in zip(self._names, self._avg):
            state[k] = v.to(state[k].dtype)
        return state


def evaluate_quietly(trainer: Trainer, prefix: str) -> float:
    """Validation macro-F1 of the model as it is, without early stopping looking on (it wants eval_macro_f1 and
    would warn that it is missing)."""
    stopper = trainer.pop_callback(EarlyStoppingCallback)
    try:
        return float(trainer.evaluate(metric_key_prefix=prefix)[f"{prefix}_macro_f1"])
    finally:
        if stopper is not None:
            trainer.add_callback(stopper)


def _serialise(tensors: dict) -> bytes:
    return save({k: v.contiguous() for k, v in tensors.items()})


def callbacks(spec: str) -> list[WeightEma]:
    """The callback for a member's Trainer: none where --ema-decay is 0."""
    return [] if str(spec) != "auto" and parse_decay(spec) == 0.0 else [WeightEma(spec)]


def find(trainer: Trainer) -> WeightEma | None:
    return next((c for c in trainer.callback_handler.callbacks if isinstance(c, WeightEma)), None)


def choose(trainer: Trainer, best_f1: float | None, checkpoint: str | None) -> dict | None:
    """After `trainer.train()` (the model holds the best checkpoint): score the average on validation and load it
    where its macro-F1 is higher. Returns what metrics.json records, or None without an average (off, or nothing
    to average). `checkpoint`: the member's last checkpoint, to read a saved average from (a finished member on
    --resume trains no step)."""
    ema = find(trainer)
    if ema is None:
        return None
    if not ema.started:
        if checkpoint is None or not (Path(checkpoint) / EMA_FILE).is_file():
            return None
        ema.start(trainer.model, Path(checkpoint), trainer.state.max_steps)
    model = trainer.model
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(ema.averaged_state(model))
    ema_f1 = evaluate_quietly(trainer, "ema")
    # no validation score for the trained weights (evaluation switched off): nothing shows the average is better
    shipped = "average" if best_f1 is not None and ema_f1 > best_f1 else "best checkpoint"
    if shipped != "average":
        model.load_state_dict(best_state)
    best_text = f"{best_f1:.4f}" if best_f1 is not None else "-"
    print(f"weight average (EMA, decay {ema.decay:.4f}, {ema.updates} steps): validation macro-F1 {ema_f1:.4f} "
          f"vs best checkpoint {best_text}; keeping the {shipped}", flush=True)
    return {"decay": round(ema.decay, 6), "steps": ema.updates, "validation_macro_f1": ema_f1,
            "best_checkpoint_macro_f1": best_f1, "shipped": shipped}
