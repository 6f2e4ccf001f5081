"""Building the dataset from image folders: bad and odd files, duplicates, splits, the written folder."""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import helpers
from har_model import cli, data
from har_model.data import build, scan
from har_model.errors import HarError


def _prepare(src: Path, out: Path, **kwargs):
    kwargs.setdefault("num_workers", 1)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("verbose", False)
    return data.prepare_dataset(src, out, **kwargs)


def _report(out: Path) -> dict:
    return json.loads((out / data.REPORT_FILE).read_text())


def _skips(out: Path) -> dict[str, tuple[str, str]]:
    return {s["path"]: (s["kind"], s["reason"]) for s in _report(out)["skipped"]}


def _split_paths(ds) -> dict[str, list[str]]:
    from datasets import Image as ImageFeature

    return {s: [r["path"] for r in ds[s].cast_column("image", ImageFeature(decode=False))["image"]] for s in ds}


def _jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


# ------------------------------------------------------------------------------------- bad and odd files


@pytest.fixture()
def messy_folder(class_folder: Path) -> Path:
    """class_folder plus one of each kind of bad or odd input."""
    c = class_folder / "clapping"
    good = helpers.synthetic_image(0, 900)
    (c / "empty.jpg").write_bytes(b"")
    full = _jpeg_bytes(good, quality=90)
    (c / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (c / "fake.jpg").write_text("this is not a picture\n")
    (c / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    Image.new("RGB", (400, 400), (10, 20, 30)).save(c / "bomb.png")  # over the --max-pixels used below
    helpers.synthetic_image(0, 901, (20, 16)).save(c / "tiny.jpg")
    helpers.synthetic_image(0, 902).save(c / "locked.jpg")
    os.chmod(c / "locked.jpg", 0)
    os.symlink("loop.jpg", c / "loop.jpg")
    os.symlink("nowhere.jpg", c / "dangling.jpg")
    os.symlink("..", c / "parent_link")  # folder symlink loops: to the parent, to itself
    os.symlink(".", c / "self_link")
    (c / "corrupt.jpg").write_bytes(full[:600] + b"\xff\xd9")  # header fine, scan data cut by an early end marker
    (c / ".DS_Store").write_bytes(b"\0\1\2")
    helpers.synthetic_image(0, 903).save(c / ".hidden.jpg")
    (c / "notes.txt").write_text("shot in 2021\n")
    (class_folder / "README.txt").write_text("a file outside any class folder\n")
    (class_folder / "empty_class").mkdir()
    bad_class = class_folder / "only_bad"
    bad_class.mkdir()
    (bad_class / "zero.png").write_bytes(b"")
    # odd but good: converted to RGB
    r = class_folder / "running"
    nested = r / "session2" / "day1"
    nested.mkdir(parents=True)
    helpers.synthetic_image(1, 950).save(nested / "nested.jpg")
    rgba = helpers.synthetic_image(1, 951).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(r / "rgba.png")
    helpers.synthetic_image(1, 952).convert("LA").save(r / "la.png")
    pal = helpers.synthetic_image(1, 953).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    pal.save(r / "palette.png", transparency=0)
    helpers.synthetic_image(1, 954).convert("CMYK").save(r / "cmyk.jpg")
    helpers.synthetic_image(1, 955).convert("L").save(r / "gray.jpg")
    arr16 = (np.asarray(helpers.synthetic_image(1, 956).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(arr16).save(r / "deep16.png")
    assert Image.open(r / "deep16.png").mode.startswith("I")
    rotated = helpers.synthetic_image(1, 957, (96, 48))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    rotated.save(r / "rotated.jpg", exif=exif.tobytes())
    helpers.synthetic_image(1, 958).save(r / "photo.bmp")
    helpers.synthetic_image(1, 959).save(r / "photo.webp")
    return class_folder


@pytest.fixture()
def unreadable_as_root(monkeypatch):
    """chmod 0 does not stop root: make opening files named locked.* fail the way it does for a user."""
    if os.geteuid() != 0:
        return

    def fake_open(path, *args, **kwargs):
        if os.path.basename(str(path)).startswith("locked."):
            raise PermissionError(13, "Permission denied", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(scan, "open", fake_open, raising=False)


def test_bad_files_are_skipped_and_reported_never_fatal(messy_folder, tmp_path, unreadable_as_root):
    out = tmp_path / "out"
    ds = _prepare(messy_folder, out, max_pixels=100_000)
    skips = _skips(out)
    expected = {
        "clapping/empty.jpg": "empty-file",
        "clapping/truncated.jpg": "decode-error",
        "clapping/fake.jpg": "not-an-image",
        "clapping/garbage.png": "not-an-image",
        "clapping/corrupt.jpg": "decode-error",
        "clapping/self_link/": "symlink-loop",
        "clapping/bomb.png": "too-many-pixels",
        "clapping/tiny.jpg": "too-small",
        "clapping/locked.jpg": "unreadable",
        "clapping/loop.jpg": "symlink-loop",
        "clapping/dangling.jpg": "missing",
        "clapping/parent_link/": "symlink-loop",
        "clapping/.DS_Store": "hidden",
        "clapping/.hidden.jpg": "hidden",
        "clapping/notes.txt": "not-image",
        "README.txt": "outside-class",
        "empty_class/": "empty-class",
        "only_bad/zero.png": "empty-file",
        "only_bad/": "empty-class",
    }
    got = {path: skips.get(path, ("NOT REPORTED", ""))[0] for path in expected}
    assert got == expected
    assert "16" in skips["clapping/tiny.jpg"][1] and "minimum side 32" in skips["clapping/tiny.jpg"][1]
    # the good images all made it, and only the real classes exist
    assert ds["train"].features["label"].names == list(helpers.CLASSES)
    counts = _report(out)["per_class"]
    assert counts["clapping"]["usable"] == 12
    assert counts["running"]["usable"] == 12 + 10
    assert sum(len(ds[s]) for s in ds) == 12 * 3 + 10


def test_odd_images_become_rgb_and_plain_jpegs_keep_their_bytes(messy_folder, tmp_path, unreadable_as_root):
    out = tmp_path / "out"
    ds = _prepare(messy_folder, out, max_pixels=100_000)
    report = _report(out)
    converted = {c["path"]: c["conversion"] for c in report["converted"]}
    for name in ("rgba.png", "la.png", "palette.png", "cmyk.jpg", "gray.jpg", "deep16.png", "rotated.jpg", "photo.bmp", "photo.webp"):
        assert f"running/{name}" in converted, name
    assert "EXIF orientation 6" in converted["running/rotated.jpg"]
    assert "running/session2/day1/nested.jpg" not in converted
    from datasets import Image as ImageFeature, concatenate_datasets

    everything = concatenate_datasets([ds[s] for s in ds])
    raw = everything.cast_column("image", ImageFeature(decode=False))["image"]
    by_path = {r["path"]: r["bytes"] for r in raw}
    # plain RGB JPEGs: byte-for-byte the original file
    nested = "running/session2/day1/nested.jpg"
    assert by_path[nested] == (messy_folder / nested).read_bytes()
    assert by_path["clapping/img_000.jpg"] == (messy_folder / "clapping/img_000.jpg").read_bytes()
    # converted: decodes as RGB; EXIF rotation applied (96x48 stored, 48x96 displayed)
    for path in converted:
        img = Image.open(io.BytesIO(by_path[path]))
        assert img.mode == "RGB", path
        assert img.format == ("JPEG" if path.endswith(".jpg") else "PNG"), path
    assert Image.open(io.BytesIO(by_path["running/rotated.jpg"])).size == (48, 96)
    # 16-bit data was rescaled by its range, not clipped to white
    deep = np.asarray(Image.open(io.BytesIO(by_path["running/deep16.png"])))
    assert 0 < deep.mean() < 250 and deep.std() > 5


def test_unreadable_file_reason(messy_folder, tmp_path, unreadable_as_root):
    res = scan.analyse_file((str(messy_folder / "clapping" / "locked.jpg"), 32, 10**9))
    assert res == {"ok": False, "reason": "permission denied", "kind": "unreadable"}


# ----------------------------------------------------------------------------------- bad input: errors


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: p / "missing", "no such folder"),
        (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "is a file"),
        (lambda p: _flat_folder(p), "no class sub-folders"),
        (lambda p: _folder_with_classes(p, {"only": 5}), "at least two class folders"),
        (lambda p: _folder_with_classes(p, {"big": 8, "small": 2}), "class 'small' has too few images"),
    ],
    ids=["missing", "file", "no-class-folders", "one-class", "class-too-small"],
)
def test_bad_input_gives_one_clear_error_line(tmp_path, capsys, setup, message):
    src = setup(tmp_path)
    rc = cli.main(["prepare", "--data-dir", str(src), "--output-dir", str(tmp_path / "out"), "--num-workers", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "Traceback" not in err
    last = err.splitlines()[-1]  # progress bars may come before it
    assert last.startswith("error: ") and message in last


def _flat_folder(root: Path) -> Path:
    folder = root / "flat"
    folder.mkdir()
    for i in range(3):
        helpers.synthetic_image(0, i).save(folder / f"{i}.jpg")
    return folder


def _folder_with_classes(root: Path, sizes: dict[str, int]) -> Path:
    folder = root / "imgs"
    for label, (name, n) in enumerate(sizes.items()):
        (folder / name).mkdir(parents=True)
        for i in range(n):
            helpers.synthetic_image(label, 100 + i).save(folder / name / f"{i}.jpg")
    return folder


def test_bad_fractions_and_output_inside_data(class_folder, tmp_path):
    with pytest.raises(HarError, match="--val-fraction"):
        _prepare(class_folder, tmp_path / "o", val_fraction=1.5)
    with pytest.raises(HarError, match="leave nothing for training"):
        _prepare(class_folder, tmp_path / "o", val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(HarError, match="is inside the input"):
        _prepare(class_folder, class_folder / "out")


# ------------------------------------------------------------------------------------------ duplicates


@pytest.fixture()
def dup_folder(class_folder: Path) -> Path:
    c, r, s = (class_folder / n for n in helpers.CLASSES)
    shutil.copy(c / "img_000.jpg", c / "copy_of_000.jpg")  # exact
    src = Image.open(c / "img_001.jpg")
    src.resize((144, 108), Image.Resampling.BICUBIC).save(c / "bigger_001.png")  # resized, other format
    (c / "requality_001.jpg").write_bytes(_jpeg_bytes(src, quality=50))  # re-encoded
    shutil.copy(r / "img_002.jpg", s / "same_as_running_002.jpg")  # same picture, two classes
    return class_folder


def test_duplicates_grouped_copies_removed_conflicts_dropped(dup_folder, tmp_path):
    out = tmp_path / "out"
    ds = _prepare(dup_folder, out)
    report = _report(out)
    assert report["exact_duplicates"] == [["clapping/copy_of_000.jpg", "clapping/img_000.jpg"]]
    assert report["summary"]["exact_duplicates_removed"] == 1
    assert sorted(report["near_duplicates"][0]) == ["clapping/bigger_001.png", "clapping/img_001.jpg", "clapping/requality_001.jpg"]
    assert report["label_conflicts"] == [{"classes": ["running", "sitting"], "paths": ["running/img_002.jpg", "sitting/same_as_running_002.jpg"]}]
    paths = _split_paths(ds)
    everything = [p for s in paths.values() for p in s]
    assert len(everything) == len(set(everything))
    assert "clapping/copy_of_000.jpg" in everything and "clapping/img_000.jpg" not in everything  # first path kept
    assert "running/img_002.jpg" not in everything and "sitting/same_as_running_002.jpg" not in everything
    near = {"clapping/bigger_001.png", "clapping/img_001.jpg", "clapping/requality_001.jpg"}
    holding = [s for s, ps in paths.items() if near & set(ps)]
    assert len(holding) == 1 and near <= set(paths[holding[0]])


def test_distinct_images_are_not_near_duplicates(class_folder, tmp_path):
    out = tmp_path / "out"
    _prepare(class_folder, out)
    report = _report(out)
    assert report["near_duplicates"] == [] and report["exact_duplicates"] == []


def test_near_duplicates_can_be_disabled(dup_folder, tmp_path):
    out = tmp_path / "out"
    _prepare(dup_folder, out, near_dup_threshold=-1)
    report = _report(out)
    assert report["near_duplicates"] == []
    assert len(report["exact_duplicates"]) == 1 and len(report["label_conflicts"]) == 1  # exact copies still found


def test_pool_gives_the_same_result_as_serial(dup_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(scan, "SERIAL_BELOW", 0)  # the pool of scan.analyse_files, which build uses
    serial = _split_paths(_prepare(dup_folder, tmp_path / "a", num_workers=1))
    pooled = _split_paths(_prepare(dup_folder, tmp_path / "b", num_workers=2))
    assert serial == pooled
    assert _report(tmp_path / "a")["near_duplicates"] == _report(tmp_path / "b")["near_duplicates"]


# -------------------------------------------------------------------------------------- the written folder


def test_round_trip_through_load_dataset(class_folder, tmp_path):
    from datasets import ClassLabel, Image as ImageFeature, load_dataset
    from huggingface_hub import DatasetCard

    out = tmp_path / "out"
    built = _prepare(class_folder, out, license="odbl", seed=7)
    loaded = load_dataset(str(out))
    assert list(loaded) == ["train", "validation", "test"] == list(built)
    for s in loaded:
        assert loaded[s].features == built[s].features
        assert len(loaded[s]) == len(built[s])
        assert loaded[s]["label"] == built[s]["label"]
    features = loaded["train"].features
    assert isinstance(features["image"], ImageFeature) and isinstance(features["label"], ClassLabel)
    assert features["label"].names == sorted(helpers.CLASSES)
    img = loaded["test"][0]["image"]
    assert img.mode == "RGB" and img.size == (96, 72)
    card = DatasetCard.load(out / "README.md")
    meta = card.data.to_dict()
    assert meta["license"] == "odbl" and meta["task_categories"] == ["image-classification"]
    assert {s["name"]: s["num_examples"] for s in meta["dataset_info"]["splits"]} == {s: len(loaded[s]) for s in loaded}
    assert meta["dataset_info"]["features"][1]["dtype"]["class_label"]["names"] == {"0": "clapping", "1": "running", "2": "sitting"}
    assert [c["config_name"] for c in meta["configs"]] == ["default"]
    body = card.text
    assert "| clapping | 10 | 1 | 1 | 12 |" in body
    assert "images/sample_grid.jpg" in body and "images/class_distribution.png" in body
    assert Image.open(out / "images/sample_grid.jpg").size[1] > 3 * 90
    assert Image.open(out / "images/class_distribution.png").format == "PNG"
    assert "images) is\n  1.00x the smallest" in body and "imbalanced" not in body


def test_imbalance_is_stated_in_report_summary_and_card(tmp_path, capsys):
    from huggingface_hub import DatasetCard

    src = helpers.make_class_folder(tmp_path / "src", per_class={"clapping": 30, "running": 10, "sitting": 12})
    out = tmp_path / "out"
    _prepare(src, out, verbose=True)
    balance = _report(out)["summary"]["class_balance"]
    assert balance == {"largest": "clapping", "largest_count": 30, "smallest": "running", "smallest_count": 10,
                       "ratio": 3.0, "imbalanced": True}
    assert "class balance: largest 'clapping' (30 images) / smallest 'running' (10) = 3.00x, imbalanced" in capsys.readouterr().out
    body = DatasetCard.load(out / "README.md").text
    assert "3.00x the smallest (running, 10):\n  **imbalanced**" in body


def test_rerun_replaces_its_own_shards_and_keeps_and_ignores_other_files(class_folder, tmp_path):
    out = tmp_path / "out"
    _prepare(class_folder, out)
    (out / "data" / "notes.md").write_text("mine")
    (out / "data" / "train-00007-of-00009.parquet").write_bytes(b"not ours, only named like a shard")
    ds = _prepare(class_folder, out, seed=7)
    assert (out / "data" / "notes.md").read_text() == "mine"
    assert (out / "data" / "train-00007-of-00009.parquet").read_bytes().startswith(b"not ours")
    assert sum(len(ds[s]) for s in ds) == 36  # the card lists its shards: the stray file is not read as data
    from datasets import load_dataset

    assert sum(len(split) for split in load_dataset(str(out)).values()) == 36


def test_printed_summary_counts_per_class(messy_folder, tmp_path, capsys, unreadable_as_root):
    _prepare(messy_folder, tmp_path / "out", max_pixels=100_000, verbose=True)
    text = capsys.readouterr().out
    assert "clapping" in text and "skipped clapping/truncated.jpg" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("running"))
    assert line.split()[1:3] == ["22", "22"]


# -------------------------------------------------------------------------------------- loading others


def test_load_dataset_any_our_folder_and_renamed_columns(class_folder, tmp_path):
    from datasets import Dataset, Features, Image as ImageFeature, Value

    out = tmp_path / "out"
    built = _prepare(class_folder, out)
    again = data.load_dataset_any(out)
    assert {s: len(again[s]) for s in again} == {s: len(built[s]) for s in built}

    # a single-split dataset with other column names and string labels, saved with save_to_disk
    files = sorted(class_folder.glob("*/*.jpg"))
    ds = Dataset.from_dict(
        {"img": [str(f) for f in files], "labels": [f.parent.name for f in files], "extra": list(range(len(files)))},
        features=Features({"img": ImageFeature(), "labels": Value("string"), "extra": Value("int64")}),
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    norm = data.load_dataset_any(tmp_path / "saved", seed=3)
    assert list(norm) == ["train", "validation", "test"]
    assert norm["train"].column_names == ["image", "label"]
    assert norm["train"].features["label"].names == sorted(helpers.CLASSES)
    assert [len(norm[s]) for s in norm] == [30, 3, 3]
    # and it can be written as a repository folder of our layout
    data.write_dataset_repo(norm, tmp_path / "republished", license="cc-by-4.0")
    back = data.load_dataset_folder(tmp_path / "republished")
    assert [len(back[s]) for s in back] == [30, 3, 3]
    assert back["test"]["label"] == norm["test"]["label"]


def test_load_dataset_any_errors(class_folder, tmp_path):
    with pytest.raises(HarError, match="use --data-dir"):
        data.load_dataset_any(class_folder)
    with pytest.raises(HarError, match="not a Hub dataset id"):
        data.load_dataset_any(str(tmp_path / "no" / "such" / "thing"))
    with pytest.raises(HarError, match="cannot load this dataset from the Hub"):
        data.load_dataset_any("someone-offline/no-such-dataset")


def test_dataset_from_args_needs_exactly_one_source(class_folder, tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=1)  # the train command's own --seed is kept
    data.add_data_arguments(parser)
    args = parser.parse_args([])
    assert args.seed == 1 and args.val_fraction == 0.1
    with pytest.raises(HarError, match="exactly one of --data-dir"):
        data.dataset_from_args(args, tmp_path / "ds")
    args = parser.parse_args(["--data-dir", str(class_folder), "--dataset", "x/y"])
    with pytest.raises(HarError, match="exactly one of --data-dir"):
        data.dataset_from_args(args, tmp_path / "ds")
    args = parser.parse_args(["--data-dir", str(class_folder), "--num-workers", "1"])
    ds = data.dataset_from_args(args, tmp_path / "ds")
    assert (tmp_path / "ds" / "README.md").exists() and len(ds["train"]) == 30


def test_cli_prepare_then_push_offline_keeps_folder(class_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    rc = cli.main(["prepare", "--data-dir", str(class_folder), "--output-dir", str(out), "--num-workers", "1", "--push-to-hub", "me/har"])
    captured = capsys.readouterr()
    assert rc == 2 and "offline" in captured.err and "is kept" in captured.err
    assert (out / "README.md").exists() and list((out / "data").glob("train-*.parquet"))
    assert "clapping" in captured.out


def test_har15_subset_when_present(har15_dir, tmp_path):
    """Three real classes of ../shared/data/har15 (symlinked, nothing copied)."""
    src = tmp_path / "har15_subset"
    src.mkdir()
    for name in ("clapping", "running", "sitting"):
        os.symlink(har15_dir / name, src / name)
    ds = _prepare(src, tmp_path / "out", num_workers=None, license="odbl")
    report = _report(tmp_path / "out")
    assert report["summary"]["files_found"] == 3 * 560
    n = sum(len(ds[s]) for s in ds)
    assert n > 0.95 * 3 * 560
    for s, frac in (("validation", 0.1), ("test", 0.1)):
        assert abs(len(ds[s]) / n - frac) < 0.02
