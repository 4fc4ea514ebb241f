"""Fraction of predictions equal to the references.

Shipped with distill so ``evaluate.load`` works offline (loaded by path).
"""

import datasets
import evaluate
import numpy as np


class Accuracy(evaluate.Metric):
    """Fraction of predictions equal to the references."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Fraction of predictions equal to the references.",
            citation="",
            inputs_description="predictions and references: lists of labels",
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references):
        correct = np.asarray(predictions) == np.asarray(references)
        return {"accuracy": float(correct.mean()) if correct.size else 0.0}
