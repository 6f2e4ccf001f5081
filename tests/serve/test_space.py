"""publish-space: the assembled Space folder, its front matter and requirements, pushing it, and -- as a Space
would -- a fresh virtual environment built from only its requirements.txt serving real requests without torch."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from har_model import cli
from har_model.serve import model as model_mod
from har_model.serve import space
from har_model.model_folder.onnx import export_onnx
from helpers import CLASSES, synthetic_image

SPACE_ID = "someone/har-demo"


def _publish(capsys, *args) -> tuple[int, str, str]:
    rc = cli.main(["publish-space", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_model_dir):
    """A model folder as train.py writes it, without an ONNX export: metrics, a card, examples."""
    import json

    d = tmp_path_factory.mktemp("space_model") / "model"
    shutil.copytree(tiny_model_dir, d)
    (d / "examples").mkdir()
    for i, name in enumerate(CLASSES):
        synthetic_image(i, 7).save(d / "examples" / f"{name}_0.jpg")
    (d / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.8125, "macro_f1": 0.75}, "num_test": 16}))
    (d / "README.md").write_text("---\nlicense: mit\ndatasets:\n- someone/toy-actions\n---\n# a model card\n")
    (d / "calibration.json").write_text(json.dumps({"temperature": 1.5, "fitted_on": "validation"}))
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "optimizer.pt").write_bytes(b"not for a Space")
    return d


@pytest.fixture(scope="module")
def space_dir(model_dir, tmp_path_factory):
    """`publish-space --dry-run` on the model folder above (it has no ONNX export, so one is made)."""
    folder = tmp_path_factory.mktemp("spaces") / "har-demo"
    before = sorted(p.relative_to(model_dir) for p in model_dir.rglob("*"))
    assert cli.main(["publish-space", "--model", str(model_dir), "--space", SPACE_ID, "--dir", str(folder), "--dry-run"]) == 0
    assert sorted(p.relative_to(model_dir) for p in model_dir.rglob("*")) == before  # the model folder is untouched
    return folder


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_dry_run_folder_holds_only_what_serving_needs(space_dir):
    files = _files(space_dir)
    package = {f for f in files if f.startswith("har_model/")}
    assert {"har_model/serve/ui.py", "har_model/serve/model.py", "har_model/serve/inference.py",
            "har_model/serve/video.py", "har_model/__init__.py", "har_model/serve/__init__.py"} <= package
    assert not any(f.startswith(("har_model/train", "har_model/data", "har_model/cards")) for f in package)
    assert not {"har_model/hub.py", "har_model/cli.py", "har_model/model_folder/onnx.py", "har_model/serve/space.py"} & package
    model = {f for f in files if f.startswith("model/")}
    assert {"model/config.json", "model/preprocessor_config.json", "model/onnx/model.onnx", "model/metrics.json",
            "model/README.md", "model/examples/running_0.jpg", "model/calibration.json"} <= model
    assert "model/model.safetensors" not in model and not any("checkpoints" in f for f in model)
    # exported without int8 into the Space's copy: float32 only, and the gate file says so (auto serves float32)
    assert "model/onnx/model_int8.onnx" not in model and "model/onnx/int8_gate.json" in model
    assert {"app.py", "requirements.txt", "README.md"} <= files


def test_runtime_requirements_have_no_torch(space_dir):
    import gradio

    lines = (space_dir / "requirements.txt").read_text().split()
    names = {re.split(r"[<>=!~\[ ]", line)[0].lower() for line in lines}
    assert {"onnxruntime", "av", "pillow", "numpy", "huggingface_hub", "gradio"} <= names
    assert f"gradio=={gradio.__version__}" in lines and "pillow>=10.1" in lines
    assert not names & {"torch", "transformers", "datasets", "scikit-learn", "matplotlib"}


def test_front_matter_parses_and_is_complete(space_dir):
    import gradio
    from huggingface_hub import RepoCard, metadata_load

    meta = metadata_load(space_dir / "README.md")
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["sdk_version"] == gradio.__version__
    assert meta["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert meta["license"] == "mit" and meta["datasets"] == ["someone/toy-actions"]  # from the model card
    assert meta["suggested_hardware"] == "cpu-basic" and meta["title"] and meta["emoji"]
    assert 0 < len(meta["short_description"]) <= 60 and "3 classes" in meta["short_description"]
    assert "models" not in meta  # bundled, and no Hub id given
    text = RepoCard.load(space_dir / "README.md").text
    assert "accuracy **0.812**" in text and "macro-F1 **0.750**" in text and "16 images" in text
    assert "clapping, running, sitting" in text


def test_model_id_is_named_in_models(model_dir, tmp_path, capsys):
    from huggingface_hub import metadata_load

    folder = tmp_path / "s"
    rc, out, err = _publish(capsys, "--model", str(model_dir), "--space", SPACE_ID, "--dir", str(folder), "--dry-run",
                            "--model-id", "someone/har-model", "--private")
    assert rc == 0, err
    assert metadata_load(folder / "README.md")["models"] == ["someone/har-model"]
    # the command printed to push it repeats every flag given (but --dry-run)
    assert (f"`python train.py publish-space --model {model_dir} --space {SPACE_ID} --private --dir {folder} "
            "--model-id someone/har-model`") in out and "--repo-type space --private --include" in out


def test_the_space_names_the_model_and_dataset_the_folder_was_pushed_to(model_dir, tmp_path, capsys):
    """No --model-id: models: and datasets: come from what the model folder records of its pushes (train.py
    --push-to-hub, --push-dataset), so the model page lists the Space."""
    from huggingface_hub import metadata_load

    from har_model.outputs import new_marker, record_push, write_marker

    pushed = tmp_path / "pushed"
    shutil.copytree(model_dir, pushed)
    (pushed / "README.md").write_text("---\nlicense: mit\n---\n# a model card without datasets\n")
    for folder, kind, repo in ((pushed, "model", "someone/har-pushed"), (pushed / "dataset", "dataset", "someone/acts")):
        folder.mkdir(exist_ok=True)
        write_marker(folder, {**new_marker(kind), "complete": True})
        record_push(folder, repo)
    rc, _, err = _publish(capsys, "--model", str(pushed), "--space", SPACE_ID, "--dir", str(tmp_path / "s"), "--dry-run")
    assert rc == 0, err
    meta = metadata_load(tmp_path / "s" / "README.md")
    assert meta["models"] == ["someone/har-pushed"] and meta["datasets"] == ["someone/acts"]


def test_the_space_card_lists_every_tab_the_app_has(space_dir):
    import gradio as gr

    from har_model.serve.model import ServedModel
    from har_model.serve.ui import build_demo

    demo = build_demo(ServedModel(source="none", problem="no model"))
    tabs = [block.label for block in demo.blocks.values() if isinstance(block, gr.Tab)]
    assert "Live" in tabs
    line = next(line for line in (space_dir / "README.md").read_text().splitlines() if "Tabs:" in line)
    listed = re.findall(r"(?:Tabs: |\), )([A-Z][a-z]+) \(", line)
    assert listed == tabs, (listed, tabs)


@pytest.fixture()
def onnx_copy(model_dir, tmp_path):
    d = tmp_path / "hub_model"
    shutil.copytree(model_dir, d, ignore=shutil.ignore_patterns("checkpoints"))
    export_onnx(d, quantize=False)
    return d


def test_hub_model_is_named_not_bundled(onnx_copy, model_dir, tmp_path, capsys, monkeypatch):
    from huggingface_hub import metadata_load

    seen = {"me/har-onnx": onnx_copy, "me/har-torch": model_dir}
    monkeypatch.setattr(space, "resolve_model_dir", lambda spec, flag: seen[spec])
    for model_id, needs_torch in (("me/har-onnx", False), ("me/har-torch", True)):
        folder = tmp_path / model_id.split("/")[1]
        rc, out, err = _publish(capsys, "--model", model_id, "--space", SPACE_ID, "--dir", str(folder), "--dry-run")
        assert rc == 0, err
        meta = metadata_load(folder / "README.md")
        assert meta["models"] == [model_id] and meta["preload_from_hub"] == [model_id]
        assert not (folder / "model").exists()
        requirements = (folder / "requirements.txt").read_text()
        assert ("torch>=" in requirements) is needs_torch and ("transformers" in requirements) is needs_torch


def test_hub_model_that_cannot_be_looked_at_gets_torch(tmp_path, capsys):
    # offline (tests): the model cannot be inspected, so the Space must be able to run it with torch
    rc, out, err = _publish(capsys, "--model", "me/not-cached", "--space", SPACE_ID, "--dir", str(tmp_path / "s"), "--dry-run")
    assert rc == 0, err
    assert "assuming it has no ONNX export" in out and "torch>=" in (tmp_path / "s" / "requirements.txt").read_text()


def test_dir_with_other_files_is_refused_and_untouched(space_dir, model_dir, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    rc, _, err = _publish(capsys, "--model", str(model_dir), "--space", SPACE_ID, "--dir", str(folder), "--dry-run")
    assert rc == 2 and err.count("\n") == 1 and "not empty" in err and "Traceback" not in err
    assert _files(folder) == {"notes.txt"}
    # a checkout of this project looks like a Space folder (app.py, har_model/, a gradio README): never replaced
    checkout = tmp_path / "checkout"
    shutil.copytree(space_dir, checkout)
    (checkout / ".har_model.json").unlink()  # a checkout has no marker: only its look could mislead
    (checkout / "train.py").write_text("# the project's command line\n")
    rc, _, err = _publish(capsys, "--model", str(model_dir), "--space", SPACE_ID, "--dir", str(checkout), "--dry-run")
    assert rc == 2 and "not a Space folder written by publish-space" in err
    assert (checkout / "har_model" / "serve" / "ui.py").is_file()
    assert _files(checkout) == (_files(space_dir) - {".har_model.json"}) | {"train.py"}
    rc, _, err = _publish(capsys, "--model", str(model_dir), "--space", "not a space id", "--dry-run")
    assert rc == 2 and "USER/NAME" in err


def test_rerun_replaces_its_own_folder_and_keeps_the_users_files(space_dir, model_dir, capsys):
    from har_model import outputs

    stale = "har_model/serve/stale_module.py"  # as an earlier version of publish-space wrote it
    (space_dir / stale).write_text("")
    marker = outputs.read_marker(space_dir)
    outputs.write_marker(space_dir, {**marker, "files": sorted([*marker["files"], stale])})
    (space_dir / ".env").write_text("HF_TOKEN=hf_secret\n")
    (space_dir / "notes.txt").write_text("mine")
    rc, out, err = _publish(capsys, "--model", str(model_dir), "--space", SPACE_ID, "--dir", str(space_dir), "--dry-run")
    assert rc == 0, err
    assert not (space_dir / stale).exists()
    assert (space_dir / "model" / "onnx" / "model.onnx").is_file()
    assert (space_dir / ".env").is_file() and (space_dir / "notes.txt").read_text() == "mine"
    pushed = outputs.files_to_push(space_dir, "space")
    assert ".env" not in pushed and "notes.txt" not in pushed and "app.py" in pushed
    assert ".env" not in out and "notes.txt" not in out and "--include app.py" in out


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failed_republish_keeps_the_previous_space_folder_whole(space_dir, model_dir, tmp_path, capsys,
                                                                  monkeypatch):
    """A corrupt or unfinished model, or a full disk / Ctrl-C at a step of the final swap: the Space folder from
    before is there, whole, and the error is one line saying so."""
    import errno

    import helpers
    from har_model import outputs

    folder = tmp_path / "space"
    shutil.copytree(space_dir, folder)
    before = _tree(folder)
    unfinished = tmp_path / "unfinished"
    outputs.claim_output_dir(unfinished, "model")  # claimed, never completed
    shutil.copytree(model_dir, unfinished, dirs_exist_ok=True)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(model_dir, corrupt)
    (corrupt / "config.json").write_text("{not json")
    for bad, why in ((unfinished, "incomplete model folder"), (corrupt, str(corrupt))):
        rc, _, err = _publish(capsys, "--model", str(bad), "--space", SPACE_ID, "--dir", str(folder), "--dry-run")
        assert rc == 2 and err.count("\n") == 1 and why in err and "Traceback" not in err, err
        assert _tree(folder) == before
    for step in ("link", "_renameat2_exchange"):
        for error in (KeyboardInterrupt(), OSError(errno.ENOSPC, "No space left on device")):
            helpers.PublishFaults(monkeypatch, error=error, fail_on=step, commit=2)  # 1: the bundled ONNX export
            rc, _, err = _publish(capsys, "--model", str(model_dir), "--space", SPACE_ID, "--dir", str(folder),
                                  "--dry-run")
            monkeypatch.undo()
            assert rc in (2, 130) and "nothing in it was replaced" in err and _tree(folder) == before


def test_push_to_unreachable_hub_is_one_line_and_keeps_every_file(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "s"
    rc, out, err = _publish(capsys, "--model", str(model_dir), "--space", SPACE_ID, "--dir", str(folder))
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"hf upload {SPACE_ID} {folder} --repo-type space" in err and "is kept" in err
    assert f"Or run `python train.py publish-space --model {model_dir} --space {SPACE_ID} --dir {folder}` again" in err
    assert {"app.py", "README.md", "requirements.txt", "model/onnx/model.onnx"} <= _files(folder)
    # without --dir the temporary folder is kept too, and named
    rc, out, err = _publish(capsys, "--model", str(model_dir), "--space", SPACE_ID)
    kept = Path(err.split("The local folder ")[1].split(" is kept")[0])
    assert rc == 2 and (kept / "model" / "onnx" / "model.onnx").is_file()
    shutil.rmtree(kept)


# ------------------------------------------------------------------------------ the default model of the app


def _hub_cache_entry(cache: Path, repo_id: str, model_dir: Path) -> None:
    """What `snapshot_download` leaves in the cache, so that it resolves offline."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(commit)
    shutil.copytree(model_dir, storage / "snapshots" / commit, ignore=shutil.ignore_patterns("checkpoints"))


