"""``distill check``: before any training, which loss terms and ``--init`` choices each teacher/student pair
supports. Reads configs and tokenizers only (no weights)."""

from __future__ import annotations

from distill.core.errors import DistillError, ModelError
from distill.data.tasks import get_task
from distill.objective.objective import supported_losses, uniform_layer_map
from distill.pipeline.checks import own_tokenizer
from distill.pipeline.config import RunConfig


def check_pair(cfg: RunConfig) -> dict:
    """For each teacher: tokenizers, shapes, supported losses and inits, and the layer map to the student.

    The student's head follows the teacher's label count, as in a run; ``--task`` matters for token classification
    (no token-level KD across tokenizers).
    """
    from transformers import AutoTokenizer

    from distill.data.pairs import same_vocabulary
    from students import PRESETS
    from students.build import student_config, student_source_is_preset
    from teachers import resolve_model_source
    from teachers.loading import load_config

    task = get_task(cfg.data.task) if cfg.data.task else None
    token = bool(task and task.kind.per_token)
    name = cfg.student.name
    preset = student_source_is_preset(name)
    student_source = None if preset else resolve_model_source(name, kind="student", registry=PRESETS)
    pairs = []
    for teacher in cfg.teacher.all_names:
        source = resolve_model_source(teacher)
        t_config = load_config(source)
        if task is not None:
            t_config.num_labels = task.num_labels
        try:
            t_tok = AutoTokenizer.from_pretrained(source)
        except Exception as exc:
            raise ModelError(f"cannot load the tokenizer of teacher '{teacher}' ({exc.__class__.__name__})",
                             "pass a model directory saved with its tokenizer") from None
        if preset:
            s_config, s_tok = student_config(name, t_config), t_tok
        else:
            s_config, s_tok = load_config(student_source), own_tokenizer(student_source) or t_tok
            s_config.num_labels = t_config.num_labels  # a run gives the student a head like the teacher's
        same = same_vocabulary(s_tok, t_tok)
        losses = supported_losses(s_config, t_config, same_tokenizer=same, token=token)
        pairs.append({"teacher": teacher, "student": name, "same_tokenizer": same,
                      "teacher_vocab": len(t_tok), "student_vocab": len(s_tok),
                      "teacher_shape": shape(t_config), "student_shape": shape(s_config),
                      "losses": losses, "inits": init_support(cfg, s_config, t_config, preset),
                      "layer_map": uniform_layer_map(s_config.num_hidden_layers, t_config.num_hidden_layers)})
    return {"task": task.name if task else None, "pairs": pairs}


def shape(config) -> str:
    """L/H/A/FFN of a config, as the presets are written."""
    return (f"L{config.num_hidden_layers}/H{config.hidden_size}/A{config.num_attention_heads}/"
            f"FFN{getattr(config, 'intermediate_size', '?')}")


def init_support(cfg: RunConfig, s_config, t_config, preset: bool) -> dict[str, str | None]:
    """For each --init: None if it applies to this pair, else why not."""
    from students import PRESETS
    from students.init import pruned_shape, select_layers

    if not preset:
        why = "the student is loaded with its own weights (only presets are initialised from the teacher)"
        return {"random": why, "teacher-embeddings": why, "teacher-layers": why, "teacher-pruned": why}
    selection = cfg.student.layer_selection
    support: dict[str, str | None] = {"random": None}
    support["teacher-embeddings"] = None  # projected (narrower student) or lifted (wider)
    widths = ("hidden_size", "num_attention_heads", "intermediate_size")
    same_widths = all(getattr(s_config, k) == getattr(t_config, k, None) for k in widths)
    support["teacher-layers"] = None if same_widths else (
        f"needs the teacher's widths ({shape(t_config)}), the student has {shape(s_config)}")
    if same_widths:
        try:
            select_layers(s_config.num_hidden_layers, t_config.num_hidden_layers, selection)
        except DistillError as exc:
            support["teacher-layers"] = exc.problem
    try:
        pruned_shape(PRESETS.get(cfg.student.name), t_config, selection)
        support["teacher-pruned"] = None
    except DistillError as exc:
        support["teacher-pruned"] = exc.problem
    return support
