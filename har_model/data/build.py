"""Image folders -> validated, de-duplicated, stratified-split Hugging Face dataset repository.

    python train.py prepare --data-dir DIR --output-dir OUT [--seed 42] [--val-fraction 0.1] ...

``prepare_dataset`` walks ``DIR/<class>/...``, decodes every file once in a process pool (bad files are
skipped and reported, never fatal), groups exact and near duplicates, drops label conflicts, splits
by class without ever splitting a group, and writes OUT in the layout of a Hub dataset repository:

    OUT/README.md                 dataset card (YAML: configs, features with class names, split sizes)
    OUT/data/{split}-NNNNN-of-NNNNN.parquet
    OUT/data_report.json          every skipped / duplicate / conflicting / converted file and why
    OUT/images/*.png|jpg          class distribution chart, per-class sample grid
    OUT/.har_model.json           the marker: written by har_model, complete, which files (har_model.outputs)

The folder is written into a hidden staging folder and moved into place only when complete, so a failed or
interrupted run leaves the previous dataset; the input is checked before anything is written. An existing folder
that har_model did not write is refused unless --overwrite is given.

``datasets.load_dataset(OUT)`` returns the splits train / validation / test with columns ``image``
(Image) and ``label`` (ClassLabel, names = sorted class folder names); ``har_model.data.load`` reads it back.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Image as ImageFeature
from PIL import Image
from tqdm.auto import tqdm

from har_model import cards, figures
from har_model.data.balance import IMBALANCE_RATIO, class_balance
from har_model.data.dedup import DEFAULT_NEAR_DUP_THRESHOLD, group_images
from har_model.data.options import DataArguments, HelpFormatter, add_data_arguments, parse_data_arguments
from har_model.data.load import features_for, image_bytes, load_dataset_any, load_dataset_folder
from har_model.data.scan import (DEFAULT_MIN_SIDE, Candidate, Skipped, analyse_files, check_data_dir,
                                 list_candidates)
from har_model.data.splits import SPLITS, check_fractions, grouped_stratified_split
from har_model.errors import HarError, command
from har_model.hub import push_folder
from har_model.imaging import DEFAULT_MAX_PIXELS
from har_model.outputs import Publication, claim_output_dir

REPORT_FILE = "data_report.json"
DATA_DIR = "data"
MAX_SHARD_BYTES = 500 * 1024 * 1024
ROW_GROUP_SIZE = 100  # rows per parquet row group, as datasets uses for image data (fast random access)
SAMPLES_PER_CLASS = 6


# ----------------------------------------------------------------------------------------------- CLI


def _options(args: DataArguments) -> dict:
    return {
        "seed": args.seed,
        "val_fraction": args.val_fraction,
        "test_fraction": args.test_fraction,
        "num_workers": args.num_workers,
        "near_dup_threshold": args.near_dup_threshold,
    }


def dataset_from_args(args: DataArguments, dataset_dir: Path, *, overwrite: bool = False, build: bool = True,
                      shown_as: Path | None = None):
    """Build from ``args.data_dir`` (writing the repository folder to ``dataset_dir``) or load ``args.dataset``.
    ``build=False``: another process of the same run has built ``dataset_dir`` already; read it.
    ``shown_as``: where the folder will be once published, when ``dataset_dir`` lies in a staging folder."""
    if bool(args.data_dir) == bool(args.dataset):
        raise HarError("give exactly one of --data-dir (a folder of class sub-folders) or --dataset (a dataset folder or Hub id)")
    columns = {"image_column": args.image_column_name, "label_column": args.label_column_name}
    if args.data_dir and any(columns.values()):
        raise HarError("--image-column-name / --label-column-name name the columns of --dataset; with --data-dir the "
                       "class is the name of each image's sub-folder")
    if args.data_dir and not build:
        return load_dataset_folder(dataset_dir)
    if args.data_dir:
        return prepare_dataset(
            args.data_dir, dataset_dir, min_side=args.min_side, max_pixels=args.max_pixels, license=args.license,
            overwrite=overwrite, shown_as=shown_as, **_options(args)
        )
    return load_dataset_any(args.dataset, **columns, **_options(args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=command("prepare"),
        formatter_class=HelpFormatter,
        allow_abbrev=False,  # an option is never matched by a prefix of its name
        description="Validate, de-duplicate and split an image folder (or re-publish a dataset) as a Hugging Face dataset repository folder.",
    )
    add_data_arguments(parser)
    parser.add_argument("--output-dir", required=True, help="folder to write (README.md, data/*.parquet, report)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an existing folder that har_model did not create (its other files are kept)")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the folder as a Hub dataset repository")
    parser.add_argument("--private", action="store_true", help="create the Hub repository as private")
    args = parser.parse_args(argv)
    data, out = parse_data_arguments(args), Path(args.output_dir)
    if args.data_dir and not args.dataset:
        dataset_from_args(data, out, overwrite=args.overwrite)
    else:
        ds = dataset_from_args(data, out)
        write_dataset_repo(ds, out, license=args.license, source=Path(args.dataset).name, overwrite=args.overwrite,
                           inputs=[args.dataset])
        print(f"wrote {out} ({', '.join(f'{s}: {len(ds[s])}' for s in SPLITS)})")
    if args.push_to_hub:
        url = push_folder(out, args.push_to_hub, repo_type="dataset", private=args.private)
        print(f"pushed {out} to {url}")
    return 0


# ------------------------------------------------------------------------------------ build from folder


@dataclass
class Listing:
    """The input folder as listed, before anything is decoded."""

    data_dir: str | os.PathLike  # as the user gave it (named in errors)
    root: Path  # resolved
    candidates: list[Candidate]  # the image files found, each with its class
    skipped: list[Skipped]  # what was skipped already (hidden files, non-images, ...); decoding adds more
    class_dirs: list[str]


@dataclass(frozen=True)
class BuildOptions:
    """How ``prepare_dataset`` checks, splits and describes the images."""

    seed: int
    fractions: dict  # validation and test fractions (check_fractions)
    min_side: int
    max_pixels: int
    num_workers: int | None
    near_dup_threshold: int
    license: str
    pretty_name: str | None
    progress: bool


@dataclass
class SplitContents:
    """What was written per split, for the card and the figures."""

    class_names: list[str]
    counts: dict  # class -> split -> images
    split_bytes: dict  # split -> bytes written
    samples: dict  # class -> a few encoded training images
    features: object  # the datasets Features (image, label with the class names)


def prepare_dataset(
    data_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    seed: int = 42,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    min_side: int = DEFAULT_MIN_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    num_workers: int | None = None,
    near_dup_threshold: int = DEFAULT_NEAR_DUP_THRESHOLD,
    license: str = "other",
    pretty_name: str | None = None,
    progress: bool = True,
    verbose: bool = True,
    overwrite: bool = False,
    shown_as: str | os.PathLike | None = None,
):
    """Validate, de-duplicate and split ``data_dir``; write the repository folder; return its DatasetDict.

    The input is checked before anything is written; the folder is published whole (``har_model.outputs``).
    ``shown_as``: the folder's name in the summary, when ``output_dir`` is inside a staging folder."""
    options = BuildOptions(seed=seed, fractions=check_fractions(val_fraction, test_fraction), min_side=min_side,
                           max_pixels=max_pixels, num_workers=num_workers, near_dup_threshold=near_dup_threshold,
                           license=license, pretty_name=pretty_name, progress=progress)
    root = check_data_dir(data_dir).resolve()
    listing = Listing(data_dir, root, *list_candidates(root))
    _require_two_classes(data_dir, sorted({c.class_name for c in listing.candidates}))
    out = claim_output_dir(output_dir, "dataset", overwrite=overwrite, inputs=[data_dir])
    with Publication(out, "dataset") as stage:
        report = _build(stage, listing, options)
    if verbose:
        print_summary(report, Path(shown_as or out))
    return load_dataset_folder(out)


