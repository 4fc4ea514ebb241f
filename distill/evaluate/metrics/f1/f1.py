"""Binary F1 of the positive class (label 1), as GLUE reports for MRPC and QQP.

Shipped with distill so ``evaluate.load`` works offline (loaded by path).
"""

import datasets
import evaluate
import numpy as np


class F1(evaluate.Metric):
    """Binary F1 of the positive class (label 1), as GLUE reports for MRPC and QQP."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Binary F1 of the positive class (label 1), as GLUE reports for MRPC and QQP.",
            citation="",
            inputs_description="predictions and references: lists of labels",
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references, pos_label=1):
        p = np.asarray(predictions) == pos_label
        r = np.asarray(references) == pos_label
        tp = float(np.sum(p & r))
        denom = float(np.sum(p) + np.sum(r))
        return {"f1": 2 * tp / denom if denom else 0.0}
