"""Matthews correlation coefficient, as GLUE reports for CoLA.

Shipped with distill so ``evaluate.load`` works offline (loaded by path).
"""

import datasets
import evaluate
import numpy as np


class MatthewsCorrelation(evaluate.Metric):
    """Matthews correlation coefficient, as GLUE reports for CoLA."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Matthews correlation coefficient, as GLUE reports for CoLA.",
            citation="",
            inputs_description="predictions and references: lists of labels",
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references):
        p = np.asarray(predictions)
        r = np.asarray(references)
        labels = np.union1d(p, r)
        c = np.array([[np.sum((r == a) & (p == b)) for b in labels] for a in labels], dtype=np.float64)
        t, q, n = c.sum(1), c.sum(0), c.sum()
        cov_pr = np.trace(c) * n - t @ q
        denom = np.sqrt((n * n - q @ q) * (n * n - t @ t))
        return {"matthews_correlation": float(cov_pr / denom) if denom else 0.0}
