"""Static int8 at export and its agreement gate: the gate decides which ONNX file `auto` serves, records why (gate
file, card, printed line, the app's Model tab), and the Space ships the file it chose. Real tiny EfficientNets with
a dataset copy of generated images."""

from __future__ import annotations

import json
import shutil

import helpers
import numpy as np
import pytest

from har_model import cli, hardware, outputs
from har_model.errors import HarError
from har_model.model_folder import int8
from har_model.model_folder.onnx import export_onnx
from har_model.preprocessing import load_preprocessing
from har_model.serve.inference import Classifier
from har_model.serve.model import load_model
from har_model.serve.space import bundle_model


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory, tiny_model_dir):
    """The tiny model fitted to the synthetic classes, with a dataset copy (train + validation) beside it."""
    folder = tmp_path_factory.mktemp("int8") / "model"
    shutil.copytree(tiny_model_dir, folder)
    images = [helpers.synthetic_image(c, s) for s in range(16) for c in range(3)]
    # long enough for clear margins: int8 must agree whatever thread count trained it (1 thread, or CI's cores)
    helpers.train_tiny_model(folder, images, [c for s in range(16) for c in range(3)], epochs=30)
    helpers.write_dataset_copy(folder, {"train": 20, "validation": 20})
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# tiny\n\n## Results\n\n## How to use\n\nx\n")
    # marked as written by train.py: the export may then add its section to the card
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    outputs.write_marker(folder, {**outputs.new_marker("model"), "complete": True, "files": files})
    return folder


