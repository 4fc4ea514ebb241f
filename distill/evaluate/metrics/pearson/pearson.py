"""Pearson correlation, as GLUE reports for STS-B.

Shipped with distill so ``evaluate.load`` works offline (loaded by path).
"""

import datasets
import evaluate
import numpy as np
import scipy.stats


class Pearson(evaluate.Metric):
    """Pearson correlation, as GLUE reports for STS-B."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Pearson correlation, as GLUE reports for STS-B.",
            citation="",
            inputs_description="predictions and references: lists of scores",
            features=datasets.Features(
                {"predictions": datasets.Value("float32"), "references": datasets.Value("float32")}
            ),
        )

    def _compute(self, predictions, references):
        x = np.asarray(predictions, dtype=np.float64)
        y = np.asarray(references, dtype=np.float64)
        value = scipy.stats.pearsonr(x, y)[0]
        return {"pearson": float(np.nan_to_num(value))}
