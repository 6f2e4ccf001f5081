"""The serving stage: a trained model folder (or Hub id) answering images, batches and videos.

    inference    -- the one fast inference path (ONNX Runtime or torch), `python train.py predict`
    video        -- per-frame classification, smoothing, drawing, segments
    ui           -- the Gradio app

May import the earlier stages and the shared modules.
"""
