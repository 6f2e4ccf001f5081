"""Teacher against student of `--unlabeled-dir` runs, on validation and test, whichever of them the run shipped.

    python benchmarks/student_teacher.py RUN [RUN ...]     # model folders written by train.py --unlabeled-dir

A run ships the student only when it scores at least as well as the teacher on validation, so the test score of the
one it did not ship is nowhere in its metrics.json. This script rebuilds both from the checkpoints the run kept: the
teacher from the members' chosen checkpoints (averaged where the soup was shipped, as
`benchmarks/weight_average.py` does) and the student from its best checkpoint (checkpoints/student), checks that
the one the run shipped is model.safetensors, and scores both on the folder's own validation and test splits
(RUN/dataset; neither was trained on), single view and flip-averaged, evaluated as the Trainer does (the saved
processor's resize, bf16 autocast where the CPU has it). It also scores the equal-weight average of the two: the
student starts from the teacher's weights, so they average like soup members (WiSE-FT, Wortsman et al. 2022,
interpolates a fine-tuned model with its start the same way); a run ships it where it scores best on validation.
Then, over the runs: the mean and spread of each figure and of the paired differences (student minus teacher, average
minus student, average minus teacher, in points). Training chose on validation; read test as the check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.weight_average import member_states, print_paired, same_weights, score_models  # noqa: E402


def student_checkpoint(run: Path) -> Path:
    """The student's best checkpoint, as its Trainer recorded it (in the student's last checkpoint)."""
    student_dir = run / "checkpoints" / "student"
    steps = sorted(student_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if not steps:
        raise SystemExit(f"error: {student_dir}: no student checkpoint (not an --unlabeled-dir run, or one whose "
                         "checkpoints were removed)")
    best = json.loads((steps[-1] / "trainer_state.json").read_text()).get("best_model_checkpoint")
    if not best:
        raise SystemExit(f"error: {steps[-1]}: the student's Trainer recorded no best checkpoint")
    return student_dir / Path(best).name  # the folder may have been moved since: the name is what counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="model folders written by train.py --unlabeled-dir")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()

    from safetensors.torch import load_file

    from har_model.train.soup import average_state_dicts

    table = {}  # (model, split, view) -> [macro-F1 of each run]
    for run in args.runs:
        metrics = json.loads((run / "metrics.json").read_text())
        semi = metrics.get("semi_supervised")
        if not semi:
            raise SystemExit(f"error: {run}: metrics.json has no semi_supervised record (trained without "
                             "--unlabeled-dir)")
        states = member_states(run, metrics)
        chosen = [s["average"] if s["kept"] == "average" else s["best"] for s in states]
        teacher = average_state_dicts(chosen) if len(chosen) > 1 else chosen[0]
        student_dir = student_checkpoint(run)
        models = {"teacher": teacher, "student": load_file(student_dir / "model.safetensors")}
        models["average"] = average_state_dicts([models["teacher"], models["student"]])
        same = same_weights(load_file(run / "model.safetensors"), models[semi["shipped"]])
        print(f"{run}: targets {semi.get('targets', 'clean')}, {semi['unlabeled_used']} unlabelled images used, "
              f"student {student_dir.name}; shipped the {semi['shipped']}; rebuilt = shipped: {'yes' if same else 'NO'}")
        if not same:
            raise SystemExit(f"error: {run}: the rebuilt {semi['shipped']} is not model.safetensors; this script reads "
                             "the wrong files")
        print(f"  the run measured: validation macro-F1 teacher {semi['teacher_validation_macro_f1']:.4f}, student "
              f"{semi['student_validation_macro_f1']:.4f}")
        score_models(run, models, table, args.batch_size)
    print_paired(table, "teacher", "student", "student minus teacher")
    print_paired(table, "student", "average", "average minus student")
    print_paired(table, "teacher", "average", "average minus teacher")
    return 0


if __name__ == "__main__":
    sys.exit(main())
