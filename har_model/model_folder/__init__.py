"""The model folder: the one contract between training and serving, below both stages (it imports neither).

    files        -- its file names (config.json, metrics.json, onnx/model.onnx, ...) and reading its small files
    resolve      -- a local folder or a Hub model id -> a folder on disk; copying some of its files
    record       -- the resolved record of the run that wrote it (sizes, recipe, augmentation), written once
    write        -- writing its files (the processor, metrics.json, the card, examples)
    torch_model  -- its weights as a torch model for inference, with the graph clean-up (no-op squeeze-excite)
    onnx         -- `python train.py export-onnx`: the ONNX export (+ int8) and its check against torch
    int8         -- the static int8 copy of the export and the agreement gate that decides whether it is served

Training writes a model folder (har_model.train.reports), serving reads one (har_model.serve); each meets the other
only here. Imports no stage; torch, transformers and onnxruntime only inside the functions that need them.
"""
