"""The frozen stem and early blocks as an inference network during training (har_model.train.frozen_prefix): the
same function as the stock layers, the stock layers untouched and back after each step, and no fast path for a
model it cannot reproduce."""

import contextlib
import copy

import pytest
import torch
from transformers import AutoModelForImageClassification

import helpers
from har_model.train.frozen_prefix import FrozenPrefix
from har_model.train.trainer import freeze_early_layers


def tiny(tmp_path, lite_se: bool = False, frozen: int = 1):
    """The tiny EfficientNet with non-trivial batch-norm statistics (so folding is tested), its first `frozen`
    blocks frozen; `lite_se`: squeeze-and-excitation layers set as the Lite conversion sets them (a pass-through)."""
    model = AutoModelForImageClassification.from_pretrained(helpers.make_tiny_model(tmp_path / "m"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        if lite_se:
            for block in model.efficientnet.encoder.blocks:
                block.squeeze_excite.expand.weight.zero_()
                block.squeeze_excite.expand.bias.fill_(30.0)
    freeze_early_layers(model, frozen)
    return model


def deeper(frozen: int = 4):
    """An EfficientNet whose frozen prefix has what the tiny one lacks: expansion layers, a stride-2 block (its zero
    padding), repeated blocks with residual connections and dropout (rate growing with depth), random statistics."""
    from transformers import EfficientNetConfig, EfficientNetForImageClassification

    torch.manual_seed(0)
    config = EfficientNetConfig(image_size=64, width_coefficient=0.25, depth_coefficient=1.0, hidden_dim=320,
                                kernel_sizes=[3, 3, 5], in_channels=[32, 16, 24], out_channels=[16, 24, 40],
                                strides=[1, 2, 2], num_block_repeats=[1, 2, 2], expand_ratios=[1, 6, 6],
                                depthwise_padding=[], drop_connect_rate=0.4, hidden_act="relu6", num_labels=3)
    model = EfficientNetForImageClassification(config)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    freeze_early_layers(model, frozen)
    return model


def pixels(n=4, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("lite_se", [False, True])
def test_the_prefix_computes_what_the_stock_layers_compute(tmp_path, lite_se):
    model = tiny(tmp_path, lite_se=lite_se).eval()
    prefix = FrozenPrefix.build(model)
    assert prefix is not None and len(prefix.blocks) == 1
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in prefix.fast.modules())  # folded away
    skipped = [type(b.squeeze_excite).__name__ for b in prefix.fast[1:]]
    assert skipped == (["Identity"] if lite_se else ["EfficientNetSqueezeExciteLayer"])  # only a true pass-through
    x = pixels()
    with torch.no_grad():
        want = model(pixel_values=x).logits
        with prefix.replacing(train=False):
            got = model(pixel_values=x).logits
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (got - want).abs().max()


def test_within_the_context_the_copy_runs_and_after_it_the_stock_layers_again(tmp_path):
    model = tiny(tmp_path).eval()
    prefix = FrozenPrefix.build(model)
    x = pixels()
    with torch.no_grad():
        want = model(pixel_values=x).logits.clone()
        model.efficientnet.encoder.blocks[0].projection.project_conv.weight.mul_(-3)  # the stock block changes
        with prefix.replacing(train=False):
            inside = model(pixel_values=x).logits
        after = model(pixel_values=x).logits
    assert torch.allclose(inside, want, atol=1e-5)  # the copy made at build time ran, not the changed block
    assert not torch.allclose(after, want, atol=1e-3)  # the changed stock block runs again
    assert "forward" not in vars(model.efficientnet.embeddings)  # nothing of the swap left on the model
    assert "forward" not in vars(model.efficientnet.encoder.blocks[0])


def test_a_training_step_gets_the_stock_gradients_and_leaves_the_frozen_weights(tmp_path):
    """Dropout off (so both steps see one function): the trainable weights' gradients are the stock ones."""
    stock = tiny(tmp_path)
    for m in stock.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    fast_model = copy.deepcopy(stock)
    prefix = FrozenPrefix.build(fast_model)
    frozen_before = {k: v.clone() for k, v in fast_model.state_dict().items() if "blocks.0." in k or "embeddings" in k}
    x, y = pixels(8), torch.randint(0, 3, (8,), generator=torch.Generator().manual_seed(2))
    grads = []
    for model, ctx in ((stock, None), (fast_model, prefix)):
        model.train()
        for m in model.modules():  # the trainer keeps frozen batch norms in eval mode
            if isinstance(m, torch.nn.BatchNorm2d) and not m.weight.requires_grad:
                m.eval()
        if ctx is None:
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
        else:
            with ctx.replacing(train=True):
                loss = torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y)
        loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        assert torch.allclose(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4), name
    assert all(p.grad is None for n, p in fast_model.named_parameters() if not p.requires_grad)
    assert all(torch.equal(fast_model.state_dict()[k], v) for k, v in frozen_before.items())
    assert fast_model.state_dict().keys() == stock.state_dict().keys()


def test_bf16_prefix_stays_as_close_to_float32_as_autocast(tmp_path):
    model = tiny(tmp_path, lite_se=True).eval()
    prefix = FrozenPrefix.build(model, torch.bfloat16)
    assert prefix.fast[0].convolution.weight.dtype == torch.bfloat16
    x = pixels()
    with torch.no_grad():
        exact = model(pixel_values=x).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            stock = model(pixel_values=x).logits.float()
            with prefix.replacing(train=False):
                fast = model(pixel_values=x).logits.float()
    assert (fast - exact).abs().max() <= 2 * (stock - exact).abs().max() + 1e-2


def test_no_prefix_where_it_cannot_be_reproduced(tmp_path, monkeypatch, capsys):
    assert FrozenPrefix.build(tiny(tmp_path / "a", frozen=0)) is None  # nothing frozen
    other = tiny(tmp_path / "v")
    other.backbone = other.efficientnet
    del other.efficientnet  # not transformers' EfficientNet layout
    assert FrozenPrefix.build(other) is None
    model = tiny(tmp_path / "b")
    model.efficientnet.embeddings.convolution.weight.requires_grad_(True)  # a trainable stem: not a frozen prefix
    assert FrozenPrefix.build(model) is None
    from har_model.train import frozen_prefix

    fold = frozen_prefix._fold

    def bad_fold(module):  # a copy that disagrees
        fold(module)
        module.apply(lambda c: c.weight.data.mul_(1.5) if isinstance(c, torch.nn.Conv2d) else None)

    monkeypatch.setattr(frozen_prefix, "_fold", bad_fold)
    monkeypatch.setattr(frozen_prefix, "_WARNED", set())
    capsys.readouterr()
    assert FrozenPrefix.build(tiny(tmp_path / "c")) is None
    assert "(the folded copy disagrees with them on a test input)" in capsys.readouterr().err
    model = tiny(tmp_path / "d")
    capsys.readouterr()
    assert FrozenPrefix.build(model) is None and "stock layers" not in capsys.readouterr().err  # said once


def _trainer(tmp_path, model, bf16: bool = False):
    from transformers import TrainingArguments

    from har_model.train.trainer import HarTrainer
    from har_model.train.evaluation import compute_metrics_fn

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {"pixel_values": pixels(1, seed=i)[0], "labels": torch.tensor(i % 3)}

    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4,
                             per_device_eval_batch_size=4, report_to="none", use_cpu=True, bf16=bf16,
                             num_train_epochs=1, save_strategy="no")
    return HarTrainer(model=model, args=args, train_dataset=Data(), eval_dataset=Data(),
                      compute_metrics=compute_metrics_fn(list(helpers.CLASSES)))


