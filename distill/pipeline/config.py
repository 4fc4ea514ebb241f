"""Every setting of a run, in the sections of a recipe: ``RunConfig(teacher, student, data, distill, train, prune,
quantize, report, output)``. Each section is a dataclass that checks itself; its fields, with their metadata (see
``distill.pipeline.schema``), are the CLI flags, the recipe keys and ``config.yaml``. Adding a setting is one field.

The loss section is ``distill.objective``'s ``DistillConfig`` itself; training builds the loop's ``TrainConfig``,
pruning and INT8 compress's ``PruneConfig``/``QuantizeConfig`` from the same-named fields of their sections.
Importing this module imports no torch (section checks import what they need when a config is built).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from distill.core.errors import ConfigError
from distill.objective.config import DistillConfig
from distill.pipeline.schema import Setting, floats, index, names, section, setting
from distill.pipeline.schema import build as build_sections
from distill.train.config import TEACHER_DTYPE_NAMES, TrainConfig

if TYPE_CHECKING:
    from compress import PruneConfig, QuantizeConfig
    from compress.prune.layout import Layout


def project(target: type, source: Any, **changes: Any) -> Any:
    """``target(...)`` from the fields of ``source`` with the same names, then ``changes``."""
    same = {f.name: getattr(source, f.name) for f in fields(target) if hasattr(source, f.name)}
    return target(**{**same, **changes})


@dataclass
class TeacherSettings:
    """The teacher(s): the primary one (the report compares to it) and how one without a trained head is fine-tuned."""

    name: str = setting("", "alias (bert-base, bert-large, minilm, ...), model dir or Hub id; repeat it for several "
                            "teachers (the first is the one the report compares to)",
                        dest="teacher", action="append", path=True)
    names: list[str] | None = setting(None, "several teachers at once (instead of repeating --teacher)",
                                      dest="teachers", type=names, metavar="A,B", path=True)
    weights: list[float] | None = setting(None, "weights of the teachers' soft targets and feature terms "
                                                "(default: equal)", dest="teacher_weights", type=floats,
                                          metavar="W1,W2")
    lr: float = setting(5e-5, "teacher fine-tuning learning rate (5e-5)", dest="teacher_lr")
    epochs: float | None = setting(None, "teacher fine-tuning epochs (default: the step budget, see --budget-steps, "
                                         "with early stopping)", dest="teacher_epochs")

    def __post_init__(self) -> None:
        if isinstance(self.names, str):
            self.names = names(self.names)
        if self.names:
            given = [str(t) for t in self.names]
            if self.name and self.name != given[0]:
                raise ConfigError(f"teacher '{self.name}' is not the first of the teachers {', '.join(given)}",
                                  "give the teachers once: --teacher A --teacher B, or --teachers A,B")
            self.name, self.names = given[0], (given if len(given) > 1 else None)
        if isinstance(self.weights, str):
            self.weights = [float(w) for w in self.weights.split(",") if w.strip()]
        if self.weights is not None:
            from distill.objective.ensemble import normalise_weights

            normalise_weights(self.weights, len(self.all_names))

    @property
    def all_names(self) -> list[str]:
        """Every teacher, the primary one first."""
        return list(self.names) if self.names else [self.name]


@dataclass
class StudentSettings:
    """The student: a preset or a model, and how it is initialised from the teacher."""

    name: str = setting("tiny", "preset (tiny, mini, small, medium), model dir or Hub id (a student with its own "
                                "tokenizer gets logit KD only)", dest="student", path=True)
    init: str = setting("auto", "student init: teacher-layers copies teacher layers (equal widths only), "
                                "teacher-embeddings projects the teacher's embeddings, teacher-pruned prunes the "
                                "teacher down to the preset's layers, hidden and FFN widths (head size kept); auto "
                                "picks the first that fits of teacher-layers, teacher-pruned, teacher-embeddings",
                        choices=("auto", "random", "teacher-layers", "teacher-embeddings", "teacher-pruned"))
    layer_selection: str | list[int] = setting(
        "uniform", "teacher layers for teacher-layers/teacher-pruned: every k-th (uniform), the first or last k, or "
                   "an explicit 0-based list (uniform)", metavar="uniform|first-k|last-k|0,2,5")
    family: str | None = setting(None, "model family of a preset student (default: the teacher's; bert reads any "
                                       "tokenizer's ids)", dest="student_family", metavar="FAMILY")
    general_data: str | None = setting(None, "general distillation before the task: the student's encoder learns the "
                                             "teacher's hidden states and self-attention relations on unlabelled "
                                             "text, a .txt/.raw/.jsonl file or folder, or 'task' for the task's own "
                                             "training texts; saved to OUTPUT/general-student (off)",
                                       metavar="PATH|task", path=True)
    general_steps: int = setting(1000, "optimiser steps of general distillation (1000)", metavar="N")
    general_epochs: float | None = setting(None, "passes over the general text instead of --general-steps",
                                           metavar="E")
    general_lr: float | None = setting(None, "general distillation learning rate (default: as --lr's default for "
                                             "this student)", metavar="LR")
    general_terms: str | list[str] = setting("hidden,relation", "feature terms of general distillation, each at "
                                                               "weight 1: hidden, attention, relation, embedding "
                                                               "(hidden,relation)", type=names, metavar="A,B")

    def __post_init__(self) -> None:
        from students.init import parse_layer_selection

        parse_layer_selection(self.layer_selection)
        self._check_general()

    def _check_general(self) -> None:
        from distill.objective.config import GENERAL_TERMS

        terms = self.general_terms
        self.general_terms = names(terms) if isinstance(terms, str) else list(terms)
        if not self.general_terms or any(t not in GENERAL_TERMS for t in self.general_terms):
            raise ConfigError(f"--general-terms {','.join(self.general_terms) or '(none)'} is not a list of feature "
                              "terms", f"use some of: {','.join(GENERAL_TERMS)}")
        if self.general_steps < 1:
            raise ConfigError(f"--general-steps {self.general_steps} must be ≥ 1", "use e.g. --general-steps 1000")
        if self.general_epochs is not None and not self.general_epochs > 0:
            raise ConfigError(f"--general-epochs {self.general_epochs} must be > 0", "use e.g. --general-epochs 1")
        if self.general_lr is not None and not self.general_lr > 0:
            raise ConfigError(f"--general-lr {self.general_lr} must be > 0", "use e.g. --general-lr 1e-4")
        if self.general_data is None:
            if self.general_epochs is not None or self.general_lr is not None:
                raise ConfigError("--general-epochs/--general-lr are given without --general-data",
                                  "add --general-data PATH (unlabelled text) or --general-data task")
        elif self.general_data != "task":
            from distill.pipeline.general_text import check_general_data

            check_general_data(self.general_data)


@dataclass
class DataSettings:
    """The task, where its rows come from, and TinyBERT-style augmentation of the training rows."""

    task: str | None = setting(None, "GLUE task name (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli)")
    path: str | None = setting(None, "a demo data set shipped with the package (sst2-demo; `distill presets` lists "
                                     "them), or local data: a GLUE-format dir (train.tsv, dev.tsv) or a csv/tsv/jsonl "
                                     "file or dir", dest="data", path=True)
    text_columns: list[str] | None = setting(None, "text column(s) of a local csv/tsv/jsonl file (two for sentence "
                                                   "pairs)", flags=("--text-column", "--text-columns"))
    label_column: str | None = setting(None, "label column of a local file")
    max_seq_length: int = setting(128, "truncate inputs to this many tokens (128)")
    max_train_samples: int | None = setting(None, "use at most N training examples (also caps teacher fine-tuning; "
                                                  "causal-lm: N packed blocks)")
    block_size: int | None = setting(None, "causal-lm: tokens per packed training block and perplexity window "
                                           "(default: --max-seq-length)", metavar="N")
    eval_blocks: int | None = setting(None, "causal-lm: score every stage on N evenly spaced windows of the dev text "
                                            "(default: all)", metavar="N")
    augment: int = setting(0, "N rewrites of each training example (about 15% of the words replaced), learned "
                              "from the teacher's soft targets (0)", metavar="N")
    augment_mlm: str | None = setting(None, "masked LM for --augment (default: the teacher checkpoint's own MLM "
                                            "head, else nearest neighbours in the teacher's input embeddings)",
                                      metavar="DIR", path=True)

    def __post_init__(self) -> None:
        if self.max_seq_length < 8:
            raise ConfigError(f"--max-seq-length {self.max_seq_length} is too short", "use at least 8, e.g. 128")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ConfigError(f"--max-train-samples {self.max_train_samples} must be ≥ 1", "drop it to use all data")
        for flag, value in (("--block-size", self.block_size), ("--eval-blocks", self.eval_blocks)):
            if value is not None and value < 1:
                raise ConfigError(f"{flag} {value} must be ≥ 1", f"drop {flag} for the default")
        if self.augment < 0:
            raise ConfigError(f"--augment {self.augment} is negative", "use e.g. --augment 4, or 0 for none")
        if self.augment_mlm and not self.augment:
            raise ConfigError("--augment-mlm is given without --augment", "add --augment N (new texts per example)")


@dataclass
class TrainSettings:
    """Training of every stage (distillation, recovery, QAT): optimiser, batches, teacher precision, checkpoints."""

    lr: float | None = setting(None, "distillation learning rate (1e-4 for layers taken from the teacher, else 1e-3 × "
                                     "min(1, 128/hidden size): 1e-3 for tiny, 2.5e-4 for small)")
    epochs: float | None = setting(None, "distillation epochs; fixes the length and turns early stopping off unless "
                                         "--patience is given (default: the step budget, see --budget-steps)")
    patience: int | None = setting(None, "stop training after N epochs without a better dev score, keeping the best; "
                                         "not while the best is at the trivial predictor's (default: 2 with the step "
                                         "budget, off with --epochs; 0 = never)",
                                   metavar="N")
    budget_steps: int = setting(4000, "without --epochs, train about N optimiser steps: ceil(N / steps per epoch) "
                                      "epochs, clamped to --min-epochs..--max-epochs (4000)", metavar="N")
    min_epochs: float = setting(2.0, "fewest epochs of the step budget (2)")
    max_epochs: float = setting(10.0, "most epochs of the step budget (10)")
    batch_size: int = setting(32, "batch size (32)")
    seed: int = setting(42, "random seed (42)")
    device: str = setting("auto", "auto (CUDA when available), cpu or cuda")
    grad_accum_steps: int = setting(1, "micro-batches per optimiser step (1)", flags=("--grad-accum",))
    group_by_length: bool = setting(True, "plain random batches instead of length-grouped ones (more padding)")
    compile: bool = setting(False, "torch.compile the student (pays off on GPU)")
    teacher_dtype: str = setting("fp32", "teacher precision on GPU (fp32; bf16 halves its memory)",
                                 choices=TEACHER_DTYPE_NAMES)
    teacher_shard: str = setting("auto", "under `accelerate launch`, fsdp splits the teacher's weights across the "
                                         "processes (for teachers that do not fit one device; the student stays DDP); "
                                         "auto: fsdp when launched with --use_fsdp", choices=("auto", "none", "fsdp"))
    cache_teacher: bool = setting(False, "run the teacher once over the training set and reuse its outputs from disk "
                                         "(OUTPUT/teacher_cache; later epochs, recovery and later runs skip the "
                                         "teacher)")
    cache_top_k: int = setting(20, "logits kept per row in the cache (20; per token for --task causal-lm, with "
                                   "the rest of the probability mass as one tail value)")
    checkpoint_every: int = setting(500, "write a training checkpoint every N optimiser steps, besides each epoch end "
                                         "(500; 0 = epoch ends only); Ctrl-C/SIGTERM also write one after the current "
                                         "step", metavar="N", resume=True)
    keep_checkpoints: int = setting(2, "keep the last K checkpoints of the running stage (2); a damaged one falls "
                                       "back to the one before", metavar="K", resume=True)
    skip_nonfinite: bool = setting(False, "skip batches whose loss is NaN/inf (counted in the report) instead of "
                                          "stopping the run", resume=True)

    def __post_init__(self) -> None:
        from distill.train.sharding import resolve_shard

        if self.checkpoint_every < 0:
            raise ConfigError(f"--checkpoint-every {self.checkpoint_every} is negative",
                              "use 0 for epoch ends only, or e.g. 500")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"--keep-checkpoints {self.keep_checkpoints} must be ≥ 1", "use e.g. 2")
        if self.cache_top_k < 1:
            raise ConfigError(f"--cache-top-k {self.cache_top_k} must be ≥ 1", "use e.g. --cache-top-k 20")
        self.fit_config()
        resolve_shard(self.teacher_shard, 1)  # the choice is checked here; the process count at run time

    def fit_config(self, **changes: Any) -> TrainConfig:
        """The training loop's ``TrainConfig`` from the same-named settings (no ``lr``: 1e-4), with ``changes``."""
        return project(TrainConfig, self, **{"lr": self.lr or 1e-4, **changes})


