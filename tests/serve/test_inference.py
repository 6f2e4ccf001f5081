"""The fast inference path gives the stock pipeline's results, for every input type and backend, and the predict CLI."""

from __future__ import annotations

import csv
import shutil

import helpers
import numpy as np
import pytest
from PIL import Image

from har_model import cli
from har_model.errors import HarError
from har_model.model_folder.int8 import read_gate
from har_model.serve.inference import Classifier


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: on a CPU shared with other jobs, OpenMP threads waiting on each other are far slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sizes():
    return [(96, 72), (40, 64), (33, 33), (300, 200)]


def _images():
    """Varied RGB pictures of each class at several sizes (so resizing both up and down is exercised)."""
    return [helpers.synthetic_image(i % 3, i, size) for i, size in enumerate(_sizes() * 3)]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with its head rescaled so that the test images get varied, unsaturated predictions."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    folder = tmp_path_factory.mktemp("balanced") / "model"
    shutil.copytree(tiny_model_dir, folder)
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    pixels = AutoImageProcessor.from_pretrained(folder)(images=_images(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
        scale = 1.5 / logits.std(dim=0).clamp_min(1e-6)
        model.classifier.weight.mul_(scale[:, None])
        model.classifier.bias.copy_(model.classifier.bias * scale - (logits * scale).mean(dim=0))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipe(model_dir):
    from transformers import pipeline

    return pipeline("image-classification", model=str(model_dir), device=-1)


def _pipeline_proba(pipe, images, labels) -> np.ndarray:
    out = pipe(images, top_k=len(labels))
    return np.array([[{r["label"]: r["score"] for r in rows}[name] for name in labels] for rows in out], np.float32)


@pytest.fixture(scope="module")
def onnx_model_dir(model_dir, tmp_path_factory):
    """A copy of the test model with its ONNX exports (the torch-only folder stays as it is)."""
    from har_model.model_folder.onnx import export_onnx

    folder = tmp_path_factory.mktemp("onnx_model") / "model"
    shutil.copytree(model_dir, folder)
    helpers.write_dataset_copy(folder, {"train": 10, "validation": 10})  # int8 is calibrated and gated on it
    paths = export_onnx(folder, quantize=True)
    assert paths["fp32"].is_file() and paths["int8"].is_file()
    return folder


# ------------------------------------------------------------------------------------------ agreement with pipeline()


@pytest.mark.parametrize(
    "backend, atol",
    [("torch", 1e-5), ("torch-bf16", 0.05), ("onnx", 1e-4), ("onnx-int8", 0.15)],
)
def test_backends_agree_with_the_stock_pipeline(backend, atol, model_dir, onnx_model_dir, pipe, tmp_path):
    images = _images()
    if backend.startswith("onnx"):
        clf = Classifier.load(onnx_model_dir, backend="onnx-fp32" if backend == "onnx" else backend)
        assert clf.backend == ("onnx:model_int8.onnx" if backend == "onnx-int8" else "onnx:model.onnx")
    else:
        clf = Classifier.load(model_dir, backend=backend)
        assert clf.backend == backend
    ref = _pipeline_proba(pipe, images, clf.labels)
    assert len(set(ref.argmax(1))) == 3 and ref.max() < 0.999, "the test model must give varied predictions"

    # the same pictures as PIL images, as RGB numpy frames and as JPEG... PNG files (lossless, so identical pixels)
    paths = []
    for i, im in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    for inputs in (images, [np.asarray(im) for im in images], paths, [str(p) for p in paths]):
        probs = clf.predict_proba(inputs, batch_size=5)
        assert probs.shape == (len(images), 3) and probs.dtype == np.float32
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(probs, ref, atol=atol)
        if atol <= 1e-4:
            assert (probs.argmax(1) == ref.argmax(1)).all()


def test_odd_modes_and_exif_orientation_match_the_pipeline(model_dir, pipe, tmp_path):
    base = helpers.synthetic_image(1, 7, (80, 50))
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated by 90 degrees
    base.save(rotated, exif=exif, quality=95)
    images = [base.convert("L"), base.convert("P"), base.convert("CMYK"), Image.open(rotated)]
    clf = Classifier.load(model_dir, backend="torch")
    probs = clf.predict_proba(images + [rotated])
    ref = _pipeline_proba(pipe, images + [str(rotated)], clf.labels)
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    assert clf.predict_proba([np.asarray(base.convert("L"))]).shape == (1, 3)


def test_large_jpeg_is_decoded_in_draft_mode_with_the_same_result(model_dir, pipe, tmp_path):
    big = helpers.synthetic_image(2, 3, (1280, 960)).resize((1280, 960))
    path = tmp_path / "big.jpg"
    big.save(path, quality=95)
    clf = Classifier.load(model_dir, backend="torch")
    assert clf.preprocessing.draft_size == (32, 32)
    from har_model.imaging import open_rgb

    assert open_rgb(path, draft_size=clf.preprocessing.draft_size).size == (160, 120)  # 1/8 scale DCT decode
    probs = clf.predict_proba([path])
    ref = _pipeline_proba(pipe, [str(path)], clf.labels)
    np.testing.assert_allclose(probs, ref, atol=0.02)
    assert probs.argmax() == ref.argmax()


def test_predict_top_k_and_batching(tiny_model_dir):
    clf = Classifier.load(tiny_model_dir)
    assert clf.backend == "torch" and clf.labels == list(helpers.CLASSES) and clf.image_size == (32, 32)
    images = _images()
    full = clf.predict_proba(images, batch_size=32)
    np.testing.assert_allclose(clf.predict_proba(images, batch_size=1), full, atol=1e-5)
    top = clf.predict(images, top_k=2)
    assert len(top) == len(images) and all(len(t) == 2 for t in top)
    for row, probs in zip(top, full):
        assert row[0][0] == clf.labels[int(probs.argmax())] and row[0][1] >= row[1][1]
    assert len(clf.predict([images[0]], top_k=10)[0]) == 3
    assert clf.predict_proba(images[0]).shape == (1, 3)  # a single image is accepted too


def test_predict_files_reports_unreadable_files_in_order(tiny_model_dir, tmp_path):
    clf = Classifier.load(tiny_model_dir)
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.jpg")
        helpers.synthetic_image(i % 3, i).save(paths[-1])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    order = [paths[0], paths[1], bad, paths[2], tmp_path / "missing.jpg", paths[3], paths[4]]
    rows = list(clf.predict_files(order, batch_size=2))
    assert [r[0] for r in rows] == [str(p) for p in order]
    assert [r[2] is None for r in rows] == [True, True, False, True, False, True, True]
    assert "bad.jpg" in rows[2][2] and "no such file" in rows[4][2]
    ok = [r[1] for r in rows if r[1] is not None]
    np.testing.assert_allclose(np.stack(ok), clf.predict_proba([paths[i] for i in range(5)]), atol=1e-5)
    with pytest.raises(HarError, match="bad.jpg"):
        clf.predict_proba([paths[0], bad])


# ------------------------------------------------------------------------------------------ ONNX


def test_auto_backend_prefers_the_onnx_export(onnx_model_dir, tiny_model_dir):
    assert Classifier.load(onnx_model_dir).backend == f"onnx:{read_gate(onnx_model_dir).default_file}"
    assert Classifier.load(tiny_model_dir, backend="auto").backend == "torch"
    (onnx_model_dir / "onnx" / "model.onnx").rename(onnx_model_dir / "onnx" / "model.onnx.bak")
    try:
        assert Classifier.load(onnx_model_dir).backend == "onnx:model_int8.onnx"
    finally:
        (onnx_model_dir / "onnx" / "model.onnx.bak").rename(onnx_model_dir / "onnx" / "model.onnx")


def test_model_folder_with_onnx_still_loads_in_plain_pipeline(onnx_model_dir):
    from transformers import pipeline

    out = pipeline("image-classification", model=str(onnx_model_dir))(_images()[0])
    assert {r["label"] for r in out} == set(helpers.CLASSES)


def test_export_onnx_command_and_errors(tiny_model_dir, tmp_path, capsys):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model_dir, folder)
    assert cli.main(["export-onnx", "--model", str(folder), "--no-int8"]) == 0
    assert (folder / "onnx" / "model.onnx").is_file() and not (folder / "onnx" / "model_int8.onnx").exists()
    assert "model.onnx" in capsys.readouterr().out
    assert cli.main(["export-onnx", "--model", str(tmp_path / "nothing")]) == 2
    assert "no such model folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ load errors


def test_load_errors_are_one_clear_line(tiny_model_dir, tmp_path):
    with pytest.raises(HarError, match="no such model folder"):
        Classifier.load(tmp_path / "absent")
    with pytest.raises(HarError, match="no config.json"):
        Classifier.load(tmp_path)
    with pytest.raises(HarError, match="unknown backend"):
        Classifier.load(tiny_model_dir, backend="cuda")
    with pytest.raises(HarError, match="no ONNX model"):
        Classifier.load(tiny_model_dir, backend="onnx")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(HarError, match="preprocessor_config.json: cannot read"):
        Classifier.load(broken)
    (broken / "preprocessor_config.json").unlink()
    with pytest.raises(HarError, match="no preprocessor_config.json"):
        Classifier.load(broken)
    shutil.copy(tiny_model_dir / "preprocessor_config.json", broken)
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(HarError, match="cannot load the model"):
        Classifier.load(broken, backend="torch")


def test_bad_inputs_raise_harerror(tiny_model_dir):
    clf = Classifier.load(tiny_model_dir)
    with pytest.raises(HarError, match="shape"):
        clf.predict_proba([np.zeros((4, 4, 5), np.uint8)])
    with pytest.raises(HarError, match="type int"):
        clf.predict_proba([3])


# ------------------------------------------------------------------------------------------ predict command


@pytest.fixture()
def image_tree(tmp_path):
    root = helpers.make_class_folder(tmp_path / "imgs", per_class=2)
    (root / "notes.txt").write_text("not an image")
    (root / "running" / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    return root


def test_predict_command_folder_glob_and_files(tiny_model_dir, image_tree, capsys):
    # exit 1: one input (corrupt.jpg) could not be read; the others are still listed
    assert cli.main(["predict", "--model", str(tiny_model_dir), "--top-k", "2", str(image_tree)]) == 1
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["path", "prediction", "label_1", "score_1", "label_2", "score_2", "error"]
    assert sum("img_" in line for line in lines) == 6 and "notes.txt" not in out
    assert "corrupt.jpg" in out and "not an image" in out and "7 images, 1 unreadable" in out

    assert cli.main(["predict", "--model", str(tiny_model_dir), str(image_tree / "sitting" / "*.jpg")]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "img_" in line]
    assert len(rows) == 2 and all("/sitting/" in row for row in rows)

    one = image_tree / "clapping" / "img_000.jpg"
    assert cli.main(["predict", "--model", str(tiny_model_dir), str(one), str(image_tree / "running" / "**" / "*.jpg")]) == 1
    captured = capsys.readouterr()
    assert "4 images, 1 unreadable" in captured.out
    assert captured.err.strip() == "error: 1 of 4 inputs could not be read (listed above with the reason)"


def test_predict_exit_codes_are_documented_and_kept(tiny_model_dir, tmp_path, capsys):
    """0: all classified; 1: some inputs failed; 2: usage or model error; all inputs failing is not a success."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jpg").write_bytes(b"broken")
    (bad / "b.png").write_bytes(b"")
    assert cli.main(["predict", "--model", str(tiny_model_dir), str(bad)]) == 1
    assert "2 images, 2 unreadable" in capsys.readouterr().out
    good = tmp_path / "good.jpg"
    helpers.synthetic_image(0, 1).save(good)
    assert cli.main(["predict", "--model", str(tiny_model_dir), str(good)]) == 0
    assert cli.main(["predict", "--model", str(tmp_path / "no-model"), str(good)]) == 2
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 every image was classified; 1 some inputs could not be read" in help_text


def test_predict_command_csv(tiny_model_dir, image_tree, tmp_path, capsys):
    out_csv = tmp_path / "preds.csv"
    rc = cli.main(["predict", "--model", str(tiny_model_dir), "--top-k", "3", "--csv", str(out_csv),
                   "--batch-size", "4", "--backend", "torch", str(image_tree)])
    assert rc == 1 and "wrote 7 rows" in capsys.readouterr().out  # 1: corrupt.jpg
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 7
    clf = Classifier.load(tiny_model_dir)
    for row in rows:
        if row["path"].endswith("corrupt.jpg"):
            assert row["label_1"] == "" and "not an image" in row["error"]
            continue
        assert row["error"] == ""
        probs = clf.predict_proba([row["path"]])[0]
        assert row["label_1"] == clf.labels[int(probs.argmax())]
        assert abs(float(row["score_1"]) - float(probs.max())) < 1e-3
        assert {row["label_1"], row["label_2"], row["label_3"]} == set(helpers.CLASSES)
    # an existing CSV is replaced only with --overwrite
    before = out_csv.read_bytes()
    args = ["predict", "--model", str(tiny_model_dir), "--csv", str(out_csv), "--backend", "torch",
            str(image_tree / "clapping")]
    capsys.readouterr()
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists; add --overwrite" in err and out_csv.read_bytes() == before
    assert cli.main([*args, "--overwrite"]) == 0 and out_csv.read_bytes() != before


@pytest.mark.parametrize(
    "args, message",
    [
        (["{model}", "{tmp}/nope.jpg"], "nope.jpg: no such file or folder"),
        (["{model}", "{tmp}/empty"], "no images found"),
        (["{model}", "{tmp}/empty/*.png"], "no images match"),
        (["{tmp}/empty", "{img}"], "no config.json"),
        (["{model}", "--top-k", "0", "{img}"], "--top-k must be at least 1"),
        (["{model}", "--csv", "{tmp}/no/such/dir/out.csv", "{img}"], "does not exist"),
        (["{model}", "--unsure-below", "1.5", "{img}"], "--unsure-below 1.5: give a probability between 0 and 1"),
    ],
)
def test_predict_command_errors(args, message, tiny_model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    img = tmp_path / "x.jpg"
    helpers.synthetic_image(0, 0).save(img)
    filled = [a.format(model=tiny_model_dir, tmp=tmp_path, img=img) for a in args]
    assert cli.main(["predict", "--model", *filled]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


# --------------------------------------------------------------------------------------------- calibration


def test_saved_temperature_changes_probabilities_but_never_the_top_label(tiny_model_dir, tmp_path):
    from har_model.calibration import Calibration

    folder = tmp_path / "calibrated"
    shutil.copytree(tiny_model_dir, folder)
    images = [np.asarray(helpers.synthetic_image(i % 3, i)) for i in range(12)]
    raw = Classifier.load(folder, backend="torch").predict_proba(images)
    Calibration(temperature=3.0, unsure_below=0.5).save(folder)
    clf = Classifier.load(folder, backend="torch")
    served = clf.predict_proba(images)
    assert not np.allclose(served, raw, atol=1e-4)
    assert (served.max(1) < raw.max(1) + 1e-6).all()  # T > 1 softens
    assert (served.argmax(1) == raw.argmax(1)).all()
    assert clf.unsure_below == 0.5


def test_predict_says_unsure_exactly_below_the_threshold(tiny_model_dir, image_tree, tmp_path, capsys):
    clf = Classifier.load(tiny_model_dir)
    paths = sorted(str(p) for p in image_tree.rglob("img_*.jpg"))
    top = clf.predict_proba(paths).max(1)
    threshold = float(np.median(top))
    out_csv = tmp_path / "unsure.csv"
    assert cli.main(["predict", "--model", str(tiny_model_dir), "--unsure-below", f"{threshold}", "--csv", str(out_csv),
                     *paths]) == 0
    with open(out_csv, newline="") as fh:
        rows = {row["path"]: row for row in csv.DictReader(fh)}
    for path, p in zip(paths, top):
        expected = "unsure" if p < threshold else rows[path]["label_1"]
        assert rows[path]["prediction"] == expected
    assert sum(r["prediction"] == "unsure" for r in rows.values()) == int((top < threshold).sum()) > 0


# --------------------------------------------------------------------------------------------- heatmaps


def test_predict_explain_writes_one_heatmap_per_input(tiny_model_dir, image_tree, tmp_path, capsys):
    out = tmp_path / "heat"
    assert cli.main(["predict", "--model", str(tiny_model_dir), "--explain", str(out), str(image_tree)]) == 1  # corrupt.jpg
    assert "heatmaps (Grad-CAM) written to" in capsys.readouterr().out
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 6 and all(n.endswith(".heatmap.png") for n in written)  # the corrupt file gets none
    with Image.open(out / written[0]) as im:
        assert im.size == (256, 256) and im.mode == "RGB"
    # again into the same folder: fine (it holds only heatmaps); a folder with other files is refused
    assert cli.main(["predict", "--model", str(tiny_model_dir), "--explain", str(out), "--explain-class", "sitting",
                     str(image_tree / "running")]) == 1  # running/corrupt.jpg
    (out / "notes.txt").write_text("mine")
    assert cli.main(["predict", "--model", str(tiny_model_dir), "--explain", str(out), str(image_tree)]) == 2
    assert "holds other files (notes.txt" in capsys.readouterr().err
    assert cli.main(["predict", "--model", str(tiny_model_dir), "--explain", str(tmp_path / "h2"), "--explain-class",
                     "flying", str(image_tree)]) == 2
    assert "--explain-class flying: not a class of this model" in capsys.readouterr().err


def test_explain_chosen_class_any_backend(tiny_model_dir):
    img = helpers.synthetic_image(1, 5)
    for backend in ("torch", "torch-bf16"):  # float32 weights reused / loaded separately for the gradients
        clf = Classifier.load(tiny_model_dir, backend=backend)
        image, k, probs = clf.explain(img)
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        assert k == int(np.argmax(clf.predict_proba([img])[0])) and probs.shape == (3,)
        assert clf.explain(img, class_index=2)[1] == 2


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_flip_averaging_serves_the_mean_of_both_views_and_changes_nothing_for_a_symmetric_image(model_dir, tmp_path,
                                                                                                 backend):
    from har_model.calibration import Calibration, softmax
    from har_model.model_folder.onnx import export_onnx

    single_dir, flip_dir = tmp_path / "single", tmp_path / "flip"
    shutil.copytree(model_dir, single_dir)
    if backend == "onnx":
        export_onnx(single_dir)
    shutil.copytree(single_dir, flip_dir)
    Calibration(fitted_on="validation", flip_average=True).save(flip_dir)
    single, flip = Classifier.load(single_dir, backend=backend), Classifier.load(flip_dir, backend=backend)
    assert not single.calibration.flip_average and flip.calibration.flip_average

    half = np.asarray(helpers.synthetic_image(1, 7, (48, 72)))
    symmetric = Image.fromarray(np.concatenate([half, half[:, ::-1]], axis=1))
    np.testing.assert_allclose(flip.predict_proba([symmetric]), single.predict_proba([symmetric]), atol=1e-5)

    images = _images()[:5]
    mirrored = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in images]
    one, other = single.predict_logits(images), single.predict_logits(mirrored)
    assert np.abs(one - other).max() > 1e-3  # the test images are not symmetric: the two views differ
    np.testing.assert_allclose(flip.predict_logits(images), (one + other) / 2, atol=1e-4)
    np.testing.assert_allclose(flip.predict_proba(images), softmax((one + other) / 2), atol=1e-5)
