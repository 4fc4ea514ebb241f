"""The ``causal-lm`` task kind: next-token prediction on raw text, distilled token by token from a decoder teacher.

Rows are documents (``{"text": ...}``) read by ``distill.data.lm`` (a folder of ``train``/``dev`` text files,
WikiText's ``wiki.*.raw``, one file, or jsonl); ``tokenize`` packs them into blocks of ``max_length`` tokens (the
block size) with EOS between documents, labels = input ids (-100 on padding; the model shifts them). The output
loss is ``lm_kd`` (``distill.objective.objective``): α·next-token CE + (1−α)·T²·forward KL(teacher ‖ student) per
token, masked to real tokens. Metrics from logits: perplexity (exp of the mean next-token NLL over the labelled
positions of the blocks), next-token accuracy; agreement is top-1 next-token agreement with the teacher.

The trivial predictor is a *unigram* model of the training text (add-one smoothed token frequencies, the same
distribution at every position): a trained LM must beat its perplexity by far.

Also registers the ``causal-lm`` task (``--task causal-lm``), whose data comes from ``--data``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from distill.core.errors import DataError
from distill.data.batching import IGNORE_INDEX
from distill.data.kinds import OnnxSignature, ReportFields, TaskKind, TrivialPredictor, register_kind
from distill.data.splits import Splits
from distill.data.task import Task

CAUSAL_LM = "causal-lm"
LM_LOSS = "lm_kd"
HUB_WIKITEXT = {"wikitext-2": ("Salesforce/wikitext", "wikitext-2-raw-v1"),
                "wikitext-103": ("Salesforce/wikitext", "wikitext-103-raw-v1")}


# ---- reading and packing -----------------------------------------------------------------------------------------

def _documents_dataset(docs: list[str]):
    from datasets import Dataset

    return Dataset.from_dict({"text": list(docs)})


def _hub_documents(name: str) -> tuple[list[str], list[str]]:
    """WikiText from the Hub (needs internet): train and validation lines joined, split into articles."""
    from datasets import load_dataset

    from distill.data.lm import split_wikitext

    path, config = HUB_WIKITEXT[name]
    try:
        data = load_dataset(path, config)
    except Exception as exc:  # offline, or the Hub refused: one line
        raise DataError(f"cannot download '{name}' ({exc.__class__.__name__})",
                        "pass --data DIR with train/dev text files, or --data wikitext-2-demo (offline)") from None
    return (split_wikitext("\n".join(data["train"]["text"])), split_wikitext("\n".join(data["validation"]["text"])))


def load_lm_text(task: Task | None, data: str | None = None, *, text_columns=None, label_column=None,
                 max_train_samples: int | None = None, seed: int = 0) -> Splits:
    """The documents of train and dev (``distill.data.lm``'s readers; without a train file, WikiText's valid/test
    pair trains on valid and scores test). ``max_train_samples`` caps training *blocks*, after packing."""
    from distill.data.lm import find_lm_files, read_documents

    task = task or LM_TASK
    field = (text_columns or ("text",))[0]
    if data in HUB_WIKITEXT and not Path(data).exists():
        train, dev = _hub_documents(data)
        return Splits(_documents_dataset(train), _documents_dataset(dev), task, data)
    if not data:
        raise DataError("--task causal-lm needs text", "pass --data DIR (train/dev text files), a text file, "
                                                       "or --data wikitext-2-demo")
    path = Path(data).expanduser()
    if path.is_dir():
        files, _ = find_lm_files(path)
        train, dev = read_documents(files["train"], field), read_documents(files["dev"], field)
    elif path.is_file():
        docs = read_documents(path, field)
        if len(docs) < 2:
            raise DataError(f"'{path}' holds one document, too few to hold out a dev part",
                            "give a folder with train and dev files, or a file with several documents")
        train = [d for i, d in enumerate(docs) if i % 10 != 9] or docs[:-1]
        dev = [d for i, d in enumerate(docs) if i % 10 == 9] or docs[-1:]
    else:
        raise DataError(f"text source '{path}' does not exist", "pass a folder of train/dev text files or one file")
    return Splits(_documents_dataset(train), _documents_dataset(dev), task, str(path))


def tokenize_lm(dataset, tokenizer, max_length: int, *, index: bool = False):
    """Documents → packed blocks of ``max_length`` tokens (``distill.data.lm.lm_dataset``: EOS after each document,
    no BOS, the stream cut into blocks, the short last one dropped); ``idx`` when ``index``."""
    from distill.data.lm import lm_dataset

    blocks = lm_dataset(list(dataset["text"]), tokenizer, max_length)
    return blocks.add_column("idx", list(range(len(blocks)))) if index else blocks


class BlockCollator:
    """Stack packed blocks (equal length) into tensors: ``input_ids``, ``attention_mask``, ``labels`` (+ ``idx``)."""

    def __init__(self, tokenizer=None, pad_to_multiple_of: int | None = None) -> None:
        self.pad_id = int(getattr(tokenizer, "pad_token_id", None) or getattr(tokenizer, "eos_token_id", 0) or 0)

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        fills = {"input_ids": self.pad_id, "attention_mask": 0, "labels": IGNORE_INDEX}
        batch = {}
        for key, fill in fills.items():
            if key in rows[0]:
                out = torch.full((len(rows), width), fill, dtype=torch.long)
                for i, r in enumerate(rows):
                    out[i, :len(r[key])] = torch.as_tensor(r[key])
                batch[key] = out
        if "idx" in rows[0]:
            batch["idx"] = torch.tensor([r["idx"] for r in rows], dtype=torch.long)
        return batch


# ---- scores from logits ------------------------------------------------------------------------------------------

def next_token_ids(logits) -> np.ndarray:
    """The most likely next token at every position."""
    return np.asarray(logits).argmax(-1)


def lm_metrics(task, logits, labels, load_metric=None) -> dict[str, float]:
    """Perplexity and next-token accuracy of (N, L, V) logits against (N, L) labels (shifted: the logits at i
    predict token i + 1; positions whose next label is -100 are not scored)."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels)
    pred, target = logits[:, :-1], labels[:, 1:]
    keep = target != IGNORE_INDEX
    if not keep.any():
        return {"perplexity": float("nan"), "token_accuracy": 0.0}
    rows = pred[keep]
    top = rows.max(-1, keepdims=True)
    log_z = (top[:, 0] + np.log(np.exp(rows - top).sum(-1)))
    nll = float((log_z - rows[np.arange(len(rows)), target[keep]]).mean())
    return {"perplexity": math.exp(nll), "token_accuracy": float((rows.argmax(-1) == target[keep]).mean()),
            "nll": nll}


