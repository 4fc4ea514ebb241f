"""``distill run``: teacher → student → distil → prune + recover → INT8 → score, each stage a small function.

Everything that can be checked is checked before anything is written; each stage writes to a temporary
directory that is renamed into place only when complete. Under ``accelerate launch`` every process trains (the
engine runs data-parallel and scores dev on all of them), only the main process writes files and prints, the
others wait at a barrier after each save they may read, and export, INT8, scoring and the report are the main
process's alone. Training stages write checkpoints to
``OUTPUT/checkpoints/<stage>``, finished stages are recorded in ``OUTPUT/stages.json``, and ``run(cfg, resume=True)``
skips the finished stages and continues the interrupted one from its newest intact checkpoint.
"""

from __future__ import annotations

import copy
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from pathlib import Path

from distill import collapse, interrupts
from distill.checkpoint import Checkpoints, check_free_space, check_writable, checkpoint_bytes, write_error
from distill.core.artifacts import dir_size_mb, staged_dir, write_json, write_yaml
from distill.core.console import info, out
from distill.core.errors import ConfigError, DataError, DistillError, ModelError, NonFiniteLoss, RunError
from distill.core.runtime import environment_info, process_count, seed_everything
from distill.data import Splits, load_splits, make_loader, tokenize
from distill.engine import TrainConfig, fit, gathered_evaluator, is_main_process, set_loader_epoch, wait_for_everyone
from distill.evaluation import compute_metrics, predict
from distill.measure import OnnxClassifier, count_params, onnx_latency_ms, onnx_param_count, torch_latency_ms
from distill.objective import (
    DistillConfig,
    Objective,
    disable_unsupported,
    supported_losses,
    uniform_layer_map,
)
from distill.recipe import dump_recipe
from distill.report import dev_predictions, render_table, write_report
from distill.scoring import StageScore, score_stage
from distill.sharding import resolve_shard
from distill.tasks import Task, get_task
from distill.tracking import require_tensorboard, start_tracking, stop_tracking

TEACHER_MARKER = "distill_teacher.json"
STAGES_FILE = "stages.json"  # finished stages and what later stages need from them (history, learning rate)


@dataclass
class RunConfig(DistillConfig):
    """Every setting of a run; written to ``OUTPUT/config.yaml``. Field names match the CLI flags.

    The loss settings (temperature, alpha, hidden_weight, ...) are inherited from ``DistillConfig``.
    """

    teacher: str = ""
    teachers: list[str] | None = None  # several teachers (the first is `teacher`, the one the report compares to)
    teacher_weights: list[float] | None = None
    student: str = "tiny"
    task: str | None = None
    data: str | None = None
    text_columns: list[str] | None = None
    label_column: str | None = None
    output_dir: str = "runs/distill"
    overwrite: bool = False
    init: str = "auto"
    layer_selection: str | list[int] = "uniform"
    lr: float | None = None  # None: default_student_lr (1e-4 for copied/cut layers, 1e-3·min(1, 128/H) from scratch)
    epochs: float = 3.0
    batch_size: int = 32
    max_seq_length: int = 128
    max_train_samples: int | None = None
    augment: int = 0
    augment_mlm: str | None = None
    seed: int = 42
    grad_accum_steps: int = 1
    group_by_length: bool = True
    compile: bool = False
    teacher_dtype: str = "fp32"
    teacher_shard: str = "auto"
    cache_teacher: bool = False
    cache_top_k: int = 20
    teacher_lr: float = 5e-5
    teacher_epochs: float = 3.0
    prune: bool = True
    prune_heads: float = 0.5
    prune_ffn: float = 0.5
    prune_hidden: float | None = None
    prune_layers: int | None = None
    prune_importance: str = "magnitude"
    prune_steps: int = 1
    importance_batches: int = 8
    recover_epochs: float = 1.0
    quantize: bool = True
    quantize_mode: str = "dynamic"
    quantize_target: str | None = None
    calibration: str = "minmax"
    calibration_samples: int = 128
    max_int8_drop: float | None = None
    qat: bool = False
    latency_seq: int = 128
    latency_threads: int = 2
    latency_runs: int = 30
    device: str = "auto"
    min_retention: float | None = None
    max_latency_ms: float | None = None
    max_size_mb: float | None = None
    tensorboard: bool = False
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    skip_nonfinite: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_breadth()
        if self.tensorboard:
            require_tensorboard()
        if self.checkpoint_every < 0:
            raise ConfigError(f"--checkpoint-every {self.checkpoint_every} is negative",
                              "use 0 for epoch ends only, or e.g. 500")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"--keep-checkpoints {self.keep_checkpoints} must be ≥ 1", "use e.g. 2")
        if self.max_seq_length < 8:
            raise ConfigError(f"--max-seq-length {self.max_seq_length} is too short", "use at least 8, e.g. 128")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ConfigError(f"--max-train-samples {self.max_train_samples} must be ≥ 1", "drop it to use all data")
        if self.recover_epochs < 0:
            raise ConfigError(f"--recover-epochs {self.recover_epochs} is negative", "use 0 to skip recovery")
        self.train_config()
        resolve_shard(self.teacher_shard, 1)  # the choice is checked here; the process count at run time
        if self.quantize:
            self.quantize_config()
            if self.max_int8_drop is not None and not 0 <= self.max_int8_drop < 1:
                raise ConfigError(f"--max-int8-drop {self.max_int8_drop} is outside [0, 1)", "use e.g. 0.01")
        if self.prune:
            self.prune_config()
            if self.prune_steps < 1:
                raise ConfigError(f"--prune-steps {self.prune_steps} must be ≥ 1", "use 1 for one-shot pruning")

    @property
    def teacher_names(self) -> list[str]:
        """Every teacher, the primary one first."""
        return list(self.teachers) if self.teachers else [self.teacher]

    def _check_breadth(self) -> None:
        """Several teachers and their weights, augmentation and the layer selection."""
        from distill.ensemble import normalise_weights
        from students.init import parse_layer_selection

        if isinstance(self.teachers, str):
            self.teachers = [t.strip() for t in self.teachers.split(",") if t.strip()]
        if self.teachers:
            names = [str(t) for t in self.teachers]
            if self.teacher and self.teacher != names[0]:
                raise ConfigError(f"teacher '{self.teacher}' is not the first of the teachers {', '.join(names)}",
                                  "give the teachers once: --teacher A --teacher B, or --teachers A,B")
            self.teacher, self.teachers = names[0], (names if len(names) > 1 else None)
        if isinstance(self.teacher_weights, str):
            self.teacher_weights = [float(w) for w in self.teacher_weights.split(",") if w.strip()]
        if self.teacher_weights is not None:
            normalise_weights(self.teacher_weights, len(self.teacher_names))
        if self.augment < 0:
            raise ConfigError(f"--augment {self.augment} is negative", "use e.g. --augment 4, or 0 for none")
        if self.augment_mlm and not self.augment:
            raise ConfigError("--augment-mlm is given without --augment", "add --augment N (new texts per example)")
        parse_layer_selection(self.layer_selection)

    def quantize_config(self):
        from compress import QuantizeConfig

        return QuantizeConfig(mode=self.quantize_mode, target=self.quantize_target, calibration=self.calibration,
                              calibration_samples=self.calibration_samples)

    def prune_config(self):
        from compress import PruneConfig

        return PruneConfig(heads=self.prune_heads, ffn=self.prune_ffn, hidden=self.prune_hidden,
                           layers=self.prune_layers, importance=self.prune_importance)

    def distill_config(self) -> DistillConfig:
        names = {f.name for f in fields(DistillConfig)}
        return DistillConfig(**{k: v for k, v in asdict(self).items() if k in names})

    def train_config(self, **changes) -> TrainConfig:
        base = TrainConfig(lr=self.lr or 1e-4, epochs=self.epochs, batch_size=self.batch_size, seed=self.seed,
                           device=self.device, grad_accum_steps=self.grad_accum_steps, compile=self.compile,
                           teacher_dtype=self.teacher_dtype, skip_nonfinite=self.skip_nonfinite)
        return TrainConfig(**{**asdict(base), **changes})


