"""``distill run``: teacher → student → distil → prune + recover → INT8 → score, each stage a small function.

Everything that can be checked is checked before anything is written; each stage writes to a temporary
directory that is renamed into place only when complete. Under ``accelerate launch`` every process trains (the
engine runs data-parallel and scores dev on all of them), only the main process writes files and prints, the
others wait at a barrier after each save they may read, and export, INT8, scoring and the report are the main
process's alone.
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

from distill.core.artifacts import dir_size_mb, staged_dir, write_json, write_yaml
from distill.core.console import info, out
from distill.core.errors import ConfigError, DataError, DistillError, ModelError
from distill.core.runtime import environment_info, process_count, seed_everything
from distill.data import Splits, load_splits, make_loader, tokenize
from distill.engine import TrainConfig, fit, gathered_evaluator, is_main_process, wait_for_everyone
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
from distill.tasks import Task, get_task

TEACHER_MARKER = "distill_teacher.json"


@dataclass
class RunConfig(DistillConfig):
    """Every setting of a run; written to ``OUTPUT/config.yaml``. Field names match the CLI flags.

    The loss settings (temperature, alpha, hidden_weight, ...) are inherited from ``DistillConfig``.
    """

    teacher: str = ""
    student: str = "tiny"
    task: str | None = None
    data: str | None = None
    text_columns: list[str] | None = None
    label_column: str | None = None
    output_dir: str = "runs/distill"
    overwrite: bool = False
    init: str = "auto"
    lr: float | None = None  # None: 1e-3 for a student trained from (projected-)random weights, 1e-4 otherwise
    epochs: float = 3.0
    batch_size: int = 32
    max_seq_length: int = 128
    max_train_samples: int | None = None
    seed: int = 42
    grad_accum_steps: int = 1
    group_by_length: bool = True
    compile: bool = False
    teacher_dtype: str = "fp32"
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_seq_length < 8:
            raise ConfigError(f"--max-seq-length {self.max_seq_length} is too short", "use at least 8, e.g. 128")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ConfigError(f"--max-train-samples {self.max_train_samples} must be ≥ 1", "drop it to use all data")
        if self.recover_epochs < 0:
            raise ConfigError(f"--recover-epochs {self.recover_epochs} is negative", "use 0 to skip recovery")
        self.train_config()
        if self.quantize:
            self.quantize_config()
            if self.max_int8_drop is not None and not 0 <= self.max_int8_drop < 1:
                raise ConfigError(f"--max-int8-drop {self.max_int8_drop} is outside [0, 1)", "use e.g. 0.01")
        if self.prune:
            self.prune_config()
            if self.prune_steps < 1:
                raise ConfigError(f"--prune-steps {self.prune_steps} must be ≥ 1", "use 1 for one-shot pruning")

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
                           teacher_dtype=self.teacher_dtype)
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
        if child.name in keep:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _check_tokenizers(teacher_tok, student_dir: Path) -> None:
    """A student dir with its own tokenizer must share the teacher's vocabulary (the student reads teacher ids)."""
    from transformers import AutoTokenizer

    if not (student_dir / "tokenizer_config.json").is_file() and not (student_dir / "vocab.txt").is_file():
        return
    student_tok = AutoTokenizer.from_pretrained(student_dir)
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        raise ModelError(f"student '{student_dir}' has a different vocabulary ({len(student_tok)} tokens) from the "
                         f"teacher ({len(teacher_tok)} tokens)", "use a student built with the teacher's tokenizer")


def _on_main(device: str, write: Callable[[], object]) -> None:
    """Write on the main process only, then hold every process until it is done (they may read what it wrote)."""
    if is_main_process():
        write()
    wait_for_everyone(device)


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