def real_positions(logits, labels=None) -> np.ndarray:
    """The positions compared with the teacher: every real token (labels ≠ -100); (N, L, V) → (n, V)."""
    logits = np.asarray(logits)
    return logits if labels is None else logits[np.asarray(labels) != IGNORE_INDEX]


def same_token(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 next-token agreement: share of positions where both predict the same token."""
    return float((a == b).mean()) if a.size else 0.0


def unigram_log_probs(train_ids, vocab_size: int) -> np.ndarray:
    """Add-one smoothed log-frequencies of the training tokens (labels ≠ -100), shape (vocab_size,)."""
    ids = np.asarray(train_ids, dtype=np.int64).reshape(-1)
    ids = ids[(ids >= 0) & (ids < vocab_size)]
    counts = np.bincount(ids, minlength=vocab_size).astype(np.float64) + 1.0
    return np.log(counts / counts.sum())


def unigram_perplexity(train_ids, eval_ids, vocab_size: int) -> float:
    """Perplexity of ``eval_ids`` under the unigram model of ``train_ids`` (the causal-LM trivial baseline)."""
    log_p = unigram_log_probs(train_ids, vocab_size)
    ids = np.asarray(eval_ids).reshape(-1)
    ids = ids[(ids >= 0) & (ids < vocab_size)]
    return float(math.exp(-log_p[ids].mean())) if ids.size else float("nan")


def unigram_predictor(task, train_labels, dev_labels, vocab_size: int | None = None) -> TrivialPredictor:
    """The unigram model of the training tokens, as one (1, 1, V) row of log-probabilities that broadcasts over
    every dev position (a full (N, L, V) array would be gigabytes for a 49k vocabulary)."""
    train = np.asarray(train_labels)
    vocab = vocab_size or int(max(train.max(initial=0), np.asarray(dev_labels).max(initial=0))) + 1
    log_p = unigram_log_probs(train, vocab).astype(np.float32)
    return TrivialPredictor("unigram model of the training text", log_p.reshape(1, 1, -1))


def block_labels(dataset) -> np.ndarray:
    """The (N, L) labels of packed blocks (documents are packed first when the split is still raw text)."""
    if "labels" not in dataset.column_names:
        raise DataError("a causal-LM split must be packed into blocks before it has labels",
                        "tokenize it with the causal-lm kind first")
    return np.asarray(dataset["labels"])


def is_lm_text(path: str) -> bool:
    """Claims a folder of WikiText ``wiki.*.raw`` files (``--data`` without ``--task``)."""
    folder = Path(path)
    return folder.is_dir() and any(folder.glob("wiki.*.raw"))


CAUSAL_LM_KIND = register_kind(TaskKind(
    name=CAUSAL_LM, auto_model="AutoModelForCausalLM", target="tokens", columns=("text",), load=load_lm_text,
    tokenize=tokenize_lm, collator=BlockCollator, output_loss=LM_LOSS, predictions=next_token_ids,
    metrics=lm_metrics, scored=real_positions, agreement=same_token, trivial=unigram_predictor,
    split_labels=block_labels,
    onnx=OnnxSignature(output_axes={0: "batch_size", 1: "sequence_length"}, inputs=("input_ids", "attention_mask"),
                       example="The capital of France is", decode="int(logits[0, -1].argmax())"),
    report=ReportFields(("perplexity", "token_accuracy"), "share of positions where the stage's most likely next "
                        "token is the teacher's", confusion=False, unit="token"),
    per_token=True, cross_tokenizer=False, teacher_cache=False, sniff=is_lm_text,
    head_names=("LMHeadModel",)))

LM_TASK = Task(CAUSAL_LM, ("text",), "labels", 0, ("perplexity", "token_accuracy"), kind=CAUSAL_LM)
