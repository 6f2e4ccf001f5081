"""Dataset card rendering, figures, and pushing to the Hub (offline: it must fail cleanly, leaking nothing)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import helpers
from har_model import cards, figures, hub
from har_model.data import features_for
from har_model.errors import HarError

FAKE_TOKEN = "hf_FAKEtoken1234567890abcdefghijklmnop"


def _card(tmp_path, **kwargs):
    counts = {"clapping": {"train": 8, "validation": 1, "test": 2}, "running": {"train": 6, "validation": 2, "test": 1}}
    kwargs.setdefault("license", "odbl")
    return cards.render_dataset_card(
        features=features_for(list(counts)),
        class_names=list(counts),
        counts=counts,
        split_bytes={"train": 1400, "validation": 300, "test": 300},
        download_size=2500,
        pretty_name="Tiny actions",
        source="tiny",
        summary={
            "files_found": 25, "skipped_total": 3, "skipped_by_kind": {"empty-file": 1, "too-small": 2}, "converted": 4,
            "exact_duplicates_removed": 2, "near_duplicate_groups": 1, "near_duplicate_images": 2, "label_conflicts": 0,
            "conflict_images_dropped": 0, "near_dup_threshold": 8, "seed": 42,
            "fractions": {"train": 0.8, "validation": 0.1, "test": 0.1}, "report_file": "data_report.json",
        },
        figures={"samples": "images/sample_grid.jpg"},
        **kwargs,
    )


def test_dataset_card_yaml_and_body(tmp_path):
    from huggingface_hub import DatasetCard

    path = cards.save_card(_card(tmp_path), tmp_path)
    card = DatasetCard.load(path)
    meta = card.data.to_dict()
    assert meta["license"] == "odbl"
    assert meta["task_categories"] == ["image-classification"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["pretty_name"] == "Tiny actions"
    info = meta["dataset_info"]
    assert info["features"][0] == {"name": "image", "dtype": "image"}
    assert info["features"][1]["dtype"]["class_label"]["names"] == {"0": "clapping", "1": "running"}
    assert [(s["name"], s["num_examples"]) for s in info["splits"]] == [("train", 14), ("validation", 3), ("test", 3)]
    assert meta["configs"][0]["data_files"][1] == {"split": "validation", "path": "data/validation-*"}
    text = card.text
    assert "# Tiny actions" in text
    assert "| clapping | 8 | 1 | 2 | 11 |" in text and "| running | 6 | 2 | 1 | 9 |" in text
    assert "skipped: 3 (empty-file: 1, too-small: 2)" in text
    assert "![Sample images per class](images/sample_grid.jpg)" in text
    assert "class_distribution" not in text  # only the figures given are linked
    assert "{{" not in text and "{%" not in text


def test_size_categories():
    assert [cards.size_category(n) for n in (5, 8400, 12_000, 500_000, 2_000_000)] == [
        "n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M",
    ]


def test_sample_grid_and_distribution_chart(tmp_path):
    images = {c: [helpers.synthetic_image(i, k) for k in range(4)] for i, c in enumerate(helpers.CLASSES)}
    images["sitting"] = images["sitting"][:2]
    grid = Image.open(figures.sample_grid(images, tmp_path / "g.jpg", thumb=50, label_width=100))
    assert grid.size == (100 + 4 * 54 + 4, 3 * 54 + 4)
    arr = np.asarray(grid)
    assert arr[4 + 2 * 54 + 25, 100 + 4 + 3 * 54 + 25].min() > 240  # the missing tiles stay white
    assert arr[4 + 25, 100 + 4 + 25].std() > 0 or arr[4:54, 104:154].std() > 5  # a real picture is there
    chart = figures.class_distribution_chart(
        {"a": {"train": 5, "test": 1}, "b": {"train": 3, "validation": 2}}, tmp_path / "sub" / "c.png"
    )
    img = Image.open(chart)
    assert img.format == "PNG" and img.size[0] == 800


# -------------------------------------------------------------------------------------------------- hub


def test_push_offline_fails_fast_and_clean(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    (tmp_path / "README.md").write_text("x")
    with pytest.raises(HarError) as info:
        hub.push_folder(tmp_path, "me/my-dataset", repo_type="dataset", token=FAKE_TOKEN)
    message = str(info.value)
    assert "offline" in message and "is kept" in message and f"hf upload me/my-dataset {tmp_path}" in message
    assert FAKE_TOKEN not in message and "hf_FAKE" not in message


def test_push_without_token(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no cached login there
    monkeypatch.setattr(hub, "resolve_token", lambda token=None: token or None)
    with pytest.raises(HarError, match="no Hugging Face token .* is kept"):
        hub.push_folder(tmp_path, "me/model")


def test_push_failure_never_shows_the_token(tmp_path, monkeypatch):
    """A network / auth failure message that echoes the token is scrubbed before it reaches the user."""
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def refuse(self, repo_id, **kwargs):
        raise ConnectionError(f"401 for https://huggingface.co/api/repos/create (Authorization: Bearer {self.token})")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    with pytest.raises(HarError) as info:
        hub.push_folder(tmp_path, "me/model", token=FAKE_TOKEN)
    message = str(info.value)
    assert "cannot push" in message and "401" in message and "Bearer ***" in message
    assert FAKE_TOKEN not in message


def test_push_bad_arguments(tmp_path):
    with pytest.raises(HarError, match="no such folder"):
        hub.push_folder(tmp_path / "nope", "me/x")
    with pytest.raises(HarError, match="repo_type"):
        hub.push_folder(tmp_path, "me/x", repo_type="space")