def prepare(cfg: RunConfig, need_student: bool = True):
    """Validate everything before writing: task, data, teacher, student source, tokenizers, output dir."""
    from teachers import load_teacher

    task = get_task(cfg.task) if cfg.task else None
    if task is None and not cfg.data:
        raise DataError("no --task and no --data given", "pass --task sst2 (Hub) or --data DIR (local files)")
    splits = load_splits(task, cfg.data, text_columns=tuple(cfg.text_columns) if cfg.text_columns else None,
                         label_column=cfg.label_column, max_train_samples=cfg.max_train_samples, seed=cfg.seed)
    seed_everything(cfg.seed)  # a new task head starts from the same weights in every run and every process
    teacher = load_teacher(cfg.teacher, splits.task)
    student_dir = Path(cfg.student)
    from students.build import student_source_is_preset

    if need_student and not student_source_is_preset(cfg.student):
        from teachers import resolve_model_source

        source = resolve_model_source(cfg.student, kind="student", registry=_presets())
        if Path(source).is_dir():
            _check_tokenizers(teacher.tokenizer, student_dir)
    out_dir = Path(cfg.output_dir)
    check_output_dir(out_dir, cfg.overwrite)
    return splits, teacher


def _presets():
    from students import PRESETS

    return PRESETS


def stage_teacher(ctx: Context, teacher, force: bool = False) -> tuple[object, str]:
    """Use the teacher as is when its head is trained; otherwise fine-tune it (or reuse a matching cache)."""
    from teachers import finetune_teacher, teacher_fingerprint

    if teacher.head_trained and not force:
        return teacher.model, teacher.source
    cfg = ctx.cfg
    fp = teacher_fingerprint(source=teacher.source, task=ctx.task.name, data=ctx.splits.source,
                             n_train=len(ctx.splits.train), max_len=cfg.max_seq_length, lr=cfg.teacher_lr,
                             epochs=cfg.teacher_epochs, batch=cfg.batch_size, seed=cfg.seed)
    cached = ctx.out / "teacher"
    marker = cached / TEACHER_MARKER
    if marker.is_file():
        import json

        from teachers.loading import auto_model_class

        if json.loads(marker.read_text()).get("fingerprint") == fp:
            info(f"  reusing the fine-tuned teacher cached in {cached}")
            model = auto_model_class(ctx.task).from_pretrained(cached, use_safetensors=True)
            return model.eval().requires_grad_(False), "teacher"
    if not teacher.head_trained:
        info(f"  '{cfg.teacher}' has no trained {ctx.task.name} head: fine-tuning it first")
    result = finetune_teacher(teacher.model, ctx.train_loader, cfg.train_config(lr=cfg.teacher_lr,
                              epochs=cfg.teacher_epochs), regression=ctx.task.is_regression,
                              evaluate=gathered_evaluator(ctx.task, ctx.dev_loader, cfg.device),
                              metric=ctx.task.main_metric)
    ctx.history["teacher"] = result.history
    _save_model(teacher.model.to("cpu"), ctx.tokenizer, cached,
                {"fingerprint": fp, "source": teacher.source, "history": result.history}, cfg.device)
    return teacher.model, "teacher"


def _objective(ctx: Context, student, teacher) -> Objective:
    """The loss for distilling ``teacher`` into ``student``, with unsupported terms turned off (and said so)."""
    layers = uniform_layer_map(student.config.num_hidden_layers, teacher.config.num_hidden_layers)
    config, messages = disable_unsupported(ctx.cfg.distill_config(),
                                           supported_losses(student.config, teacher.config, same_tokenizer=True))
    for message in messages:
        info(f"  note: {message}")
    return Objective(config, regression=ctx.task.is_regression, student_width=student.config.hidden_size,
                     teacher_width=teacher.config.hidden_size, layer_map=layers,
                     student_heads=student.config.num_attention_heads)


