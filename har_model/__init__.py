"""har_model: human action recognition from images, the Hugging Face way.

Modules (one place for each thing):
    errors      -- HarError, the one user-facing error type (one clear line, no traceback)
    imaging     -- opening images safely: EXIF orientation, mode conversion to RGB
    data        -- image folders -> validated, de-duplicated, split DatasetDict + dataset repo folder
    backbones   -- base model resolution, offline EfficientNet-Lite conversion
    augment     -- torch/PIL augmentation (no torchvision)
    training    -- fine-tuning with transformers' Trainer
    evaluation  -- metrics with `evaluate`, reports
    plots       -- curves, confusion matrix, grids, charts
    cards       -- dataset / model card rendering
    hub         -- pushing folders to the Hub
    inference   -- the one fast inference path (torch bf16 / ONNX Runtime)
    video       -- per-frame classification, smoothing, drawing, segments
    ui          -- the Gradio app
    cli         -- `python train.py [prepare|train|predict|export-onnx] ...`
"""

__version__ = "0.1.0"
