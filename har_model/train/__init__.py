"""The training stage: a pretrained backbone fine-tuned with transformers' Trainer on a prepared dataset.

    backbones   -- base model resolution, offline EfficientNet-Lite conversion, a new head for our classes
    augment     -- decoded-image cache and torch augmentation (no torchvision)
    evaluation  -- accuracy, macro-F1, per-class report, confusion matrix (an `evaluate` metric)
    reports     -- metrics.json, figures, examples and the model card of a finished run
    run         -- the command: arguments and the story of one training run

Imports the dataset stage and the shared modules, never the serving stage.
"""