def test_the_trainer_evaluates_and_trains_through_the_prefix_made_for_the_weights_of_each_call(tmp_path):
    """Evaluation gives the stock predictions; a prefix is made anew for each call (a checkpoint loaded between
    two calls is what the next one computes); fast_frozen_blocks False: the stock layers."""
    model = tiny(tmp_path)
    trainer = _trainer(tmp_path, model)
    ran = []
    stock = trainer.predict(trainer.eval_dataset).predictions
    prefix = trainer.frozen_prefix
    assert isinstance(prefix, FrozenPrefix)
    prefix.fast.register_forward_hook(lambda *a: ran.append(1))
    assert stock.shape == (8, 3)
    trainer.fast_frozen_blocks = False
    reference = trainer.predict(trainer.eval_dataset).predictions
    assert trainer.frozen_prefix is None and not ran
    assert torch.allclose(torch.as_tensor(stock), torch.as_tensor(reference), atol=1e-5)
    trainer.fast_frozen_blocks = True
    with torch.no_grad():  # as if a checkpoint with other frozen weights were loaded
        model.efficientnet.embeddings.convolution.weight.mul_(0.5)
    changed = trainer.predict(trainer.eval_dataset).predictions
    assert trainer.frozen_prefix is not prefix and not ran  # a new copy, made from the loaded weights
    trainer.fast_frozen_blocks = False
    assert torch.allclose(torch.as_tensor(changed), torch.as_tensor(trainer.predict(trainer.eval_dataset).predictions),
                          atol=1e-5)
    trainer.fast_frozen_blocks = True
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer.train()
    assert isinstance(trainer.frozen_prefix, FrozenPrefix)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items() if k.startswith("efficientnet.embeddings"))
    assert not torch.equal(after["classifier.weight"], before["classifier.weight"])  # the rest trained


