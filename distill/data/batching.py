"""Batching tokenized rows: dynamic padding (sentence and per-token labels), length-grouped batches, loaders."""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100  # label of rows/positions that are not scored: word pieces after the first, specials, padding


def row_lengths(dataset) -> list[int]:
    """Token count of every tokenized row (read from the Arrow column when the dataset has one)."""
    try:
        import pyarrow.compute as pc

        return pc.list_value_length(dataset.with_format("arrow")[:].column("input_ids")).to_numpy().tolist()
    except (AttributeError, ImportError, KeyError, TypeError):
        return [len(row["input_ids"]) for row in dataset]


class PadCollator:
    """Pad a list of tokenized rows to the longest one (dynamic padding); labels and ``idx`` become tensors.

    A plain-numpy equivalent of ``DataCollatorWithPadding`` (same tensors), without its per-batch tokenizer call.
    """

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None) -> None:
        self.pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
        self.left = getattr(tokenizer, "padding_side", "right") == "left"
        self.multiple = pad_to_multiple_of

    def __call__(self, rows: list[dict]) -> dict:
        import numpy as np
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        batch: dict = {}
        for key in rows[0]:
            if key in ("labels", "label", "idx"):
                values = [r[key] for r in rows]
                dtype = torch.float32 if any(isinstance(v, float) for v in values) else torch.long
                batch["labels" if key == "label" else key] = torch.tensor(values, dtype=dtype)
                continue
            fill = self.pad_id if key == "input_ids" else 0
            out = np.full((len(rows), width), fill, dtype=np.int64)
            for i, r in enumerate(rows):
                seq = r[key]
                if self.left:
                    out[i, width - len(seq):] = seq
                else:
                    out[i, :len(seq)] = seq
            batch[key] = torch.from_numpy(out)
        return batch


class LengthGroupedBatchSampler:
    """Batches of similar length: shuffle, cut into buckets of ``bucket_factor × batch_size`` rows, sort each
    bucket by length, batch it, and shuffle the batches; the order depends only on (seed, epoch).

    With ``num_processes`` N > 1 (set by the engine under ``accelerate launch``) the same is done with global
    batches of N × ``batch_size`` rows, each then cut into N consecutive per-process batches: the processes step
    together on rows of similar length, and N processes at batch B see what one process sees at batch N × B.
    Without shuffling, every row is sorted by length (longest first), e.g. for a teacher pass over the data.
    """

    def __init__(self, lengths: list[int], batch_size: int, *, shuffle: bool = True, seed: int = 0,
                 bucket_factor: int = 50, drop_last: bool = False) -> None:
        if batch_size < 1 or bucket_factor < 1:
            raise ValueError("batch_size and bucket_factor must be >= 1")
        self.lengths = list(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.bucket_factor, self.drop_last = bucket_factor, drop_last
        self.epoch = 0
        self.num_processes = 1

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """This epoch's batches of row indices."""
        import torch

        n = len(self.lengths)
        if not self.shuffle:
            order = sorted(range(n), key=lambda i: -self.lengths[i])
            return self._cut(order)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(n, generator=gen).tolist()
        step = self.batch_size * self.num_processes  # rows per optimiser step, over all processes
        size = step * self.bucket_factor
        out: list[list[int]] = []
        for start in range(0, n, size):
            bucket = sorted(perm[start:start + size], key=lambda i: -self.lengths[i])
            out += self._cut(bucket, step)
        out = [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]
        return [part for batch in out for part in self._cut(batch, self.batch_size, drop=False)]

    def _cut(self, order: list[int], size: int | None = None, drop: bool | None = None) -> list[list[int]]:
        size = size or self.batch_size
        cut = [order[i:i + size] for i in range(0, len(order), size)]
        drop = self.drop_last if drop is None else drop
        return cut[:-1] if drop and cut and len(cut[-1]) < size else cut

    def __iter__(self):
        yield from self.batches()

    def __len__(self) -> int:
        n, step = len(self.lengths), self.batch_size * self.num_processes
        if self.drop_last:
            return n // (step if self.shuffle else self.batch_size) * (self.num_processes if self.shuffle else 1)
        return -(-n // self.batch_size)


def make_loader(dataset, tokenizer, batch_size: int, *, shuffle: bool, seed: int = 0, group_by_length: bool = False,
                bucket_factor: int = 50, pin_memory: bool | None = None, pad_to_multiple_of: int | None = None,
                collate_fn=None, kind=None):
    """A DataLoader with dynamic padding; shuffling uses its own seeded generator so runs repeat.

    ``group_by_length`` batches rows of similar length (see ``LengthGroupedBatchSampler``) so little is padded;
    ``pin_memory`` defaults to on when CUDA is available; ``collate_fn`` replaces the padding collator (e.g.
    ``pairs.PairedPadCollator`` for rows tokenized twice). ``kind`` (the task's ``TaskKind``) supplies the
    collator; without it the collator follows the labels' shape (one per row, or one per token).
    """
    import torch
    from torch.utils.data import DataLoader

    if collate_fn is None and kind is not None:
        collate_fn = kind.collator(tokenizer, pad_to_multiple_of)
    collate = collate_fn or _collator(dataset, tokenizer, pad_to_multiple_of)
    pin = torch.cuda.is_available() if pin_memory is None else pin_memory
    if group_by_length:
        sampler = LengthGroupedBatchSampler(row_lengths(dataset), batch_size, shuffle=shuffle, seed=seed,
                                            bucket_factor=bucket_factor)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, pin_memory=pin)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate,
                      pin_memory=pin)


def _collator(dataset, tokenizer, pad_to_multiple_of: int | None):
    """Without a kind: ``PadCollator``, or for per-token labels ``TokenPadCollator`` (labels padded with -100)."""
    if is_token_dataset(dataset):
        return TokenPadCollator(tokenizer, pad_to_multiple_of)
    return PadCollator(tokenizer, pad_to_multiple_of)


def is_token_dataset(dataset) -> bool:
    """A tokenized dataset with one label per token (a list), as ``tokenize_tokens`` writes."""
    feature = (getattr(dataset, "features", None) or {}).get("labels")
    return feature is not None and type(feature).__name__ in ("Sequence", "List", "LargeList")


class TokenPadCollator:
    """Pad tokenized rows to the longest one, labels with ``-100``: the tensors of transformers'
    ``DataCollatorForTokenClassification``, plus ``idx`` when rows carry it."""

    def __init__(self, tokenizer, pad_to_multiple_of: int | None = None) -> None:
        self.inner = PadCollator(tokenizer, pad_to_multiple_of)

    def __call__(self, rows: list[dict]) -> dict[str, Any]:
        import numpy as np
        import torch

        batch = self.inner([{k: v for k, v in r.items() if k != "labels"} for r in rows])
        width = batch["input_ids"].shape[1]
        labels = np.full((len(rows), width), IGNORE_INDEX, dtype=np.int64)
        for i, r in enumerate(rows):
            seq = r["labels"]
            if self.inner.left:
                labels[i, width - len(seq):] = seq
            else:
                labels[i, :len(seq)] = seq
        batch["labels"] = torch.from_numpy(labels)
        return batch
