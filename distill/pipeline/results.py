"""Typed results of a run's stages, and the ``RunReport`` they make up.

Each stage returns its result (the live model rides along, never serialised); ``RunReport.to_json()`` is report.json
in its fixed schema (pinned by tests/distill/test_report_schema.py). Its ``history`` holds, in this order: each
fine-tuned teacher's epochs (``teacher``, ``teacher_2``, ...), ``teachers`` (several teachers: each one's and the
ensemble's dev metrics), ``augment``, ``general``, ``init_pruned``, ``teacher_cache``, ``student``,
``fresh_layers``, ``prune_steps``, ``pruned`` (recovery epochs), ``prune_report``, ``prune_target``, ``qat``,
``quantize_report``, ``int8_speed`` and ``int8_target``, each only when it happened. ``retention_target`` sums up
the two ``*_target`` records. The same ``history()`` parts are what ``stages.json`` records, so a resumed run
reports what the first one did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from distill.evaluate.scoring import StageScore
from distill.pipeline.context import teacher_dir

TRIVIAL_KEYS = ("trivial_predictor", "trivial_metric", "collapse_margin")  # evaluate.collapse.trivial_baseline


@dataclass
class ReadyTeacher:
    """One teacher, ready to teach: used as is (its head is trained), fine-tuned here, or reloaded from that copy."""

    name: str  # as given: alias, model dir or Hub id
    key: str  # its dir and history key when fine-tuned here: teacher, teacher_2, ...
    path: str  # what the report's teacher row shows: ``key`` when fine-tuned here, else its source
    history: list[dict] | None = None  # fine-tuning epochs (None: used as is)
    model: Any = field(default=None, repr=False, compare=False)


@dataclass
class TeacherScore:
    """One row of ``history.teachers``: a teacher's (or the ensemble's) dev metrics and its weight."""

    teacher: str
    weight: float
    metrics: dict[str, float]

    def to_json(self) -> dict:
        return {"teacher": self.teacher, "weight": self.weight, **self.metrics}

    @classmethod
    def from_json(cls, row: Mapping) -> TeacherScore:
        metrics = {k: v for k, v in row.items() if k not in ("teacher", "weight")}
        return cls(row["teacher"], row["weight"], metrics)


@dataclass
class TeacherResult:
    """The teacher stage: every teacher ready, the primary one (the report compares to it) first."""

    teachers: list[ReadyTeacher]
    scores: list[TeacherScore] | None = None  # several teachers: each one's dev metrics, then the ensemble's

    @property
    def primary(self) -> ReadyTeacher:
        return self.teachers[0]

    @property
    def live(self) -> Any:
        """What distillation learns from: the primary model, or the list of every teacher's model."""
        models = [t.model for t in self.teachers]
        return models[0] if len(models) == 1 else models

    def history(self) -> dict[str, Any]:
        found: dict[str, Any] = {t.key: t.history for t in self.teachers if t.history is not None}
        if self.scores is not None:
            found["teachers"] = [s.to_json() for s in self.scores]
        return found

    @classmethod
    def from_history(cls, history: Mapping, names: list[str], path: str) -> TeacherResult:
        """The teacher stage as a report's history tells it (``path``: the primary teacher's report path)."""
        teachers = [ReadyTeacher(name, teacher_dir(i), path if i == 0 else "", history.get(teacher_dir(i)))
                    for i, name in enumerate(names)]
        scores = history.get("teachers")
        return cls(teachers, None if scores is None else [TeacherScore.from_json(s) for s in scores])


@dataclass
class AugmentResult:
    """``--augment``: rewrites per training example, rows added, and what wrote them (``method``: ``mlm``, the masked
    LM named by ``mlm``, or ``neighbours``, embedding neighbours described by ``mlm``)."""

    per_example: int
    rows: int
    mlm: str
    method: str = "mlm"

    def to_json(self) -> dict:
        return {"per_example": self.per_example, "rows": self.rows, "mlm": self.mlm, "method": self.method}


