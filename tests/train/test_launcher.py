"""train.py under torchrun: two processes on the CPU (gloo) behave like one run.

One model folder, one dataset folder, one metrics.json, every line printed once, the training really shared (each
process trains on its half of every epoch) and --resume continuing a run cut short with --max-steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--epochs", "2", "--batch-size", "4", "--eval-batch-size", "8", "--val-fraction", "0.25",
         "--test-fraction", "0.25", "--num-workers", "1", "--report-to", "none", "--learning-rate", "3e-3",
         "--soup", "1"]


def torchrun(*args, nproc: int = 2, timeout: int = 300, ok: bool = True) -> subprocess.CompletedProcess:
    # --standalone: a free port of its own, so that tests (or users) running side by side do not collide
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(ROOT / "train.py"), *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def once(text: str, needle: str) -> bool:
    return text.count(needle) == 1


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    import helpers

    return helpers.make_class_folder(tmp_path_factory.mktemp("ddp") / "images", per_class=12)


@pytest.fixture(scope="module")
def launched(tmp_path_factory, images, tiny_model_dir):
    out = tmp_path_factory.mktemp("ddp-run") / "model"
    return out, torchrun("--data-dir", images, "--output-dir", out, "--model", tiny_model_dir, *QUICK)


def test_two_processes_write_one_model_that_pipeline_loads(launched):
    from transformers import pipeline

    import helpers

    out, _ = launched
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "clapping", "1": "running", "2": "sitting"}
    preds = pipeline("image-classification", model=str(out))(helpers.synthetic_image(1, seed=7))
    assert {p["label"] for p in preds} <= set(helpers.CLASSES)
    # one of everything: no second dataset, no staging folder, no image cache left behind
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("metrics.json")) == ["metrics.json"]
    assert [p.parent.relative_to(out).as_posix() for p in out.rglob("data_report.json")] == ["dataset"]
    assert not [p for p in out.iterdir() if p.name.startswith(".har_model-staging")]
    assert not (out / "cache").exists()


def test_every_line_is_printed_once_and_the_work_is_shared(launched):
    out, proc = launched
    for needle in ("test accuracy", "model folder:", "class balance:", "macro avg"):
        assert once(proc.stdout, needle), (needle, proc.stdout[-3000:])
    assert len([line for line in proc.stdout.splitlines() if line.startswith("training ")]) == 1  # the plan
    assert "2 processes on cpu" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["num_train"] == 18 and metrics["test"]["num_examples"] == 9
    # 18 training images, 4 per process per step, 2 processes: 3 steps an epoch (one process alone would take 5)
    state = json.loads(next((out / "checkpoints").glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["max_steps"] == 6
    assert "2 processes" in (out / "README.md").read_text()


def test_resume_under_the_launcher_continues_a_run_cut_short(tmp_path, images, tiny_model_dir):
    out = tmp_path / "model"
    first = torchrun("--data-dir", images, "--output-dir", out, "--model", tiny_model_dir, *QUICK, "--max-steps", "3")
    assert once(first.stdout, "test accuracy")
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-3"]
    resumed = torchrun("--data-dir", images, "--output-dir", out, "--model", tiny_model_dir, *QUICK, "--resume")
    assert once(resumed.stdout, "test accuracy")
    logged_epochs = [line for line in resumed.stdout.splitlines() if line.startswith("{'loss'")]
    assert len(logged_epochs) == 1 and "'epoch': '2'" in logged_epochs[0]  # epoch 1 came from the checkpoint
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-6"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and metrics["processes"] == 2


def test_a_user_error_on_the_main_process_is_one_line_and_the_others_stop_quietly(tmp_path, images, tiny_model_dir):
    not_a_folder = tmp_path / "model"
    not_a_folder.write_text("mine")
    proc = torchrun("--data-dir", images, "--output-dir", not_a_folder, "--model", tiny_model_dir, *QUICK, ok=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is a file" in errors[0], proc.stderr[-3000:]
    assert "[rank1]" not in proc.stderr  # no traceback of a broken connection from the waiting process
    assert not_a_folder.read_text() == "mine"


def test_accelerate_launch_as_the_readme_gives_it(tmp_path, images, tiny_model_dir):
    """`accelerate launch --multi_gpu --num_processes 2 train.py ...` (README): on a machine without GPUs too."""
    out = tmp_path / "model"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
           str(free_port()), str(ROOT / "train.py"), "--data-dir", str(images), "--output-dir", str(out),
           "--model", str(tiny_model_dir), *QUICK]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert once(proc.stdout, "test accuracy") and "2 processes on cpu" in proc.stdout
    assert json.loads((out / "metrics.json").read_text())["processes"] == 2


def test_two_nodes_sharing_a_disk_write_one_model(tmp_path, images, tiny_model_dir):
    """Two torchrun agents (two "nodes", one process each) meeting at one rendezvous, writing one shared folder."""
    out, port = tmp_path / "model", free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend",
           "c10d", "--rdzv_endpoint", f"localhost:{port}", "--rdzv_id", "har-test"]
    args = [str(ROOT / "train.py"), "--data-dir", str(images), "--output-dir", str(out), "--model",
            str(tiny_model_dir), *QUICK]
    nodes = [subprocess.Popen([*cmd, "--node_rank", str(n), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT) for n in (0, 1)]
    results = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], [err[-3000:] for _, err in results]
    assert sum(stdout.count("test accuracy") for stdout, _ in results) == 1
    assert json.loads((out / "metrics.json").read_text())["processes"] == 2
    assert not [p for p in out.iterdir() if p.name.startswith(".har_model-staging")]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]
