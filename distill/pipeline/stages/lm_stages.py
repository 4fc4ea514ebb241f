"""The training and export stages of a causal-LM run (``distill.pipeline.lm_run`` orders them): the teacher saved as
a plain checkpoint, the student built and distilled token by token, the decoder pruner and calibration batches
the prune stage (``lm_prune``: retention search or fixed ratios, with recovery) uses, and the INT8 and/or INT4
(``--lm-precision``) ONNX bundles with a KV cache.

Distillation reuses the training loop (``distill.train.loop.fit``) with the ``lm_kd`` output loss: α·next-token CE
+ (1−α)·T²·KL(teacher ‖ student) per token, masked to real tokens. The hidden-state MSE default of the encoder
recipe (β = 0.1) is off for decoders unless ``--hidden-weight`` asks for another value: decoder residual streams
carry a few huge activations that would dominate it.

With ``--cache-teacher`` the teacher runs once over the training blocks (``teachers.lm_cache``: top-k
log-probabilities + tail mass per token at the run's temperature, memory-mapped in ``OUTPUT/teacher_cache``) and
distillation and pruning recovery read it instead of running the teacher; the output loss is then the tail-bucket
divergence ``lm_kd_loss_topk``. The cache holds no hidden states, so feature-loss weights are refused with it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

from distill.core.console import info
from distill.core.errors import ConfigError, ModelError
from distill.pipeline.config import RunConfig
from distill.pipeline.context import save_model

ENCODER_HIDDEN_DEFAULT = 0.1


@dataclass
class LMStage:
    """One trained (or exported) stage: its name, model (torch, or None for ONNX), where it is saved, facts; the
    pruned stage also carries its retention search record (report.json's ``prune_search``)."""

    name: str
    model: object | None
    path: Path
    facts: dict
    search: dict | None = None


# ---- teacher ---------------------------------------------------------------------------------------------------

def save_teacher(teacher, tokenizer, out: Path, source: str, device: str) -> Path:
    """A GGUF teacher is written as a plain HF dir (``OUTPUT/teacher``: loads without gguf, feeds the ONNX builder);
    a local or Hub checkpoint is used where it is."""
    from teachers.gguf import is_gguf

    if not is_gguf(source):
        return Path(source)
    save_model(teacher, tokenizer, out / "teacher", {"source": source, "format": "gguf, dequantized"}, device)
    return out / "teacher"


# ---- student ---------------------------------------------------------------------------------------------------

CALIBRATION_BATCHES = 4  # training batches the importance of layers/widths is measured on (student and pruning)


def decoder_students():
    """The decoder student module (``students.decoders``), or None before it is installed."""
    try:
        import students.decoders as decoders
    except ImportError:
        return None
    return decoders


def calibration_batches(loader, count: int = CALIBRATION_BATCHES) -> list[dict]:
    """The first ``count`` training batches (input ids and mask), for activation importance."""
    batches = []
    for batch in loader:
        batches.append({k: batch[k] for k in ("input_ids", "attention_mask")})
        if len(batches) >= count:
            break
    return batches


def check_student_source(name: str, teacher) -> str | None:
    """Fail early on a student that cannot be built: a dir must be a causal LM with the teacher's vocabulary; a
    preset needs the decoder builder. Returns the dir (None for a preset)."""
    from teachers.lm import check_causal_lm
    from teachers.loading import check_model_dir, load_config

    path = Path(name).expanduser()
    if path.exists():
        check_model_dir(path)
        config = load_config(str(path))
        check_causal_lm(name, config)
        if config.vocab_size != teacher.config.vocab_size:
            raise ModelError(f"student '{name}' has a vocabulary of {config.vocab_size} tokens, the teacher "
                             f"{teacher.config.vocab_size}", "give a student that uses the teacher's tokenizer")
        return str(path)
    decoders = decoder_students()
    if decoders is None:
        raise ConfigError(f"student preset '{name}' needs the decoder student builder (students.decoders), which "
                          "is not installed here", "pass --student DIR, a causal LM with the teacher's tokenizer")
    decoders.student_target(name, teacher.config, decoders.parse_layer_selection(_selection(name)))
    return None


def _selection(name: str):
    """Depth cuts keep the teacher blocks that change their input most (1 - cos on the calibration batches):
    on SmolLM2-135M ``half`` starts at WikiText-2 perplexity 959 this way against 1.7M with evenly spread
    layers (experiments/README.md, bench/lm_init.py), because the second block cannot be dropped."""
    return "importance"


def build_student(cfg: RunConfig, teacher, calibration=None) -> tuple[object, dict]:
    """The student and how it was made: a causal-LM dir loaded as is, or a preset (``half``, ``quarter``,
    ``half-width``, ``half+half-width``, explicit shapes) cut from the teacher by ``students.decoders``."""
    from transformers import AutoModelForCausalLM

    name = cfg.student.name
    path = Path(name).expanduser()
    if path.exists():
        return AutoModelForCausalLM.from_pretrained(path, dtype="float32", use_safetensors=True), {"source": name}
    student, report = decoder_students().build_decoder_student(teacher, name, layer_selection=_selection(name),
                                                               calibration=calibration)
    return student, report.to_dict()


def lm_distill_config(cfg: RunConfig):
    """The loss settings for a decoder: the encoder default β turned off (module docstring)."""
    config = copy.copy(cfg.distill)
    if config.hidden_weight == ENCODER_HIDDEN_DEFAULT:
        config = replace(config, hidden_weight=0.0)
    return config


def lm_objective(cfg: RunConfig, student, teacher):
    """``Objective`` with the causal-LM output loss, unsupported feature terms turned off (with a note)."""
    from distill.objective.objective import Objective, disable_unsupported, supported_losses, uniform_layer_map

    support = supported_losses(student.config, teacher.config, same_tokenizer=True, token=True)
    config, messages = disable_unsupported(lm_distill_config(cfg), support)
    for message in messages:
        info(f"  note: {message}")
    return Objective(config, kind="lm_kd", student_width=student.config.hidden_size,
                     teacher_width=teacher.config.hidden_size,
                     layer_map=uniform_layer_map(student.config.num_hidden_layers, teacher.config.num_hidden_layers),
                     student_heads=student.config.num_attention_heads)


# ---- teacher cache ---------------------------------------------------------------------------------------------

def check_cache_objective(cfg: RunConfig) -> None:
    """Before anything is written: the causal-LM teacher cache serves the output distribution at one temperature
    only, so feature-loss weights and a temperature schedule are refused with ``--cache-teacher``."""
    from distill.objective.config import flag, weight_fields
    from teachers.lm_cache import check_constant_temperature

    config = lm_distill_config(cfg)
    features = [flag(name) for name in weight_fields() if getattr(config, name) > 0]
    if features:
        raise ConfigError(f"--cache-teacher for --task causal-lm keeps the teacher's top-k log-probabilities only, "
                          f"not the hidden states or attention that {', '.join(features)} need",
                          f"drop --cache-teacher, or set {' and '.join(f'{f} 0' for f in features)}")
    check_constant_temperature(config)


def teacher_cache(cfg: RunConfig, teacher, blocks, out: Path):
    """The teacher's top-k outputs over the training blocks, built once in ``OUTPUT/teacher_cache`` (reused while
    its fingerprint matches): a ``teachers.lm_cache.CachedLMTeacher``."""
    from distill.pipeline.context import cache_dir
    from teachers.lm_cache import cache_lm_teacher

    cache = cache_lm_teacher(teacher, blocks, out / cache_dir(0), top_k=cfg.train.cache_top_k,
                             temperature=lm_distill_config(cfg).temperature, batch_size=cfg.train.batch_size,
                             device=cfg.train.device)
    facts = cache.summary()
    info(f"  teacher cache: top {facts['top_k']} of {cache.manifest['vocab_size']} tokens per position, "
         f"{facts['size_bytes'] / 1e6:.1f} MB" + (f", built in {facts['build_seconds']:.1f} s" if facts["built"]
                                                 else ", reused"))
    return cache


# ---- distillation ------------------------------------------------------------------------------------------------

def distil(cfg: RunConfig, student, teacher, loader, *, epochs: float, description: str, teaching=None) -> dict:
    """Train ``student`` in place against ``teacher`` on packed blocks; returns the training facts.

    ``teaching``: what ``fit`` learns from instead of running ``teacher`` (a ``CachedLMTeacher``), recorded in the
    facts as ``teacher_cache``; ``teacher`` still gives the shapes the objective is built for."""
    from distill.train.loop import fit

    student.requires_grad_(True)  # a student cut from the (frozen) teacher starts with frozen copies of its weights
    objective = lm_objective(cfg, student, teacher)
    config = cfg.train.fit_config(lr=cfg.train.lr or 1e-4, epochs=epochs)
    source = teacher if teaching is None else teaching
    result = fit(student, objective, loader, config, teacher=source, description=description)
    student.to("cpu").eval()
    last = result.history[-1] if result.history else {}
    cached = {"teacher_cache": source.summary()} if source is not teacher else {}
    return {**cached, "steps": result.steps, "seconds": round(result.seconds, 1), "lr": config.lr,
            "epochs": epochs if epochs is not None else len(result.history),  # None: the step budget's
            "blocks": len(loader.dataset), "block_size": len(loader.dataset[0]["input_ids"]),
            "tokens_per_s": round(result.steps * config.batch_size * config.grad_accum_steps
                                  * len(loader.dataset[0]["input_ids"]) / max(result.seconds, 1e-9), 1),
            "loss_last": {k: round(v, 4) for k, v in last.items() if isinstance(v, float)}}


def stage_student(cfg: RunConfig, teacher, tokenizer, loader, out: Path, *, teaching=None) -> LMStage:
    """Build the student, distil it (from ``teaching`` when given: the teacher cache), save it to
    ``OUTPUT/student`` (plain ``from_pretrained`` layout)."""
    student, made = build_student(cfg, teacher, calibration=calibration_batches(loader))
    params = sum(p.numel() for p in student.parameters())
    info(f"  student: {student.config.num_hidden_layers} layers, hidden {student.config.hidden_size}, "
         f"{params / 1e6:.1f}M parameters")
    facts = {"built": made, **distil(cfg, student, teacher, loader, epochs=cfg.train.epochs, description="distil",
                                             teaching=teaching)}
    save_model(student, tokenizer, out / "student", device=cfg.train.device)
    return LMStage("student", student, out / "student", facts)


# ---- pruning ---------------------------------------------------------------------------------------------------

def decoder_pruner():
    """The decoder width pruner (``compress.prune.decoder.prune_decoder``), or None before it is installed."""
    try:
        from compress.prune.decoder import prune_decoder
    except ImportError:
        return None
    return prune_decoder


# ---- ONNX with KV cache, INT8 / INT4 ------------------------------------------------------------------------------

def stage_quantize(model_dir: Path, out: Path, precision: str = "int8") -> LMStage:
    """The ``precision`` (int8, or int4 weight-only) ONNX bundle with a KV cache in ``OUTPUT/<precision>``:
    onnxruntime-genai's builder where it covers the family (int4 with the embedding table 4-bit too), else (GPT-2)
    a ``torch.onnx`` export with past key values + ONNX Runtime quantization (dynamic INT8 / MatMulNBits)."""
    from compress.quantize.genai import INT4_OPTIONS, build_genai, check_builder_support
    from compress.quantize.onnx_past import build_with_past

    try:
        check_builder_support(model_dir)
        covered = True
    except ModelError as exc:
        info(f"  note: {exc.args[0] if exc.args else exc}; exporting with torch.onnx + past key values instead")
        covered = False
    if covered:
        options = INT4_OPTIONS if precision == "int4" else None
        bundle = build_genai(model_dir, out / precision, precision, extra_options=options)
        extra = "".join(f" --extra_options {k}={v}" for k, v in (options or {}).items())
        facts = {"runtime": "onnxruntime-genai", "builder": f"onnxruntime_genai.models.builder -p {precision}{extra}",
                 "build_s": round(bundle.build_seconds, 1)}
    else:
        bundle = build_with_past(model_dir, out / precision, precision)
        how = "quantize_dynamic" if precision == "int8" else "MatMulNBitsQuantizer (4 bits, block 32)"
        facts = {"runtime": "onnxruntime", "builder": f"torch.onnx export with past + {how}"}
    facts.update(precision=precision, size_bytes=bundle.size_bytes, architecture=bundle.architecture)
    return LMStage(precision, None, out / precision, facts)