@dataclass
class PruneSettings:
    """Structured pruning of the student: a search for the smallest model that keeps ``--target-retention`` of the
    student's metric (default), or fixed ratios (any ``--prune-heads/-ffn/-hidden/-layers`` given: no search)."""

    enabled: bool = setting(True, "skip pruning", dest="prune")
    heads: float | None = setting(None, "fixed fraction of heads (with hidden width) removed; any fixed ratio turns "
                                        "the retention search off (default: searched; 0.5 when only another fixed "
                                        "ratio is given)", dest="prune_heads")
    ffn: float | None = setting(None, "fixed fraction of FFN neurons removed (default: searched; 0.5 when only "
                                      "another fixed ratio is given)", dest="prune_ffn")
    hidden: float | None = setting(None, "fixed fraction of hidden width removed on its own (default: with the "
                                         "heads; 0 = keep it)", dest="prune_hidden")
    layers: int | None = setting(None, "transformer layers kept, a fixed setting (default: all)", dest="prune_layers")
    importance: str = setting("magnitude", "magnitude, taylor or distillation (magnitude)", dest="prune_importance")
    steps: int = setting(1, "iterative pruning steps towards fixed ratios, each with recovery (1; more than 1 means "
                            "fixed ratios: 0.5 unless given)", dest="prune_steps")
    importance_batches: int = setting(8, "training batches the importance criterion reads", cli=False)
    recover_epochs: float = setting(1.0, "distillation epochs after pruning (1; after each step of the search; "
                                         "split over the --prune-steps of fixed ratios)")
    target_retention: float = setting(0.97, "share of the distilled STUDENT's dev metric (not the teacher's) that "
                                            "compression must keep (0.97): pruning tries the --prune-search ratios "
                                            "and keeps the smallest recovered model that holds it (with half the "
                                            "allowed loss when INT8 follows: 0.985), INT8 keeps "
                                            "sensitive layers FP32 until it holds (unless --max-int8-drop or --qat "
                                            "is given); the report says when it cannot. For --task causal-lm the "
                                            "metric is dev perplexity and retention = student perplexity / stage "
                                            "perplexity (0.97: up to ~3% higher perplexity)",
                                      metavar="R")
    search: list[float] | None = setting(None, "the search's cumulative ratios of heads and FFN neurons removed, one "
                                               "step each with --recover-epochs of recovery, stopping at the first "
                                               "that misses the target; a step that cut the hidden width and "
                                               "missed is tried again on the FFN alone (default 0.5,0.75)",
                                         dest="prune_search", type=floats, metavar="R1,R2")

    def __post_init__(self) -> None:
        from compress.prune.search import SEARCH_RATIOS, check_search, check_target

        if self.recover_epochs < 0:
            raise ConfigError(f"--recover-epochs {self.recover_epochs} is negative", "use 0 to skip recovery")
        self.target_retention = check_target(self.target_retention)
        if isinstance(self.search, str):
            self.search = floats(self.search)
        self.search = check_search(list(SEARCH_RATIOS) if self.search is None else self.search)
        if self.enabled:
            self.plan()
            if self.steps < 1:
                raise ConfigError(f"--prune-steps {self.steps} must be ≥ 1", "use 1 for one-shot pruning")

    @property
    def fixed(self) -> bool:
        """Fixed ratios were given (any of heads, ffn, hidden, layers, or several --prune-steps towards them): prune
        to them, no search."""
        return self.steps > 1 or any(v is not None for v in (self.heads, self.ffn, self.hidden, self.layers))

    def plan(self, ratio: float | None = None) -> PruneConfig:
        """compress's ``PruneConfig`` (the whole target; steps split it) from the same-named settings; unset fixed
        ratios are 0.5. In search mode: ``ratio`` (default the schedule's last) of heads and FFN neurons."""
        from compress import PruneConfig

        if not self.fixed:
            ratio = self.search[-1] if ratio is None else ratio
            return PruneConfig(heads=ratio, ffn=ratio, importance=self.importance)
        return project(PruneConfig, self, heads=0.5 if self.heads is None else self.heads,
                       ffn=0.5 if self.ffn is None else self.ffn)

    def planned(self, layout: Layout) -> list[Layout]:
        """The widths after each pruning step on a model of ``layout``: a setting that fails at any step fails
        here, before any training."""
        from compress.prune.schedule import plan_steps
        from compress.prune.search import plan_search

        if self.fixed:
            return plan_steps(self.plan(), self.steps, layout)
        return plan_search(self.search, layout, self.importance)


