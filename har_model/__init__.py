"""har_model: human action recognition from images, the Hugging Face way.

The folder tree is the architecture; each stage imports only earlier stages, the model folder package and the
shared modules, and train and serve never import each other:

    data/          dataset stage: image folders -> validated, de-duplicated, split Hugging Face dataset
    model_folder/  the saved model folder, below train and serve: file names, reading and writing, a folder or Hub
                   id, the run's record, the ONNX export (the one contract between the two)
    train/         training stage: backbones, image cache and augmentation, Trainer, soup, evaluation, reports, the run
    serve/         serving stage: inference, the served model, video, live webcam, the Gradio UI, the Space

Shared modules (imported by any stage, importing no stage):
    errors         HarError, the one user-facing error type (one clear line, no traceback)
    imaging        opening images safely: EXIF orientation, mode conversion to RGB
    preprocessing  the model's image processor reproduced in numpy + Pillow, for training and serving alike
    calibration    temperature scaling and the "unsure" threshold, fitted on validation, applied when serving
    explain        Grad-CAM heatmaps: where the model looked
    hardware       native bf16 on this CPU, accelerators, memory, a one-line machine description
    figures        grids and charts for cards and reports
    cards          dataset / model cards and their Jinja templates
    outputs        output folders the project owns: claiming, publishing whole, what a push may upload
    paths          names from data made safe as file names
    hub            pushing folders to the Hub
    cli            `python train.py [train|prepare|predict|export-onnx|publish-space] ...` (imports no stage itself)
"""

__version__ = "0.1.0"
