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