@dataclass
class Context:
    """What the stages share: settings, task, data loaders, the tokenizer and the output directory."""

    cfg: RunConfig
    task: Task
    splits: Splits
    tokenizer: object
    out: Path
    train_loader: object = None
    dev_loader: object = None
    student_lr: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    history: dict[str, list] = field(default_factory=dict)
    teacher_tokenizer: object = None  # differs from `tokenizer` when the student has its own vocabulary
    teacher_train_loader: object = None  # the teacher's tokenization (the same loaders when tokenizers agree)
    teacher_dev_loader: object = None
    labelled_loader: object = None  # the training rows before augmentation
    teachers: list = field(default_factory=list)  # LoadedTeacher, primary first
    mlm: object = None  # teachers.augment.MaskedLM for --augment
    trivial: dict | None = None  # the task's trivial predictor on dev (distill.collapse.trivial_baseline)

    @property
    def cross(self) -> bool:
        """Student and teacher tokenize the text each with their own tokenizer."""
        return self.teacher_tokenizer is not None and self.teacher_tokenizer is not self.tokenizer

    @property
    def sharded(self) -> bool:
        """The teacher is split across the launched processes (``--teacher-shard``, see ``distill.sharding``)."""
        return resolve_shard(self.cfg.teacher_shard, process_count())

    checkpointing: bool = False  # training stages write checkpoints (``distill run``)
    resume: bool = False  # ... and continue from them
    skipped_nonfinite: dict[str, int] = field(default_factory=dict)

    def checkpoints(self, name: str) -> Checkpoints | None:
        """The checkpoints of training stage ``name`` (None when this command writes none)."""
        if not self.checkpointing:
            return None
        return Checkpoints(self.out / "checkpoints" / name, every=self.cfg.checkpoint_every,
                           keep=self.cfg.keep_checkpoints, resume=self.resume)

    def done(self, stage: str) -> dict | None:
        """What a finished stage recorded in ``stages.json`` (only when resuming), else None."""
        if not self.resume or not (self.out / STAGES_FILE).is_file():
            return None
        import json

        return json.loads((self.out / STAGES_FILE).read_text()).get(stage)

    def mark_done(self, stage: str, record: dict | None = None, checkpoints: tuple[str, ...] = ()) -> None:
        """Record ``stage`` as finished (after its output is in place), then drop the named checkpoints."""
        if not self.checkpointing or not is_main_process():
            return
        import json

        path = self.out / STAGES_FILE
        stages = json.loads(path.read_text()) if path.is_file() else {}
        stages[stage] = record or {}
        write_json(path, stages)
        for name in checkpoints:
            shutil.rmtree(self.out / "checkpoints" / name, ignore_errors=True)

    def fitted(self, name: str, result) -> None:
        """Note what a finished training run of stage ``name`` skipped; warn at once when it collapsed."""
        if result.skipped_nonfinite:
            self.skipped_nonfinite[name] = self.skipped_nonfinite.get(name, 0) + result.skipped_nonfinite
        if self.trivial and is_main_process() and (line := collapse.fit_warning(self.task, name, result, self.trivial)):
            info(f"  [yellow]warning:[/] {line}")


def check_output_dir(path: Path, overwrite: bool) -> None:
    """Refuse a file, or a non-empty directory unless ``overwrite`` (it is cleared later, once input is valid)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"output dir '{path}' is a file", "choose another --output-dir")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(f"output dir '{path}' exists and is not empty", "pass --overwrite or another --output-dir")


def _clear_output_dir(path: Path, keep: tuple[str, ...]) -> None:
    if not path.is_dir():
        return
    for child in path.iterdir():
        if child.name in keep and not child.is_symlink():  # a kept link could lead writes outside the output dir
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _own_tokenizer(source: str):
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


def _student_tokenizer(cfg: RunConfig, source: str, teacher_tok, task: Task):
    """The student's own tokenizer when its vocabulary differs from the teacher's (each then tokenizes the text
    itself: sequence-level KD only), else None; refuses what cannot work across tokenizers."""
    from distill.cross_tokenizer import same_vocabulary
    from teachers.loading import load_config

    student_tok = _own_tokenizer(source)
    if student_tok is None or same_vocabulary(student_tok, teacher_tok):
        return None
    vocab = getattr(load_config(source), "vocab_size", None)
    if vocab is not None and len(student_tok) > vocab:
        raise ModelError(f"student '{cfg.student}' has a tokenizer of {len(student_tok)} tokens but only {vocab} "
                         "embeddings", "save the student with the tokenizer it was trained with")
    if task.is_token:
        raise ConfigError(f"student '{cfg.student}' has its own tokenizer ({len(student_tok)} tokens, the teacher "
                          f"{len(teacher_tok)}): token classification needs one label per word piece of one "
                          "tokenizer", "use a student with the teacher's tokenizer (e.g. a preset)")
    if cfg.prune and cfg.prune_importance == "distillation":
        raise ConfigError("--prune-importance distillation runs the teacher on the student's token ids, which "
                          "differ here (the student has its own tokenizer)", "use --prune-importance magnitude")
    return student_tok


def _check_teachers(teachers: list, names: list[str]) -> None:
    """Several teachers must predict the same labels and read the same token ids."""
    from distill.cross_tokenizer import same_vocabulary

    first = teachers[0]
    for name, t in zip(names[1:], teachers[1:], strict=True):
        if t.model.config.num_labels != first.model.config.num_labels:
            raise ModelError(f"teachers '{names[0]}' and '{name}' have different label counts "
                             f"({first.model.config.num_labels} and {t.model.config.num_labels})",
                             "give teachers fine-tuned on the same labels")
        if not same_vocabulary(t.tokenizer, first.tokenizer):
            raise ModelError(f"teachers '{names[0]}' and '{name}' use different tokenizers",
                             "give teachers that share one tokenizer (e.g. fine-tuned from the same checkpoint)")


def _augment_mlm(cfg: RunConfig, teacher, task: Task):
    """The masked LM for ``--augment``: ``--augment-mlm``, else the teacher checkpoint's own MLM head."""
    from teachers import resolve_model_source
    from teachers.augment import load_mlm

    if task.is_token or task.is_regression:
        raise ConfigError(f"--augment does not support {'token classification' if task.is_token else 'regression'}"
                          f" (task '{task.name}')", "drop --augment")
    if cfg.augment_mlm:
        mlm = load_mlm(resolve_model_source(cfg.augment_mlm, kind="masked LM"), tokenizer=teacher.tokenizer)
        if mlm is None:
            raise ModelError(f"'{cfg.augment_mlm}' has no trained masked-LM head",
                             "pass a BertForMaskedLM checkpoint (e.g. bert-base-uncased) with --augment-mlm")
        return mlm
    mlm = load_mlm(teacher.source, tokenizer=teacher.tokenizer)
    if mlm is None:
        raise ConfigError(f"--augment needs a masked LM, and teacher '{cfg.teacher}' has no MLM head",
                          "pass --augment-mlm DIR (a BertForMaskedLM checkpoint such as bert-base-uncased)")
    return mlm


@dataclass
class Prepared:
    """What ``prepare`` checked and loaded: the data, the teachers, the student's own tokenizer, the MLM."""

    splits: Splits
    teachers: list
    student_tokenizer: object = None  # None: the student reads the teacher's token ids
    mlm: object = None


def _on_main(device: str, write: Callable[[], object]) -> None:
    """Write on the main process only, then hold every process until it is done (they may read what it wrote)."""
    if is_main_process():
        write()
    wait_for_everyone(device)


def _live_teacher(ctx: Context, teacher):
    """The teacher(s) to run: first sharded across the launched processes when ``--teacher-shard`` asks (in place,
    once; after the student has been initialised from the whole teacher)."""
    if not ctx.sharded:
        return teacher
    from distill.engine import TEACHER_DTYPES, get_accelerator
    from distill.sharding import is_sharded, local_parameters, shard

    device = get_accelerator(ctx.cfg.device).device
    dtype = TEACHER_DTYPES[ctx.cfg.teacher_dtype] if device.type == "cuda" else None  # as --teacher-dtype unsharded
    several = isinstance(teacher, list)
    for i, one in enumerate(teacher if several else [teacher]):
        if not is_sharded(one):
            shard(one, device, dtype)
            held, total = local_parameters(one)
            name = f"teacher {i + 1}" if several else "teacher"
            info(f"  {name} sharded (FSDP) over {process_count()} processes: {held:,} of its {total:,} parameters "
                 "held by each")
    return teacher


def _save_model(model, tokenizer, final: Path, extra: dict | None = None, device: str = "auto") -> None:
    def write() -> None:
        with staged_dir(final) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if extra:
                write_json(tmp / TEACHER_MARKER, extra)

    _on_main(device, write)


def _timed(ctx: Context, name: str):
    class _Timer:
        def __enter__(self):
            self.start = time.perf_counter()
            info(f"[bold cyan]── {name}[/]")

        def __exit__(self, *exc):
            ctx.seconds[name] = round(time.perf_counter() - self.start, 2)

    return _Timer()


