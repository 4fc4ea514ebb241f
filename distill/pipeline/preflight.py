"""Settings that fail only against the models' shapes (student init, relation heads, the pruning plan), checked
before a run writes anything, so a bad combination is refused in seconds rather than after hours of training."""

from __future__ import annotations

from types import SimpleNamespace

from distill.core.errors import ConfigError, UnknownNameError
from distill.objective.objective import disable_unsupported, supported_losses
from distill.pipeline.config import RunConfig


def student_shape(cfg: RunConfig, teacher_config) -> SimpleNamespace:
    """The student's config as far as shapes go: from its preset, or from the config.json of its model dir."""
    from students import PRESETS
    from students.build import student_source_is_preset

    labels = getattr(teacher_config, "num_labels", None)
    student = cfg.student
    if student_source_is_preset(student.name):
        p = PRESETS.get(student.name)
        heads, hidden = p.heads, p.hidden
        if student.init == "teacher-pruned":  # heads keep the teacher's head size; the cut may keep more width
            from students.init import pruned_shape

            shape = pruned_shape(p, teacher_config, student.layer_selection)
            heads, hidden = shape.heads, shape.hidden
        from students.build import student_config

        model_type = student_config(p, teacher_config, family=student.family).model_type  # refuses a bad family
        return SimpleNamespace(num_hidden_layers=p.layers, hidden_size=hidden, num_attention_heads=heads,
                               intermediate_size=p.ffn, num_labels=labels, model_type=model_type, preset=True)
    from teachers import resolve_model_source
    from teachers.loading import load_config

    config = load_config(resolve_model_source(student.name, "student", PRESETS))
    return SimpleNamespace(**{k: getattr(config, k, None) for k in (
        "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "model_type")},
        num_labels=labels, preset=False)


def check_shapes(cfg: RunConfig, teacher_config) -> None:
    """Refuse what would fail mid-run: ``--init``, ``--relation-heads`` and pruning ratios that do not fit."""
    student = student_shape(cfg, teacher_config)
    if student.preset:
        _check_init(cfg.student.init, student, teacher_config)
    distill, _ = disable_unsupported(cfg.distill, supported_losses(student, teacher_config, True))
    relation = distill.relation_weight > 0
    if relation:
        heads = distill.relation_heads or student.num_attention_heads
        for who, width in (("student", student.hidden_size), ("teacher", teacher_config.hidden_size)):
            _check_divides(heads, width, f"--relation-heads {heads} does not divide the {who} width {width}",
                           "pick a common divisor of both widths, e.g. the student's heads")
    if cfg.prune.enabled and None not in (student.num_hidden_layers, student.hidden_size,
                                          student.num_attention_heads):
        _check_pruning(cfg, student, relation and (cfg.prune.recover_epochs > 0 or cfg.quantize.qat))


def _check_init(init: str, student, teacher_config) -> None:
    from students.init import INIT_CHOICES

    if init not in INIT_CHOICES:
        raise UnknownNameError("--init", init, INIT_CHOICES)
    from distill.core.families import find_family

    family = find_family(teacher_config)
    if family is not None:  # the family's own keys (DistilBERT: dim, n_heads, hidden_dim)
        w = family.widths(teacher_config)
        same = (student.hidden_size, student.num_attention_heads, student.intermediate_size) == (w.hidden, w.heads,
                                                                                                  w.ffn)
    else:
        same = all(getattr(student, k) == getattr(teacher_config, k, None)
                   for k in ("hidden_size", "num_attention_heads", "intermediate_size"))
    if student.model_type != getattr(teacher_config, "model_type", None):
        from students.init import same_blocks

        if init == "teacher-pruned":
            raise ConfigError(f"--init teacher-pruned cuts a {teacher_config.model_type} student out of the teacher, "
                              f"not a {student.model_type} one", "drop --student-family, or use --init auto")
        same = same and same_blocks(find_family(student), find_family(teacher_config))
    if init == "teacher-layers" and not same:
        raise ConfigError("--init teacher-layers needs the student's hidden size, heads and FFN width to equal "
                          "the teacher's", "use --init random, or a student of the teacher's width")


def _check_pruning(cfg: RunConfig, student, relation_after: bool) -> None:
    """Plan every pruning step on the student's widths; with a relation loss in recovery, its heads must divide
    each pruned hidden width."""
    from compress.prune.layout import LayerWidths, Layout

    heads, hidden = student.num_attention_heads, student.hidden_size
    layer = LayerWidths(heads, hidden // heads, student.intermediate_size or 4 * hidden)
    prune = cfg.prune
    plans = prune.planned(Layout(hidden, (layer,) * student.num_hidden_layers))
    if not relation_after:
        return
    for plan in plans:
        r = cfg.distill.relation_heads or max(w.heads for w in plan.layers)
        if plan.hidden % r:
            flag = (f"--prune-hidden {prune.hidden:g}" if prune.hidden is not None
                    else f"--prune-heads {prune.plan().heads:g}" if prune.fixed
                    else f"--prune-search {','.join(f'{r:g}' for r in prune.search)}")
            keep = max(r, round(plan.hidden / r) * r)
            raise ConfigError(f"{flag} leaves a hidden width of {plan.hidden}, which --relation-heads {r} (used in "
                              f"recovery) does not divide",
                              f"keep a multiple of {r} channels (e.g. --prune-hidden {1 - keep / hidden:.4g}), "
                              f"or pick --relation-heads dividing {plan.hidden}")


def _check_divides(heads: int, width: int | None, problem: str, fix: str) -> None:
    if width and heads and width % heads:
        raise ConfigError(problem, fix)
