"""Unlabelled images and videos for semi-supervised training (`train.py --unlabeled-dir DIR`).

``scan_unlabeled`` walks DIR (sub-folders included), validates every image with the same single full decode as the
labelled data (``scan.analyse_file``), samples frames of every video at ``fps`` frames per second, and keeps what
may be learnt from honestly:

    dropped  unreadable, empty, too small or too large files and videos (reported with the reason, never fatal);
             byte-identical copies of another unlabelled image or of a labelled image (a labelled photo needs no
             guessed label); near-duplicates of a validation or test image (learning a teacher's guess about a
             picture that is scored later would train on the test split's content)
    kept     everything else; near-duplicates among themselves (e.g. successive video frames) stay, like the
             labelled data's

Unlabelled images never enter the dataset's splits: they are returned as encoded bytes for the training stage
only, with a report for the cards and a fingerprint for ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from har_model.data.dedup import DEFAULT_NEAR_DUP_THRESHOLD, group_images
from har_model.data.load import hash_images, image_bytes
from har_model.data.scan import Skipped, analyse_bytes, analyse_files, content_hash
from har_model.errors import HarError
from har_model.imaging import DEFAULT_MAX_PIXELS, is_image_path, is_video_path

DEFAULT_FPS = 1.0  # video frames sampled per second: successive frames a second apart still differ in pose
FRAME_QUALITY = 95  # sampled frames are kept as JPEG, like the photos


@dataclass
class UnlabeledImages:
    """What `scan_unlabeled` kept: encoded images with their source names, and what it did (the report)."""

    images: list[bytes] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # relative path, or "clip.mp4@12.0s" for a video frame
    report: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def fingerprint(self) -> str:
        """A hash of the kept images, in order: `--resume` refuses checkpoints trained with others."""
        digest = hashlib.sha256(f"{len(self.images)}|{self.report.get('fps')}|".encode())
        for data in self.images:
            digest.update(hashlib.sha256(data).digest())
        return digest.hexdigest()


def scan_unlabeled(folder: str | os.PathLike, labelled=None, *, fps: float = DEFAULT_FPS, min_side: int = 32,
                   max_pixels: int = DEFAULT_MAX_PIXELS, near_dup_threshold: int = DEFAULT_NEAR_DUP_THRESHOLD,
                   num_workers: int | None = None, progress: bool = True) -> UnlabeledImages:
    """Validate and de-duplicate the images and video frames under `folder` against the labelled DatasetDict
    `labelled` (train / validation / test). HarError only for a folder that is missing or holds nothing usable."""
    root = Path(folder)
    if not root.is_dir():
        raise HarError(f"--unlabeled-dir {folder}: " + ("is a file, not a folder" if root.exists() else "no such folder"))
    if fps <= 0:
        raise HarError(f"--unlabeled-fps {fps}: give a positive number of frames per second, e.g. 1")
    images, videos, skipped = _list(root)
    found: list[dict] = []  # {"name", "bytes", "content_hash", "phash", "dhash"}
    found += _analyse_images(root, images, skipped, min_side, max_pixels, num_workers, progress)
    frames_total = 0
    for rel in videos:
        frames = _video_frames(root / rel, rel, fps, skipped, min_side, max_pixels)
        frames_total += len(frames)
        found += frames
    kept, dropped = _drop_duplicates(found, labelled, near_dup_threshold, num_workers)
    report = {
        "folder": root.resolve().name, "fps": fps, "image_files": len(images), "video_files": len(videos),
        "video_frames_sampled": frames_total, "used": len(kept),
        "skipped": [{"path": s.path, "reason": s.reason, "kind": s.kind} for s in skipped],
        **{k: len(v) for k, v in dropped.items()}, "dropped_examples": {k: v[:20] for k, v in dropped.items() if v},
    }
    if not kept:
        raise HarError(f"--unlabeled-dir {folder}: no usable image or video frame found ({len(images)} image files, "
                       f"{len(videos)} videos, {len(skipped)} skipped); give a folder of photos or videos")
    return UnlabeledImages([im["bytes"] for im in kept], [im["name"] for im in kept], report)


def describe(report: dict) -> str:
    """One paragraph for the run's output: what was found, used and left out."""
    parts = [f"{report['image_files']} image files"]
    if report["video_files"]:
        parts.append(f"{report['video_files']} video{'s' if report['video_files'] > 1 else ''} "
                     f"({report['video_frames_sampled']} frames at "
                     f"{report['fps']:g}/s)")
    left = [f"{report[k]} {what}" for k, what in (("copies", "exact copies"),
                                                  ("copies_of_labelled", "copies of labelled images"),
                                                  ("near_duplicates_of_evaluation", "near-duplicates of validation/test images"))
            if report.get(k)]
    if report["skipped"]:
        left.append(f"{len(report['skipped'])} unusable files")
    return (f"unlabelled: {report['used']} images used from {', '.join(parts)} in {report['folder']}/"
            + (f"; left out: {', '.join(left)}" if left else ""))


# ---------------------------------------------------------------------------------------------- the steps