def prepare(cfg: RunConfig, need_student: bool = True, resume: bool = False, checkpointing: bool = False) -> Prepared:
    """Validate everything before writing: task, data, teachers, student source, tokenizers, init, augmentation,
    the output dir, and (for ``distill run``) that the disk has room for the checkpoints and stage outputs."""
    from teachers import load_teacher

    task = get_task(cfg.task) if cfg.task else None
    if task is None and not cfg.data:
        raise DataError("no --task and no --data given", "pass --task sst2 (Hub) or --data DIR (local files)")
    splits = load_splits(task, cfg.data, text_columns=tuple(cfg.text_columns) if cfg.text_columns else None,
                         label_column=cfg.label_column, max_train_samples=cfg.max_train_samples, seed=cfg.seed)
    seed_everything(cfg.seed)  # a new task head starts from the same weights in every run and every process
    teachers = [load_teacher(name, splits.task) for name in cfg.teacher_names]
    _check_teachers(teachers, cfg.teacher_names)
    teacher = teachers[0]
    from students.build import student_source_is_preset

    student_tok = None
    if need_student and not student_source_is_preset(cfg.student):
        from teachers import resolve_model_source

        source = resolve_model_source(cfg.student, kind="student", registry=_presets())
        student_tok = _student_tokenizer(cfg, source, teacher.tokenizer, splits.task)
    if need_student and cfg.init == "auto" and student_tok is None and student_source_is_preset(cfg.student):
        from students import PRESETS
        from students.init import resolve_auto

        cfg.init = resolve_auto(PRESETS.get(cfg.student), teacher.model.config, cfg.layer_selection)
        info(f"  --init auto: {cfg.init}")  # the resolved choice is what config.yaml records
    if need_student and cfg.init == "teacher-pruned":
        from students import PRESETS
        from students.init import pruned_shape

        if not student_source_is_preset(cfg.student):
            raise ConfigError(f"--init teacher-pruned needs a preset student (its widths are the target), not "
                              f"'{cfg.student}'", f"use one of: {', '.join(PRESETS.names())}")
        pruned_shape(PRESETS.get(cfg.student), teacher.model.config, cfg.layer_selection)
    if need_student:
        from distill.preflight import check_shapes

        check_shapes(cfg, teacher.model.config)
    mlm = _augment_mlm(cfg, teacher, splits.task) if need_student and cfg.augment else None
    out_dir = Path(cfg.output_dir)
    if not resume:
        check_output_dir(out_dir, cfg.overwrite)
    check_writable(out_dir)
    if checkpointing:
        check_free_space(out_dir, estimate_run_bytes(cfg, teacher))
    return Prepared(splits, teachers, student_tok, mlm)


def _param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _student_bytes(cfg: RunConfig, teacher) -> int:
    """fp32 bytes of the student: a preset built without memory (meta device), a local dir's weight files."""
    import torch

    from students import build_student
    from students.build import student_source_is_preset

    if student_source_is_preset(cfg.student):
        with torch.device("meta"):
            return _param_bytes(build_student(cfg.student, teacher.model.config))
    if Path(cfg.student).is_dir():
        return int(dir_size_mb(cfg.student) * 1e6) or _param_bytes(teacher.model)
    return _param_bytes(teacher.model)


def estimate_run_bytes(cfg: RunConfig, teacher) -> int:
    """Bytes a run writes at most: K checkpoints of each training stage (removed once the stage is saved, so only
    the largest counts), the teacher/student/pruned dirs, the INT8 bundle and its FP32 ONNX scratch copy."""
    student = _student_bytes(cfg, teacher)
    k = cfg.keep_checkpoints
    need = 0
    checkpoints = checkpoint_bytes(student) * k
    if not teacher.head_trained:
        t = _param_bytes(teacher.model)
        checkpoints = max(checkpoints, checkpoint_bytes(t) * k)
        need += t  # the fine-tuned teacher dir
    need += checkpoints + student * (1 + int(cfg.prune) + 2 * int(cfg.quantize))
    return int(need * 1.1) + 10_000_000  # tokenizers, reports, slack


def _presets():
    from students import PRESETS

    return PRESETS


def teacher_dir(index: int) -> str:
    """Where teacher ``index`` (0 = the primary) is cached when fine-tuned here: teacher, teacher_2, ..."""
    return "teacher" if index == 0 else f"teacher_{index + 1}"


def stage_teacher(ctx: Context, teacher, force: bool = False, index: int = 0) -> tuple[object, str]:
    """Use the teacher as is when its head is trained; otherwise fine-tune it (or reuse a matching cache).

    Teacher ``index`` > 0 (several teachers) is cached in ``teacher_<index+1>`` and fine-tuned with seed + index.
    """
    from teachers import finetune_teacher, teacher_fingerprint

    if teacher.head_trained and not force:
        return teacher.model, teacher.source
    cfg = ctx.cfg
    name, seed = teacher_dir(index), cfg.seed + index
    fp = teacher_fingerprint(source=teacher.source, task=ctx.task.name, data=ctx.splits.source,
                             n_train=len(ctx.splits.train), max_len=cfg.max_seq_length, lr=cfg.teacher_lr,
                             epochs=cfg.teacher_epochs, batch=cfg.batch_size, seed=seed)
    cached = ctx.out / name
    marker = cached / TEACHER_MARKER
    if marker.is_file():
        import json

        from teachers.loading import auto_model_class

        recorded = json.loads(marker.read_text())
        if recorded.get("fingerprint") == fp:
            info(f"  reusing the fine-tuned teacher cached in {cached}")
            model = auto_model_class(ctx.task).from_pretrained(cached, use_safetensors=True)
            if ctx.checkpointing and recorded.get("history") is not None:
                ctx.history[name] = recorded["history"]
            return model.eval().requires_grad_(False), name
    if not teacher.head_trained:
        info(f"  '{cfg.teacher_names[index]}' has no trained {ctx.task.name} head: fine-tuning it first"
             + (f" (sharded over {process_count()} processes)" if ctx.sharded else ""))
    train, dev = ctx.teacher_train_loader or ctx.train_loader, ctx.teacher_dev_loader or ctx.dev_loader
    result = finetune_teacher(teacher.model, train, cfg.train_config(lr=cfg.teacher_lr, epochs=cfg.teacher_epochs,
                                                                     seed=seed, shard_model=ctx.sharded),
                              regression=ctx.task.is_regression, evaluate=gathered_evaluator(ctx.task, dev, cfg.device),
                              metric=ctx.task.main_metric, checkpoints=ctx.checkpoints(name))
    ctx.history[name] = result.history
    ctx.fitted(name, result)
    model = teacher.model
    if ctx.sharded:  # trained sharded: gather it on the main process to save it, then every process reloads it
        from distill.sharding import unsharded_copy

        model = unsharded_copy(model)
    _save_model(model.to("cpu") if model is not None else None, ctx.teacher_tokenizer or ctx.tokenizer, cached,
                {"fingerprint": fp, "source": teacher.source, "history": result.history}, cfg.device)
    ctx.mark_done(name, {"skipped_nonfinite": result.skipped_nonfinite}, checkpoints=(name,))
    if ctx.sharded:  # whole again on every process: the student is initialised from it, then it is sharded anew
        from teachers.loading import auto_model_class

        model = auto_model_class(ctx.task).from_pretrained(cached, use_safetensors=True).eval().requires_grad_(False)
    return model, name


def _primary(teacher):
    """The first teacher of a list (several teachers), or the teacher itself."""
    return teacher[0] if isinstance(teacher, list) else teacher


def _objective(ctx: Context, student, teacher):
    """The loss for distilling ``teacher`` (or a list of teachers: ``MultiTeacherObjective``) into ``student``, with
    unsupported terms turned off (and said so)."""
    said: set[str] = set()
    parts = []
    for one in teacher if isinstance(teacher, list) else [teacher]:
        layers = uniform_layer_map(student.config.num_hidden_layers, one.config.num_hidden_layers)
        support = supported_losses(student.config, one.config, same_tokenizer=not ctx.cross, token=ctx.task.is_token)
        config, messages = disable_unsupported(ctx.cfg.distill_config(), support)
        for message in messages:
            if message not in said:
                said.add(message)
                info(f"  note: {message}")
        parts.append(Objective(config, regression=ctx.task.is_regression, student_width=student.config.hidden_size,
                               teacher_width=one.config.hidden_size, layer_map=layers,
                               student_heads=student.config.num_attention_heads))
    if not isinstance(teacher, list):
        return parts[0]
    from distill.ensemble import MultiTeacherObjective

    return MultiTeacherObjective(parts, ctx.cfg.teacher_weights)


def _pruned_student(ctx: Context, teacher):
    """``--init teacher-pruned``: a copy of the teacher cut to the preset's layers (chosen by --layer-selection),
    hidden and FFN widths by structured pruning (magnitude; the head size is kept, so heads = hidden / head size)."""
    from compress import PruneConfig, prune_model
    from distill.cross_tokenizer import student_view
    from students import PRESETS
    from students.init import pruned_shape

    cfg = ctx.cfg
    shape = pruned_shape(PRESETS.get(cfg.student), teacher.config, cfg.layer_selection)
    student = copy.deepcopy(teacher).to("cpu").eval()
    batch = student_view(next(iter(ctx.labelled_loader or ctx.train_loader)))
    example = {k: v[:2] for k, v in batch.items() if k != "idx"}
    report = prune_model(student, PruneConfig(heads=shape.heads_ratio, ffn=shape.ffn_ratio, layers=shape.layers,
                                              importance="magnitude"), example)
    c = student.config
    got = (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.intermediate_size)
    want = (len(shape.layers), shape.hidden, shape.heads, shape.ffn)
    if got != want:
        raise ModelError(f"pruning the teacher gave L{got[0]}/H{got[1]}/A{got[2]}/FFN{got[3]}, not "
                         f"L{want[0]}/H{want[1]}/A{want[2]}/FFN{want[3]}", "use --init auto or random")
    ctx.history["init_pruned"] = {"teacher_layers": shape.layers, **report.to_dict()}
    return student.requires_grad_(True).train()