def _build(out: Path, listing: Listing, options: BuildOptions) -> dict:
    """Everything ``prepare_dataset`` writes, into ``out`` (the staging folder); returns the report."""
    (out / DATA_DIR).mkdir()
    candidates, skipped = listing.candidates, listing.skipped
    with tempfile.TemporaryFile(dir=out, prefix=".spool-") as spool:
        images, more_skipped = _analyse_all(listing, options, spool)
        skipped += more_skipped
        class_names = sorted({im["class_name"] for im in images})
        for name in listing.class_dirs:
            if name not in class_names and any(c.class_name == name for c in candidates):
                skipped.append(Skipped(name + "/", "no usable images left in this class folder", "empty-class"))
        _require_two_classes(listing.data_dir, class_names)
        label_of = {name: i for i, name in enumerate(class_names)}
        for im in images:
            im["label"] = label_of[im["class_name"]]
        groups, exact_copy = group_images(
            [im["content_hash"] for im in images], [im["phash"] for im in images], [im["dhash"] for im in images],
            options.near_dup_threshold,
        )
        dedup = _resolve_duplicates(images, groups, exact_copy, class_names)
        keep = dedup.pop("keep")
        split_idx = grouped_stratified_split(
            [images[i]["label"] for i in keep], [groups[i] for i in keep], class_names, options.fractions,
            seed=options.seed,
        )
        rows = {s: [images[keep[j]] for j in split_idx[s]] for s in SPLITS}
        features = features_for(class_names)
        split_bytes = {}
        for s in SPLITS:
            payloads = (_spool_read(spool, im) for im in rows[s])
            split_bytes[s] = _write_split(out, s, payloads, len(rows[s]), sum(im["length"] for im in rows[s]), features)
        counts = {c: {s: 0 for s in SPLITS} for c in class_names}
        for s in SPLITS:
            for im in rows[s]:
                counts[im["class_name"]][s] += 1
        samples = {c: [] for c in class_names}
        for im in rows["train"]:
            if len(samples[im["class_name"]]) < SAMPLES_PER_CLASS:
                samples[im["class_name"]].append(_spool_read(spool, im)[0])
    report = _report(listing, options, images, dedup, counts, class_names)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _write_card_and_figures(out, SplitContents(class_names, counts, split_bytes, samples, features),
                            license=options.license, pretty_name=options.pretty_name, source=listing.root.name,
                            summary=report["summary"])
    return report


