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


def _written_folder(folder, kind="model", files=("README.md",)):
    """A folder as the project leaves it: claimed, its files published (see har_model.outputs)."""
    from har_model import outputs

    outputs.claim_output_dir(folder, kind)
    with outputs.Publication(folder, kind) as stage:
        for name in files:
            (stage / name).parent.mkdir(parents=True, exist_ok=True)
            (stage / name).write_text("x")
    return folder


def test_push_offline_fails_fast_and_clean(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    _written_folder(tmp_path, "dataset")
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
    _written_folder(tmp_path)
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
    _written_folder(tmp_path)
    with pytest.raises(HarError) as info:
        hub.push_folder(tmp_path, "me/model", token=FAKE_TOKEN)
    message = str(info.value)
    assert "cannot push" in message and "401" in message and "Bearer ***" in message
    assert FAKE_TOKEN not in message


def test_push_bad_arguments(tmp_path):
    with pytest.raises(HarError, match="no such folder"):
        hub.push_folder(tmp_path / "nope", "me/x")
    with pytest.raises(HarError, match="repo_type"):
        hub.push_folder(tmp_path, "me/x", repo_type="kernel")


class FakeHubApi:
    """HfApi at its boundary: the repository already holds ``remote``; the commit sent is recorded."""

    def __init__(self, remote):
        self.remote, self.created, self.commits = list(remote), [], []

    def install(self, monkeypatch):
        import huggingface_hub
        from huggingface_hub import RepoUrl

        fake = self

        def create_repo(api, repo_id, **kwargs):
            fake.created.append((repo_id, kwargs))
            prefix = {"dataset": "datasets/", "space": "spaces/"}.get(kwargs.get("repo_type"), "")
            return RepoUrl(f"https://huggingface.co/{prefix}{repo_id}")

        monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
        monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda api, repo_id, **kw: list(fake.remote))
        monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", lambda api, **kw: fake.commits.append(kw))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        return self

    def operations(self):
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        assert len(self.commits) == 1, "everything goes in one commit"
        ops = self.commits[0]["operations"]
        return ({o.path_in_repo for o in ops if isinstance(o, CommitOperationAdd)},
                {o.path_in_repo for o in ops if isinstance(o, CommitOperationDelete)})


def _write(folder, *names):
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")


def test_repush_deletes_only_stale_project_files_in_the_same_commit(tmp_path, monkeypatch):
    # model: the new folder has no ONNX export and other examples; the user's own files stay
    _written_folder(tmp_path, "model", ("config.json", "model.safetensors", "README.md", "examples/running_0.jpg",
                                        "checkpoints/c/x.bin"))
    remote = [".gitattributes", "config.json", "README.md", "onnx/model.onnx", "onnx/model_int8.onnx",
              "onnx/export_info.json", "onnx/users_own.onnx", "examples/sitting_0.jpg", "examples/running_0.jpg",
              "notes/mine.txt", "examples/clip.mp4"]
    api = FakeHubApi(remote).install(monkeypatch)
    hub.push_folder(tmp_path, "me/model", token=FAKE_TOKEN)
    added, deleted = api.operations()
    assert added == {"config.json", "model.safetensors", "README.md", "examples/running_0.jpg"}
    assert deleted == {"onnx/model.onnx", "onnx/model_int8.onnx", "onnx/export_info.json", "examples/sitting_0.jpg"}


def test_repush_dataset_deletes_old_shards(tmp_path, monkeypatch):
    _written_folder(tmp_path, "dataset", ("README.md", "data/train-00000-of-00001.parquet",
                                          "data/test-00000-of-00001.parquet"))
    remote = ["README.md", "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet",
              "data/test-00000-of-00001.parquet", "data/extra_by_hand.parquet", ".gitattributes"]
    api = FakeHubApi(remote).install(monkeypatch)
    hub.push_folder(tmp_path, "me/data", repo_type="dataset", token=FAKE_TOKEN)
    added, deleted = api.operations()
    assert deleted == {"data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"}
    assert "data/test-00000-of-00001.parquet" in added


def test_space_push_creates_a_gradio_space_and_replaces_its_package(tmp_path, monkeypatch):
    _written_folder(tmp_path, "space", ("app.py", "README.md", "requirements.txt", "har_model/__init__.py",
                                        "model/config.json"))
    _write(tmp_path, "har_model/__pycache__/x.pyc")
    remote = ["app.py", "README.md", "har_model/old_module.py", "model/onnx/model_int8.onnx", "LICENSE.txt"]
    api = FakeHubApi(remote).install(monkeypatch)
    url = hub.push_folder(tmp_path, "me/demo", repo_type="space", token=FAKE_TOKEN)
    assert url == "https://huggingface.co/spaces/me/demo"
    assert api.created == [("me/demo", {"repo_type": "space", "private": False, "exist_ok": True, "space_sdk": "gradio"})]
    added, deleted = api.operations()
    assert deleted == {"har_model/old_module.py", "model/onnx/model_int8.onnx"}  # LICENSE.txt is not ours
    assert "har_model/__pycache__/x.pyc" not in added and "model/config.json" in added
    assert api.commits[0]["repo_type"] == "space"


