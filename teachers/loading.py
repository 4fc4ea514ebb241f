"""Load a teacher with the head of the task's kind (``task.kind``: one label per sequence, a score, or one label per
token for NER) sized for the task, and say whether it is trained."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from distill.core.errors import ModelError, UnknownNameError
from distill.core.runtime import load_policy
from distill.data.tasks import Task
from teachers.registry import TEACHERS

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class LoadedTeacher:
    """A teacher ready for the pipeline: model, tokenizer, where it came from, and whether its head is trained."""

    model: object  # PreTrainedModel
    tokenizer: object
    source: str
    head_trained: bool


def resolve_model_source(name: str, kind: str = "teacher", registry=TEACHERS) -> str:
    """An existing local directory, an alias's Hub id, or an ``org/name`` Hub id; anything else is an error."""
    path = Path(name).expanduser()
    if path.exists():
        check_model_dir(path)
        return str(path)
    if registry is not None and name in registry:
        source = registry.get(name)
        return source() if callable(source) else source
    if "/" in name and not name.startswith((".", "/", "~")) and name.count("/") == 1:
        return name
    choices = registry.names() if registry is not None else []
    raise UnknownNameError(f"{kind}", name, choices, extra=", a local model directory, or a Hub id (org/name)")


def check_model_dir(path: Path) -> None:
    """A model dir needs config.json and safetensors weights (pickle checkpoints only with --allow-pickle)."""
    if not path.is_dir():
        raise ModelError(f"'{path}' is not a directory", "pass a Hugging Face model directory")
    if not (path / "config.json").is_file():
        raise ModelError(f"'{path}' has no config.json", "pass a directory written by save_pretrained")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        if any((path / f).is_file() for f in PICKLE_FILES):
            if load_policy().allow_pickle:
                warnings.warn(f"loading pickle weights from '{path}' (--allow-pickle): they can run code on load",
                              stacklevel=2)
                return
            raise ModelError(f"'{path}' has only pickle weights (pytorch_model.bin), which can run code on load",
                             "convert it with model.save_pretrained(dir) (safetensors), or pass --allow-pickle")
        raise ModelError(f"'{path}' has no model weights", "pass a directory with model.safetensors")


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def load_config(source: str):
    """The model config, with a one-line error for unreadable or unreachable checkpoints."""
    from transformers import AutoConfig

    _quiet_transformers()
    _check_remote_code(source)
    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=load_policy().trust_remote_code)
    except Exception as exc:
        raise ModelError(f"cannot load the config of '{source}' ({exc.__class__.__name__})",
                         "check the name, your connection, or pass a local model directory") from None


def _check_remote_code(source: str) -> None:
    """A local checkpoint that ships modelling code (``auto_map``) is refused unless --trust-remote-code."""
    import json

    config = Path(source) / "config.json"
    if load_policy().trust_remote_code or not config.is_file():
        return
    try:
        auto_map = json.loads(config.read_text()).get("auto_map")
    except (OSError, ValueError, AttributeError):
        return  # unreadable configs get their own error from transformers
    if auto_map:
        raise ModelError(f"'{source}' ships its own modelling code (auto_map in config.json), which would run on load",
                         "pass --trust-remote-code only if you trust its source")


def auto_model_class(task: Task):
    """The task kind's ``AutoModelFor...`` class (e.g. ``AutoModelForTokenClassification`` for NER)."""
    return task.kind.model_class()


def _refuse_causal_lm(name: str, task: Task, config=None) -> None:
    """A causal LM (a .gguf file, or a *ForCausalLM config) teaches only ``--task causal-lm``: one line otherwise."""
    from distill.data.kinds import get_kind
    from teachers.gguf import is_gguf

    causal = is_gguf(name) if config is None else get_kind("causal-lm").claims(config)
    if task.kind.name != "causal-lm" and causal:
        raise ModelError(f"teacher '{name}' is a causal language model, which cannot teach the {task.kind.name} "
                         f"task '{task.name}'", "pass --task causal-lm, or an encoder teacher for this task")


def load_teacher(name: str, task: Task) -> LoadedTeacher:
    """Load ``name`` with a head for ``task``; a checkpoint whose head has another label count is an error."""
    from transformers import AutoTokenizer

    _refuse_causal_lm(name, task)
    source = resolve_model_source(name)
    config = load_config(source)
    _refuse_causal_lm(name, task, config)
    if task.kind.has_head(config) and config.num_labels != task.num_labels:
        raise ModelError(f"teacher '{name}' has a {config.num_labels}-label head but task '{task.name}' has "
                         f"{task.num_labels} labels",
                         "pick the teacher fine-tuned for this task or the matching --task")
    kwargs = {"num_labels": task.num_labels}
    if task.label_names:
        kwargs["id2label"] = dict(enumerate(task.label_names))
        kwargs["label2id"] = {n: i for i, n in enumerate(task.label_names)}
    if task.kind.problem_type:
        kwargs["problem_type"] = task.kind.problem_type
    try:
        model, info = auto_model_class(task).from_pretrained(
            source, output_loading_info=True, **load_policy().from_pretrained_kwargs(), **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=load_policy().trust_remote_code)
    except ModelError:
        raise
    except Exception as exc:
        raise load_failed(name, exc, "model") from None
    prefix = model.base_model_prefix
    head_missing = any(not k.startswith(prefix + ".") for k in info["missing_keys"])
    model.eval().requires_grad_(False)
    return LoadedTeacher(model, tokenizer, source, head_trained=not head_missing)


def load_failed(name: str, exc: Exception, what: str) -> ModelError:
    """The one-line error for a teacher checkpoint ``from_pretrained`` could not load (``what``: "model",
    "causal LM"): the exception's class and first line, and what a loadable checkpoint needs."""
    first = str(exc).splitlines()[0][:120] if str(exc) else ""
    return ModelError(f"cannot load teacher '{name}' ({exc.__class__.__name__}: {first})",
                      f"check that the checkpoint is a complete Hugging Face {what} with safetensors weights")
