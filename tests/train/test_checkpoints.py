"""What --resume trusts: checkpoints written completely, by a run with the same data, classes and flags."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from har_model.errors import HarError
from har_model.train import checkpoints


def _checkpoint(folder, step: int):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    save_file({"w": torch.arange(1000, dtype=torch.float32)}, str(path / "model.safetensors"))
    torch.save({"step": step}, path / "optimizer.pt")
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_a_checkpoint_cut_short_anywhere_is_incomplete(tmp_path):
    good = _checkpoint(tmp_path, 1)
    assert checkpoints.incomplete_reason(good) is None
    for name, cut in (("model.safetensors", 0.6), ("optimizer.pt", 0.5), ("trainer_state.json", 0.5)):
        path = _checkpoint(tmp_path / name, 2)
        data = (path / name).read_bytes()
        (path / name).write_bytes(data[: int(len(data) * cut)])
        assert checkpoints.incomplete_reason(path), name
    unfinished = _checkpoint(tmp_path / "killed", 3)
    (unfinished / "trainer_state.json").unlink()  # the Trainer writes it last
    assert "trainer_state.json" in checkpoints.incomplete_reason(unfinished)


def test_the_newest_complete_checkpoint_is_chosen_with_a_warning(tmp_path):
    _checkpoint(tmp_path, 5)
    newest = _checkpoint(tmp_path, 10)
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    warnings = []
    assert checkpoints.last_complete(tmp_path, warn=warnings.append) == str(tmp_path / "checkpoint-5")
    assert len(warnings) == 1 and "checkpoint-10" in warnings[0] and "cut short" in warnings[0]
    assert not newest.exists()  # removed: the next retry does not trip over it again
    assert checkpoints.last_complete(tmp_path / "none") is None


def _args(**changes):
    base = {name: None for name in checkpoints.RESUME_FLAGS}
    base.update(model="efficientnet-lite0", soup=2, epochs=5.0, batch_size=32, learning_rate=2e-3, seed=42)
    return {**base, **changes}


def _dataset(labels, n=4):
    from datasets import Dataset, DatasetDict

    import helpers
    from har_model.data import features_for

    rows = {"image": [helpers.synthetic_image(i % 2, i) for i in range(n)], "label": [i % 2 for i in range(n)]}
    ds = Dataset.from_dict(rows, features=features_for(labels))
    return DatasetDict({"train": ds, "validation": ds.select([0]), "test": ds.select([1])})


def test_resume_refuses_checkpoints_of_another_run_and_says_what_differs(tmp_path):
    dsd = _dataset(["a", "b"])
    checkpoints.write_run(tmp_path, checkpoints.run_fingerprint(_args(), dsd))
    checkpoints.check_resume(tmp_path, checkpoints.run_fingerprint(_args(), _dataset(["a", "b"])))  # same run

    with pytest.raises(HarError) as info:
        checkpoints.check_resume(tmp_path, checkpoints.run_fingerprint(_args(batch_size=16, mixup=0.2), dsd))
    message = str(info.value)
    assert "--batch-size 32 -> 16" in message and "--mixup None -> 0.2" in message and "--overwrite" in message
    checkpoints.check_resume(tmp_path, checkpoints.run_fingerprint(_args(epochs=9.0), dsd))  # train for longer
    assert "data" not in message.split("(", 1)[1].split(")")[0]

    with pytest.raises(HarError, match=r"the data \(images, labels or split\); the class names"):
        checkpoints.check_resume(tmp_path, checkpoints.run_fingerprint(_args(), _dataset(["a", "c"])))
    with pytest.raises(HarError, match="the data"):
        checkpoints.check_resume(tmp_path, checkpoints.run_fingerprint(_args(), _dataset(["a", "b"], n=6)))
    with pytest.raises(HarError, match="run.json is missing"):
        checkpoints.check_resume(tmp_path / "other", checkpoints.run_fingerprint(_args(), dsd))


def test_a_run_recorded_before_a_flag_existed_resumes_with_that_flags_old_behaviour(tmp_path):
    dsd = _dataset(["a", "b"])
    old = checkpoints.run_fingerprint(_args(), dsd)
    del old["flags"]["distill_targets"]  # run.json of a run made before --distill-targets
    checkpoints.write_run(tmp_path, old)
    checkpoints.check_resume(tmp_path, checkpoints.run_fingerprint(_args(distill_targets="clean"), dsd))
    with pytest.raises(HarError, match="--distill-targets clean -> augmented"):
        checkpoints.check_resume(tmp_path, checkpoints.run_fingerprint(_args(distill_targets="augmented"), dsd))