def stage_student(ctx: Context, teacher):
    """Build (or load) the student, initialise it, distil it from the teacher(s) and save it."""
    from students import build_student, init_from_teacher, load_student
    from students.build import student_source_is_preset
    from teachers import resolve_model_source

    cfg = ctx.cfg
    done = ctx.done("distil")
    if done is not None and (ctx.out / "student").is_dir():
        from teachers.loading import auto_model_class

        info(f"  finished earlier: loading {ctx.out / 'student'}")
        ctx.student_lr, ctx.history["student"] = done["student_lr"], done["history"]
        ctx.skipped_nonfinite.update(done.get("skipped_nonfinite", {}))
        return auto_model_class(ctx.task).from_pretrained(ctx.out / "student", use_safetensors=True).eval()
    seed_everything(cfg.seed)
    primary = _primary(teacher)
    pretrained = True
    if cfg.init == "teacher-pruned":
        student = _pruned_student(ctx, primary)
        info(f"  student '{cfg.student}' pruned from the teacher: {count_params(student):,} params, teacher layers "
             f"{ctx.history['init_pruned']['teacher_layers']}, {student.config.num_attention_heads} heads")
    elif student_source_is_preset(cfg.student):
        student = build_student(cfg.student, primary.config, token=ctx.task.is_token)
        report = init_from_teacher(student, primary, cfg.init, cfg.layer_selection)
        pretrained = report.strategy == "teacher-layers"
        info(f"  student '{cfg.student}': {count_params(student):,} params, init {report.strategy}")
    else:
        student = load_student(resolve_model_source(cfg.student, "student", _presets()), primary.config,
                               token=ctx.task.is_token)
        info(f"  student '{cfg.student}': {count_params(student):,} params")
    lr = cfg.lr or default_student_lr(pretrained, student.config.hidden_size)
    ctx.student_lr = lr
    objective = _objective(ctx, student, teacher)
    result = fit(student, objective, ctx.train_loader, cfg.train_config(lr=lr),
                 teacher=_teacher_source(ctx, teacher, objective),
                 evaluate=gathered_evaluator(ctx.task, ctx.dev_loader, cfg.device), metric=ctx.task.main_metric,
                 description="distil", checkpoints=ctx.checkpoints("distil"))
    ctx.history["student"] = result.history
    ctx.fitted("distil", result)
    _save_model(student.to("cpu"), ctx.tokenizer, ctx.out / "student", device=cfg.device)
    ctx.mark_done("distil", {"student_lr": lr, "history": result.history,
                             "skipped_nonfinite": {k: v for k, v in ctx.skipped_nonfinite.items() if k == "distil"}},
                  checkpoints=("distil",))
    return student


def default_student_lr(pretrained: bool, hidden_size: int) -> float:
    """Distillation lr when none is given: 1e-4 for layers copied or cut from a teacher (or a pretrained student);
    layers trained from scratch need a larger step, 1e-3 at width 128 and shrinking as 1/width above it.

    Measured on SST-2 with all-MiniLM-L6 (experiments/README.md): ``tiny`` (H128) trains well at 1e-3; ``small``
    (H512) at 1e-3 diverged in its second epoch (dev accuracy 0.654 → 0.509) and reached 0.80 after one epoch at 3e-4.
    """
    return 1e-4 if pretrained else 1e-3 * min(1.0, 128 / max(hidden_size, 1))


def prune_and_recover(ctx: Context, model, teacher, prune_config, steps: int = 1, lr: float | None = None,
                      start: int = 0, n_layers: int | None = None):
    """Prune ``model`` in ``steps`` steps from 0 to the target, each followed by distillation recovery.

    Returns the last PruneReport; ``ctx.history["prune_steps"]`` records widths and the dev metric after each step.
    ``start`` steps are already done (a resumed run: ``model`` is their result, ``n_layers`` the original depth).
    With checkpoints on, the model after each step is saved to ``OUTPUT/checkpoints/prune/step-<i>``.
    """
    from compress import kd_loss_fn, prune_model, step_configs
    from distill.cross_tokenizer import student_view

    cfg = ctx.cfg
    rows = ctx.labelled_loader or ctx.train_loader  # augmented rows have no labels for taylor importance
    set_loader_epoch(rows, rows, cfg.seed, 0)  # the same batches whatever ran before
    batches = [student_view(b) for b in islice(iter(rows), cfg.importance_batches)]
    example = {k: v[:2] for k, v in batches[0].items()}
    loss_fn = (kd_loss_fn(_primary(teacher), cfg.temperature) if prune_config.importance == "distillation"
               else None)
    evaluate = gathered_evaluator(ctx.task, ctx.dev_loader, cfg.device)
    if not start:
        ctx.history["prune_steps"] = []
    report = None
    configs = step_configs(prune_config, steps, n_layers=n_layers or model.config.num_hidden_layers)
    for i, step in enumerate(configs, 1):
        if i <= start:
            continue
        model.to("cpu").eval()
        report = prune_model(model, step, example, batches=batches, loss_fn=loss_fn)
        for note in report.notes:
            info(f"  note: {note}")
        info(f"  step {i}/{steps}: {report.params_before:,} → {report.params_after:,} params (layers "
             f"{report.layers_before}→{report.layers_after}, heads {report.heads_before}→{report.heads_after}, "
             f"hidden {report.hidden_before}→{report.hidden_after}, FFN {report.ffn_before}→{report.ffn_after})")
        record = {"step": i, "params": report.params_after, "per_layer": report.per_layer}
        if cfg.recover_epochs > 0 and teacher is not None:
            objective = _objective(ctx, model, teacher)
            result = fit(model, objective, ctx.train_loader,
                         cfg.train_config(epochs=cfg.recover_epochs / steps, lr=lr),
                         teacher=_teacher_source(ctx, teacher, objective),
                         evaluate=evaluate, metric=ctx.task.main_metric, description=f"recover {i}/{steps}",
                         checkpoints=ctx.checkpoints(f"recover-{i}"))
            ctx.history.setdefault("pruned", []).extend(result.history)
            ctx.fitted("prune", result)
        record["metric"] = evaluate(model)[ctx.task.main_metric]
        ctx.history["prune_steps"].append(record)
        ctx.history["prune_report"] = report.to_dict()
        if ctx.checkpointing:
            _save_prune_step(ctx, model, i)
    return report


def _save_prune_step(ctx: Context, model, i: int) -> None:
    """The model after pruning step ``i`` and its recovery, with the history so far; older steps are dropped."""
    from compress import save_pruned

    root = ctx.out / "checkpoints" / "prune"
    with staged_dir(root / f"step-{i}") as tmp:
        save_pruned(copy.deepcopy(model).to("cpu"), tmp)
        write_json(tmp / "prune_state.json", {"step": i, "skipped_nonfinite": ctx.skipped_nonfinite,
                                              **{k: ctx.history[k] for k in ("prune_steps", "pruned", "prune_report")
                                                 if k in ctx.history}})
    for old in root.glob("step-*"):
        if old.name != f"step-{i}":
            shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(ctx.out / "checkpoints" / f"recover-{i}", ignore_errors=True)


def _resumed_prune_step(ctx: Context):
    """(model, steps done) from the newest saved pruning step of an interrupted run, or (None, 0)."""
    import json

    from compress import load_pruned

    root = ctx.out / "checkpoints" / "prune"
    found = sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1])) if ctx.resume else []
    if not found:
        return None, 0
    state = json.loads((found[-1] / "prune_state.json").read_text())
    for key in ("prune_steps", "pruned", "prune_report"):
        if key in state:
            ctx.history[key] = state[key]
    ctx.skipped_nonfinite.update(state.get("skipped_nonfinite", {}))
    info(f"  resuming after pruning step {state['step']} ({found[-1]})")
    return load_pruned(found[-1]).to("cpu").eval(), state["step"]


