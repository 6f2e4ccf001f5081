"""har_model: human action recognition from images, the Hugging Face way.

The folder tree is the architecture; each stage imports only earlier stages and the shared modules:

    data/       dataset stage: image folders -> validated, de-duplicated, split Hugging Face dataset
    train/      training stage: backbones, image cache and augmentation, Trainer, evaluation, reports, the run
    serve/      serving stage: inference, ONNX export, video, the Gradio UI

Shared modules (imported by any stage, importing no stage):
    errors      HarError, the one user-facing error type (one clear line, no traceback)
    imaging     opening images safely: EXIF orientation, mode conversion to RGB
    preprocessing  the model's image processor reproduced in numpy + Pillow, for training and serving alike
    hardware    native bf16 on this CPU, a one-line machine description
    figures     grids and charts for cards and reports
    cards       dataset / model cards and their Jinja templates
    hub         pushing folders to the Hub
    cli         `python train.py [train|prepare|predict|export-onnx] ...`
"""

__version__ = "0.1.0"
