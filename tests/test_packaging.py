"""The package installs on its own: a wheel built from the checkout carries the card templates and label files,
and the installed copy renders a card from outside the repository."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_carries_templates_and_renders_a_card_when_installed(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(ROOT)],
                   check=True, cwd=tmp_path, capture_output=True)
    wheel = next((tmp_path / "dist").glob("har_model-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"har_model/cards/dataset_card.md", "har_model/cards/model_card.md", "har_model/train/imagenet_labels.json"} <= names
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    code = (
        "import har_model.cards as c, har_model.data as d;"
        "assert c.__file__.startswith(%r), c.__file__;"
        "card = c.render_dataset_card(features=d.features_for(['a', 'b']), class_names=['a', 'b'],"
        " counts={'a': {'train': 3}, 'b': {'train': 2}}, split_bytes={'train': 10}, download_size=10);"
        "print(card.data.license)" % str(site)
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "other"


def test_wheel_declares_serving_dependencies_a_train_extra_and_the_har_model_command(tmp_path):
    """`pip install .` brings what serving needs, `.[train]` adds training (torch within the bounds the installed
    build satisfies, so pip keeps it instead of pulling another); `har-model` is train.py's command line."""
    import email

    import torch
    from packaging.requirements import Requirement

    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, cwd=tmp_path, capture_output=True)
    wheel = next((tmp_path / "dist").glob("har_model-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        meta = email.message_from_bytes(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))))
        entry_points = z.read(next(n for n in z.namelist() if n.endswith("entry_points.txt"))).decode()
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    base = {r.name.lower().replace("_", "-") for r in requires if r.marker is None}
    train = {r.name.lower(): r for r in requires if r.marker is not None and r.marker.evaluate({"extra": "train"})}
    assert {"gradio", "onnxruntime", "numpy", "pillow", "av", "huggingface-hub"} <= base
    assert not base & {"torch", "transformers", "datasets"} and "train" in meta.get_all("Provides-Extra")
    assert {"torch", "transformers", "datasets", "accelerate"} <= set(train)
    assert train["torch"].specifier.contains(torch.__version__.split("+")[0])  # the installed build is kept
    assert "torchvision" not in train
    assert "har-model = har_model.cli:main" in entry_points
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    out = subprocess.run([str(site / "bin" / "har-model"), "predict", "--help"], cwd=tmp_path, capture_output=True,
                         text=True, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and "--model" in out.stdout, out.stderr[-2000:]
    assert out.stdout.startswith("usage: har-model predict "), out.stdout[:200]  # the name the user typed


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = next(line for line in ci if line.startswith("pip install"))
    assert f"```bash\n{command}\n```" in readme
