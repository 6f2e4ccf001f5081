"""Built-in EfficientNet-Lite backbones and base-model resolution (offline)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from har_model.train import backbones
from har_model.train.backbones import BUILTIN_BACKBONES, builtin_checkpoint, load_backbone
from har_model.errors import HarError
from har_model.imaging import open_rgb
from har_model.model_folder.torch_model import strip_noop_squeeze_excite

LITE = sorted(BUILTIN_BACKBONES)
LABELS = ["clapping", "running", "sitting"]


@pytest.fixture(scope="session")
def lite_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("har_model_cache")


@pytest.fixture(scope="session")
def converted(lite_cache):
    """name -> converted ImageNet checkpoint folder (each converted once per test session)."""
    return {name: builtin_checkpoint(name, lite_cache) for name in LITE}


def _raw_state_dict(name: str) -> dict[str, torch.Tensor]:
    path = backbones._weights_path(BUILTIN_BACKBONES[name])
    return torch.load(path, map_location="cpu", weights_only=True)


# ---- an independent reference: plain torch straight from the lukemelas-style state dict ----------------------

_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # EfficientNet-B0 / Lite


def _conv_same(x, weight, stride, groups=1):
    """TF "SAME" convolution: output ceil(size / stride), any extra padding at the bottom/right."""
    k = weight.shape[-1]
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: width first
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.conv2d(F.pad(x, pads), weight, stride=stride, groups=groups)


def _bn(x, sd, prefix):
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"],
                        sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], False, 0.0, 1e-3)


def _relu6(x):
    return x.clamp(0.0, 6.0)


def reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite logits: no squeeze-excite, relu6, TF SAME padding, residual when shapes allow."""
    x = _relu6(_bn(_conv_same(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    n_blocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("_blocks."))
    stage, prev_out = -1, None
    for i in range(n_blocks):
        p = f"_blocks.{i}"
        out_ch = sd[f"{p}._project_conv.weight"].shape[0]
        if out_ch != prev_out:  # a new stage starts where the block width changes
            stage += 1
            stride = _STAGE_STRIDES[stage]
        else:
            stride = 1
        h = x
        if f"{p}._expand_conv.weight" in sd:
            h = _relu6(_bn(F.conv2d(h, sd[f"{p}._expand_conv.weight"]), sd, f"{p}._bn0"))
        dw = sd[f"{p}._depthwise_conv.weight"]
        h = _relu6(_bn(_conv_same(h, dw, stride, groups=dw.shape[0]), sd, f"{p}._bn1"))
        h = _bn(F.conv2d(h, sd[f"{p}._project_conv.weight"]), sd, f"{p}._bn2")
        if stride == 1 and x.shape[1] == out_ch:
            h = h + x
        x, prev_out = h, out_ch
    x = _relu6(_bn(F.conv2d(x, sd["_conv_head.weight"]), sd, "_bn1"))
    return F.linear(x.mean(dim=(2, 3)), sd["_fc.weight"], sd["_fc.bias"])


@pytest.mark.parametrize("name", LITE)
def test_converted_model_matches_reference_forward(converted, name):
    from transformers import EfficientNetForImageClassification

    res = BUILTIN_BACKBONES[name].resolution
    model = EfficientNetForImageClassification.from_pretrained(converted[name]).eval()
    sd = {k: v.double() for k, v in _raw_state_dict(name).items()}
    x = torch.randn(1, 3, res, res, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model(pixel_values=x).logits
        want = reference_forward(sd, x.double())
    assert got.shape == (1, 1000)
    assert (got.double() - want).abs().max().item() < 1e-4
    assert want.std().item() > 1.0  # a meaningful comparison, not two near-constant outputs


def test_symmetric_padding_blocks_matter_at_260(converted):
    """Control for the test above: lite2's TF padding is symmetric at 3 odd-sized stride-2 inputs (65, 33, 17)."""
    from transformers import EfficientNetForImageClassification

    model = EfficientNetForImageClassification.from_pretrained(converted["efficientnet-lite2"]).eval()
    assert model.config.depthwise_padding == [4, 7, 15]
    wrong = EfficientNetForImageClassification.from_pretrained(
        converted["efficientnet-lite2"], depthwise_padding=[]
    ).eval()
    x = torch.randn(1, 3, 260, 260, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(pixel_values=x).logits - wrong(pixel_values=x).logits).abs().max().item() > 1e-2


def test_converted_folder_is_a_complete_stock_checkpoint(converted):
    folder = converted["efficientnet-lite0"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["EfficientNetForImageClassification"]
    assert "auto_map" not in config  # no custom code
    assert config["hidden_act"] == "relu6" and config["batch_norm_eps"] == 1e-3
    assert config["batch_norm_momentum"] == 0.01
    assert config["id2label"]["285"] == "Egyptian Mau" and config["id2label"]["0"] == "tench"
    assert len(set(config["id2label"].values())) == 1000
    proc = json.loads((folder / "preprocessor_config.json").read_text())
    assert proc["image_processor_type"] == "EfficientNetImageProcessor"
    assert proc["size"] == {"height": 224, "width": 224}
    assert proc["include_top"] is False and proc["do_center_crop"] is False and proc["resample"] == 2
    assert proc["image_mean"] == [127 / 255] * 3 and proc["image_std"] == [128 / 255] * 3
    assert (folder / "model.safetensors").stat().st_size > 10_000_000
    assert (folder / "README.md").read_text().startswith("---\nlicense: apache-2.0\n")
    for name in LITE:  # parameters of the weight file = the README figure
        sd = _raw_state_dict(name)
        count = sum(v.numel() for k, v in sd.items() if "running_" not in k and "num_batches" not in k)
        assert count == BUILTIN_BACKBONES[name].params


def _gradio_image(name: str) -> Path:
    spec = importlib.util.find_spec("gradio")
    path = Path(spec.origin).parent / "media_assets" / "images" / name if spec else None
    if path is None or not path.is_file():
        pytest.skip(f"gradio's sample image {name} is not installed")
    return path


def _center_crop(img, size):
    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), resample=2)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return img.crop((left, top, left + size, top + size))


BIG_CATS = {"cheetah", "leopard", "jaguar", "snow leopard", "lion", "tiger", "cougar", "lynx"}


@pytest.mark.parametrize("name", LITE)
def test_imagenet_predictions_on_real_photos(converted, name):
    """gradio ships photos of a cheetah and a lion (ImageNet classes 293 and 291)."""
    from transformers import AutoImageProcessor, EfficientNetForImageClassification

    model = EfficientNetForImageClassification.from_pretrained(converted[name]).eval()
    processor = AutoImageProcessor.from_pretrained(converted[name])
    res = BUILTIN_BACKBONES[name].resolution
    images = [_center_crop(open_rgb(_gradio_image(f)), res) for f in ("cheetah.jpg", "lion.jpg")]
    with torch.no_grad():
        probs = model(**processor(images, return_tensors="pt")).logits.softmax(-1)
    top = [model.config.id2label[int(i)] for i in probs.argmax(-1)]
    assert top[0] in BIG_CATS - {"lion"} and top[1] == "lion", top
    assert probs.max(-1).values.min().item() > 0.25  # lite1 is the least confident: 0.38 and 0.34


def test_pipeline_on_converted_folder(converted):
    from transformers import pipeline

    clf = pipeline("image-classification", model=str(converted["efficientnet-lite0"]), device="cpu")
    out = clf(str(_gradio_image("cheetah.jpg")), top_k=3)
    assert out[0]["label"] == "cheetah"
    assert out[0]["score"] > out[1]["score"] > 0


def test_squeeze_excite_is_an_exact_no_op_with_zero_gradients(converted):
    from transformers import EfficientNetForImageClassification

    assert torch.sigmoid(torch.tensor(30.0)).item() == 1.0
    model = EfficientNetForImageClassification.from_pretrained(converted["efficientnet-lite0"]).train()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))  # any size shows it
    model(pixel_values=x, labels=torch.tensor([1, 2])).loss.backward()
    se_grads = [p.grad for n, p in model.named_parameters() if ".squeeze_excite." in n]
    assert se_grads and all(g is None or not g.any() for g in se_grads)
    assert model.classifier.weight.grad.abs().sum() > 0


