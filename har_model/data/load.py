"""Loading datasets: a folder written by ``prepare``, any other dataset folder or a Hub dataset id.

``load_dataset_any`` normalises what it loads to the splits train / validation / test and the columns
``image`` (Image) and ``label`` (ClassLabel); a missing validation or test split is carved out of train with
the same grouped, stratified, seeded split as ``prepare``. ``features_for`` is that schema.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from datasets import ClassLabel, DatasetDict, Features, load_dataset, load_from_disk
from datasets import Image as ImageFeature

from har_model.data.dedup import DEFAULT_NEAR_DUP_THRESHOLD, group_images
from har_model.data.scan import SERIAL_BELOW, analyse_bytes
from har_model.data.splits import SPLITS, check_fractions, grouped_stratified_split
from har_model.errors import HarError
from har_model.hardware import process_pool
from har_model.imaging import DEFAULT_MAX_PIXELS
from har_model.outputs import require_complete


def features_for(class_names: Sequence[str]):
    return Features({"image": ImageFeature(), "label": ClassLabel(names=list(class_names))})



def image_bytes(value: dict) -> bytes:
    """The encoded bytes of an undecoded `datasets.Image` value (its bytes, or the file at its path)."""
    if value.get("bytes"):
        return value["bytes"]
    if value.get("path"):
        with open(value["path"], "rb") as fp:
            return fp.read()
    raise HarError("an image in the dataset has neither bytes nor a path")


def load_dataset_folder(folder: str | os.PathLike):
    """``datasets.load_dataset(folder)`` for a folder written here (parquet + card), as a DatasetDict; a folder
    whose writing did not finish is refused."""
    require_complete(folder)
    return load_dataset(str(folder))


_SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation", "test": "test", "testing": "test"}
_IMAGE_NAMES = ("image", "img", "images", "picture", "photo", "pixel_values")
_LABEL_NAMES = ("label", "labels", "class", "category", "action", "target", "fine_label", "coarse_label")
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def load_dataset_any(
    spec: str | os.PathLike,
    *,
    seed: int = 42,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    num_workers: int | None = None,
    near_dup_threshold: int = DEFAULT_NEAR_DUP_THRESHOLD,
    image_column: str | None = None,
    label_column: str | None = None,
):
    """A DatasetDict with splits train / validation / test and columns ``image`` (Image), ``label`` (ClassLabel).

    ``spec`` is a folder written by ``prepare``, a ``save_to_disk`` folder, any folder ``load_dataset``
    understands, or a Hub dataset id. Columns with other names (``img``, ``labels``, ...) are renamed;
    string labels become a ClassLabel; a missing validation or test split is carved out of train with the
    same grouped, stratified, seeded split as ``prepare`` (duplicates kept together). ``image_column`` /
    ``label_column``: the columns to use, instead of finding them.
    """
    ds = _load_raw(str(spec))
    if not isinstance(ds, DatasetDict):
        ds = DatasetDict({"train": ds})
    ds = _normalise_columns(_normalise_splits(ds, spec), spec, image_column, label_column)
    missing = [s for s in ("validation", "test") if s not in ds]
    if missing:
        ds = _carve_missing_splits(ds, missing, seed, val_fraction, test_fraction, num_workers, near_dup_threshold)
    return DatasetDict({s: ds[s] for s in SPLITS})


def _load_raw(spec: str):
    path = Path(spec)
    if path.exists():
        if not path.is_dir():
            raise HarError(f"{spec}: is a file; --dataset takes a dataset folder or a Hub dataset id")
        require_complete(path)
        if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
            return load_from_disk(str(path))
        if not (path / "README.md").exists() and not any(path.glob("**/*.parquet")):
            raise HarError(f"{spec}: not a dataset folder (no README.md / parquet files); for a folder of class sub-folders use --data-dir")
        try:
            return load_dataset(str(path))
        except Exception as exc:
            raise HarError(f"{spec}: cannot load the dataset folder ({_first_line(exc)})") from None
    if not _HUB_ID.match(spec):
        raise HarError(f"{spec}: no such folder, and not a Hub dataset id (owner/name)")
    try:
        return load_dataset(spec)
    except Exception as exc:
        raise HarError(
            f"{spec}: cannot load this dataset from the Hub ({_first_line(exc)}); check the id, your connection "
            f"(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE must be unset) and, for a private dataset, HF_TOKEN"
        ) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _normalise_splits(ds, spec):
    renamed = {}
    for name in ds:
        target = _SPLIT_ALIASES.get(str(name).lower())
        if target and target not in renamed:
            renamed[target] = ds[name]
    if "train" not in renamed:
        if len(ds) == 1:
            renamed = {"train": next(iter(ds.values()))}
        else:
            raise HarError(f"{spec}: no train split (splits: {', '.join(ds)})")
    return DatasetDict(renamed)


def _normalise_columns(ds, spec, image_column: str | None = None, label_column: str | None = None):
    features = ds["train"].features
    for given, option in ((image_column, "--image-column-name"), (label_column, "--label-column-name")):
        if given is not None and given not in features:
            raise HarError(f"{spec}: no column {given!r} ({option}); columns: {', '.join(features)}")
    if image_column is not None and not isinstance(features[image_column], ImageFeature):
        raise HarError(f"{spec}: column {image_column!r} (--image-column-name) holds no images; columns: "
                       f"{', '.join(features)}")
    image_cols = [c for c, f in features.items() if isinstance(f, ImageFeature)]
    image_col = image_column or next((c for c in _IMAGE_NAMES if c in image_cols), image_cols[0] if image_cols else None)
    if image_col is None:
        raise HarError(f"{spec}: no image column (a column with the datasets Image feature); columns: {', '.join(features)}")
    label_cols = [c for c, f in features.items() if isinstance(f, ClassLabel)]
    label_col = label_column or next((c for c in _LABEL_NAMES if c in label_cols), label_cols[0] if label_cols else None)
    if label_col is None:
        label_col = next((c for c in _LABEL_NAMES if c in features), None)
        if label_col is None:
            raise HarError(f"{spec}: no label column (a ClassLabel, or one named label/labels/class/...); columns: {', '.join(features)}")
    if not isinstance(features[label_col], ClassLabel):  # string (or integer) labels: their values are the classes
        ds = ds.class_encode_column(label_col)
    ds = ds.select_columns([image_col, label_col])
    if image_col != "image":
        ds = ds.rename_column(image_col, "image")
    if label_col != "label":
        ds = ds.rename_column(label_col, "label")
    target = features_for(ds["train"].features["label"].names)
    return ds if all(ds[s].features == target for s in ds) else ds.cast(target)


def _carve_missing_splits(ds, missing, seed, val_fraction, test_fraction, num_workers, threshold):
    """Split the missing validation and/or test split out of train, grouped and stratified."""
    train = ds["train"]
    asked = {"validation": val_fraction, "test": test_fraction}
    fractions = {"train": 1.0 - sum(asked[s] for s in missing), **{s: asked[s] for s in missing}}
    check_fractions(val_fraction, test_fraction)
    raw = train.cast_column("image", ImageFeature(decode=False))
    hashes = hash_images([image_bytes(v) for v in raw["image"]], num_workers)
    groups, _ = group_images([h[0] for h in hashes], [h[1] for h in hashes], [h[2] for h in hashes], threshold)
    names = train.features["label"].names
    idx = grouped_stratified_split(train["label"], groups, names, fractions, seed=seed)
    out = dict(ds)
    for s in fractions:
        out[s] = train.select(idx[s])
    return DatasetDict(out)


def _hash_one(data: bytes) -> tuple[str, int, int] | str:
    res = analyse_bytes(data, min_side=1, max_pixels=DEFAULT_MAX_PIXELS)
    return (res["content_hash"], res["phash"], res["dhash"]) if res["ok"] else res["reason"]


def hash_images(blobs: list[bytes], num_workers: int | None, what: str = "the train split") -> list[tuple[str, int, int]]:
    """(content hash, pHash, dHash) of each encoded image, decoded in a process pool; HarError for one that cannot
    be decoded (`what` names where it is)."""
    workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
    if workers <= 1 or len(blobs) < SERIAL_BELOW:
        results = list(map(_hash_one, blobs))
    else:
        with process_pool(workers) as pool:
            results = pool.map(_hash_one, blobs, chunksize=64)
    for i, r in enumerate(results):
        if isinstance(r, str):
            raise HarError(f"image {i} of {what} cannot be used: {r}")
    return results