def stage_student(ctx: Context, teacher):
    """Build (or load) the student, initialise it, distil it from the teacher and save it."""
    from students import build_student, init_from_teacher, load_student
    from students.build import student_source_is_preset
    from teachers import resolve_model_source

    cfg = ctx.cfg
    seed_everything(cfg.seed)
    pretrained = True
    if student_source_is_preset(cfg.student):
        student = build_student(cfg.student, teacher.config, token=ctx.task.is_token)
        report = init_from_teacher(student, teacher, cfg.init)
        pretrained = report.strategy == "teacher-layers"
        info(f"  student '{cfg.student}': {count_params(student):,} params, init {report.strategy}")
    else:
        student = load_student(resolve_model_source(cfg.student, "student", _presets()), teacher.config,
                               token=ctx.task.is_token)
        info(f"  student '{cfg.student}': {count_params(student):,} params")
    lr = cfg.lr or (1e-4 if pretrained else 1e-3)  # layers trained from scratch need a larger step
    ctx.student_lr = lr
    objective = _objective(ctx, student, teacher)
    result = fit(student, objective, ctx.train_loader, cfg.train_config(lr=lr),
                 teacher=_teacher_source(ctx, teacher, objective),
                 evaluate=gathered_evaluator(ctx.task, ctx.dev_loader, cfg.device), metric=ctx.task.main_metric,
                 description="distil")
    ctx.history["student"] = result.history
    _save_model(student.to("cpu"), ctx.tokenizer, ctx.out / "student", device=cfg.device)
    return student


def prune_and_recover(ctx: Context, model, teacher, prune_config, steps: int = 1, lr: float | None = None):
    """Prune ``model`` in ``steps`` steps from 0 to the target, each followed by distillation recovery.

    Returns the last PruneReport; ``ctx.history["prune_steps"]`` records widths and the dev metric after each step.
    """
    from compress import kd_loss_fn, prune_model, step_configs

    cfg = ctx.cfg
    batches = list(islice(iter(ctx.train_loader), cfg.importance_batches))
    example = {k: v[:2] for k, v in batches[0].items()}
    loss_fn = kd_loss_fn(teacher, cfg.temperature) if prune_config.importance == "distillation" else None
    evaluate = gathered_evaluator(ctx.task, ctx.dev_loader, cfg.device)
    ctx.history["prune_steps"] = []
    report = None
    for i, step in enumerate(step_configs(prune_config, steps, n_layers=model.config.num_hidden_layers), 1):
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
                         evaluate=evaluate, metric=ctx.task.main_metric, description=f"recover {i}/{steps}")
            ctx.history.setdefault("pruned", []).extend(result.history)
        record["metric"] = evaluate(model)[ctx.task.main_metric]
        ctx.history["prune_steps"].append(record)
    ctx.history["prune_report"] = report.to_dict()
    return report


def stage_prune(ctx: Context, student, teacher):
    """Prune a copy of the student (heads with hidden width and FFN neurons by default), recover, and save it."""
    from compress import save_pruned

    pruned = copy.deepcopy(student).to("cpu").eval()
    prune_and_recover(ctx, pruned, teacher, ctx.cfg.prune_config(), ctx.cfg.prune_steps, lr=ctx.student_lr)

    def write() -> None:
        with staged_dir(ctx.out / "pruned") as tmp:
            save_pruned(pruned.to("cpu"), tmp, ctx.tokenizer)

    _on_main(ctx.cfg.device, write)
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

    qat_model = prepare_qat(copy.deepcopy(model).to("cpu"), target=ctx.cfg.quantize_target)
    result = fit(qat_model, _objective(ctx, qat_model, teacher), ctx.train_loader,
                 ctx.cfg.train_config(epochs=max(ctx.cfg.recover_epochs, 1.0), lr=(ctx.student_lr or 1e-4) / 10),
                 teacher=teacher, evaluate=gathered_evaluator(ctx.task, ctx.dev_loader, ctx.cfg.device),
                 metric=ctx.task.main_metric, description="QAT")
    ctx.history["qat"] = result.history
    return qat_model


def stage_quantize(ctx: Context, model, teacher, qat_model=None) -> Path:
    """INT8 through ONNX Runtime (dynamic, static with calibration, accuracy-aware, or QAT), then a speed check.

    ``qat_model``: a model ``stage_qat`` already trained (it trains on every process; this runs on the main one).
    """
    import tempfile

    from compress import export_onnx, quantize_model
    from compress.speed import speed_check

    cfg, out = ctx.cfg, ctx.out / "int8"
    model = model.to("cpu").eval()
    qcfg = cfg.quantize_config()
    batches = ctx.train_loader if qcfg.mode == "static" else None
    if cfg.qat:
        from compress.qat import export_qat_onnx

        qat_model = (qat_model or stage_qat(ctx, model, teacher)).to("cpu").eval()
        with staged_dir(out) as tmp:
            export_qat_onnx(qat_model, tmp / "model.onnx", max_seq_length=cfg.max_seq_length)
            model.config.save_pretrained(tmp)
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
    return out / "model.onnx"