@dataclass
class GeneralResult:
    """``--general-data``: the student body distilled from the teacher's on unlabelled text before the task.

    ``loss_before``/``loss_after``: the general objective's terms and ``total`` on a probe no step trained on;
    ``history``: the training loop's epoch rows; ``path``: the saved body, relative to the output dir."""

    data: str  # the text's path, or "task"
    rows: int
    steps: int
    seconds: float
    lr: float
    terms: list[str]
    loss_before: dict[str, float]
    loss_after: dict[str, float]
    history: list[dict]
    path: str = "general-student"
    built: Any = field(default=None, repr=False, compare=False)  # (student, pretrained, init_pruned) for distil

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("data", "rows", "steps", "seconds", "lr", "terms", "loss_before",
                                               "loss_after", "history", "path")}

    @classmethod
    def from_json(cls, data: Mapping, built: Any = None) -> GeneralResult:
        return cls(**{k: data[k] for k in ("data", "rows", "steps", "seconds", "lr", "terms", "loss_before",
                                           "loss_after", "history")}, path=data.get("path", "general-student"),
                   built=built)


@dataclass
class DistilResult:
    """The distilled student: its training epochs, learning rate, for ``--init teacher-pruned`` how it was cut, and
    for a preset whose layers started from scratch the presets that would have started from the teacher's
    (``fresh_layers``: ``{"init": ..., "cut_presets": [...]}``, what the report suggests when it keeps too little)."""

    history: list[dict]
    lr: float | None  # None only in a report read back from disk (report.json does not keep it)
    init_pruned: dict | None = None  # teacher_layers and compress's PruneReport of cutting the teacher
    model: Any = field(default=None, repr=False, compare=False)
    fresh_layers: dict | None = None

    def record(self) -> dict:
        """What ``stages.json`` keeps, so a resumed run need not distil again."""
        return {"student_lr": self.lr, "history": self.history, "fresh_layers": self.fresh_layers}

    @classmethod
    def from_record(cls, record: Mapping, model: Any = None) -> DistilResult:
        return cls(history=record["history"], lr=record["student_lr"], model=model,
                   fresh_layers=record.get("fresh_layers"))


@dataclass
class PruneStep:
    """The model after one pruning step and its recovery: parameters, per-layer widths, dev metric; in a retention
    search also the step's cumulative ratio, its retention of the reference metric, whether it was kept, and its
    scope (``all``: heads with the hidden width, and FFN; ``ffn``: the FFN alone, the retry after an ``all`` miss)."""

    step: int
    params: int
    per_layer: list
    metric: float | None = None
    ratio: float | None = None  # search: cumulative share of heads and FFN neurons removed
    retention: float | None = None  # search: metric / the student's metric (None when undefined)
    kept: bool | None = None  # search: the recovered metric kept the target
    scope: str | None = None  # search: what the step pruned (compress.prune.search.SCOPES)

    def to_json(self) -> dict:
        found = {"step": self.step, "params": self.params, "per_layer": self.per_layer, "metric": self.metric}
        if self.kept is not None:
            found.update(ratio=self.ratio, retention=self.retention, kept=self.kept, scope=self.scope)
        return found