def _require_two_classes(data_dir, class_names: list[str]) -> None:
    if len(class_names) < 2:
        found = f"only '{class_names[0]}'" if class_names else "none"
        raise HarError(f"{data_dir}: at least two class folders with usable images are needed, found {found}")


def _analyse_all(listing: Listing, options: BuildOptions, spool) -> tuple[list[dict], list[Skipped]]:
    """Decode + hash every candidate (process pool); payloads go to ``spool``, metadata is returned."""
    candidates, progress = listing.candidates, options.progress
    tasks = [(str(listing.root / c.path), options.min_side, options.max_pixels) for c in candidates]
    images: list[dict] = []
    skipped: list[Skipped] = []
    bar = tqdm(total=len(tasks), desc="decode + hash", unit="img", disable=not progress, file=sys.stderr)
    results = analyse_files(tasks, options.num_workers)
    try:
        for cand, res in zip(candidates, results):
            bar.update()
            if not res["ok"]:
                skipped.append(Skipped(cand.path, res["reason"], res["kind"]))
                continue
            payload = res.pop("bytes")
            res.update(path=cand.path, class_name=cand.class_name, offset=spool.tell(), length=len(payload))
            spool.write(payload)
            images.append(res)
    finally:
        bar.close()
        results.close()  # stops the pool
    return images, skipped


def _spool_read(spool, im: dict) -> tuple[bytes, str, int]:
    spool.seek(im["offset"])
    return spool.read(im["length"]), im["path"], im["label"]


def _resolve_duplicates(images: list[dict], groups: list[int], exact_copy: list[bool], class_names) -> dict:
    """Which images to keep; exact-duplicate, near-duplicate and label-conflict groups for the report.

    Policy: a group whose images come from more than one class is a label conflict and is dropped
    entirely (we cannot know the right label); an exact copy of an earlier image of the same class is
    dropped (one copy kept); near duplicates are kept, and the split keeps each group together.
    """
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    conflicts, near_groups, exact_groups = [], [], []
    drop = set()
    for g, idx in members.items():
        if len(idx) < 2:
            continue
        paths = [images[i]["path"] for i in idx]
        classes = sorted({images[i]["class_name"] for i in idx})
        if len(classes) > 1:
            conflicts.append({"classes": classes, "paths": paths})
            drop.update(idx)
            continue
        by_hash: dict[str, list[int]] = defaultdict(list)
        for i in idx:
            by_hash[images[i]["content_hash"]].append(i)
        exact_groups += [[images[i]["path"] for i in same] for same in by_hash.values() if len(same) > 1]
        drop.update(i for i in idx if exact_copy[i])
        if len(by_hash) > 1:
            near_groups.append(paths)
    keep = [i for i in range(len(images)) if i not in drop]
    return {"keep": keep, "label_conflicts": conflicts, "exact_duplicates": exact_groups, "near_duplicates": near_groups}