def test_a_bf16_prefix_hands_float32_on_outside_autocast(tmp_path):
    model = tiny(tmp_path).eval()
    prefix = FrozenPrefix.build(model, torch.bfloat16)
    with torch.no_grad(), prefix.replacing(train=False):
        logits = model(pixel_values=pixels()).logits
    assert logits.dtype == torch.float32


def test_in_training_the_prefix_draws_the_same_dropout_and_gives_the_stock_output():
    """Train mode, float32, one seed for both: the prefix (expansions, stride-2 padding, residual blocks with
    dropout, all folded) gives the stock output and the stock dropout masks; in eval mode no dropout at all."""
    model = deeper()
    blocks = model.efficientnet.encoder.blocks
    assert len(blocks) == 5 and any(b.projection.apply_dropout and b.projection.dropout.p > 0 for b in blocks[:4])
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d) and not m.weight.requires_grad:
            m.eval()  # as the trainer keeps them
    prefix = FrozenPrefix.build(model)
    assert prefix is not None and len(prefix.blocks) == 4 and prefix.dropouts
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in prefix.fast.modules())
    x = pixels(4, 64)
    outs = []
    for fast in (False, True, False):
        torch.manual_seed(7)
        with torch.no_grad(), prefix.replacing(train=True) if fast else contextlib.nullcontext():
            outs.append(model(pixel_values=x).logits)
    assert not torch.allclose(outs[0], model.eval()(pixel_values=x).logits, atol=1e-4)  # dropout did act
    assert torch.allclose(outs[1], outs[0], atol=1e-4, rtol=1e-4) and torch.equal(outs[2], outs[0])
    with torch.no_grad(), prefix.replacing(train=False):
        assert torch.allclose(model(pixel_values=x).logits, model.eval()(pixel_values=x).logits, atol=1e-4)
    assert all(not m.training for m in model.modules())  # replacing() left the model's modes alone


def test_a_batch_norm_that_cannot_be_folded_leaves_the_stock_layers(monkeypatch, capsys):
    from har_model.train import frozen_prefix

    monkeypatch.setattr(frozen_prefix, "_CONV_BN", frozen_prefix._CONV_BN[:-1])  # project_bn stays a batch norm
    monkeypatch.setattr(frozen_prefix, "_WARNED", set())
    assert FrozenPrefix.build(deeper()) is None
    assert "the frozen blocks run through the stock layers" in capsys.readouterr().err


def test_no_prefix_for_a_model_cast_for_evaluation():
    assert FrozenPrefix.build(deeper().to(torch.bfloat16)) is None  # --bf16_full_eval casts the model itself


def test_with_bf16_autocast_the_trainer_uses_a_bf16_prefix_close_to_the_stock_layers(tmp_path):
    trainer = _trainer(tmp_path, tiny(tmp_path, lite_se=True), bf16=True)
    fast = torch.as_tensor(trainer.predict(trainer.eval_dataset).predictions).float()
    assert trainer.frozen_prefix.fast[0].convolution.weight.dtype == torch.bfloat16
    trainer.fast_frozen_blocks = False
    stock = torch.as_tensor(trainer.predict(trainer.eval_dataset).predictions).float()
    assert torch.allclose(fast, stock, atol=0.05 * float(stock.abs().max()))
    trainer.fast_frozen_blocks = True
    trainer.train()  # a bf16 training step through the prefix
    assert isinstance(trainer.frozen_prefix, FrozenPrefix)
