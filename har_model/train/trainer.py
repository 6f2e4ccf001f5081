"""Our Trainer: transformers' Trainer plus the fast-CPU recipe, and what it needs around it.

    HarTrainer           -- frozen batch norms kept in eval mode, the frozen blocks run as an inference network
                            (har_model.train.frozen_prefix), channels-last inputs, mixup, train accuracy in the
                            logs, a lower learning rate for the backbone than for the new head, class-imbalance
                            compensation (balanced sampling or a class-weighted loss: har_model.train.balancing)
    training_arguments   -- our TrainingArguments (evaluation each epoch, best checkpoint on macro-F1, cosine...)
    prepare_model        -- freeze the early layers, channels-last memory
    TrainingClock        -- training wall-clock time kept in the checkpoints (so --resume reports all sessions)
    freeze_early_layers  -- freeze the stem and the first backbone blocks
    find_head_prefixes   -- parameter-name prefixes of the classification head
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

import torch
import torch.nn as nn
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.trainer_optimizer import is_optimizer_factory

from har_model.hardware import cpu_has_bf16
from har_model.train import ema
from har_model.train.balancing import BalancedSampler, BalancePlan, class_weights, weighted_cross_entropy
from har_model.train.evaluation import compute_metrics_fn
from har_model.train.frozen_prefix import FrozenPrefix


def main_block_list(model) -> nn.ModuleList | None:
    """The longest nn.ModuleList in the model: the sequence of backbone blocks (EfficientNet blocks, ViT layers...)."""
    best = None
    for _, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and (best is None or len(module) > len(best)):
            best = module
    return best


def freeze_early_layers(model, spec: str | int) -> tuple[int, list]:
    """Freeze the embeddings/stem and the first N blocks; return (N, frozen batch-norm modules).

    Frozen batch-norm layers keep their ImageNet statistics (they are put in eval mode on every step).
    """
    blocks = main_block_list(model)
    if blocks is None:
        return 0, []
    n = len(blocks) // 2 if str(spec) == "auto" else int(spec)
    if n <= 0:
        return 0, []
    n = min(n, len(blocks))
    frozen_params = set()
    for block in list(blocks)[:n]:
        frozen_params.update(id(p) for p in block.parameters())
    first_block_param = next(blocks.parameters())
    # Everything registered before the first block (the stem / embeddings) is frozen too.
    for p in model.parameters():
        if p is first_block_param:
            break
        frozen_params.add(id(p))
    norms = []
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if params and all(id(p) in frozen_params for p in params):
            for p in params:
                p.requires_grad_(False)
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                norms.append(module)
    return n, norms


def find_head_prefixes(model) -> tuple:
    """Parameter-name prefixes of the classification head (the new, randomly initialised part)."""
    names = [n for n, _ in model.named_parameters()]
    for cand in ("classifier", "head", "fc", "score"):
        if any(n.startswith(cand) for n in names):
            return (cand,)
    return (names[-1].rsplit(".", 1)[0],)


class TrainingClock(TrainerCallback, ExportableState):
    """Keeps the training wall-clock time in the checkpoints, so a run continued with --resume reports the time of
    all its sessions (the Trainer's own train_runtime counts only the last one)."""

    def __init__(self, seconds_before: float = 0.0):
        self.seconds_before = float(seconds_before)
        self._since = None

    @property
    def seconds(self) -> float:
        return self.seconds_before + (time.time() - self._since if self._since is not None else 0.0)

    def on_train_begin(self, args, state, control, **kw):
        self._since = time.time()

    def on_train_end(self, args, state, control, **kw):
        self.seconds_before, self._since = self.seconds, None

    def state(self) -> dict:
        return {"args": {"seconds_before": self.seconds}, "attributes": {}}

    @classmethod
    def of(cls, trainer: Trainer) -> "TrainingClock":
        """The clock in the trainer's handler: on --resume the Trainer swaps in the one restored from the checkpoint."""
        return next(c for c in trainer.callback_handler.callbacks if isinstance(c, cls))


class HarTrainer(Trainer):
    """Trainer + frozen BN kept in eval mode, a fast frozen prefix, channels-last inputs, train accuracy,
    head/backbone learning rates, class-imbalance compensation."""

    def __init__(self, *a, frozen_norms=None, channels_last=True, backbone_lr_scale=1.0, head_prefixes=None,
                 mixup_alpha=0.0, class_balance: BalancePlan | None = None, **kw):
        """frozen_norms / head_prefixes: found in the model when not given (frozen_batch_norms, find_head_prefixes).
        class_balance: balanced sampling of the training split, or class weights in the training loss."""
        super().__init__(*a, **kw)
        self.mixup_alpha = float(mixup_alpha)
        self.class_balance = class_balance
        self.balanced_sampler = None  # made with the training dataloader (--class-balance sampling)
        self.loss_weights = (class_weights(class_balance.counts)
                             if class_balance is not None and class_balance.method == "loss" else None)
        self.channels_last, self.backbone_lr_scale = channels_last, backbone_lr_scale
        self.frozen_norms = list(frozen_batch_norms(self.model) if frozen_norms is None else frozen_norms)
        self.head_prefixes = tuple(find_head_prefixes(self.model) if head_prefixes is None else head_prefixes)
        self._train_correct = 0
        self._train_seen = 0
        self.fast_frozen_blocks = True  # run the frozen blocks as a FrozenPrefix where the model allows it
        self.frozen_prefix: FrozenPrefix | None | bool = False  # False: not built for the weights as they are now
        # a student's teacher answering on the augmented crops themselves (--distill-targets augmented): a function
        # of pixel values giving probabilities, which replace the stored targets of the unlabelled images
        self.teacher_on_crops = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        for m in self.frozen_norms:
            m.eval()
        if self.channels_last:
            inputs["pixel_values"] = inputs["pixel_values"].contiguous(memory_format=torch.channels_last)
        labels = inputs.get("labels")
        targets = inputs.pop("targets", None)  # soft targets of a student (har_model.train.distill)
        with self._frozen_blocks_fast(train=True) if model.training else contextlib.nullcontext():
            if model.training and targets is not None:
                loss, outputs = self._soft_target_loss(model, inputs, targets)
            elif model.training and self.mixup_alpha > 0 and labels is not None:
                loss, outputs, labels = self._mixup_loss(model, inputs)  # train accuracy: the larger share's label
            elif model.training and self.loss_weights is not None and labels is not None:
                loss, outputs = self._weighted_loss(model, inputs)
            else:
                loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                     num_items_in_batch=num_items_in_batch)
        if model.training and labels is not None:
            with torch.no_grad():
                logits = outputs["logits"] if isinstance(outputs, dict) else outputs[1]
                known = labels >= 0  # unlabelled images (a student's) have no answer to count
                self._train_correct += int((logits.argmax(-1) == labels)[known].sum())
                self._train_seen += int(known.sum())
        return (loss, outputs) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        with self._frozen_blocks_fast(train=False):
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    # The prefix copies the frozen weights: made anew for each call, after the Trainer has loaded what it loads
    # (a --resume checkpoint, the best checkpoint, a weight average being scored).
    def train(self, *args, **kwargs):
        self.frozen_prefix = False
        return super().train(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        self.frozen_prefix = False
        return super().evaluate(*args, **kwargs)

    def predict(self, *args, **kwargs):
        self.frozen_prefix = False
        return super().predict(*args, **kwargs)

    def _frozen_blocks_fast(self, train: bool):
        """Within: the stem and frozen blocks run as one inference network (har_model.train.frozen_prefix), where
        this model allows it; `train`: with dropout."""
        if self.frozen_prefix is False:
            # not under torch.compile (it traces the stock graph) nor sharded parameters (FSDP, DeepSpeed)
            usable = self.fast_frozen_blocks and not (self.args.torch_compile or self.is_fsdp_enabled
                                                      or self.is_deepspeed_enabled)
            self.frozen_prefix = FrozenPrefix.build(
                self.model, torch.bfloat16 if self.args.bf16 else torch.float32) if usable else None
        return self.frozen_prefix.replacing(train) if self.frozen_prefix else contextlib.nullcontext()

    def _mixup_loss(self, model, inputs):
        """mixup (Zhang et al., 2018): train on convex blends of two images with the same blend of their
        (label-smoothed) targets; the loss is linear in the target, so it is the blend of the two losses."""
        labels = inputs.pop("labels")
        lam = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
        perm = torch.randperm(labels.numel(), device=labels.device)
        x = inputs["pixel_values"]
        inputs["pixel_values"] = x * lam + x[perm] * (1 - lam)
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        eps = self.args.label_smoothing_factor

        def ce(target):
            if self.loss_weights is not None:
                return weighted_cross_entropy(logits, target, self.loss_weights, eps)
            return torch.nn.functional.cross_entropy(logits.float(), target, label_smoothing=eps)

        return lam * ce(labels) + (1 - lam) * ce(labels[perm]), outputs, labels if lam >= 0.5 else labels[perm]

    def _soft_target_loss(self, model, inputs, targets):
        """Cross-entropy against a distribution per image: the label-smoothed label where there is one, else
        `targets` (a teacher's probabilities for an unlabelled image), or the teacher's answer on this very crop
        (`teacher_on_crops`)."""
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = (outputs["logits"] if isinstance(outputs, dict) else outputs[0]).float()
        n_classes, eps = logits.shape[-1], self.args.label_smoothing_factor
        known = labels >= 0
        if self.teacher_on_crops is not None and not known.all():
            targets = targets.clone()
            targets[~known] = self.teacher_on_crops(inputs["pixel_values"][~known]).to(targets.dtype)
        hard = torch.nn.functional.one_hot(labels.clamp(min=0), n_classes).float() * (1 - eps) + eps / n_classes
        target = torch.where(known.unsqueeze(-1), hard, targets.float())
        return -(target * torch.log_softmax(logits, -1)).sum(-1).mean(), outputs

    def _weighted_loss(self, model, inputs):
        """Training loss weighted ~ 1 / class count (--class-balance loss); validation keeps the plain loss, so its
        curve means the same with and without compensation."""
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        return weighted_cross_entropy(logits, labels, self.loss_weights, self.args.label_smoothing_factor), outputs

    def _get_train_sampler(self, train_dataset=None):
        """--class-balance sampling: each class drawn about equally often, the same sequence on every process for a
        given (seed, epoch); otherwise the Trainer's own (random) sampler."""
        if self.class_balance is None or self.class_balance.method != "sampling":
            return super()._get_train_sampler(train_dataset)
        dataset = self.train_dataset if train_dataset is None else train_dataset
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        self.balanced_sampler = BalancedSampler(dataset.labels, seed=seed)
        return self.balanced_sampler

    def get_resumed_dataloader(self, dataloader, num_batches):
        """Resuming mid-epoch under several processes, accelerate wraps the batches as SkipBatchSampler(
        BatchSamplerShard(BatchSampler(sampler))), through which neither its DataLoaderShard.set_epoch nor the
        Trainer's reaches a custom sampler: the balanced sampler would draw another epoch's sequence than the one
        the checkpoint was part-way through. Give the skipping batch sampler a set_epoch that reaches it."""
        resumed = super().get_resumed_dataloader(dataloader, num_batches)
        batch_sampler = getattr(resumed, "batch_sampler", None)
        if self.balanced_sampler is not None and batch_sampler is not None and not hasattr(batch_sampler, "set_epoch"):
            batch_sampler.set_epoch = self.balanced_sampler.set_epoch
        return resumed

    def _save_checkpoint(self, model, trial):
        """The weight average (har_model.train.ema) goes into the checkpoint folder first: the Trainer writes
        trainer_state.json last, so a checkpoint that --resume takes as complete holds it too."""
        average = ema.find(self)
        if average is not None and average.started and self.args.should_save:
            average.save(Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        super()._save_checkpoint(model, trial)

    def log(self, logs, start_time=None):
        if "loss" in logs and self._train_seen:
            logs["train_accuracy"] = round(self._train_correct / self._train_seen, 4)
            self._train_correct = self._train_seen = 0
        super().log(logs, start_time)

    def create_optimizer(self, model=None):
        if self.optimizer is not None:
            return self.optimizer
        model = model or self.model
        head, backbone_decay, backbone_no_decay, head_no_decay = [], [], [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            is_head = name.startswith(self.head_prefixes)
            no_decay = p.ndim <= 1
            if is_head:
                (head_no_decay if no_decay else head).append(p)
            else:
                (backbone_no_decay if no_decay else backbone_decay).append(p)
        lr, wd = self.args.learning_rate, self.args.weight_decay
        groups = [
            {"params": head, "lr": lr, "weight_decay": wd},
            {"params": head_no_decay, "lr": lr, "weight_decay": 0.0},
            {"params": backbone_decay, "lr": lr * self.backbone_lr_scale, "weight_decay": wd},
            {"params": backbone_no_decay, "lr": lr * self.backbone_lr_scale, "weight_decay": 0.0},
        ]
        # the optimizer --optim names (default: fused AdamW) with its --adam-* settings, over our parameter groups
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
        if is_optimizer_factory(optimizer_cls) or {"params", "model", "optimizer_dict"} & set(kwargs):
            return super().create_optimizer(model)  # an optimizer that makes its own groups: one learning rate
        self.optimizer = optimizer_cls([g for g in groups if g["params"]], **kwargs)
        return self.optimizer


def prepare_model(model, freeze_layers: str | int, channels_last: bool):
    """Freeze the early layers (see freeze_early_layers) and use channels-last memory; return (model, frozen blocks)."""
    n_frozen, _ = freeze_early_layers(model, freeze_layers)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, n_frozen


def frozen_batch_norms(model) -> list:
    """Batch norms whose parameters are all frozen: they keep their pretrained statistics (eval mode every step)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and (params := list(m.parameters(recurse=False))) and not any(p.requires_grad for p in params)]


def use_bf16(precision: str, device: torch.device | None = None) -> bool:
    """bf16 autocast for --precision bf16, or for auto where the device the Trainer chose supports it natively
    (CUDA: the GPU says; the CPU: AVX512-BF16 or AMX; other accelerators: fp32 unless asked)."""
    if precision != "auto":
        return precision == "bf16"
    kind = device.type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        return torch.cuda.is_bf16_supported()
    return kind == "cpu" and cpu_has_bf16()



def training_arguments(training: TrainingArguments, output_dir: Path, seed: int, *, bf16: bool,
                       hub: dict | None = None, epochs: float | None = None,
                       learning_rate: float | None = None) -> TrainingArguments:
    """`training` (the command line's, with our defaults) for one soup member: its checkpoint folder and seed,
    bf16 from --precision (unless fp16); `hub`: the Trainer's push_to_hub / hub_* arguments, for a Trainer that
    pushes while it trains. The device is the Trainer's choice (HarTrainingArguments)."""
    more = {k: v for k, v in (("num_train_epochs", epochs), ("learning_rate", learning_rate)) if v is not None}
    return dataclasses.replace(training, output_dir=str(output_dir), seed=seed, data_seed=seed,
                               bf16=bf16 and not training.fp16, **more, **(hub or {}))


def hub_arguments(recipe) -> dict:
    """The Trainer's Hub arguments for --push-to-hub with --hub-strategy (the token: HF_TOKEN or the login)."""
    return {"push_to_hub": True, "hub_model_id": recipe.push_to_hub, "hub_strategy": recipe.hub_strategy,
            "hub_private_repo": recipe.private}


def make_trainer(model, output_dir: Path, seed: int, *, config, images, labels: list[str], bf16: bool,
                 balance: BalancePlan | None = None, hub: bool = False, train_dataset=None,
                 epochs: float | None = None, learning_rate: float | None = None,
                 weight_average: bool = False) -> HarTrainer:
    """A HarTrainer for one soup member (or for evaluating the shipped model): `config` is the run's TrainConfig,
    `images` the cached splits, `balance` the run's class-imbalance compensation (har_model.train.balancing);
    `hub`: it pushes to --push-to-hub's repo as it trains, by --hub-strategy. `train_dataset` / `epochs` /
    `learning_rate`: another training set, length and peak rate than the members' (a student's, train.distill).
    `weight_average`: keep the moving average of the weights (--ema-decay, har_model.train.ema): a member's Trainer."""
    recipe = config.run
    callbacks = [TrainingClock(), *(ema.callbacks(recipe.ema_decay) if weight_average else [])]
    if recipe.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(recipe.early_stopping_patience))
    return HarTrainer(
        model=model,
        args=training_arguments(config.training, output_dir, seed, bf16=bf16,
                                hub=hub_arguments(recipe) if hub else None, epochs=epochs, learning_rate=learning_rate),
        train_dataset=images.train if train_dataset is None else train_dataset,
        eval_dataset=images.validation,
        compute_metrics=compute_metrics_fn(labels),
        callbacks=callbacks,
        channels_last=not recipe.no_channels_last,
        backbone_lr_scale=recipe.backbone_lr_scale,
        mixup_alpha=recipe.mixup,
        class_balance=balance,
    )
