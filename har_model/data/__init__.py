"""The dataset stage: image folders -> validated, de-duplicated, split Hugging Face dataset repository.

    options -- the data options (DataArguments), shared by `prepare` and `train`
    scan    -- walk class folders, decode and check every file, content and perceptual hashes
    dedup   -- group exact and near duplicates
    splits  -- grouped, stratified, seeded train / validation / test split
    balance -- class imbalance (largest / smallest class) and when it counts as imbalanced
    build   -- ``prepare``: the whole pipeline, parquet shards, report, card and figures
    load    -- read back a prepared folder, any dataset folder or a Hub dataset id, normalised
    unlabeled -- --unlabeled-dir: unlabelled photos and video frames, checked and kept apart from every split

Nothing here imports the training or serving stages.
"""

from har_model.data.build import REPORT_FILE, dataset_from_args, main, prepare_dataset, write_dataset_repo
from har_model.data.load import features_for, image_bytes, load_dataset_any, load_dataset_folder
from har_model.data.options import DataArguments, add_data_arguments

__all__ = [
    "REPORT_FILE", "DataArguments", "add_data_arguments", "dataset_from_args", "features_for", "image_bytes", "load_dataset_any",
    "load_dataset_folder", "main", "prepare_dataset", "write_dataset_repo",
]