def _report(listing: Listing, options: BuildOptions, images, dedup, counts, class_names) -> dict:
    candidates, skipped = listing.candidates, listing.skipped
    found = Counter(c.class_name for c in candidates)
    usable = Counter(im["class_name"] for im in images)
    exact_removed = sum(len(g) - 1 for g in dedup["exact_duplicates"])
    conflict_images = sum(len(c["paths"]) for c in dedup["label_conflicts"])
    per_class = {
        c: {"files": found[c], "usable": usable[c], **counts[c], "total": sum(counts[c].values())} for c in class_names
    }
    summary = {
        "files_found": len(candidates),
        "skipped_total": sum(1 for s in skipped if s.kind != "empty-class"),
        "skipped_by_kind": dict(sorted(Counter(s.kind for s in skipped if s.kind != "empty-class").items())),
        "empty_class_folders": sorted({s.path.rstrip("/") for s in skipped if s.kind == "empty-class"}),
        "converted": sum(1 for im in images if im["converted"]),
        "exact_duplicates_removed": exact_removed,
        "near_duplicate_groups": len(dedup["near_duplicates"]),
        "near_duplicate_images": sum(len(g) for g in dedup["near_duplicates"]),
        "label_conflicts": len(dedup["label_conflicts"]),
        "conflict_images_dropped": conflict_images,
        "near_dup_threshold": options.near_dup_threshold,
        "seed": options.seed,
        "fractions": options.fractions,
        "split_sizes": {s: sum(counts[c][s] for c in class_names) for s in SPLITS},
        "class_balance": class_balance({c: per_class[c]["total"] for c in class_names}),
        "report_file": REPORT_FILE,
    }
    return {
        "source": listing.root.name,  # the folder's name only: the report is pushed, a local path would leak user names
        "classes": list(class_names),
        "summary": summary,
        "per_class": per_class,
        "skipped": [{"path": s.path, "reason": s.reason, "kind": s.kind} for s in skipped],
        "label_conflicts": dedup["label_conflicts"],
        "exact_duplicates": dedup["exact_duplicates"],
        "near_duplicates": dedup["near_duplicates"],
        "converted": [{"path": im["path"], "conversion": im["converted"]} for im in images if im["converted"]],
    }


def print_summary(report: dict, out: Path, file=None) -> None:
    """The human-readable summary of a report: per-class counts, then what was skipped and why."""
    file = file or sys.stdout
    s = report["summary"]
    width = max(len(c) for c in report["classes"]) + 2
    print(f"\n{'class':<{width}}{'files':>7}{'usable':>8}{'train':>7}{'val':>6}{'test':>6}", file=file)
    for c, row in report["per_class"].items():
        print(f"{c:<{width}}{row['files']:>7}{row['usable']:>8}{row['train']:>7}{row['validation']:>6}{row['test']:>6}", file=file)
    sizes = s["split_sizes"]
    print(f"{'total':<{width}}{s['files_found']:>7}{'':>8}{sizes['train']:>7}{sizes['validation']:>6}{sizes['test']:>6}", file=file)
    print(
        f"\nskipped {s['skipped_total']} file(s); converted to RGB {s['converted']}; exact duplicates removed "
        f"{s['exact_duplicates_removed']}; near-duplicate groups {s['near_duplicate_groups']} "
        f"({s['near_duplicate_images']} images, kept within one split); label conflicts {s['label_conflicts']} "
        f"({s['conflict_images_dropped']} images dropped)",
        file=file,
    )
    balance = s.get("class_balance")
    if balance:
        print(
            f"class balance: largest '{balance['largest']}' ({balance['largest_count']} images) / smallest "
            f"'{balance['smallest']}' ({balance['smallest_count']}) = {balance['ratio']:.2f}x"
            + (f", imbalanced (above {IMBALANCE_RATIO}x): training compensates unless told not to" if balance["imbalanced"] else ""),
            file=file,
        )
    for item in report["skipped"][:20]:
        print(f"  skipped {item['path']}: {item['reason']}", file=file)
    if len(report["skipped"]) > 20:
        print(f"  ... and {len(report['skipped']) - 20} more", file=file)
    for c in report["label_conflicts"][:10]:
        print(f"  label conflict ({', '.join(c['classes'])}): {', '.join(c['paths'])}", file=file)
    print(f"full report: {out / REPORT_FILE}\ndataset folder: {out}", file=file)