def stage_score(ctx: Context, teacher, teacher_path: str, models: dict) -> tuple[list[StageScore], dict]:
    """Score teacher, student, pruned and int8 on dev; measure size and CPU latency of each."""
    cfg = ctx.cfg
    vocab = teacher.config.vocab_size
    lat = {"seq": cfg.latency_seq, "threads": cfg.latency_threads, "runs": cfg.latency_runs}
    t_logits, labels = predict(teacher, ctx.dev_loader, cfg.device)
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
                          latency_ms=latency, path=path)
        row.latencies_ms = {"onnxruntime" if isinstance(obj, Path) else "torch": row.latency_ms}
        predictions[name] = dev_predictions(ctx.task, logits, labels)  # token tasks: one tag per word
        teacher_metric = row.metric if teacher_metric is None else teacher_metric
        info(f"  {name}: {ctx.task.main_metric} {row.metric:.4f}, {row.latency_ms:.2f} ms")
        rows.append(row)
    return rows, predictions


def _start(cfg: RunConfig, need_student: bool = True):
    """Validate, then (and only then) create the output dir, record settings and build the data loaders."""
    splits, teacher = prepare(cfg, need_student)
    out_dir = Path(cfg.output_dir)
    wait_for_everyone(cfg.device)  # every process has checked the output dir before the main one writes to it

    def write() -> None:
        if cfg.overwrite:
            _clear_output_dir(out_dir, keep=("teacher", "teacher_cache"))  # both are validated by fingerprint
        out_dir.mkdir(parents=True, exist_ok=True)
        write_yaml(out_dir / "config.yaml", dump_recipe(cfg))
        write_json(out_dir / "env.json", {**environment_info(cfg.seed, cfg.device),
                                          "processes": process_count()})

    _on_main(cfg.device, write)
    tokenizer = teacher.tokenizer
    ctx = Context(cfg, splits.task, splits, tokenizer, out_dir)
    ctx.train_loader = make_loader(tokenize(splits.train, tokenizer, cfg.max_seq_length, index=cfg.cache_teacher),
                                   tokenizer, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                   group_by_length=cfg.group_by_length)
    ctx.dev_loader = make_loader(tokenize(splits.dev, tokenizer, cfg.max_seq_length), tokenizer, cfg.batch_size * 2,
                                 shuffle=False)
    return ctx, teacher


def _teacher_source(ctx: Context, teacher, objective: Objective):
    """The live teacher, or (``--cache-teacher``) its outputs cached on disk, built once and reused by later runs."""
    if not ctx.cfg.cache_teacher:
        return teacher
    if ctx.task.kind != "sequence-classification":
        raise ConfigError(f"--cache-teacher does not support {ctx.task.kind} yet", "drop --cache-teacher")
    from distill.engine import teacher_layers_needed
    from teachers.cache import cache_teacher_outputs

    cache = cache_teacher_outputs(teacher, ctx.train_loader.dataset, ctx.out / "teacher_cache",
                                  top_k=ctx.cfg.cache_top_k, hidden_layers=teacher_layers_needed(objective),
                                  tokenizer=ctx.tokenizer, max_length=ctx.cfg.max_seq_length, device=ctx.cfg.device)
    ctx.history.setdefault("teacher_cache", []).append(cache)
    return cache


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
        stage_teacher(ctx, teacher, force=True)
    info(f"fine-tuned teacher written to {ctx.out / 'teacher'}")
    return ctx.out / "teacher"