def stage_prune(ctx: Context, student, teacher):
    """Prune a copy of the student (heads with hidden width and FFN neurons by default), recover, and save it."""
    from compress import load_pruned, save_pruned

    done = ctx.done("prune")
    if done is not None and (ctx.out / "pruned").is_dir():
        info(f"  finished earlier: loading {ctx.out / 'pruned'}")
        ctx.history.update(done["history"])
        ctx.skipped_nonfinite.update(done.get("skipped_nonfinite", {}))
        return load_pruned(ctx.out / "pruned").to("cpu").eval()
    pruned, start = _resumed_prune_step(ctx)
    pruned = copy.deepcopy(student).to("cpu").eval() if pruned is None else pruned
    prune_and_recover(ctx, pruned, teacher, ctx.cfg.prune_config(), ctx.cfg.prune_steps, lr=ctx.student_lr,
                      start=start, n_layers=student.config.num_hidden_layers)

    def write() -> None:
        with staged_dir(ctx.out / "pruned") as tmp:
            save_pruned(pruned.to("cpu"), tmp, ctx.tokenizer)

    _on_main(ctx.cfg.device, write)
    keys = ("prune_steps", "pruned", "prune_report")
    ctx.mark_done("prune", {"history": {k: ctx.history[k] for k in keys if k in ctx.history},
                            "skipped_nonfinite": {k: v for k, v in ctx.skipped_nonfinite.items() if k == "prune"}},
                  checkpoints=("prune",))
    return pruned


def _onnx_metric(ctx: Context):
    """Dev-set metric of an ONNX file, for accuracy-aware quantization."""

    def metric(path: Path) -> float:
        logits, labels = predict(OnnxClassifier(path, threads=ctx.cfg.latency_threads), ctx.dev_loader)
        return compute_metrics(ctx.task, logits, labels)[ctx.task.main_metric]

    return metric


def stage_qat(ctx: Context, model, teacher):
    """Quantization-aware distillation: fake-quantize the Linear layers and distil again (when PTQ loses too much)."""
    from compress.qat import prepare_qat

    teacher = _live_teacher(ctx, teacher)
    qat_model = prepare_qat(copy.deepcopy(model).to("cpu"), target=ctx.cfg.quantize_target)
    result = fit(qat_model, _objective(ctx, qat_model, teacher), ctx.train_loader,
                 ctx.cfg.train_config(epochs=max(ctx.cfg.recover_epochs, 1.0), lr=(ctx.student_lr or 1e-4) / 10),
                 teacher=teacher, evaluate=gathered_evaluator(ctx.task, ctx.dev_loader, ctx.cfg.device),
                 metric=ctx.task.main_metric, description="QAT", checkpoints=ctx.checkpoints("qat"))
    ctx.history["qat"] = result.history
    ctx.fitted("qat", result)
    return qat_model