def _list(root: Path) -> tuple[list[str], list[str], list[Skipped]]:
    """Image and video files under root (relative, sorted), and what is skipped (hidden, other kinds of file)."""
    images, videos, skipped = [], [], []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            rel = os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/")
            if name.startswith("."):
                continue  # hidden files (.DS_Store, editor files) are not data
            if is_image_path(name):
                images.append(rel)
            elif is_video_path(name):
                videos.append(rel)
            else:
                skipped.append(Skipped(rel, "not an image or video file (by its extension)", "not-image"))
    return images, videos, skipped


def _analyse_images(root: Path, rels: list[str], skipped: list[Skipped], min_side: int, max_pixels: int,
                    num_workers: int | None, progress: bool) -> list[dict]:
    results = analyse_files([(str(root / rel), min_side, max_pixels) for rel in rels], num_workers)
    found = []
    try:
        for rel, res in tqdm(zip(rels, results), total=len(rels), desc="unlabelled images", unit="img",
                             disable=not progress, file=sys.stderr, leave=False):
            if res["ok"]:
                found.append({"name": rel, **res})
            else:
                skipped.append(Skipped(rel, res["reason"], res["kind"]))
    finally:
        results.close()  # stops the pool
    return found


def _video_frames(path: Path, rel: str, fps: float, skipped: list[Skipped], min_side: int,
                  max_pixels: int) -> list[dict]:
    """Frames of one video, one every 1/fps seconds, as JPEG with their hashes; an unreadable video is skipped."""
    import av  # only for folders with videos; PyAV bundles its own FFmpeg

    frames, next_t = [], 0.0
    try:
        with av.open(str(path), "r") as container:
            if not container.streams.video:
                skipped.append(Skipped(rel, "contains no video stream", "not-a-video"))
                return []
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else next_t
                if t + 1e-6 < next_t:
                    continue
                next_t = t + 1.0 / fps
                buf = io.BytesIO()
                frame.to_image().convert("RGB").save(buf, format="JPEG", quality=FRAME_QUALITY)
                res = analyse_bytes(buf.getvalue(), min_side=min_side, max_pixels=max_pixels)
                if res["ok"]:
                    frames.append({**res, "name": f"{rel}@{t:.1f}s"})
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        if not frames:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            skipped.append(Skipped(rel, f"not a readable video ({reason})", "decode-error"))
    if not frames and not any(s.path == rel for s in skipped):
        skipped.append(Skipped(rel, "no usable frame", "decode-error"))
    return frames


def _drop_duplicates(found: list[dict], labelled, threshold: int, num_workers: int | None):
    """Split `found` into kept and dropped (by reason): see the module docstring for the policy."""
    dropped = {"copies": [], "copies_of_labelled": [], "near_duplicates_of_evaluation": []}
    labelled_hashes: set[str] = set()
    evaluation: list[tuple[str, int, int]] = []
    if labelled is not None:
        from datasets import Image as ImageFeature  # the labelled data is a DatasetDict: datasets is loaded already

        for split in labelled:
            raw = labelled[split].cast_column("image", ImageFeature(decode=False))
            blobs = [image_bytes(v) for v in raw["image"]]
            labelled_hashes.update(content_hash(b) for b in blobs)
            if split != "train":  # near-duplicates matter where the model is scored
                evaluation += hash_images(blobs, num_workers, what=f"the {split} split")
    seen: set[str] = set()
    unique = []
    for im in found:
        if im["content_hash"] in labelled_hashes:
            dropped["copies_of_labelled"].append(im["name"])
        elif im["content_hash"] in seen:
            dropped["copies"].append(im["name"])
        else:
            seen.add(im["content_hash"])
            unique.append(im)
    if not evaluation:
        return unique, dropped
    n = len(evaluation)
    groups, _ = group_images([h[0] for h in evaluation] + [im["content_hash"] for im in unique],
                             [h[1] for h in evaluation] + [im["phash"] for im in unique],
                             [h[2] for h in evaluation] + [im["dhash"] for im in unique], threshold)
    scored = set(groups[:n])
    kept = []
    for im, group in zip(unique, groups[n:]):
        (dropped["near_duplicates_of_evaluation"].append(im["name"]) if group in scored else kept.append(im))
    return kept, dropped


def note_unlabeled(dataset_dir: Path, report: dict, used: int) -> None:
    """Say in a dataset folder (its card and data_report.json) which unlabelled images joined the training run
    beside it, and that none of them is in any split. For the model folder's copy of the dataset."""
    from har_model.data.build import REPORT_FILE  # the builder owns the report's name

    card = dataset_dir / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8")
        section = (
            "\n## Unlabelled images used in training\n\n"
            f"The model trained beside this dataset also learnt from {used} unlabelled images of "
            f"`{report['folder']}/` ({report['image_files']} image files"
            + (f", {report['video_frames_sampled']} frames sampled at {report['fps']:g}/s from "
               f"{report['video_files']} videos" if report["video_files"] else "")
            + "), labelled by the model itself with its probabilities (noisy-student self-training). They are in no "
            "split of this dataset; exact copies of labelled images and near-duplicates of validation or test images "
            f"were left out ({report.get('copies_of_labelled', 0)} and {report.get('near_duplicates_of_evaluation', 0)}"
            f"), and {len(report['skipped'])} unusable files were skipped.\n")
        marker = "\n## License"
        text = text.replace(marker, section + marker, 1) if marker in text else text + section
        card.write_text(text, encoding="utf-8")
    path = dataset_dir / REPORT_FILE
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        data["unlabeled"] = {**report, "used_in_training": used}
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