def test_default_model_bundled_then_readme_models(onnx_copy, tmp_path, monkeypatch):
    from huggingface_hub import constants

    root = tmp_path / "app"
    root.mkdir()
    assert model_mod.default_model_spec(root) is None
    (root / "README.md").write_text("---\nsdk: gradio\nmodels:\n- me/har-a\n- me/har-b\n---\n# Space\n")
    assert model_mod.default_model_spec(root) == "me/har-a"
    _hub_cache_entry(tmp_path / "cache", "me/har-a", onnx_copy)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(model_mod, "APP_ROOT", root)
    monkeypatch.setattr(model_mod.default_model_spec, "__defaults__", (root,))
    monkeypatch.delenv("HAR_MODEL", raising=False)
    handle = model_mod.load_model()
    assert handle.source == "me/har-a" and handle.classifier is not None, handle.problem
    assert handle.classifier.backend == "onnx:model.onnx"
    shutil.copytree(onnx_copy, root / "model")
    assert model_mod.default_model_spec(root) == str(root / "model")  # the bundled model comes first


# ------------------------------------------------------------------------------ as a Space: a fresh venv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def space_venv(space_dir, tmp_path_factory):
    """A fresh virtual environment (no system site-packages) with only the Space's requirements.txt installed."""
    venv = tmp_path_factory.mktemp("venv") / "space"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           "-r", str(space_dir / "requirements.txt")], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        unreachable = ("NewConnectionError", "Network is unreachable", "Temporary failure in name resolution",
                       "Could not fetch URL", "ConnectTimeout", "ProxyError")
        if any(s in proc.stderr for s in unreachable):
            pytest.skip("pip cannot reach a package index: the fresh Space environment cannot be built here")
        pytest.fail(f"pip install -r requirements.txt failed:\n{proc.stderr[-3000:]}")
    return python