def stage_quantize(ctx: Context, model, teacher, qat_model=None) -> Path:
    """INT8 through ONNX Runtime (dynamic, static with calibration, accuracy-aware, or QAT), then a speed check.

    ``qat_model``: a model ``stage_qat`` already trained (it trains on every process; this runs on the main one).
    """
    import tempfile

    from compress import export_onnx, quantize_model
    from compress.speed import speed_check

    cfg, out = ctx.cfg, ctx.out / "int8"
    done = ctx.done("quantize")
    if done is not None and (out / "model.onnx").is_file():
        info(f"  finished earlier: {out / 'model.onnx'}")
        ctx.history.update(done["history"])
        ctx.skipped_nonfinite.update(done.get("skipped_nonfinite", {}))
        return out / "model.onnx"
    model = model.to("cpu").eval()
    qcfg = cfg.quantize_config()
    batches = ctx.train_loader if qcfg.mode == "static" else None
    if batches is not None:
        set_loader_epoch(ctx.train_loader, ctx.train_loader, cfg.seed, 0)  # calibrate on the same batches each time
    if cfg.qat:
        from compress.qat import export_qat_onnx
        from compress.quantize import save_config

        qat_model = (qat_model or stage_qat(ctx, model, teacher)).to("cpu").eval()
        with staged_dir(out) as tmp:
            export_qat_onnx(qat_model, tmp / "model.onnx", max_seq_length=cfg.max_seq_length)
            save_config(model, tmp)
            ctx.tokenizer.save_pretrained(tmp)
        ctx.history["quantize_report"] = {"mode": "qat", "target": qcfg.target}
    elif cfg.max_int8_drop is not None:
        from compress.tolerance import quantize_with_tolerance

        tol = quantize_with_tolerance(model, out, qcfg, evaluate=_onnx_metric(ctx), max_drop=cfg.max_int8_drop,
                                      tokenizer=ctx.tokenizer, max_seq_length=cfg.max_seq_length,
                                      calibration_batches=batches)
        ctx.history["quantize_report"] = tol.to_dict()
        info(f"  accuracy-aware INT8: {len(tol.quantize.fp32_nodes)} nodes kept in FP32")
    else:
        report = quantize_model(model, out, qcfg, tokenizer=ctx.tokenizer, max_seq_length=cfg.max_seq_length,
                                calibration_batches=batches)
        info(f"  {qcfg.mode} INT8 for {qcfg.target}: ONNX FP32 {report.onnx_fp32_mb:.1f} MB → "
             f"INT8 {report.onnx_int8_mb:.1f} MB")
        ctx.history["quantize_report"] = report.to_dict()
    with tempfile.TemporaryDirectory(prefix="distill-fp32-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "model.onnx", max_seq_length=cfg.max_seq_length)
        speed = speed_check(fp32, out / "model.onnx", threads=cfg.latency_threads, runs=cfg.latency_runs)
    ctx.history["int8_speed"] = speed
    if speed.get("warning"):
        warnings.warn(speed["warning"], stacklevel=2)
        info(f"  [yellow]warning:[/] {speed['warning']}")
    ctx.mark_done("quantize", {"history": {k: ctx.history[k] for k in ("quantize_report", "int8_speed", "qat")
                                           if k in ctx.history},
                               "skipped_nonfinite": {k: v for k, v in ctx.skipped_nonfinite.items() if k == "qat"}},
                  checkpoints=("qat",))
    return out / "model.onnx"


def _score_sharded_teacher(ctx: Context, teacher) -> tuple | None:
    """A sharded teacher's dev logits (every process runs it) and a whole CPU copy of it on the main process (for
    its size and latency); None elsewhere. Collective."""
    from distill.engine import get_accelerator
    from distill.sharding import unsharded_copy

    teacher = _live_teacher(ctx, teacher)
    outputs = predict(teacher, ctx.teacher_dev_loader or ctx.dev_loader, get_accelerator(ctx.cfg.device).device)
    plain = unsharded_copy(teacher)
    return (plain, outputs) if is_main_process() else None


def stage_score(ctx: Context, teacher, teacher_path: str, models: dict,
                teacher_outputs: tuple | None = None) -> tuple[list[StageScore], dict]:
    """Score teacher, student, pruned and int8 on dev; measure size and CPU latency of each.

    ``teacher_outputs``: the teacher's (dev logits, labels) when computed already (a sharded teacher)."""
    cfg = ctx.cfg
    vocab = teacher.config.vocab_size
    if ctx.cross:  # ONNX stages are students: random ids must fit the student's vocabulary
        vocab = min(vocab, len(ctx.tokenizer))
    lat = {"seq": cfg.latency_seq, "threads": cfg.latency_threads, "runs": cfg.latency_runs}
    t_logits, labels = teacher_outputs or predict(teacher, ctx.teacher_dev_loader or ctx.dev_loader, cfg.device)
    ctx.trivial = ctx.trivial or collapse.trivial_baseline(ctx.task, collapse.split_labels(ctx.splits.train), labels)
    rows: list[StageScore] = []
    predictions: dict[str, list] = {}
    teacher_metric = None
    for name, obj in [("teacher", teacher), *models.items()]:
        if isinstance(obj, Path):
            session = OnnxClassifier(obj, threads=cfg.latency_threads)
            logits, _ = predict(session, ctx.dev_loader)
            params, size = onnx_param_count(obj), dir_size_mb(obj)
            latency = onnx_latency_ms(obj, vocab_size=vocab, **lat)
            path = str(obj.parent.relative_to(ctx.out)) if obj.parent.is_relative_to(ctx.out) else str(obj)
        else:
            logits = t_logits if name == "teacher" else predict(obj, ctx.dev_loader, cfg.device)[0]
            obj.to("cpu")
            params = count_params(obj)
            path = teacher_path if name == "teacher" else name
            on_disk = ctx.out / path if not Path(path).is_absolute() else Path(path)
            if not on_disk.is_dir():  # scored in place (distill eval): the dir it was loaded from
                on_disk = Path(getattr(obj.config, "_name_or_path", "") or "")
            size = dir_size_mb(on_disk) if on_disk.is_dir() and str(on_disk) else params * 4 / 1e6
            latency = torch_latency_ms(obj, **lat)
        row = score_stage(name, ctx.task, logits, labels, t_logits, teacher_metric, params=params, size_mb=size,
                          latency_ms=latency, path=path, trivial_metric=ctx.trivial["trivial_metric"])
        row.latencies_ms = {"onnxruntime" if isinstance(obj, Path) else "torch": row.latency_ms}
        predictions[name] = dev_predictions(ctx.task, logits, labels)  # token tasks: one tag per word
        teacher_metric = row.metric if teacher_metric is None else teacher_metric
        info(f"  {name}: {ctx.task.main_metric} {row.metric:.4f}, {row.latency_ms:.2f} ms")
        rows.append(row)
    return rows, predictions


def _train_loader(ctx: Context, rows):
    """Shuffled, length-grouped training batches of ``rows``; tokenized for both models when their tokenizers
    differ (``teacher_*`` columns)."""
    from distill.cross_tokenizer import PairedPadCollator, tokenize_two

    cfg = ctx.cfg
    if ctx.cross:
        data = tokenize_two(rows, ctx.tokenizer, ctx.teacher_tokenizer, cfg.max_seq_length, index=cfg.cache_teacher)
        collate = PairedPadCollator(ctx.tokenizer, ctx.teacher_tokenizer)
    else:
        data, collate = tokenize(rows, ctx.tokenizer, cfg.max_seq_length, index=cfg.cache_teacher), None
    return make_loader(data, ctx.tokenizer, cfg.batch_size, shuffle=True, seed=cfg.seed,
                       group_by_length=cfg.group_by_length, collate_fn=collate)


def _start(cfg: RunConfig, need_student: bool = True, resume: bool = False, checkpointing: bool = False):
    """Validate, then (and only then) create the output dir, record settings and build the data loaders.

    ``resume`` keeps what the output dir holds (finished stages, checkpoints) instead of refusing or clearing it.
    """
    prepared = prepare(cfg, need_student, resume=resume, checkpointing=checkpointing)
    splits, teacher = prepared.splits, prepared.teachers[0]
    out_dir = Path(cfg.output_dir)
    wait_for_everyone(cfg.device)  # every process has checked the output dir before the main one writes to it

    def write() -> None:
        if cfg.overwrite and not resume:  # fine-tuned teachers and teacher caches are validated by fingerprint
            keep = [name for i in range(len(prepared.teachers)) for name in (teacher_dir(i), _cache_dir(i))]
            _clear_output_dir(out_dir, keep=tuple(keep))
        if resume:  # temporary dirs of writes cut short by the interruption
            patterns = (".*.tmp-*", ".*.old-*", ".*.json.*", ".*.yaml.*", ".*.md.*", ".*.html.*")
            for stale in [p for pattern in patterns for p in out_dir.glob(pattern)]:
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_yaml(out_dir / "config.yaml", dump_recipe(cfg))
        write_json(out_dir / "env.json", {**environment_info(cfg.seed, cfg.device),
                                          "processes": process_count()})

    _on_main(cfg.device, write)
    start_tracking(cfg.tensorboard and is_main_process(), out_dir / "tensorboard")
    tokenizer = prepared.student_tokenizer or teacher.tokenizer
    ctx = Context(cfg, splits.task, splits, tokenizer, out_dir, teacher_tokenizer=teacher.tokenizer,
                  teachers=prepared.teachers, mlm=prepared.mlm, checkpointing=checkpointing, resume=resume)
    ctx.trivial = collapse.trivial_baseline(splits.task, collapse.split_labels(splits.train),
                                            collapse.split_labels(splits.dev))
    ctx.train_loader = _train_loader(ctx, splits.train)
    ctx.dev_loader = make_loader(tokenize(splits.dev, tokenizer, cfg.max_seq_length), tokenizer, cfg.batch_size * 2,
                                 shuffle=False)
    if ctx.cross:
        t_tok = teacher.tokenizer
        info(f"  note: the student has its own tokenizer ({len(tokenizer)} tokens, the teacher {len(t_tok)}): "
             "each tokenizes the raw text, and only the label and logit terms apply")
        ctx.teacher_train_loader = make_loader(tokenize(splits.train, t_tok, cfg.max_seq_length), t_tok,
                                               cfg.batch_size, shuffle=True, seed=cfg.seed,
                                               group_by_length=cfg.group_by_length)
        ctx.teacher_dev_loader = make_loader(tokenize(splits.dev, t_tok, cfg.max_seq_length), t_tok,
                                             cfg.batch_size * 2, shuffle=False)
    return ctx, teacher


def _cache_dir(index: int) -> str:
    """Where teacher ``index``'s output cache lives: teacher_cache, teacher_cache_2, ..."""
    return "teacher_cache" if index == 0 else f"teacher_cache_{index + 1}"


def _teacher_source(ctx: Context, teacher, objective):
    """The live teacher, or (``--cache-teacher``) its outputs cached on disk, built once and reused by later runs.

    Several teachers (a list) get one cache each (``teacher_cache``, ``teacher_cache_2``, ...).
    """
    teacher = _live_teacher(ctx, teacher)
    if not ctx.cfg.cache_teacher:
        return teacher
    if ctx.task.kind != "sequence-classification":
        raise ConfigError(f"--cache-teacher does not support {ctx.task.kind} yet", "drop --cache-teacher")
    from distill.cross_tokenizer import teacher_columns
    from distill.engine import teacher_layers_needed
    from teachers.cache import cache_teacher_outputs

    data = ctx.train_loader.dataset
    if ctx.cross:
        data = teacher_columns(data)
    caches = []
    parts = objective.parts if isinstance(teacher, list) else [objective]
    for i, (one, part) in enumerate(zip(teacher if isinstance(teacher, list) else [teacher], parts, strict=True)):
        cache = cache_teacher_outputs(one, data, ctx.out / _cache_dir(i), top_k=ctx.cfg.cache_top_k,
                                      hidden_layers=teacher_layers_needed(part),
                                      tokenizer=ctx.teacher_tokenizer or ctx.tokenizer,
                                      max_length=ctx.cfg.max_seq_length, device=ctx.cfg.device)
        ctx.history.setdefault("teacher_cache", []).append(cache)
        caches.append(cache)
    return caches if isinstance(teacher, list) else caches[0]


def _history(ctx: Context) -> dict:
    """Per-stage training history, with teacher caches summarised (size, time saved)."""
    history = dict(ctx.history)
    if "teacher_cache" in history:
        history["teacher_cache"] = [c.summary() for c in history["teacher_cache"]]
    return history


def finetune_only(cfg: RunConfig) -> Path:
    """``distill finetune-teacher``: fine-tune the teacher on the task and save it to ``OUTPUT/teacher``."""
    ctx, teacher = _start(cfg, need_student=False)
    with _timed(ctx, "teacher"):
        for i, one in enumerate(ctx.teachers):  # several teachers: teacher, teacher_2, ...
            stage_teacher(ctx, one, force=True, index=i)
    stop_tracking()
    info(f"fine-tuned teacher written to {ctx.out / 'teacher'}")
    return ctx.out / "teacher"


def stage_teachers(ctx: Context) -> tuple[object, str, object]:
    """Every teacher ready (fine-tuned when needed): (primary model, its report path, what distillation uses: the
    primary model, or the list of every teacher's model)."""
    models = []
    for i, one in enumerate(ctx.teachers):
        model, path = stage_teacher(ctx, one, index=i)
        if path != teacher_dir(i) and is_main_process():  # a trained teacher is used in place: drop a stale copy
            shutil.rmtree(ctx.out / teacher_dir(i), ignore_errors=True)
        models.append((model, path))
    if len(models) == 1:
        return models[0][0], models[0][1], models[0][0]
    ctx.history["teachers"] = _score_teachers(ctx, [m for m, _ in models])
    return models[0][0], models[0][1], [m for m, _ in models]


def _score_teachers(ctx: Context, models: list) -> list[dict]:
    """Dev metric of each teacher and of their weighted ensemble (the report itself compares to the first)."""
    import torch

    from distill.ensemble import ensemble_logits, normalise_weights

    loader = ctx.teacher_dev_loader or ctx.dev_loader
    weights = normalise_weights(ctx.cfg.teacher_weights, len(models))
    rows, logits = [], []
    for name, model, w in zip(ctx.cfg.teacher_names, models, weights, strict=True):
        out, labels = predict(model, loader, ctx.cfg.device)
        logits.append(torch.as_tensor(out))
        rows.append({"teacher": name, "weight": w, **compute_metrics(ctx.task, out, labels)})
    mixed = ensemble_logits(logits, weights, 1.0, regression=ctx.task.is_regression).numpy()
    rows.append({"teacher": "ensemble", "weight": 1.0, **compute_metrics(ctx.task, mixed, labels)})
    for row in rows:
        info(f"  {row['teacher']} (weight {row['weight']:.2f}): {ctx.task.main_metric} "
             f"{row[ctx.task.main_metric]:.4f}")
    return rows


def stage_augment(ctx: Context) -> None:
    """``--augment N``: N masked-LM rewrites of every training row (label -100: soft targets only) join the
    training set of distillation and recovery; the teacher was fine-tuned on the original rows."""
    from teachers.augment import augment_dataset

    cfg = ctx.cfg
    rows = augment_dataset(ctx.splits.train, ctx.mlm, cfg.augment, seed=cfg.seed, max_length=cfg.max_seq_length,
                           device=cfg.device)
    ctx.history["augment"] = {"per_example": cfg.augment, "rows": len(rows) - len(ctx.splits.train),
                              "mlm": ctx.mlm.source}
    ctx.labelled_loader = ctx.train_loader
    ctx.train_loader = _train_loader(ctx, rows)
    ctx.mlm = None  # free its memory


def run(cfg: RunConfig, resume: bool = False) -> dict:
    """Run every stage and return the report (also written to ``OUTPUT/report.json`` and ``report.md``).

    Training stages write checkpoints; ``resume`` continues an interrupted run in ``cfg.output_dir`` (finished
    stages are loaded, the interrupted one continues from its newest intact checkpoint). A failed write, a
    non-finite loss or SIGINT/SIGTERM raise ``RunError``/``Interrupted`` naming the command that resumes.
    """
    start = time.perf_counter()
    out_dir = Path(cfg.output_dir)
    if resume and _finished(out_dir):
        import json

        info(f"{out_dir} holds a finished run: nothing to resume")
        report = json.loads((out_dir / "report.json").read_text())
        out.print(render_table(report))
        return report
    ctx, teacher = _start(cfg, resume=resume, checkpointing=True)
    command = f"distill run --resume {out_dir}"
    try:
        return _run_stages(ctx, teacher, start)
    except RunError as exc:
        exc.resume = exc.resume or command + (" --skip-nonfinite" if isinstance(exc, NonFiniteLoss) else "")
        raise
    except interrupts.Interrupted as exc:
        exc.resume = exc.resume or command
        raise
    except OSError as exc:
        error = write_error(exc, Path(exc.filename or out_dir))
        if isinstance(error, RunError):
            error.resume = command
            raise error from None
        raise


def _finished(out_dir: Path) -> bool:
    import json

    stages = out_dir / STAGES_FILE
    return (out_dir / "report.json").is_file() and stages.is_file() and "score" in json.loads(stages.read_text())


def _run_stages(ctx: Context, teacher, start: float) -> dict:
    """The stages of ``run`` in order, then the report."""
    cfg, out_dir = ctx.cfg, ctx.out
    if cfg.teacher_shard == "fsdp" and not ctx.sharded:
        info("  note: --teacher-shard fsdp needs several processes (`accelerate launch --num_processes N -m distill "
             "run ...`); this single process holds the whole teacher")
    with _timed(ctx, "teacher"):
        teacher_model, teacher_path, teachers = stage_teachers(ctx)
    if cfg.augment:
        with _timed(ctx, "augment"):
            stage_augment(ctx)
    with _timed(ctx, "distil"):
        student = stage_student(ctx, teachers)
    models: dict = {"student": student}
    final = student
    if cfg.prune:
        with _timed(ctx, "prune"):
            final = models["pruned"] = stage_prune(ctx, student, teachers)
    qat_model = None
    if cfg.quantize and cfg.qat:  # training: every process takes part
        with _timed(ctx, "qat"):
            qat_model = stage_qat(ctx, final, teachers)
    scored_teacher = _score_sharded_teacher(ctx, teacher_model) if ctx.sharded else None
    if not is_main_process():
        return {}  # export, INT8, scoring and the report are the main process's
    if cfg.quantize:
        with _timed(ctx, "quantize"):
            models["int8"] = stage_quantize(ctx, final, teachers, qat_model)
    with _timed(ctx, "score"):
        if scored_teacher is not None:
            teacher_model, teacher_outputs = scored_teacher
        else:
            teacher_outputs = None
        rows, predictions = stage_score(ctx, teacher_model, teacher_path, models, teacher_outputs)
    report = {"task": ctx.task.name, "metric_name": ctx.task.main_metric,
              "stages": [r.to_dict() for r in rows], "latency_seq": cfg.latency_seq,
              "latency_threads": cfg.latency_threads, "latency_runs": cfg.latency_runs,
              "stage_seconds": ctx.seconds, "wall_seconds": round(time.perf_counter() - start, 2),
              "history": _history(ctx), "settings": asdict(cfg), "predictions": predictions,
              "label_names": list(ctx.task.label_names), "skipped_nonfinite": ctx.skipped_nonfinite,
              "resumed": ctx.resume, **ctx.trivial}
    report = write_report(out_dir, report)
    if "int8" in models:
        from compress.bundle import write_bundle

        row = report["stages"][-1]
        write_bundle(out_dir / "int8", numbers={ctx.task.main_metric: round(row["metric"], 4),
                                                "retention": round(row["retention"], 4), "size_mb": row["size_mb"],
                                                "latency_ms (batch 1, CPU)": row["latency_ms"],
                                                "target": ctx.history["quantize_report"].get("target")},
                     id2label=getattr(final.config, "id2label", None))
    ctx.mark_done("score")
    if is_main_process():
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)  # every stage is saved: checkpoints are spent
    stop_tracking()
    out.print(render_table(report))
    collapse.print_lines(report)
    if ctx.skipped_nonfinite:
        info(f"[yellow]warning:[/] batches skipped for a non-finite loss: {ctx.skipped_nonfinite}")
    info(f"report written to {out_dir / 'report.md'} ({report['wall_seconds']:.0f} s)")
    return report




