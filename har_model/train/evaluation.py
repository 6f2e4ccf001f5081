"""Classification metrics as an `evaluate` module that works offline.

`evaluate.load("accuracy")` fetches metric scripts from the Hub, which is unreachable here and on many users'
machines, so the metrics live in this module as a regular `evaluate.Metric`: the same API (`add_batch`,
`compute`), computed with scikit-learn like the Hub's own accuracy/f1/precision/recall scripts.
"""

from __future__ import annotations

from typing import Sequence

import datasets
import evaluate
import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

_DESCRIPTION = "Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."


class ClassificationReport(evaluate.Metric):
    """`compute(predictions=..., references=..., labels=[names])` -> accuracy, macro P/R/F1, per-class, confusion."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description="predictions and references: lists of class ids",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, labels: Sequence[str] | None = None):
        y_pred, y_true = np.asarray(predictions), np.asarray(references)
        n = len(labels) if labels is not None else int(max(y_pred.max(initial=0), y_true.max(initial=0)) + 1)
        names = list(labels) if labels is not None else [str(i) for i in range(n)]
        ids = list(range(n))
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, average=None, zero_division=0)
        mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average="macro", zero_division=0)
        return {
            "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
            "macro_precision": float(mp),
            "macro_recall": float(mr),
            "macro_f1": float(mf),
            "per_class": {
                name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                for i, name in enumerate(names)
            },
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
            "labels": names,
            "num_examples": int(len(y_true)),
        }


_METRIC: ClassificationReport | None = None


def classification_report(predictions, references, labels: Sequence[str] | None = None) -> dict:
    """Run the metric module once (one shared, in-memory instance)."""
    global _METRIC
    if _METRIC is None:
        _METRIC = ClassificationReport(keep_in_memory=True)
    return _METRIC.compute(predictions=list(map(int, predictions)), references=list(map(int, references)), labels=labels)


def prediction_logits(prediction) -> np.ndarray:
    """The logits of a `Trainer.predict` / `EvalPrediction` result as float32 (the first output when it is a tuple)."""
    out = prediction.predictions
    return np.asarray(out[0] if isinstance(out, tuple) else out, dtype=np.float32)


def compute_metrics_fn(labels: Sequence[str]):
    """A `Trainer(compute_metrics=...)` function: accuracy and macro-F1 (+ precision/recall) from logits."""

    def compute_metrics(eval_pred) -> dict:
        report = classification_report(prediction_logits(eval_pred).argmax(-1), eval_pred.label_ids, labels)
        return {k: report[k] for k in ("accuracy", "macro_f1", "macro_precision", "macro_recall")}

    return compute_metrics


def format_report(report: dict) -> str:
    """A plain-text per-class table (like scikit-learn's classification_report)."""
    width = max(12, *(len(n) for n in report["labels"]))
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for name in report["labels"]:
        row = report["per_class"][name]
        lines.append(f"{name:<{width}}  {row['precision']:9.3f}  {row['recall']:6.3f}  {row['f1']:5.3f}  {row['support']:7d}")
    lines.append(f"{'accuracy':<{width}}  {'':9}  {'':6}  {report['accuracy']:5.3f}  {report['num_examples']:7d}")
    lines.append(
        f"{'macro avg':<{width}}  {report['macro_precision']:9.3f}  {report['macro_recall']:6.3f}  {report['macro_f1']:5.3f}"
    )
    return "\n".join(lines)
