"""Writing a model folder's files (training computes what goes in them: har_model.train.reports).

Everything is written into a staging folder (``har_model.outputs.Publication``) and published whole, so these
functions write plainly; the names come from ``files``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from PIL import Image

from har_model.model_folder.files import CARD, EXAMPLES, METRICS, TRAINING_ARGS
from har_model.paths import safe_filename


def write_processor(folder: Path, processor) -> None:
    """The image processor beside the weights; the Trainer's training_args.bin (a pickle) is not shipped."""
    (folder / TRAINING_ARGS).unlink(missing_ok=True)  # kept in checkpoints/ for --resume
    processor.save_pretrained(str(folder))


def write_metrics(folder: Path, metrics: dict) -> None:
    """metrics.json: the run's measurements, its record (``RunRecord.as_json()``) under "recipe"."""
    (folder / METRICS).write_text(json.dumps(metrics, indent=2))


def write_card(folder: Path, text: str) -> Path:
    path = folder / CARD
    path.write_text(text)
    return path


def write_examples(folder: Path, examples: Iterable[tuple[str, int, Image.Image]]) -> None:
    """examples/<class>_<k>.jpg for the app; a class name is data, so it goes through safe_filename."""
    target = folder / EXAMPLES
    for label, k, image in examples:
        target.mkdir(exist_ok=True)
        image.save(target / f"{safe_filename(label)}_{k}.jpg", quality=90)


def set_card_section(card: str, key: str, markdown: str) -> str:
    """``card`` with the section ``key`` set to ``markdown``: a section a later step writes (the ONNX export's int8
    gate) between two HTML comments, replaced on a re-run, else inserted before "## How to use" (else appended)."""
    start, end = f"<!-- har_model:{key} -->", f"<!-- /har_model:{key} -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}\n"
    if start in card and end in card:
        head, rest = card.split(start, 1)
        return head + block + rest.split(end, 1)[1].lstrip("\n")
    anchor = card.find("\n## How to use")
    if anchor < 0:
        return card.rstrip("\n") + "\n\n" + block
    return card[: anchor + 1] + block + "\n" + card[anchor + 1 :]
