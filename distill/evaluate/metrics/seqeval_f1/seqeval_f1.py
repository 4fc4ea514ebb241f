"""Entity-level precision, recall and F1 of tag sequences (IOB1/IOB2/IOBES), as seqeval's default mode and
conlleval compute them, plus token accuracy and the F1 of each entity type.

An entity is a maximal run of tags of one type: it starts at ``B-``/``S-``, at an ``I-``/``E-`` after ``O`` or
after an entity of another type, and it ends before ``O``, ``B-``/``S-`` or a change of type. A predicted entity
counts as correct only when its type, start and end all equal a gold entity's.

Shipped with distill so ``evaluate.load`` works offline (loaded by path); no dependency on ``seqeval``.
"""

import datasets
import evaluate


def _split(tag):
    """``B-PER`` -> (``B``, ``PER``); ``O`` -> (``O``, ``""``); a bare type (``PER``) counts as ``I-PER``."""
    if tag in ("O", "", None):
        return "O", ""
    if len(tag) > 1 and tag[1] in "-_" and tag[0] in "BIES":
        return tag[0], tag[2:]
    return "I", tag


def _ends(prev_prefix, prefix, prev_type, kind):
    """True when the entity that ``prev`` belongs to ends before the current tag."""
    if prev_prefix == "O":
        return False
    if prev_prefix in "ES":
        return True
    return prefix in "BSO" or prev_type != kind


def _starts(prev_prefix, prefix, prev_type, kind):
    """True when an entity starts at the current tag."""
    if prefix == "O":
        return False
    if prefix in "BS":
        return True
    return prev_prefix in "OES" or prev_type != kind


def entities(tags):
    """The set of (type, start, end) spans, end inclusive, of one sentence's tags."""
    spans = set()
    prev_prefix, prev_type, start = "O", "", None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, kind = _split(tag)
        if start is not None and _ends(prev_prefix, prefix, prev_type, kind):
            spans.add((prev_type, start, i - 1))
            start = None
        if _starts(prev_prefix, prefix, prev_type, kind):
            start = i
        prev_prefix, prev_type = prefix, kind
    return spans


def _prf(correct, predicted, gold):
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


class SeqevalF1(evaluate.Metric):
    """Entity-level precision, recall and F1 (micro over entity types), and token accuracy."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Entity-level precision, recall and F1 of IOB tag sequences (seqeval default mode).",
            citation="",
            inputs_description="predictions and references: lists of sentences, each a list of tag strings",
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("string")),
                "references": datasets.Sequence(datasets.Value("string")),
            }),
        )

    def _compute(self, predictions, references):
        counts = {}  # type -> [correct, predicted, gold]
        right = total = 0
        for pred, gold in zip(predictions, references, strict=True):
            if len(pred) != len(gold):
                raise ValueError(f"a prediction has {len(pred)} tags but its reference has {len(gold)}")
            right += sum(p == g for p, g in zip(pred, gold, strict=True))
            total += len(gold)
            pred_spans, gold_spans = entities(pred), entities(gold)
            for span in pred_spans:
                counts.setdefault(span[0], [0, 0, 0])[1] += 1
            for span in gold_spans:
                counts.setdefault(span[0], [0, 0, 0])[2] += 1
            for span in pred_spans & gold_spans:
                counts[span[0]][0] += 1
        sums = [sum(c[i] for c in counts.values()) for i in range(3)]
        precision, recall, f1 = _prf(*sums)
        scores = {"f1": f1, "precision": precision, "recall": recall, "accuracy": right / total if total else 0.0}
        for kind in sorted(counts):
            scores[f"{kind}_f1"] = _prf(*counts[kind])[2]
        return scores