LM_PRECISIONS = ("int8", "int4")  # the causal-LM ONNX bundles, in the order they are built and reported


def check_lm_precision(value: str | list[str]) -> list[str]:
    """``--lm-precision`` as a list of distinct names from ``LM_PRECISIONS`` (a one-line ConfigError otherwise)."""
    given = names(value) if isinstance(value, str) else [str(v).strip() for v in value]
    if not given or len(set(given)) != len(given) or any(p not in LM_PRECISIONS for p in given):
        raise ConfigError(f"--lm-precision {','.join(given) or '(empty)'} is not int8, int4 or int8,int4",
                          "use --lm-precision int8 (default), int4, or int8,int4 for both bundles")
    return [p for p in LM_PRECISIONS if p in given]


@dataclass
class QuantizeSettings:
    """INT8 through ONNX Runtime: dynamic, static (calibrated), accuracy-aware, or quantization-aware training; for
    causal LMs, INT8 and/or INT4 weight-only ONNX bundles with a KV cache (``lm_precision``)."""

    enabled: bool = setting(True, "skip INT8 quantization", dest="quantize")
    mode: str = setting("dynamic", "dynamic INT8, or static INT8 (QDQ) calibrated on training batches (dynamic)",
                        dest="quantize_mode", choices=("dynamic", "static"))
    target: str | None = setting(None, "avx512_vnni, avx2 or arm64 (default: detected from this CPU)",
                                 dest="quantize_target")
    calibration: str = setting("minmax", "static calibration method (minmax)",
                               choices=("minmax", "percentile", "entropy"))
    calibration_samples: int = setting(128, "rows used for calibration (128)")
    max_drop: float | None = setting(None, "accuracy-aware INT8: keep the most sensitive layers FP32 until the drop ≤ "
                                           "this (e.g. 0.01)", dest="max_int8_drop",
                                     flags=("--max-int8-drop", "--max-drop"))
    qat: bool = setting(False, "quantization-aware distillation instead of post-training")
    lm_precision: str | list[str] = setting("int8", "causal-lm: weight precision of the ONNX bundle with KV cache, "
                                                    "int8, int4 (weight-only, about a third of the size, faster "
                                                    "decode, worse text) or int8,int4 for both, each saved to "
                                                    "OUTPUT/<precision> (int8)", type=names,
                                            metavar="int8|int4|int8,int4")

    def __post_init__(self) -> None:
        self.lm_precision = check_lm_precision(self.lm_precision)
        if self.enabled:
            self.plan()
            if self.max_drop is not None and not 0 <= self.max_drop < 1:
                raise ConfigError(f"--max-int8-drop {self.max_drop} is outside [0, 1)", "use e.g. 0.01")

    def plan(self) -> QuantizeConfig:
        """compress's ``QuantizeConfig`` from the same-named settings."""
        from compress import QuantizeConfig

        return project(QuantizeConfig, self)