def prune_only(cfg: RunConfig, model_dir: str) -> dict:
    """``distill prune``: prune any HF model dir (bare encoder or task model), optionally recovering from a teacher.

    ``cfg.teacher`` empty means no recovery; taylor importance and recovery read the task data.
    """
    from transformers import AutoTokenizer

    from compress import load_pruned, prune_model, save_pruned
    from teachers import load_teacher
    from teachers.loading import check_model_dir

    check_model_dir(Path(model_dir))
    prune_config = cfg.prune_config()
    has_data = bool(cfg.task or cfg.data)
    if prune_config.importance != "magnitude" and not has_data:
        raise ConfigError(f"--importance {prune_config.importance} needs gradients from task data",
                          "pass --task/--data, or use --importance magnitude")
    if cfg.teacher and not has_data:
        raise ConfigError("recovery from --teacher needs training data", "pass --task/--data, or drop --teacher")
    if prune_config.importance == "distillation" and not cfg.teacher:
        raise ConfigError("--importance distillation needs a --teacher", "pass --teacher DIR or use taylor")
    try:
        model = load_pruned(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except DistillError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot load '{model_dir}' ({exc.__class__.__name__})",
                         "pass a Hugging Face model directory with safetensors weights and a tokenizer") from None
    from compress import plan_steps
    from compress.arch import arch_of
    from compress.layout import measure

    plan_steps(prune_config, cfg.prune_steps, measure(model, arch_of(model)))  # ratios that fail at any step
    out_dir = Path(cfg.output_dir)
    check_output_dir(out_dir, cfg.overwrite)
    if has_data:
        task = get_task(cfg.task) if cfg.task else None
        splits = load_splits(task, cfg.data, text_columns=tuple(cfg.text_columns) if cfg.text_columns else None,
                             label_column=cfg.label_column, max_train_samples=cfg.max_train_samples, seed=cfg.seed)
        teacher = None
        if cfg.teacher:
            from distill.cross_tokenizer import same_vocabulary

            loaded = load_teacher(cfg.teacher, splits.task)
            if not same_vocabulary(loaded.tokenizer, tokenizer):
                raise ModelError(f"'{model_dir}' and teacher '{cfg.teacher}' use different tokenizers, and recovery "
                                 "here feeds the teacher the model's token ids",
                                 "recover with `distill run` (each model tokenizes the text), or drop --teacher")
            teacher = loaded.model
        ctx = Context(cfg, splits.task, splits, tokenizer, out_dir)
        ctx.train_loader = make_loader(tokenize(splits.train, tokenizer, cfg.max_seq_length), tokenizer,
                                       cfg.batch_size, shuffle=True, seed=cfg.seed)
        ctx.dev_loader = make_loader(tokenize(splits.dev, tokenizer, cfg.max_seq_length), tokenizer,
                                     cfg.batch_size * 2, shuffle=False)
        report = prune_and_recover(ctx, model, teacher, prune_config, cfg.prune_steps, lr=cfg.lr or 1e-4)
        history = ctx.history
    else:
        example = dict(tokenizer(["a short example sentence .", "another one"], padding=True, return_tensors="pt"))
        report = prune_model(model.eval(), prune_config, example)
        history = {}
    if not is_main_process():
        return report.to_dict()  # under accelerate launch the main process writes
    if cfg.overwrite:
        _clear_output_dir(out_dir, keep=())
    with staged_dir(out_dir) as tmp:
        save_pruned(model.to("cpu"), tmp, tokenizer)
        write_json(tmp / "prune_report.json", {**report.to_dict(), "history": history, "source": model_dir})
    info(f"pruned {report.params_before:,} → {report.params_after:,} params; written to {out_dir}")
    return report.to_dict()


