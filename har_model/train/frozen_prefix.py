"""The frozen stem and early blocks of an EfficientNet, run as an inference network while the rest trains.

Why: with the first half of the blocks frozen (the default), their forward pass is about 40% of a training step on a
CPU (Lite0, 256 crops, batch 32, bf16: 606 of 1,482 ms) although nothing in them changes. Most of that time is not
convolution but passes over large early activations: batch norm in float32 between bf16 convolutions (with the
casts both ways) and the squeeze-excite layers the Lite conversion keeps as exact no-ops. The frozen batch norms
keep their statistics (eval mode every step), so a copy computes the same function with each batch norm folded into
the convolution before it, the no-op layers left out (har_model.model_folder.torch_model), weights in the autocast
dtype, in-place activations and no autograd. Dropout stays on in training, as in the stock blocks (transformers'
EfficientNet applies element-wise dropout in every block with a residual connection).

The model itself is untouched (its state dict, what is saved and exported are the stock ones): during a forward
pass of the Trainer (training, evaluation, prediction) the stem computes the whole prefix and the frozen blocks pass
their input through. `FrozenPrefix.build` returns None for any model it cannot reproduce exactly (not transformers'
EfficientNet, a batch norm it cannot fold, a copy that disagrees with the stock layers on a test input, a model cast
for full-bf16/fp16 evaluation), which then runs the stock way.
"""

from __future__ import annotations

import contextlib
import copy
import sys

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from har_model.model_folder.torch_model import strip_noop_squeeze_excite

# (convolution, the batch norm right after it) in transformers' EfficientNet modules
_CONV_BN = (("convolution", "batchnorm"), ("expand_conv", "expand_bn"), ("depthwise_conv", "depthwise_norm"),
            ("project_conv", "project_bn"))
_WARNED: set[str] = set()


def _fold(module: nn.Module) -> None:
    """Each batch norm (eval mode) folded into the convolution before it, in place (on a copy)."""
    for child in module.children():
        _fold(child)
    for conv, bn in _CONV_BN:
        c, b = getattr(module, conv, None), getattr(module, bn, None)
        if isinstance(c, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
            setattr(module, conv, fuse_conv_bn_eval(c, b))
            setattr(module, bn, nn.Identity())


class FrozenPrefix:
    """A folded, autograd-free copy of an EfficientNet's stem and first `n_blocks` blocks (all frozen)."""

    def __init__(self, model: nn.Module, n_blocks: int, dtype: torch.dtype):
        self.stem = model.efficientnet.embeddings
        self.blocks = list(model.efficientnet.encoder.blocks)[:n_blocks]
        # folded in float32 (and eval mode, which folding asks for), cast to `dtype` once checked (build)
        fast = copy.deepcopy(nn.Sequential(self.stem, *self.blocks)).float().eval()
        _fold(fast)
        strip_noop_squeeze_excite(fast)
        for m in fast.modules():  # no autograd here: activations and dropout may overwrite their input
            if isinstance(m, (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.Dropout)):
                m.inplace = True
        self.dtype = dtype
        self.fast = fast.requires_grad_(False)
        self.dropouts = [m for m in fast.modules() if isinstance(m, nn.Dropout)]

    @classmethod
    def build(cls, model: nn.Module, dtype: torch.dtype = torch.float32) -> FrozenPrefix | None:
        """The prefix of the stem and the leading frozen blocks, or None where there is none or this model is not
        one it reproduces exactly (then the stock path runs)."""
        try:
            stem, blocks = model.efficientnet.embeddings, list(model.efficientnet.encoder.blocks)
        except AttributeError:
            return None  # not transformers' EfficientNet
        frozen = lambda m: not any(p.requires_grad for p in m.parameters())  # noqa: E731
        n_blocks = next((i for i, b in enumerate(blocks) if not frozen(b)), len(blocks))
        if n_blocks == 0 or not frozen(stem):
            return None
        if any(p.dtype != torch.float32 for p in model.parameters()):
            return None  # cast for evaluation (--bf16_full_eval / --fp16_full_eval): the stock layers as cast
        try:
            prefix = cls(model, n_blocks, dtype)
            problem = prefix.problem()
        except Exception as exc:  # noqa: BLE001 - a speed-up must never stop a run: the stock layers run instead
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            if problem not in _WARNED:  # once a process: the prefix is made anew for each train/evaluate call
                _WARNED.add(problem)
                print(f"warning: the frozen blocks run through the stock layers, more slowly ({problem})",
                      file=sys.stderr, flush=True)
            return None
        prefix.fast.to(dtype)
        if stem.convolution.weight.is_contiguous(memory_format=torch.channels_last):
            prefix.fast.to(memory_format=torch.channels_last)  # the folded weights are new tensors
        return prefix

    def problem(self) -> str | None:
        """Why the float32 copy is not the stock layers' function (eval mode: no dropout), or None: a batch norm
        left unfolded (it would compute batch statistics in training), or outputs apart on a test input."""
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.fast.modules()):
            return "a batch norm without a convolution to fold it into"
        ref = copy.deepcopy(nn.Sequential(self.stem, *self.blocks)).float().eval()
        device = next(ref.parameters()).device
        x = torch.randn(2, self.stem.convolution.in_channels, 64, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            want, got = ref(x.to(device)), self.fast.eval()(x.to(device))
        if want.shape != got.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-3 * float(want.abs().max())):
            return "the folded copy disagrees with them on a test input"
        return None

    @contextlib.contextmanager
    def replacing(self, train: bool):
        """Within: the stem returns the prefix's output and the frozen blocks pass it through. `train`: dropout on
        (nothing else in the copy depends on the mode: no batch norm is left)."""
        for m in self.dropouts:
            m.train(train)
        self.stem.forward = self._stem_forward
        for block in self.blocks:
            block.forward = _identity
        try:
            yield
        finally:
            for m in (self.stem, *self.blocks):
                del m.forward  # the class's forward again

    def _stem_forward(self, pixel_values):
        with torch.no_grad():
            out = self.fast(pixel_values.to(self.dtype))
        # outside autocast the next (stock) block computes in the input's dtype
        return out if torch.is_autocast_enabled(out.device.type) else out.to(pixel_values.dtype)


def _identity(hidden_states):
    return hidden_states