@dataclass
class RetentionTarget:
    """How one compression stage met ``--target-retention`` (R of the distilled student's dev metric).

    ``stage``: pruned or int8; ``met``: the kept model holds R; ``kept``: what was kept (e.g. "0.5 ratio",
    "the unpruned student", "INT8 with 2 layers FP32"); ``note``: the one line the report shows.
    """

    stage: str
    target: float
    reference: float  # the distilled student's dev metric
    threshold: float  # the lowest metric that keeps the target
    metric: float | None
    met: bool
    kept: str
    note: str
    relative_to: str = "student"

    def to_json(self) -> dict:
        return {"stage": self.stage, "target": self.target, "relative_to": self.relative_to,
                "reference": self.reference, "threshold": self.threshold, "metric": self.metric, "met": self.met,
                "kept": self.kept, "note": self.note}

    @classmethod
    def from_json(cls, data: Mapping | None) -> RetentionTarget | None:
        return None if not data else cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class PruneResult:
    """Pruning plus recovery: each step, the recovery epochs, compress's report of the kept step, and (search or
    target) how the result stands against ``--target-retention``."""

    steps: list[PruneStep] = field(default_factory=list)
    recovery: list[dict] | None = None  # recovery epochs of every step (None: no recovery)
    report: dict | None = None  # compress.PruneReport.to_dict() of the kept step
    target: RetentionTarget | None = None
    model: Any = field(default=None, repr=False, compare=False)
    reference: float | None = field(default=None, repr=False, compare=False)  # the student's dev metric (in target)

    def history(self) -> dict[str, Any]:
        found: dict[str, Any] = {"prune_steps": [s.to_json() for s in self.steps]}
        if self.recovery is not None:
            found["pruned"] = self.recovery
        if self.report is not None:
            found["prune_report"] = self.report
        if self.target is not None:
            found["prune_target"] = self.target.to_json()
        return found

    @classmethod
    def from_history(cls, history: Mapping, model: Any = None) -> PruneResult:
        steps = [PruneStep(**s) for s in history.get("prune_steps", [])]
        return cls(steps, history.get("pruned"), history.get("prune_report"),
                   RetentionTarget.from_json(history.get("prune_target")), model=model)


@dataclass
class QuantizeResult:
    """INT8: compress's quantization report, the FP32-vs-INT8 speed check, and the QAT epochs (``--qat``)."""

    report: dict
    speed: dict | None = None
    qat: list[dict] | None = None
    path: Path | None = None  # the INT8 model.onnx
    target: RetentionTarget | None = None  # how INT8 stands against --target-retention

    def history(self) -> dict[str, Any]:
        found: dict[str, Any] = {} if self.qat is None else {"qat": self.qat}
        found["quantize_report"] = self.report
        if self.speed is not None:
            found["int8_speed"] = self.speed
        if self.target is not None:
            found["int8_target"] = self.target.to_json()
        return found

    @classmethod
    def from_history(cls, history: Mapping, path: Path | None = None) -> QuantizeResult:
        return cls(history["quantize_report"], history.get("int8_speed"), history.get("qat"), path,
                   RetentionTarget.from_json(history.get("int8_target")))


@dataclass
class ScoreReport:
    """Every stage scored against the teacher on dev (what ``distill eval`` returns; the core of a run's report)."""

    task: str
    metric_name: str
    stages: list[StageScore]
    predictions: dict[str, list]
    label_names: list[str]
    latency_seq: int = 128
    latency_threads: int = 2
    latency_runs: int = 30
    trivial: dict[str, Any] = field(default_factory=dict)  # the trivial predictor's dev score (evaluate.collapse)

    def to_json(self) -> dict:
        return {"task": self.task, "metric_name": self.metric_name, "stages": [s.to_dict() for s in self.stages],
                "latency_seq": self.latency_seq, "latency_threads": self.latency_threads,
                "latency_runs": self.latency_runs, "predictions": self.predictions, "label_names": self.label_names,
                **self.trivial}

    @classmethod
    def from_json(cls, data: Mapping) -> ScoreReport:
        names = {f.name for f in fields(StageScore)}
        stages = [StageScore(**{k: v for k, v in s.items() if k in names}) for s in data.get("stages", [])]
        return cls(data["task"], data["metric_name"], stages, data.get("predictions") or {},
                   list(data.get("label_names") or []), data.get("latency_seq", 128),
                   data.get("latency_threads", 2), data.get("latency_runs", 30),
                   {k: data[k] for k in TRIVIAL_KEYS if k in data})


