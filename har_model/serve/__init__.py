"""The serving stage: a trained model folder (or Hub id) answering images, batches, videos and a webcam.

    inference  -- the one fast inference path (ONNX Runtime or torch): Classifier, `python train.py predict`
    model      -- the model the app serves, built once: which model, loading it, one method per action of the page
    inputs     -- what the app receives, checked: uploads, size caps, the "unsure" slider, sampling rates
    settings   -- the app's limits, from HAR_* environment variables
    video      -- per-frame classification of a clip, smoothing, drawing, segments
    live       -- webcam frames classified as they arrive, smoothed over the last seconds
    ui         -- the Gradio page: its layout, bound to the served model's methods
    space      -- `python train.py publish-space`: the app and a model as a Hugging Face Space

Imports the model folder package and the shared modules; never the training or dataset stages (a Space carries
neither).
"""