# ------------------------------------------------------------------------------------------- writing


def _write_split(out: Path, split: str, rows: Iterator[tuple[bytes, str, int]], n_rows: int, n_bytes: int, features) -> int:
    """Write ``rows`` (image bytes, path, label) as ``data/{split}-*.parquet`` shards; return the bytes written."""
    schema = features.arrow_schema
    n_shards = max(1, math.ceil(n_bytes / MAX_SHARD_BYTES))
    per_shard = math.ceil(n_rows / n_shards) if n_rows else 0
    written = 0
    for k in range(n_shards):
        path = out / DATA_DIR / f"{split}-{k:05d}-of-{n_shards:05d}.parquet"
        with pq.ParquetWriter(path, schema) as writer:
            remaining = per_shard if k < n_shards - 1 else n_rows - per_shard * (n_shards - 1)
            while remaining > 0:
                batch = [next(rows) for _ in range(min(ROW_GROUP_SIZE, remaining))]
                remaining -= len(batch)
                table = pa.table(
                    {
                        "image": [{"bytes": b, "path": p} for b, p, _ in batch],
                        "label": pa.array([label for _, _, label in batch], pa.int64()),
                    },
                    schema=schema,
                )
                writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
                written += sum(len(b) + len(p) + 8 for b, p, _ in batch)
    return written


def _write_card_and_figures(out: Path, contents: SplitContents, *, license, pretty_name, source, summary) -> None:
    shown = {"distribution": "images/class_distribution.png"}
    figures.class_distribution_chart(contents.counts, out / shown["distribution"])
    if any(contents.samples.values()):
        shown["samples"] = "images/sample_grid.jpg"
        thumbs = {c: [Image.open(io.BytesIO(b)) for b in bs] for c, bs in contents.samples.items()}
        figures.sample_grid(thumbs, out / shown["samples"])
    download = sum(f.stat().st_size for f in (out / DATA_DIR).glob("*.parquet"))
    shards = {s: sorted(f"{DATA_DIR}/{f.name}" for f in (out / DATA_DIR).glob(f"{s}-*.parquet"))
              for s in contents.split_bytes}
    card = cards.render_dataset_card(
        features=contents.features,
        class_names=contents.class_names,
        counts=contents.counts,
        split_bytes=contents.split_bytes,
        download_size=download,
        license=license,
        pretty_name=pretty_name,
        source=source,
        summary=summary,
        figures=shown,
        data_files=shards,
    )
    cards.save_card(card, out)


def write_dataset_repo(ds, output_dir: str | os.PathLike, *, license: str = "other", pretty_name: str | None = None,
                       source: str = "", overwrite: bool = False, inputs=()) -> Path:
    """Write a normalised DatasetDict (see ``load_dataset_any``) as a dataset repository folder, published whole."""
    out = claim_output_dir(output_dir, "dataset", overwrite=overwrite, inputs=inputs)
    with Publication(out, "dataset") as stage:
        _write_repo(ds, stage, license=license, pretty_name=pretty_name, source=source)
    return out


def _write_repo(ds, out: Path, *, license: str, pretty_name: str | None, source: str) -> None:
    (out / DATA_DIR).mkdir()
    class_names = ds["train"].features["label"].names
    features = features_for(class_names)
    counts = {c: {s: 0 for s in SPLITS} for c in class_names}
    split_bytes, samples = {}, {c: [] for c in class_names}
    for s in SPLITS:
        raw = ds[s].cast_column("image", ImageFeature(decode=False))
        labels = raw["label"]
        for label in labels:
            counts[class_names[label]][s] += 1
        rows = ((image_bytes(r["image"]), _relative(r["image"].get("path")), r["label"]) for r in raw)
        split_bytes[s] = _write_split(out, s, rows, len(raw), raw.data.nbytes, features)
    for r in ds["train"].cast_column("image", ImageFeature(decode=False)):
        if len(samples[class_names[r["label"]]]) < SAMPLES_PER_CLASS:
            samples[class_names[r["label"]]].append(image_bytes(r["image"]))
    _write_card_and_figures(out, SplitContents(class_names, counts, split_bytes, samples, features),
                            license=license, pretty_name=pretty_name, source=source, summary=None)


def _relative(path: str | None) -> str:
    """An image's recorded path without the local folders above it (it is published with the dataset)."""
    return Path(path).name if path and os.path.isabs(path) else path or ""