@pytest.fixture(scope="module")
def exported(trained_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported") / "model"
    shutil.copytree(trained_dir, folder)
    export_onnx(folder)
    return folder


def copy_of(folder, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(folder, out)
    return out


def test_int8_that_agrees_is_served_by_auto_and_recorded(exported, capsys):
    gate = int8.read_gate(exported)
    assert gate is not None and gate.passed, gate
    assert gate.agreement >= 0.99 and gate.images == 60 and abs(gate.f1_fp32 - gate.f1_int8) <= 0.005
    assert gate.speed["fp32"] > 0 and gate.speed["int8"] > 0 and gate.speed["threads"] == 2
    assert gate.speed["vnni"] is hardware.cpu_has_vnni()  # without VNNI int8 ran on the exact, slower kernels
    assert ("exact int8 kernels" in gate.summary()) is not gate.speed["vnni"]
    assert gate.calibration["images"] == 60 and gate.calibration["method"] == "MinMax"
    recorded = json.loads((exported / "onnx" / "int8_gate.json").read_text())
    info = json.loads((exported / "onnx" / "export_info.json").read_text())
    # what is recorded is what auto loads
    assert recorded["default"] == info["default"] == "model_int8.onnx"
    assert Classifier.load(exported).backend == f"onnx:{recorded['default']}"
    card = (exported / "README.md").read_text()
    assert "<!-- har_model:onnx -->" in card and "| top-1 agreement with float32 | 100% | 100.0% |" in card
    assert card.index("har_model:onnx") < card.index("## How to use")  # inserted before the usage section
    served = load_model(exported)  # the app's Model tab and /model_info
    assert served.classifier.backend == "onnx:model_int8.onnx"
    assert "int8 gate passed: serving int8" in served.markdown()
    assert served.model_info()["int8_gate"]["passed"] is True
    assert served.model_info()["int8_gate"]["agreement"] == pytest.approx(gate.agreement)


def test_int8_that_disagrees_keeps_float32_and_says_why(trained_dir, tmp_path, monkeypatch, capsys):
    folder = copy_of(trained_dir, tmp_path)
    monkeypatch.setattr(int8, "MIN_AGREEMENT", 1.01)  # no int8 copy can agree on more than all images
    paths = export_onnx(folder)
    printed = capsys.readouterr().out
    assert "int8 gate failed (agreement" in printed and "serving float32" in printed
    gate = int8.read_gate(folder)
    assert not gate.passed and "agreement" in gate.reason and paths["int8"].is_file()
    assert json.loads((folder / "onnx" / "export_info.json").read_text())["default"] == "model.onnx"
    assert Classifier.load(folder).backend == "onnx:model.onnx"  # auto follows the gate
    assert Classifier.load(folder, backend="onnx-int8").backend == "onnx:model_int8.onnx"  # forced
    assert "failed: agreement" in (folder / "README.md").read_text()
    # a re-export replaces the card's section instead of adding a second one
    monkeypatch.setattr(int8, "MIN_AGREEMENT", 0.99)
    export_onnx(folder)
    card = (folder / "README.md").read_text()
    assert card.count("<!-- har_model:onnx -->") == 1 and "failed: agreement" not in card


def test_a_random_model_int8_and_its_gate_against_float32(tiny_model_dir, tmp_path):
    """An untrained model: whatever int8 does to it, the gate's figures are the two files' real answers."""
    folder = copy_of(tiny_model_dir, tmp_path)
    helpers.write_dataset_copy(folder, {"train": 10, "validation": 10})
    export_onnx(folder)
    gate = int8.read_gate(folder)
    pixels, labels = int8.split_pixels(folder, "validation", None)
    ref = Classifier.load(folder, backend="onnx-fp32").predict_proba([p for p in pixels]).argmax(1)
    got = Classifier.load(folder, backend="onnx-int8").predict_proba([p for p in pixels]).argmax(1)
    assert gate.agreement == pytest.approx(np.mean(ref == got))
    assert gate.f1_fp32 == pytest.approx(int8.macro_f1(labels, ref))
    assert gate.passed == (gate.agreement >= 0.99 and 100 * (gate.f1_fp32 - gate.f1_int8) <= 0.5)
    assert Classifier.load(folder).backend == f"onnx:{gate.default_file}"


def test_auto_works_with_only_one_of_the_two_files(exported, tmp_path):
    only_int8 = copy_of(exported, tmp_path / "a")
    (only_int8 / "onnx" / "model.onnx").unlink()
    assert Classifier.load(only_int8).backend == "onnx:model_int8.onnx"
    only_fp32 = copy_of(exported, tmp_path / "b")
    (only_fp32 / "onnx" / "model_int8.onnx").unlink()  # the gate passed, but the file is not there
    assert Classifier.load(only_fp32).backend == "onnx:model.onnx"
    assert Classifier.load(only_fp32, backend="onnx-fp32").predict([helpers.synthetic_image(0, 1)])


def test_forcing_a_missing_onnx_file_is_one_line(exported, tmp_path, capsys):
    folder = copy_of(exported, tmp_path)
    (folder / "onnx" / "model_int8.onnx").unlink()
    with pytest.raises(HarError, match="model_int8.onnx: no such ONNX file"):
        Classifier.load(folder, backend="onnx-int8")
    image = tmp_path / "x.png"
    helpers.synthetic_image(1, 2).save(image)
    assert cli.main(["predict", "--model", str(folder), "--backend", "onnx-int8", str(image)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "model_int8.onnx" in err[0]
    assert cli.main(["predict", "--model", str(folder), "--backend", "onnx-fp32", str(image)]) == 0
    assert "backend onnx:model.onnx" in capsys.readouterr().out


def test_the_card_of_a_folder_from_elsewhere_is_left_alone(trained_dir, tmp_path):
    folder = copy_of(trained_dir, tmp_path)
    (folder / outputs.MARKER).unlink()  # not written by train.py: its README.md is somebody else's
    card = (folder / "README.md").read_text()
    export_onnx(folder)
    assert (folder / "README.md").read_text() == card and int8.read_gate(folder) is not None


def test_without_a_dataset_copy_no_int8_is_made(tiny_model_dir, tmp_path, capsys):
    folder = copy_of(tiny_model_dir, tmp_path)
    paths = export_onnx(folder)
    assert "int8: not made (no dataset/" in capsys.readouterr().out
    assert set(paths) == {"fp32"} and not (folder / "onnx" / "model_int8.onnx").exists()
    assert int8.read_gate(folder).agreement is None and Classifier.load(folder).backend == "onnx:model.onnx"


def test_space_bundle_ships_the_file_the_gate_chose(exported, trained_dir, tmp_path, monkeypatch):
    bundled = bundle_model(exported, tmp_path / "space_ok")
    assert sorted(p.name for p in (bundled / "onnx").iterdir()) == ["export_info.json", "int8_gate.json",
                                                                      "model_int8.onnx"]
    assert Classifier.load(bundled).backend == "onnx:model_int8.onnx"
    failed = copy_of(trained_dir, tmp_path / "failed")
    monkeypatch.setattr(int8, "MIN_AGREEMENT", 1.01)
    export_onnx(failed)
    bundled = bundle_model(failed, tmp_path / "space_failed")
    assert sorted(p.name for p in (bundled / "onnx").iterdir()) == ["export_info.json", "int8_gate.json", "model.onnx"]
    assert Classifier.load(bundled).backend == "onnx:model.onnx"


def test_a_re_export_without_int8_drops_the_earlier_verdict(exported, tmp_path, capsys):
    """An int8 file that passed before must not stay the default beside a new float32 export made without int8."""
    folder = copy_of(exported, tmp_path)
    assert Classifier.load(folder).backend == "onnx:model_int8.onnx"
    export_onnx(folder, quantize=False)
    assert "int8: not made (not requested); serving float32" in capsys.readouterr().out
    gate = int8.read_gate(folder)
    assert not gate.passed and gate.agreement is None
    assert Classifier.load(folder).backend == "onnx:model.onnx"


def test_the_export_pools_globally(exported):
    """transformers' AvgPool2d(1280, ceil_mode=True) exported as a 1280x1280 AveragePool made ORT's int8 graph answer
    one class for every input: the export writes a GlobalAveragePool instead (the float check still passes)."""
    import onnx

    for name in ("model.onnx", "model_int8.onnx"):
        ops = {node.op_type for node in onnx.load(str(exported / "onnx" / name)).graph.node}
        assert "GlobalAveragePool" in ops and "AveragePool" not in ops, name


def test_int8_runs_exactly_on_any_x86_cpu(exported, monkeypatch):
    """ONNX Runtime's x86 uint8 x int8 kernels saturate on CPUs without VNNI (as CI's); the sessions serving and
    the gate use must give the exact kernels' answers there, and keep the fast kernels on VNNI CPUs."""
    import onnxruntime as ort

    pixels, _ = int8.split_pixels(exported, "validation", None)
    x = load_preprocessing(exported).normalize(pixels)
    path = exported / "onnx" / "model_int8.onnx"

    def run(session):
        return session.run(None, {"pixel_values": x})[0]

    exact_opts = ort.SessionOptions()
    exact_opts.add_session_config_entry("session.x64quantprecision", "1")
    exact = run(ort.InferenceSession(str(path), exact_opts, providers=["CPUExecutionProvider"]))
    served = Classifier.load(exported, backend="onnx-int8")
    np.testing.assert_allclose(run(served._run.session), exact, atol=1e-4)
    np.testing.assert_allclose(run(int8.cpu_session(path, 2)), exact, atol=1e-4)
    if not hardware.cpu_has_vnni():  # this machine saturates: what the test guards against is real here
        plain = run(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))
        assert np.abs(plain - exact).max() > 1e-3

    # the option is asked for exactly where the CPU lacks VNNI
    for vnni in (False, True):
        monkeypatch.setattr(int8, "cpu_has_vnni", lambda vnni=vnni: vnni)
        options = int8.cpu_session(path).get_session_options()
        if vnni:
            with pytest.raises(RuntimeError):
                options.get_session_config_entry("session.x64quantprecision")
        else:
            assert options.get_session_config_entry("session.x64quantprecision") == "1"


def test_vnni_is_read_from_the_cpu_flags(monkeypatch):
    for flags, has in [("flags\t: fpu avx2 avx512f avx512_vnni avx512_bf16", True),
                       ("flags\t: fpu avx2 avx_vnni", True), ("flags\t: fpu sse4_1 avx2 avx512f", False), ("", False)]:
        monkeypatch.setattr(hardware, "_cpuinfo", lambda flags=flags: flags)
        assert hardware.cpu_has_vnni() is has
