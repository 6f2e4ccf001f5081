"""The model folder: the one contract between training and serving, below both stages (it imports neither).

    files        -- its file names (config.json, metrics.json, onnx/model.onnx, ...) and reading its small files
    resolve      -- a local folder or a Hub model id -> a folder on disk; copying some of its files
    torch_model  -- its weights as a torch model for inference, with the graph clean-up (no-op squeeze-excite)
    onnx         -- `python train.py export-onnx`: the ONNX export (+ int8) and its check against torch

Training writes a model folder (har_model.train.reports, .run), serving reads one (har_model.serve); each meets
the other only here. This package imports no stage and, itself, nothing heavy: torch, transformers and onnxruntime
only inside the functions that need them.
"""