def test_stripping_the_no_op_squeeze_excite_keeps_outputs_bit_identical(converted, tiny_model_dir):
    from transformers import EfficientNetForImageClassification

    model = EfficientNetForImageClassification.from_pretrained(converted["efficientnet-lite1"]).eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        before = model(pixel_values=x).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            before_bf16 = model(pixel_values=x).logits
        assert strip_noop_squeeze_excite(model) == len(model.efficientnet.encoder.blocks) == 21
        assert torch.equal(model(pixel_values=x).logits, before)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(model(pixel_values=x).logits, before_bf16)
    # A real squeeze-excite (random weights) is kept.
    tiny = EfficientNetForImageClassification.from_pretrained(tiny_model_dir)
    assert strip_noop_squeeze_excite(tiny) == 0


def test_load_backbone_builtin_gives_fresh_head_and_processor(converted, lite_cache):
    model, processor = load_backbone("efficientnet-lite0", LABELS, cache_dir=lite_cache)
    assert type(model).__name__ == "EfficientNetForImageClassification"
    assert model.config.id2label == {0: "clapping", 1: "running", 2: "sitting"}
    assert model.config.label2id == {"clapping": 0, "running": 1, "sitting": 2}
    assert model.classifier.weight.shape == (3, 1280)
    assert 0.005 < model.classifier.weight.std().item() < 0.015
    assert not model.classifier.bias.any()
    assert processor.size["height"] == 224 and processor.include_top is False
    # The backbone is the pretrained one.
    sd = _raw_state_dict("efficientnet-lite0")
    assert torch.equal(model.efficientnet.embeddings.convolution.weight, sd["_conv_stem.weight"])
    # Batch norms (including the expansion ones transformers builds with PyTorch's default) all use 0.01.
    assert {m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.01}
    pixels = processor([open_rgb(_gradio_image("lion.jpg"))], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 224, 224) and -1.0 <= pixels.min() < 0 < pixels.max() <= 1.0
    with torch.no_grad():
        assert model.eval()(pixel_values=pixels).logits.shape == (1, 3)


