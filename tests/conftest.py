import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Tests never touch the network: the Hub is unreachable here and must not be needed.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import helpers  # noqa: E402

HAR15 = ROOT.parent / "shared" / "data" / "har15"
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny EfficientNet image classifier (classes: clapping, running, sitting)."""
    return helpers.make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture()
def class_folder(tmp_path) -> Path:
    """tmp/<class>/*.jpg, 12 distinct learnable images for each of 3 classes."""
    return helpers.make_class_folder(tmp_path / "images")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def har15_dir() -> Path:
    if not HAR15.is_dir():
        pytest.skip("../shared/data/har15 is not present")
    return HAR15