@dataclass
class ReportSettings:
    """How latency is measured, and the quality gates on the final stage (exit code 1 when one is missed)."""

    latency_seq: int = setting(128, "sequence length of the latency measurement", cli=False)
    latency_threads: int = setting(2, "CPU threads of the latency measurement", cli=False)
    latency_runs: int = setting(30, "timed runs per latency measurement (30)")
    min_retention: float | None = setting(None, "e.g. 0.97: final metric ≥ 97% of the teacher's")
    max_latency_ms: float | None = setting(None, "e.g. 5: final latency (batch 1) at most 5 ms")
    max_size_mb: float | None = setting(None, "e.g. 10: final artifact at most 10 MB")


@dataclass
class OutputSettings:
    """Where the run writes, and what it may replace."""

    dir: str = setting("runs/distill", "where to write (default {default})", dest="output_dir", path=True)
    overwrite: bool = setting(False, "replace a non-empty output dir")
    tensorboard: bool = setting(False, "log loss terms per step and dev metrics per epoch to OUTPUT/tensorboard "
                                       "(needs tensorboard)")

    def __post_init__(self) -> None:
        if self.tensorboard:
            from distill.train.tracking import require_tensorboard

            require_tensorboard()


def _schedules() -> list[str]:
    from distill.objective.schedules import SCHEDULES

    return SCHEDULES.names()


