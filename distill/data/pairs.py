"""Student and teacher with different tokenizers: each tokenizes the raw text itself, and one batch carries both.

The student's columns keep their usual names (``input_ids``, ``attention_mask``, ...); the teacher's get the
``teacher_`` prefix. The engine feeds the prefixed columns to the teacher (``teacher_view``) and the plain ones to
the student (``student_view``). Only sequence-level terms work across tokenizers (see
``objective.supported_losses``): the two token sequences do not line up.
"""

from __future__ import annotations

from distill.core.errors import ConfigError
from distill.data.batching import PadCollator
from distill.data.kinds import TaskKind, kind_for_columns

TEACHER_PREFIX = "teacher_"
SHARED = ("labels", "idx")  # batch columns both views keep


def same_vocabulary(a, b) -> bool:
    """True when the two tokenizers map the same tokens to the same ids (so one tokenization serves both)."""
    return a is b or a.get_vocab() == b.get_vocab()


def tokenize_two(dataset, student_tokenizer, teacher_tokenizer, max_length: int, *, index: bool = False,
                 kind: TaskKind | None = None):
    """Tokenize canonical rows (``text``, optional ``text_pair``, ``label``) for the student and for the teacher.

    Only kinds with ``cross_tokenizer`` (sequence-level outputs): per-token labels cannot follow two different
    word-piece splits. Without ``kind``, the kind whose canonical columns the dataset has.
    """
    kind = kind or kind_for_columns(dataset.column_names)
    if not kind.cross_tokenizer:
        raise ConfigError(f"{kind.name.replace('-', ' ')} cannot use a student tokenizer that differs from the "
                          "teacher's", "use a student with the teacher's tokenizer (a preset, or a dir saved with it)")
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()

    def encode(batch, positions):
        pair = batch.get("text_pair")
        enc = dict(student_tokenizer(batch["text"], pair, truncation=True, max_length=max_length))
        theirs = teacher_tokenizer(batch["text"], pair, truncation=True, max_length=max_length)
        enc.update({TEACHER_PREFIX + k: v for k, v in theirs.items()})
        enc["labels"] = batch["label"]
        if index:
            enc["idx"] = positions
        return enc

    return dataset.map(encode, batched=True, with_indices=True, remove_columns=dataset.column_names)


def has_teacher_columns(batch_or_dataset) -> bool:
    """A batch (dict) or dataset that carries the teacher's own tokenization."""
    names = getattr(batch_or_dataset, "column_names", None) or list(batch_or_dataset)
    return TEACHER_PREFIX + "input_ids" in names


def teacher_view(batch: dict) -> dict:
    """The teacher's inputs: its ``teacher_*`` columns without the prefix (plus labels and idx); as is otherwise."""
    if TEACHER_PREFIX + "input_ids" not in batch:
        return batch
    view = {k: batch[k] for k in SHARED if k in batch}
    view.update({k[len(TEACHER_PREFIX):]: v for k, v in batch.items() if k.startswith(TEACHER_PREFIX)})
    return view


def student_view(batch: dict) -> dict:
    """The student's inputs: every column but the teacher's."""
    return {k: v for k, v in batch.items() if not k.startswith(TEACHER_PREFIX)}


class PairedPadCollator:
    """Pad the student's columns with the student's pad id and the teacher's with the teacher's."""

    def __init__(self, student_tokenizer, teacher_tokenizer, pad_to_multiple_of: int | None = None) -> None:
        self.student = PadCollator(student_tokenizer, pad_to_multiple_of)
        self.teacher = PadCollator(teacher_tokenizer, pad_to_multiple_of)

    def __call__(self, rows: list[dict]) -> dict:
        batch = self.student([student_view(r) for r in rows])
        theirs = self.teacher([{k[len(TEACHER_PREFIX):]: v for k, v in r.items() if k.startswith(TEACHER_PREFIX)}
                               for r in rows])
        batch.update({TEACHER_PREFIX + k: v for k, v in theirs.items()})
        return batch


def teacher_columns(dataset):
    """A dataset tokenized for both models, as the teacher sees it: the ``teacher_*`` columns without the prefix,
    plus labels and idx (e.g. to build a teacher-output cache)."""
    keep = [c for c in dataset.column_names if c.startswith(TEACHER_PREFIX) or c in SHARED]
    return dataset.select_columns(keep).rename_columns(
        {c: c[len(TEACHER_PREFIX):] for c in keep if c.startswith(TEACHER_PREFIX)})
