"""Checks that need no training, made before a run writes anything: the output dir, tokenizers that cannot work
together, teachers that disagree, the masked LM of ``--augment``, and whether the disk has room for the run."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from distill.core.artifacts import dir_size_mb
from distill.core.console import info
from distill.core.errors import ConfigError, ModelError
from distill.data.tasks import Task
from distill.pipeline.config import RunConfig
from distill.train.checkpoint import checkpoint_bytes

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from teachers.augment import MaskedLM
    from teachers.loading import LoadedTeacher
    from teachers.neighbours import EmbeddingNeighbours


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse a file, or a non-empty directory unless ``overwrite`` (it is cleared later, once input is valid)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output dir '{path}' is a file", "choose another --output-dir")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(f"output dir '{path}' exists and is not empty", "pass --overwrite or another --output-dir")


def clear_output_dir(path: Path, keep: tuple[str, ...]) -> None:
    """Empty ``path`` except the entries named in ``keep`` (never following a link)."""
    if not path.is_dir():
        return
    for child in path.iterdir():
        if child.name in keep and not child.is_symlink():  # a kept link could lead writes outside the output dir
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def own_tokenizer(source: str) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved with a student (model dir or Hub id), or None when it has none of its own."""
    from transformers import AutoTokenizer

    path = Path(source)
    if path.is_dir() and not any((path / f).is_file() for f in ("tokenizer_config.json", "vocab.txt",
                                                                 "tokenizer.json")):
        return None
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        if path.is_dir():
            raise ModelError(f"cannot load the tokenizer of student '{source}' ({exc.__class__.__name__})",
                             "save the student's tokenizer with it, or remove the broken tokenizer files") from None
        return None  # a Hub id without a tokenizer: it reads the teacher's ids


def student_tokenizer(cfg: RunConfig, source: str, teacher_tok, task: Task) -> PreTrainedTokenizerBase | None:
    """The student's own tokenizer when its vocabulary differs from the teacher's (each then tokenizes the text
    itself: sequence-level KD only), else None; refuses what cannot work across tokenizers."""
    from distill.data.pairs import same_vocabulary
    from teachers.loading import load_config

    student_tok = own_tokenizer(source)
    if student_tok is None or same_vocabulary(student_tok, teacher_tok):
        return None
    name = cfg.student.name
    vocab = getattr(load_config(source), "vocab_size", None)
    if vocab is not None and len(student_tok) > vocab:
        raise ModelError(f"student '{name}' has a tokenizer of {len(student_tok)} tokens but only {vocab} "
                         "embeddings", "save the student with the tokenizer it was trained with")
    if not task.kind.cross_tokenizer:
        raise ConfigError(f"student '{name}' has its own tokenizer ({len(student_tok)} tokens, the teacher "
                          f"{len(teacher_tok)}): token classification needs one label per word piece of one "
                          "tokenizer", "use a student with the teacher's tokenizer (e.g. a preset)")
    if cfg.prune.enabled and cfg.prune.importance == "distillation":
        raise ConfigError("--prune-importance distillation runs the teacher on the student's token ids, which "
                          "differ here (the student has its own tokenizer)", "use --prune-importance magnitude")
    return student_tok


def check_teachers(teachers: list[LoadedTeacher], names: list[str]) -> None:
    """Several teachers must predict the same labels and read the same token ids."""
    from distill.data.pairs import same_vocabulary

    first = teachers[0]
    for name, t in zip(names[1:], teachers[1:], strict=True):
        if t.model.config.num_labels != first.model.config.num_labels:
            raise ModelError(f"teachers '{names[0]}' and '{name}' have different label counts "
                             f"({first.model.config.num_labels} and {t.model.config.num_labels})",
                             "give teachers fine-tuned on the same labels")
        if not same_vocabulary(t.tokenizer, first.tokenizer):
            raise ModelError(f"teachers '{names[0]}' and '{name}' use different tokenizers",
                             "give teachers that share one tokenizer (e.g. fine-tuned from the same checkpoint)")


def augment_mlm(cfg: RunConfig, teacher: LoadedTeacher, task: Task) -> MaskedLM | EmbeddingNeighbours:
    """What rewrites text for ``--augment``: the masked LM of ``--augment-mlm``, else the teacher checkpoint's own
    MLM head, else (a teacher without one, e.g. a sentence-embedding model) nearest neighbours in the teacher's
    input embeddings (``teachers.neighbours``)."""
    from teachers import resolve_model_source
    from teachers.augment import load_mlm

    if not task.kind.augment:
        raise ConfigError(f"--augment does not support {task.kind.name.replace('-', ' ')}"
                          f" (task '{task.name}')", "drop --augment")
    if cfg.data.augment_mlm:
        mlm = load_mlm(resolve_model_source(cfg.data.augment_mlm, kind="masked LM"), tokenizer=teacher.tokenizer)
        if mlm is None:
            raise ModelError(f"'{cfg.data.augment_mlm}' has no trained masked-LM head",
                             "pass a BertForMaskedLM checkpoint (e.g. bert-base-uncased) with --augment-mlm")
        return mlm
    mlm = load_mlm(teacher.source, tokenizer=teacher.tokenizer)
    if mlm is not None:
        return mlm
    from teachers.neighbours import EmbeddingNeighbours

    info(f"  --augment: teacher '{cfg.teacher.name}' has no masked-LM head: words are replaced by their nearest "
         "neighbours in its input embeddings (--augment-mlm DIR uses a masked LM instead)")
    return EmbeddingNeighbours.of_model(teacher.model, teacher.tokenizer, cfg.teacher.name)


def _param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _student_bytes(cfg: RunConfig, teacher: LoadedTeacher) -> int:
    """fp32 bytes of the student: a preset built without memory (meta device), a local dir's weight files."""
    import torch

    from students import build_student
    from students.build import student_source_is_preset

    name = cfg.student.name
    if student_source_is_preset(name):
        with torch.device("meta"):
            return _param_bytes(build_student(name, teacher.model.config))
    if Path(name).is_dir():
        return int(dir_size_mb(name) * 1e6) or _param_bytes(teacher.model)
    return _param_bytes(teacher.model)


def estimate_run_bytes(cfg: RunConfig, teacher: LoadedTeacher) -> int:
    """Bytes a run writes at most: K checkpoints of each training stage (removed once the stage is saved, so only
    the largest counts), the teacher/student/pruned dirs, the INT8 bundle and its FP32 ONNX scratch copy."""
    student = _student_bytes(cfg, teacher)
    k = cfg.train.keep_checkpoints
    need = 0
    checkpoints = checkpoint_bytes(student) * k
    if not teacher.head_trained:
        t = _param_bytes(teacher.model)
        checkpoints = max(checkpoints, checkpoint_bytes(t) * k)
        need += t  # the fine-tuned teacher dir
    need += checkpoints + student * (1 + int(cfg.prune.enabled) + 2 * int(cfg.quantize.enabled))
    return int(need * 1.1) + 10_000_000  # tokenizers, reports, slack