def test_space_runs_from_its_own_requirements_without_torch(space_dir, space_venv, tmp_path):
    from gradio_client import Client, handle_file
    from test_video import make_clip

    probe = subprocess.run([str(space_venv), "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    probe = subprocess.run([str(space_venv), "-c", "import transformers"], capture_output=True, text=True)
    assert probe.returncode != 0

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("HAR_MODEL", "PYTHONPATH")}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False")
    log = open(tmp_path / "app.log", "w")
    app = subprocess.Popen([str(space_venv), "app.py"], cwd=space_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        client, deadline = None, time.monotonic() + 120
        while client is None:
            assert app.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the app did not start within 120 s"
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:
                time.sleep(0.2)
        image = tmp_path / "walk.jpg"
        synthetic_image(1, 5).save(image)
        label, _, answer = client.predict(handle_file(str(image)), api_name="/classify_image")
        assert label["label"] in CLASSES and answer["top_k"][0]["label"] == label["label"]
        _, _, segments, summary, _ = client.predict(handle_file(str(make_clip(tmp_path / "clip.mp4"))), "5", 3,
                                                 api_name="/classify_video")
        assert segments["data"] and all(row[2] in CLASSES for row in segments["data"]) and "40 frames" in summary
        info = client.predict(api_name="/model_info")
        assert info["loaded"] and info["backend"] == "onnx:model.onnx" and Path(info["source"]).name == "model"
    finally:
        app.terminate()
        app.wait(timeout=30)
        log.close()


# ------------------------------------------------------------------------------ Hub ids in predict and export-onnx


@pytest.fixture()
def cached_hub_model(model_dir, tmp_path, monkeypatch):
    """``me/har-cached``: a Hub model (no ONNX export) in a local Hub cache, as an earlier download left it."""
    from huggingface_hub import constants

    _hub_cache_entry(tmp_path / "cache", "me/har-cached", model_dir)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return "me/har-cached"


def test_predict_accepts_a_hub_id(cached_hub_model, tmp_path, capsys):
    image = tmp_path / "walk.jpg"
    synthetic_image(1, 5).save(image)
    assert cli.main(["predict", "--model", cached_hub_model, str(image)]) == 0
    out = capsys.readouterr().out
    assert "walk.jpg" in out and any(c in out for c in CLASSES)
    assert cli.main(["predict", "--model", "me/not-cached", str(image)]) == 2
    err = capsys.readouterr().err
    assert "--model=me/not-cached" in err and "Hugging Face Hub" in err and err.count("\n") == 1


def test_export_onnx_of_a_hub_id_writes_a_copy_not_the_cache(cached_hub_model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "exported"
    assert cli.main(["export-onnx", "--model", cached_hub_model, "--output-dir", str(out), "--no-int8"]) == 0
    assert (out / "onnx" / "model.onnx").is_file() and (out / "config.json").is_file()
    assert not list((tmp_path / "cache").rglob("*.onnx"))  # the download cache is never written to
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep")
    assert cli.main(["export-onnx", "--model", cached_hub_model, "--output-dir", str(tmp_path / "busy")]) == 2
    assert "not empty" in capsys.readouterr().err and _files(tmp_path / "busy") == {"mine.txt"}