# choices of the loss flags that name a schedule (a registry users extend), which DistillConfig's metadata leaves out
DISTILL_CHOICES: dict[str, dict[str, Any]] = {
    f"{name}_schedule": {"choices": _schedules} for name in ("temperature", "alpha", "feature")}


@dataclass(init=False)
class RunConfig:
    """Every setting of a run, section by section; written to ``OUTPUT/config.yaml`` in the same sections.

    ``RunConfig(teacher="bert-base", student="tiny", task="sst2", max_train_samples=2000)``: each keyword is a flat
    setting name (a CLI flag's name with underscores, e.g. ``prune_heads``), or a section given as its object, as a
    mapping of its recipe keys (``train={"lr": 1e-4}``), or by its main value (``teacher``, ``student``, ``data``
    (the path), ``prune`` and ``quantize`` (on/off)). Read settings by section: ``cfg.train.lr``.
    """

    teacher: TeacherSettings = section(TeacherSettings, "teacher")
    student: StudentSettings = section(StudentSettings, "student")
    data: DataSettings = section(DataSettings, "task and data")
    distill: DistillConfig = section(DistillConfig, "distillation loss", extra=DISTILL_CHOICES)
    train: TrainSettings = section(TrainSettings, "training")
    prune: PruneSettings = section(PruneSettings, "pruning")
    quantize: QuantizeSettings = section(QuantizeSettings, "INT8 quantization")
    report: ReportSettings = section(ReportSettings, "quality gates (exit code 1 when the final stage misses one) "
                                                     "and latency")
    output: OutputSettings = section(OutputSettings, "output")

    def __init__(self, **values: Any) -> None:
        for name, value in build_sections(type(self), values, SETTINGS).items():
            setattr(self, name, value)

    def flat(self) -> dict[str, Any]:
        """Every setting by flat name (report.json's ``settings``)."""
        return {s.dest: copy.deepcopy(getattr(getattr(self, s.section), s.key)) for s in SETTINGS.values()}


SETTINGS: dict[str, Setting] = index(RunConfig)  # flat name -> setting, section by section