def test_builtin_conversion_is_cached_and_reused(converted, lite_cache, monkeypatch):
    folder = converted["efficientnet-lite1"]
    stamp = (folder / "model.safetensors").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(backbones, "convert_efficientnet_lite", fail)
    assert builtin_checkpoint("EfficientNet-Lite1", lite_cache) == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in folder.parent.iterdir() if p.name.startswith(".")] == []  # no temp leftovers


def test_builtin_conversion_survives_losing_a_race_and_cleans_up(tmp_path, monkeypatch):
    real = backbones.convert_efficientnet_lite

    def convert_while_another_process_finishes(variant, out_dir):
        real(variant, out_dir)
        final = Path(out_dir).parent / f"{variant}-v{backbones.CONVERTER_VERSION}"
        real(variant, final)  # the other process renamed its folder into place first
        return Path(out_dir)

    monkeypatch.setattr(backbones, "convert_efficientnet_lite", convert_while_another_process_finishes)
    folder = builtin_checkpoint("efficientnet-lite0", tmp_path)
    assert backbones._is_complete(folder)
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_builtin_conversion_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    def crash(variant, out_dir):
        (Path(out_dir) / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(backbones, "convert_efficientnet_lite", crash)
    with pytest.raises(RuntimeError):
        builtin_checkpoint("efficientnet-lite0", tmp_path)
    assert list((tmp_path / "backbones").iterdir()) == []


def test_env_var_sets_the_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("HAR_MODEL_CACHE", str(tmp_path / "c"))
    assert backbones.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("HAR_MODEL_CACHE")
    assert backbones.default_cache_dir() == Path.home() / ".cache" / "har_model"


def test_load_backbone_local_folder_keeps_head_only_for_the_same_labels(tiny_model_dir):
    from transformers import EfficientNetForImageClassification

    saved = EfficientNetForImageClassification.from_pretrained(tiny_model_dir).classifier.weight
    same, processor = load_backbone(str(tiny_model_dir), ["clapping", "running", "sitting"])
    assert torch.equal(same.classifier.weight, saved)  # continuing from a model trained on these classes
    assert processor.size == {"height": 32, "width": 32}

    renamed, _ = load_backbone(str(tiny_model_dir), ["walking", "sitting", "running"])
    assert renamed.config.id2label == {0: "walking", 1: "sitting", 2: "running"}
    assert not torch.equal(renamed.classifier.weight, saved)
    assert renamed.classifier.weight.std().item() < 0.02 and not renamed.classifier.bias.any()

    more, _ = load_backbone(str(tiny_model_dir), ["a", "b", "c", "d", "e"])
    assert more.classifier.weight.shape[0] == 5 and more.config.num_labels == 5
    assert torch.equal(more.efficientnet.embeddings.convolution.weight,
                       same.efficientnet.embeddings.convolution.weight)


def test_unknown_name_with_the_hub_offline_is_one_clear_error():
    with pytest.raises(HarError) as info:
        load_backbone("no-such-org/no-such-model", LABELS)
    message = str(info.value)
    assert "\n" not in message
    assert "no-such-org/no-such-model" in message and "efficientnet-lite0" in message and "offline" in message


@pytest.mark.parametrize(
    "name, labels, expected",
    [
        ("./missing-model-folder", LABELS, "no such model folder"),
        ("efficientnet-lite0", ["a", "b", "a"], "duplicate class names"),
        ("efficientnet-lite0", ["only"], "at least 2"),
        ("efficientnet-lite0", "abc", "list of class names"),
    ],
)
def test_bad_arguments_raise_har_error(name, labels, expected, tmp_path):
    with pytest.raises(HarError, match=expected):
        load_backbone(name, labels, cache_dir=tmp_path)


def test_folder_without_config_is_rejected(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(HarError, match="no config.json"):
        load_backbone(str(tmp_path), LABELS)


def test_folder_with_a_non_image_model_is_rejected(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(HarError, match="cannot load as an image classifier"):
        load_backbone(str(tmp_path), LABELS)
