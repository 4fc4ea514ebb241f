"""Save and reload pruned models, whatever their layout; never a pickle.

``save_pruned`` writes a normal HF directory (``config.json`` + ``model.safetensors``). When the layout is not
expressible in the config (per-layer widths, heads pruned without the hidden width) it adds ``pruned_widths.json``,
and only then; plain ``from_pretrained`` refuses such a directory with a size-mismatch error rather than loading
it wrong. ``load_pruned`` reads both kinds: it rebuilds the architecture from ``config.json``, resizes each block
to the widths file and loads the safetensors strictly.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from compress.prune.layout import LayerWidths, Layout, measure, sync_config
from distill.core.artifacts import write_json
from distill.core.errors import ModelError
from distill.core.families import Family, arch_of, find_family, get_path, set_path
from distill.core.runtime import load_policy

WIDTHS_FILE = "pruned_widths.json"
_WEIGHTS = "model.safetensors"
_WEIGHTS_INDEX = "model.safetensors.index.json"


def needs_widths_file(model: torch.nn.Module) -> bool:
    """True when ``model`` can only be reloaded with ``load_pruned`` (its layout does not fit a HF config)."""
    return not measure(model, arch_of(model)).expressible


def save_pruned(model: torch.nn.Module, out_dir: str | Path, tokenizer=None) -> Path:
    """Save ``model`` (and ``tokenizer``) as safetensors; add the widths file when the config cannot express it."""
    out = Path(out_dir)
    spec = arch_of(model)
    layout = measure(model, spec)
    sync_config(model, spec, layout)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)  # transformers 5 writes safetensors only
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    widths = out / WIDTHS_FILE
    if layout.expressible:
        widths.unlink(missing_ok=True)
    else:
        write_json(widths, layout.to_json(spec.model_type))
    return out


def load_pruned(model_dir: str | Path, model_class: type | None = None) -> torch.nn.Module:
    """Load a directory written by ``save_pruned`` (or any HF dir) in eval mode, with its exact pruned shapes.

    ``model_class`` defaults to ``config.architectures[0]`` from transformers (``AutoModel`` when absent).
    """
    from transformers import AutoConfig

    src = Path(model_dir)
    if not (src / "config.json").is_file():
        raise ModelError(f"{src} has no config.json", "pass a directory written by save_pruned or save_pretrained")
    config = AutoConfig.from_pretrained(src)
    cls = model_class or _model_class(config)
    widths = src / WIDTHS_FILE
    if not widths.is_file():  # safetensors only unless the caller's policy allows pickles (--allow-pickle)
        return cls.from_pretrained(src, **load_policy().from_pretrained_kwargs()).eval()
    try:
        data = json.loads(widths.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {widths} ({exc})", "save the model again with save_pruned") from exc
    layout = Layout.from_json(data, str(widths))
    model = _build(cls, config, layout, data.get("model_type"), src)
    state = _read_safetensors(src)
    floats = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(floats) == 1:
        model.to(floats.pop())
    missing, unexpected = model.load_state_dict(state, strict=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    missing = set(missing) - set(getattr(model, "all_tied_weights_keys", None) or {})
    if missing or unexpected:
        raise ModelError(
            f"{src} does not match its widths file "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})",
            "save the model again with save_pruned",
        )
    return model.eval()


def _model_class(config) -> type:
    """The transformers class named in ``config.architectures`` (only from the transformers namespace)."""
    import transformers

    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            return cls
    return transformers.AutoModel


def _build(cls: type, config, layout: Layout, model_type: str | None, src: Path) -> torch.nn.Module:
    """Instantiate ``cls`` from ``config`` and resize every block to ``layout`` (weights still uninitialised)."""
    spec = find_family(config)
    if spec is None or model_type != config.model_type:
        raise ModelError(
            f"{src}/{WIDTHS_FILE} is for '{model_type}' but config.json is '{config.model_type}'",
            "save the model again with save_pruned",
        )
    declared = spec.widths(config)
    if declared.layers != len(layout.layers) or declared.hidden != layout.hidden:
        raise ModelError(f"{src}/config.json disagrees with {WIDTHS_FILE}", "save the model again with save_pruned")
    # HF checks hidden % heads when building, and rotary families (ModernBERT) size their rotary table by
    # hidden // heads: build with the head size of the layout where it divides the hidden width (the blocks get
    # their real heads below)
    sizes = {w.head_size for w in layout.layers}
    size = sizes.pop() if len(sizes) == 1 else 0
    spec.set_widths(config, heads=layout.hidden // size if size and layout.hidden % size == 0 else 1)
    try:
        with _no_init():
            model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)  # Auto* or concrete
    finally:
        spec.set_widths(config, heads=declared.heads)
    for block, w in zip(spec.blocks(model), layout.layers, strict=True):
        _resize_block(spec, block, layout.hidden, w)
    if measure(model, spec) != layout:
        raise ModelError(f"could not rebuild the layout of {src}", "report this bug")
    return model


def _resize_block(spec: Family, block: torch.nn.Module, hidden: int, w: LayerWidths) -> None:
    """Give one freshly built block the widths ``w`` (fresh Linear layers, attention attributes rewritten): a
    fused [q; k; v] gets three times the attention width, a fused GLU twice the FFN width."""
    attn = spec.self_attention(block)
    if spec.qkv_fused is not None:
        set_path(attn, spec.qkv_fused, _linear_like(get_path(attn, spec.qkv_fused), hidden, 3 * w.attention))
    else:
        for name in (spec.query, spec.key, spec.value):
            set_path(attn, name, _linear_like(get_path(attn, name), hidden, w.attention))
    for name in spec.qkv_extra:
        if getattr(attn, name, None) is not None:
            set_path(attn, name, _linear_like(getattr(attn, name), hidden, w.attention))
    set_path(block, spec.attn_out, _linear_like(spec.attention_output(block), w.attention, hidden))
    up = 2 * w.ffn if spec.ffn_glu_fused else w.ffn
    set_path(block, spec.ffn_in, _linear_like(get_path(block, spec.ffn_in), hidden, up))
    set_path(block, spec.ffn_out, _linear_like(get_path(block, spec.ffn_out), w.ffn, hidden))
    spec.set_attention_widths(attn, w.heads, w.head_size)


@contextlib.contextmanager
def _no_init():
    """Skip random weight init while building (every weight is overwritten by the checkpoint)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers: just pay for the init
        yield
        return
    with no_init_weights():
        yield


def _linear_like(old: torch.nn.Linear, in_features: int, out_features: int) -> torch.nn.Linear:
    """A fresh Linear of the given shape, with ``old``'s bias flag, dtype and device."""
    return torch.nn.Linear(
        in_features, out_features, bias=old.bias is not None, dtype=old.weight.dtype, device=old.weight.device
    )


def _read_safetensors(src: Path) -> dict[str, torch.Tensor]:
    """All tensors of ``model.safetensors`` or of the shards its index lists."""
    from safetensors.torch import load_file

    if (src / _WEIGHTS).is_file():
        return load_file(src / _WEIGHTS)
    if (src / _WEIGHTS_INDEX).is_file():
        index = json.loads((src / _WEIGHTS_INDEX).read_text())
        state: dict[str, torch.Tensor] = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(src / shard))
        return state
    raise ModelError(f"{src} has no {_WEIGHTS}", "save the model with save_pruned (safetensors only)")