@dataclass
class RunReport:
    """What ``distill run`` found: the scores of every stage and what each stage did (report.json, ``to_json``).
    The stages fill it in order; ``scores`` comes last, from the score stage."""

    scores: ScoreReport | None = None
    teacher: TeacherResult | None = None
    augment: AugmentResult | None = None
    distil: DistilResult | None = None
    prune: PruneResult | None = None
    quantize: QuantizeResult | None = None
    teacher_caches: list[dict] = field(default_factory=list)  # summary of each teacher-output cache used
    stage_seconds: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)  # RunConfig.flat()
    skipped_nonfinite: dict[str, int] = field(default_factory=dict)
    resumed: bool = False
    training: dict[str, dict] = field(default_factory=dict)  # per training stage: planned/run length, best epoch
    general: GeneralResult | None = None

    @property
    def final(self) -> StageScore:
        """The last stage's scores (the INT8 row of a full run)."""
        return self.scores.stages[-1]

    def history(self) -> dict[str, Any]:
        """report.json's ``history``: what each stage did, in stage order."""
        found: dict[str, Any] = self.teacher.history() if self.teacher else {}
        if self.augment:
            found["augment"] = self.augment.to_json()
        if self.general:
            found["general"] = self.general.to_json()
        if self.distil and self.distil.init_pruned is not None:
            found["init_pruned"] = self.distil.init_pruned
        if self.teacher_caches:
            found["teacher_cache"] = self.teacher_caches
        if self.distil:
            found["student"] = self.distil.history
        if self.distil and self.distil.fresh_layers is not None:
            found["fresh_layers"] = self.distil.fresh_layers
        for result in (self.prune, self.quantize):
            if result:
                found.update(result.history())
        return found

    def retention_target(self) -> dict[str, Any] | None:
        """report.json's ``retention_target``: --target-retention, what it is relative to, whether every compression
        stage met it, and one line per stage (None when no stage was held to it)."""
        held = [r.target for r in (self.prune, self.quantize) if r is not None and r.target is not None]
        if not held:
            return None
        return {"target": held[0].target, "relative_to": held[0].relative_to, "reference": held[0].reference,
                "met": all(t.met for t in held), "notes": [t.note for t in held]}

    def to_json(self) -> dict[str, Any]:
        """report.json (before ``distill.report.render`` adds each stage's speedup and the environment)."""
        scores = self.scores.to_json()
        head = {k: scores.pop(k) for k in ("task", "metric_name", "stages", "latency_seq", "latency_threads",
                                           "latency_runs")}
        target = self.retention_target()
        return {**head, "stage_seconds": self.stage_seconds, "wall_seconds": self.wall_seconds,
                "history": self.history(), "settings": self.settings, **scores,
                **({"retention_target": target} if target else {}),
                "skipped_nonfinite": self.skipped_nonfinite, "resumed": self.resumed, "training": self.training}

    @classmethod
    def from_json(cls, data: Mapping) -> RunReport:
        """A report read back from report.json (derived fields such as ``speedup`` and ``environment`` dropped)."""
        history, settings = data.get("history") or {}, dict(data.get("settings") or {})
        teacher_row = next((s for s in data.get("stages", []) if s.get("name") == "teacher"), {})
        augment = history.get("augment")
        return cls(
            ScoreReport.from_json(data),
            TeacherResult.from_history(history, settings.get("teachers") or [settings.get("teacher", "")],
                                       teacher_row.get("path", "")),
            AugmentResult(**augment) if augment else None,
            DistilResult(history["student"], settings.get("lr"), history.get("init_pruned"),
                         fresh_layers=history.get("fresh_layers")) if "student" in history else None,
            PruneResult.from_history(history) if "prune_steps" in history else None,
            QuantizeResult.from_history(history) if "quantize_report" in history else None,
            teacher_caches=history.get("teacher_cache") or [], stage_seconds=data.get("stage_seconds") or {},
            wall_seconds=data.get("wall_seconds", 0.0), settings=settings,
            skipped_nonfinite=data.get("skipped_nonfinite") or {}, resumed=data.get("resumed", False),
            training=data.get("training") or {},
            general=GeneralResult.from_json(history["general"]) if "general" in history else None)