SPACE_FILES = ("app.py", "README.md", "requirements.txt", "har_model/__init__.py", "har_model/serve/ui.py",
               "model/config.json", "model/examples/run[1]_0.jpg")


def _space_with_user_files(folder):
    """A Space folder publish-space wrote, into which the user then put secrets, notes, code and checkpoints."""
    _written_folder(folder, "space", SPACE_FILES)
    (folder / ".env").write_text(f"HF_TOKEN={FAKE_TOKEN}\n")
    (folder / "notes.txt").write_text("mine")
    (folder / "custom.py").write_text("print('mine')\n")
    (folder / "har_model" / "mine.py").write_text("")
    _write(folder, "checkpoints/checkpoint-1/optimizer.pt", "model/checkpoints/checkpoint-1/training_args.bin",
           "model/.env")
    return folder


def test_space_push_uploads_only_what_publish_space_wrote(tmp_path, monkeypatch):
    folder = _space_with_user_files(tmp_path / "space")
    api = FakeHubApi(["app.py", "custom.py", "notes.txt"]).install(monkeypatch)
    hub.push_folder(folder, "me/demo", repo_type="space", token=FAKE_TOKEN)
    added, deleted = api.operations()
    assert added == set(SPACE_FILES) and not deleted  # the user's files on the Hub are not ours to delete either


def test_the_printed_retry_command_uploads_exactly_the_allow_list(tmp_path, monkeypatch):
    """Run as printed (`hf upload` parses it; its folder filter picks the files), it uploads no user file."""
    import shlex

    from huggingface_hub.utils import filter_repo_objects

    folder = _space_with_user_files(tmp_path / "space")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HarError) as info:
        hub.push_folder(folder, "me/demo", repo_type="space", token=FAKE_TOKEN)
    command = str(info.value).split("retry with `")[1].split("`")[0]
    argv = shlex.split(command)
    assert argv[:6] == ["hf", "upload", "me/demo", str(folder), "--repo-type", "space"]
    include = [argv[i + 1] for i, a in enumerate(argv) if a == "--include"]
    assert "--exclude" not in argv and len(include) == len(SPACE_FILES)
    on_disk = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    assert sorted(filter_repo_objects(on_disk, allow_patterns=include)) == sorted(SPACE_FILES)
    assert not any(p in command for p in (".env", "notes.txt", "custom.py", "checkpoints", "mine.py"))


def test_space_push_offline_keeps_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _written_folder(tmp_path, "space", ("app.py", "README.md"))
    with pytest.raises(HarError) as info:
        hub.push_folder(tmp_path, "me/demo", repo_type="space", token=FAKE_TOKEN)
    assert f"hf upload me/demo {tmp_path} --repo-type space" in str(info.value) and "is kept" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".har_model.json", "README.md", "app.py"]


def test_push_uploads_only_the_files_the_project_wrote(tmp_path, monkeypatch):
    """A .env, notes, a user's photo among the examples, checkpoints and the dataset copy all stay local."""
    _written_folder(tmp_path, "model", ("README.md", "config.json", "model.safetensors", "metrics.json",
                                        "examples/run[1]_0.jpg", "checkpoints/checkpoint-1/model.safetensors",
                                        "dataset/README.md", "dataset/data/train-00000-of-00001.parquet"))
    (tmp_path / ".env").write_text(f"HF_TOKEN={FAKE_TOKEN}")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "examples" / "vacation.jpg").write_text("mine")
    api = FakeHubApi([]).install(monkeypatch)
    hub.push_folder(tmp_path, "me/model", token=FAKE_TOKEN)
    added, deleted = api.operations()
    assert added == {"README.md", "config.json", "model.safetensors", "metrics.json", "examples/run[1]_0.jpg"}
    assert not deleted


def test_a_push_records_its_repo_in_the_folder_until_the_folder_is_rewritten(tmp_path, monkeypatch):
    from har_model.outputs import Publication, pushed_to

    _written_folder(tmp_path, "dataset", ("README.md", "data/train-00000-of-00001.parquet"))
    assert pushed_to(tmp_path) is None
    FakeHubApi([]).install(monkeypatch)
    hub.push_folder(tmp_path, "me/data", repo_type="dataset", token=FAKE_TOKEN)
    assert pushed_to(tmp_path) == "me/data"  # training from this folder names it in the model card's datasets:
    with Publication(tmp_path, "dataset") as stage:  # a new dataset in the folder: not what was pushed
        (stage / "README.md").write_text("new")
    assert pushed_to(tmp_path) is None
