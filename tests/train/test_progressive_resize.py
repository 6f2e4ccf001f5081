"""Progressive resizing (--progressive-resize): the crop sizes of each epoch, and a Trainer that really trains on
them, epoch by epoch, and ends at the full size."""

import pytest
import torch
from transformers import AutoModelForImageClassification, TrainingArguments

import helpers
from har_model.preprocessing import load_preprocessing
from har_model.train.augment import crop_size_schedule
from har_model.train.image_cache import CachedImages
from har_model.train.trainer import HarTrainer, ProgressiveResize


@pytest.mark.parametrize("start, full, epochs, sizes", [
    (192, 256, 4, [192, 224, 256, 256]),  # grows over the first half, rounded to the stride (32)
    (160, 256, 5, [160, 192, 224, 256, 256]),
    (192, 256, 1, [256]),  # one epoch: nothing to grow over
    (0, 256, 3, [256, 256, 256]),  # off
    (320, 256, 3, [256, 256, 256]),  # not smaller than the crops: off
])
def test_the_sizes_grow_to_the_full_crop_by_the_middle_of_the_run(start, full, epochs, sizes):
    assert crop_size_schedule(start, full, epochs) == sizes


def test_a_trainer_trains_each_epoch_at_its_size_and_ends_at_the_full_size(tmp_path):
    model_dir = helpers.make_tiny_model(tmp_path / "m", image_size=96)
    model = AutoModelForImageClassification.from_pretrained(model_dir)
    prep = load_preprocessing(model_dir)
    pixels = torch.randint(0, 256, (8, 3, 110, 110), dtype=torch.uint8)
    data = CachedImages(pixels, [i % 3 for i in range(8)], prep, augment=True)
    assert data.augmenter.out_hw == (96, 96)
    seen = []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append((int(trainer.state.epoch), kw["pixel_values"].shape[-1])),
                                    with_kwargs=True)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, report_to="none",
                             use_cpu=True, num_train_epochs=4, save_strategy="no", eval_strategy="no")
    trainer = HarTrainer(model=model, args=args, train_dataset=data,
                         callbacks=[ProgressiveResize(32, data.augmenter)])
    trainer.train()
    assert sorted(set(seen)) == [(0, 32), (1, 64), (2, 96), (3, 96)]  # two steps an epoch, each at its epoch's size
    assert data.augmenter.out_hw == (96, 96)  # back to the full size after training