def _local_loaders(cfg: RunConfig, tokenizer, task_required: bool = False):
    """Read ``cfg.task``/``cfg.data`` and build (task, splits, train loader, dev loader)."""
    task = get_task(cfg.task) if cfg.task else None
    if task is None and not cfg.data:
        if task_required:
            raise DataError("no --task and no --data given", "pass --task NAME and/or --data DIR")
        return None
    splits = load_splits(task, cfg.data, text_columns=tuple(cfg.text_columns) if cfg.text_columns else None,
                         label_column=cfg.label_column, max_train_samples=cfg.max_train_samples, seed=cfg.seed)
    train = make_loader(tokenize(splits.train, tokenizer, cfg.max_seq_length), tokenizer, cfg.batch_size,
                        shuffle=True, seed=cfg.seed)
    dev = make_loader(tokenize(splits.dev, tokenizer, cfg.max_seq_length), tokenizer, cfg.batch_size * 2,
                      shuffle=False)
    return splits, train, dev


def _load_any(model_dir: str):
    """A model dir as written by any stage (plain HF layout or per-layer widths) and its tokenizer."""
    from transformers import AutoTokenizer

    from compress import load_pruned
    from teachers.loading import check_model_dir

    check_model_dir(Path(model_dir))
    try:
        return load_pruned(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    except DistillError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot load '{model_dir}' ({exc.__class__.__name__})",
                         "pass a Hugging Face model directory with safetensors weights and a tokenizer") from None


def quantize_only(cfg: RunConfig, model_dir: str) -> dict:
    """``distill quantize``: INT8 bundle of any model dir; static mode calibrates on ``--calibration-data``."""
    import tempfile

    from compress import export_onnx, quantize_model
    from compress.bundle import write_bundle
    from compress.speed import speed_check

    qcfg = cfg.quantize_config()
    model, tokenizer = _load_any(model_dir)
    loaders = _local_loaders(cfg, tokenizer)
    if qcfg.mode == "static" and loaders is None:
        raise ConfigError("static quantization needs calibration data",
                          "pass --calibration-data DIR (and --task for GLUE files), or use --mode dynamic")
    out_dir = Path(cfg.output_dir)
    check_output_dir(out_dir, cfg.overwrite)
    if cfg.overwrite:
        _clear_output_dir(out_dir, keep=())
    report = quantize_model(model, out_dir, qcfg, tokenizer=tokenizer, max_seq_length=cfg.max_seq_length,
                            calibration_batches=loaders[1] if loaders else None)
    with tempfile.TemporaryDirectory(prefix="distill-fp32-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "model.onnx", max_seq_length=cfg.max_seq_length)
        speed = speed_check(fp32, out_dir / "model.onnx", threads=cfg.latency_threads, runs=cfg.latency_runs)
    if speed.get("warning"):
        info(f"[yellow]warning:[/] {speed['warning']}")
    numbers = {"size_mb": report.onnx_int8_mb, "fp32_onnx_mb": report.onnx_fp32_mb, "target": report.target,
               **{k: v for k, v in speed.items() if k.endswith("_ms") or k == "speedup"}}
    if getattr(model.config, "id2label", None) and hasattr(model, "classifier"):
        write_bundle(out_dir, numbers=numbers, id2label=model.config.id2label)
    write_json(out_dir / "quantize_report.json", {**report.to_dict(), "speed": speed, "source": model_dir})
    info(f"INT8 ({report.mode}, {report.target}): {report.onnx_fp32_mb:.1f} → {report.onnx_int8_mb:.1f} MB; "
         f"written to {out_dir}")
    return {**report.to_dict(), "speed": speed}


def eval_only(cfg: RunConfig, paths: list[str]) -> dict:
    """``distill eval``: score model dirs and ONNX files against a teacher on the task's dev set."""
    from teachers import load_teacher

    task = get_task(cfg.task) if cfg.task else None
    if task is None and not cfg.data:
        raise DataError("no --task and no --data given", "pass --task sst2 and/or --data DIR")
    splits = load_splits(task, cfg.data, text_columns=tuple(cfg.text_columns) if cfg.text_columns else None,
                         label_column=cfg.label_column, seed=cfg.seed)  # all train labels: the trivial predictor
    teacher = load_teacher(cfg.teacher, splits.task)
    models: dict = {}
    for path in paths:
        p = Path(path)
        if p.suffix == ".onnx":
            OnnxClassifier(p)  # a missing or invalid file fails here, before anything is scored
            models[p.parent.name] = p
        else:
            from distill.cross_tokenizer import same_vocabulary

            models[p.name], own = _load_any(path)
            if not same_vocabulary(own, teacher.tokenizer):
                raise ModelError(f"'{path}' has its own tokenizer, and `distill eval` scores every model with the "
                                 "teacher's", "score it in its run's report (`distill report RUN_DIR`)")
    ctx = Context(cfg, splits.task, splits, teacher.tokenizer, Path(cfg.output_dir))
    ctx.dev_loader = make_loader(tokenize(splits.dev, teacher.tokenizer, cfg.max_seq_length), teacher.tokenizer,
                                 cfg.batch_size * 2, shuffle=False)
    rows, predictions = stage_score(ctx, teacher.model, teacher.source, models)
    report = {"task": splits.task.name, "metric_name": splits.task.main_metric, "stages": [r.to_dict() for r in rows],
              "latency_seq": cfg.latency_seq, "latency_threads": cfg.latency_threads,
              "latency_runs": cfg.latency_runs, "predictions": predictions,
              "label_names": list(splits.task.label_names), **ctx.trivial}
    out.print(render_table(report))
    collapse.print_lines(report)
    return report


def check_pair(cfg: RunConfig) -> dict:
    """``distill check``: before any training, which loss terms and inits each teacher/student pair supports.

    Reads configs and tokenizers only (no weights). The student's head follows the teacher's label count, as in a
    run; ``--task`` matters for token classification (no token-level KD across tokenizers).
    """
    from transformers import AutoTokenizer

    from distill.cross_tokenizer import same_vocabulary
    from students.build import student_config, student_source_is_preset
    from teachers import resolve_model_source
    from teachers.loading import load_config

    task = get_task(cfg.task) if cfg.task else None
    token = bool(task and task.is_token)
    preset = student_source_is_preset(cfg.student)
    student_source = None if preset else resolve_model_source(cfg.student, kind="student", registry=_presets())
    pairs = []
    for name in cfg.teacher_names:
        source = resolve_model_source(name)
        t_config = load_config(source)
        if task is not None:
            t_config.num_labels = task.num_labels
        try:
            t_tok = AutoTokenizer.from_pretrained(source)
        except Exception as exc:
            raise ModelError(f"cannot load the tokenizer of teacher '{name}' ({exc.__class__.__name__})",
                             "pass a model directory saved with its tokenizer") from None
        if preset:
            s_config, s_tok = student_config(cfg.student, t_config), t_tok
        else:
            s_config, s_tok = load_config(student_source), _own_tokenizer(student_source) or t_tok
            s_config.num_labels = t_config.num_labels  # a run gives the student a head like the teacher's
        same = same_vocabulary(s_tok, t_tok)
        losses = supported_losses(s_config, t_config, same_tokenizer=same, token=token)
        pairs.append({"teacher": name, "student": cfg.student, "same_tokenizer": same,
                      "teacher_vocab": len(t_tok), "student_vocab": len(s_tok),
                      "teacher_shape": _shape(t_config), "student_shape": _shape(s_config),
                      "losses": losses, "inits": _init_support(cfg, s_config, t_config, same, preset),
                      "layer_map": uniform_layer_map(s_config.num_hidden_layers, t_config.num_hidden_layers)})
    return {"task": task.name if task else None, "pairs": pairs}


def _shape(config) -> str:
    """L/H/A/FFN of a config, as the presets are written."""
    return (f"L{config.num_hidden_layers}/H{config.hidden_size}/A{config.num_attention_heads}/"
            f"FFN{getattr(config, 'intermediate_size', '?')}")


def _init_support(cfg: RunConfig, s_config, t_config, same_tokenizer: bool, preset: bool) -> dict[str, str | None]:
    """For each --init: None if it applies to this pair, else why not."""
    from students import PRESETS
    from students.init import pruned_shape

    if not preset:
        why = "the student is loaded with its own weights (only presets are initialised from the teacher)"
        return {"random": why, "teacher-embeddings": why, "teacher-layers": why, "teacher-pruned": why}
    support: dict[str, str | None] = {"random": None}
    support["teacher-embeddings"] = None  # projected (narrower student) or lifted (wider)
    widths = ("hidden_size", "num_attention_heads", "intermediate_size")
    same_widths = all(getattr(s_config, k) == getattr(t_config, k, None) for k in widths)
    support["teacher-layers"] = None if same_widths else (
        f"needs the teacher's widths ({_shape(t_config)}), the student has {_shape(s_config)}")
    if same_widths:
        from students.init import select_layers

        try:
            select_layers(s_config.num_hidden_layers, t_config.num_hidden_layers, cfg.layer_selection)
        except DistillError as exc:
            support["teacher-layers"] = exc.problem
    try:
        pruned_shape(PRESETS.get(cfg.student), t_config, cfg.layer_selection)
        support["teacher-pruned"] = None
    except DistillError as exc:
        support["teacher-pruned"] = exc.problem
    return support