def run(cfg: RunConfig) -> dict:
    """Run every stage and return the report (also written to ``OUTPUT/report.json`` and ``report.md``).

    Under ``accelerate launch`` the processes other than the main one return ``{}`` once training is done.
    """
    start = time.perf_counter()
    ctx, teacher = _start(cfg)
    out_dir = ctx.out
    with _timed(ctx, "teacher"):
        teacher_model, teacher_path = stage_teacher(ctx, teacher)
    if teacher_path != "teacher" and is_main_process():  # a trained teacher is used in place: drop a stale copy
        shutil.rmtree(out_dir / "teacher", ignore_errors=True)
    with _timed(ctx, "distil"):
        student = stage_student(ctx, teacher_model)
    models: dict = {"student": student}
    final = student
    if cfg.prune:
        with _timed(ctx, "prune"):
            final = models["pruned"] = stage_prune(ctx, student, teacher_model)
    qat_model = None
    if cfg.quantize and cfg.qat:  # training: every process takes part
        with _timed(ctx, "qat"):
            qat_model = stage_qat(ctx, final, teacher_model)
    if not is_main_process():
        return {}  # export, INT8, scoring and the report are the main process's
    if cfg.quantize:
        with _timed(ctx, "quantize"):
            models["int8"] = stage_quantize(ctx, final, teacher_model, qat_model)
    with _timed(ctx, "score"):
        rows, predictions = stage_score(ctx, teacher_model, teacher_path, models)
    report = {"task": ctx.task.name, "metric_name": ctx.task.main_metric,
              "stages": [r.to_dict() for r in rows], "latency_seq": cfg.latency_seq,
              "latency_threads": cfg.latency_threads, "latency_runs": cfg.latency_runs,
              "stage_seconds": ctx.seconds, "wall_seconds": round(time.perf_counter() - start, 2),
              "history": _history(ctx), "settings": asdict(cfg), "predictions": predictions,
              "label_names": list(ctx.task.label_names)}
    report = write_report(out_dir, report)
    if "int8" in models:
        from compress.bundle import write_bundle

        row = report["stages"][-1]
        write_bundle(out_dir / "int8", numbers={ctx.task.main_metric: round(row["metric"], 4),
                                                "retention": round(row["retention"], 4), "size_mb": row["size_mb"],
                                                "latency_ms (batch 1, CPU)": row["latency_ms"],
                                                "target": ctx.history["quantize_report"].get("target")},
                     id2label=getattr(final.config, "id2label", None))
    out.print(render_table(report))
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
    out_dir = Path(cfg.output_dir)
    check_output_dir(out_dir, cfg.overwrite)
    if has_data:
        task = get_task(cfg.task) if cfg.task else None
        splits = load_splits(task, cfg.data, text_columns=tuple(cfg.text_columns) if cfg.text_columns else None,
                             label_column=cfg.label_column, max_train_samples=cfg.max_train_samples, seed=cfg.seed)
        teacher = load_teacher(cfg.teacher, splits.task).model if cfg.teacher else None
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
                         label_column=cfg.label_column, max_train_samples=1, seed=cfg.seed)
    teacher = load_teacher(cfg.teacher, splits.task)
    models: dict = {}
    for path in paths:
        p = Path(path)
        if p.suffix == ".onnx":
            OnnxClassifier(p)  # a missing or invalid file fails here, before anything is scored
            models[p.parent.name] = p
        else:
            models[p.name] = _load_any(path)[0]
    ctx = Context(cfg, splits.task, splits, teacher.tokenizer, Path(cfg.output_dir))
    ctx.dev_loader = make_loader(tokenize(splits.dev, teacher.tokenizer, cfg.max_seq_length), teacher.tokenizer,
                                 cfg.batch_size * 2, shuffle=False)
    rows, predictions = stage_score(ctx, teacher.model, teacher.source, models)
    report = {"task": splits.task.name, "metric_name": splits.task.main_metric, "stages": [r.to_dict() for r in rows],
              "latency_seq": cfg.latency_seq, "latency_threads": cfg.latency_threads,
              "latency_runs": cfg.latency_runs, "predictions": predictions,
              "label_names": list(splits.task.label_names)}
    out.print(render_table(report))
    return report
