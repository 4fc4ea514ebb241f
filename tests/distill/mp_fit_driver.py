"""Fit a tiny student alone or under ``accelerate launch`` and dump each process's weights (for test_multiprocess).

Three runs: ``plain`` (CE + KD, compared across process counts), ``hidden`` (with learned projections, whose
copies must stay identical on every rank) and ``cached`` (``hidden`` with a teacher cache rank 0 builds).
Dropout is off so 2 × batch B and 1 × batch 2B see the same math.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for factories

import factories  # noqa: E402
import torch  # noqa: E402


def _model(vocab: int, seed: int, **shape):
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    config = factories.tiny_bert_config(vocab=vocab, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                        **shape)
    return BertForSequenceClassification(config)


class _Parity(torch.nn.Module):
    """A fixed classifier whose prediction depends on the row (parity of its token-id sum)."""

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        from types import SimpleNamespace

        odd = ((input_ids * attention_mask).sum(1) % 2).float()
        return SimpleNamespace(logits=torch.stack([1 - odd, odd], dim=1))


def run(out: Path, data: Path, batch_size: int) -> dict:
    """Both fits; returns {name: {"state", "history", "parity_dev"}} and saves each as ``name-rankR.pt``."""
    from distill.data import load_splits, make_loader, tokenize
    from distill.data.tasks import get_task
    from distill.evaluate.predict import gathered_evaluator
    from distill.objective.objective import DistillConfig, Objective, uniform_layer_map
    from distill.train.loop import TrainConfig, fit
    from teachers import cache_teacher_outputs

    tok = factories.tiny_tokenizer(out)
    task = get_task("sst2")
    splits = load_splits(task, str(data))
    train = make_loader(tokenize(splits.train, tok, 32, index=True), tok, batch_size, shuffle=True, seed=0)
    dev = make_loader(tokenize(splits.dev, tok, 32), tok, 8, shuffle=False)
    teacher = _model(len(tok), 0, hidden=32, heads=4, layers=2)
    rank = os.environ.get("RANK", "0")
    parity_dev = gathered_evaluator(task, dev)(_Parity())  # row-dependent: duplicates would show
    results = {}
    for name, weight in (("plain", 0.0), ("hidden", 1.0), ("cached", 1.0)):
        student = _model(len(tok), 1, hidden=16, heads=2, ffn=32, layers=2)
        objective = Objective(DistillConfig(hidden_weight=weight), student_width=16, teacher_width=32,
                              layer_map=uniform_layer_map(2, 2))
        who = teacher
        if name == "cached":
            who = cache_teacher_outputs(teacher, train.dataset, out / "cache", hidden_layers=[1, 2], tokenizer=tok)
        result = fit(student, objective, train, TrainConfig(lr=1e-2, epochs=2, batch_size=batch_size, seed=0),
                     teacher=who, evaluate=gathered_evaluator(task, dev), metric="accuracy")
        state = {**{f"model.{k}": v for k, v in student.state_dict().items()},
                 **{f"objective.{k}": v.cpu() for k, v in objective.state_dict().items()}}
        results[name] = {"state": state, "history": result.history, "parity_dev": parity_dev}
        out.mkdir(parents=True, exist_ok=True)
        torch.save(results[name], out / f"{name}-rank{rank}.pt")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    run(args.out, args.data, args.batch_size)
