"""Dataset and model cards, rendered with huggingface_hub from the Jinja templates at the repository root.

``render_dataset_card`` fills ``dataset_card.md``: YAML metadata (license, task category, the parquet
``configs`` and ``dataset_info`` with the features, class names and split sizes that
``datasets.load_dataset`` and the Hub viewer read) and a body with class counts, the validation report
summary and figures.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from har_model.errors import HarError

ROOT = Path(__file__).resolve().parents[1]


def _template(name: str) -> str:
    """Path of a card template at the repository root, or HarError when it is missing."""
    path = ROOT / name
    if not path.is_file():
        raise HarError(f"{path}: card template is missing")
    return str(path)


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` examples."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
    for bound, name in bounds:
        if n < bound:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def render_dataset_card(
    *,
    features,
    class_names: Sequence[str],
    counts: Mapping[str, Mapping[str, int]],
    split_bytes: Mapping[str, int],
    download_size: int,
    license: str = "other",
    pretty_name: str | None = None,
    source: str = "",
    summary: Mapping | None = None,
    figures: Mapping[str, str] | None = None,
    data_dir: str = "data",
):
    """A ``huggingface_hub.DatasetCard`` for a parquet dataset repository.

    ``counts[class][split]`` = number of images; ``split_bytes[split]`` = bytes of the split's data;
    ``summary`` = the validation report summary (skipped / duplicates / conflicts; see ``data.py``);
    ``figures`` = {"samples": relative path, "distribution": relative path} for images in the repo.
    """
    from datasets import SplitInfo
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard, DatasetCardData

    splits = list(split_bytes)
    split_sizes = {s: sum(counts[c].get(s, 0) for c in class_names) for s in splits}
    total = sum(split_sizes.values())
    card_data = DatasetCardData(
        license=license,
        task_categories=["image-classification"],
        size_categories=[size_category(total)],
        pretty_name=pretty_name,
        tags=["image-classification", "human-action-recognition"],
    )
    split_dict = SplitDict()
    for s in splits:
        split_dict.add(SplitInfo(name=s, num_bytes=int(split_bytes[s]), num_examples=split_sizes[s]))
    info = DatasetInfo(
        features=features,
        splits=split_dict,
        download_size=int(download_size),
        dataset_size=int(sum(split_bytes.values())),
    )
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    MetadataConfigs(
        {"default": {"data_files": [{"split": s, "path": f"{data_dir}/{s}-*"} for s in splits]}}
    ).to_dataset_card_data(card_data)
    rows = [(c, [counts[c].get(s, 0) for s in splits]) for c in class_names]
    return DatasetCard.from_template(
        card_data,
        template_path=_template("dataset_card.md"),
        pretty_name=pretty_name or "image classification dataset",
        license=license,
        source=source,
        splits=splits,
        split_sizes=split_sizes,
        total=total,
        rows=rows,
        num_classes=len(class_names),
        summary=summary or {},
        figures=figures or {},
    )


def save_card(card, folder: str | os.PathLike) -> Path:
    """Write ``card`` as ``folder/README.md`` and return the path."""
    path = Path(folder) / "README.md"
    card.save(path)
    return path
