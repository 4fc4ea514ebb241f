"""Decoder students (students.decoders): presets relative to the teacher (half, quarter, half-width, combined,
explicit shapes) in the teacher's family, initialised from its layers (uniform or by block influence) and pruned
widths; tied embeddings stay tied and the saved dir reloads with plain from_pretrained with identical logits."""

from __future__ import annotations

import pytest
import torch
from lm_factories import tiny_causal_lm
from transformers import AutoModelForCausalLM

from distill.core.errors import ConfigError
from distill.core.families import family_of
from students.decoders import build_decoder_student, is_decoder_student, student_target

IDS = torch.randint(1, 300, (2, 10), generator=torch.Generator().manual_seed(3))


def calibration() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(1, 300, (2, 16), generator=g)} for _ in range(2)]


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_shapes_are_relative_to_the_teacher():
    llama = tiny_causal_lm("llama", num_hidden_layers=8).config  # hidden 64, 4 heads / 2 K/V, FFN 96
    t = student_target("half", llama)
    assert (t.layers, t.hidden, t.heads, t.ffn) == (4, 64, 4, 96)
    assert student_target("quarter", llama).layers == 2
    t = student_target("half-width", llama)
    assert (t.layers, t.hidden, t.heads, t.kv_heads, t.ffn) == (8, 32, 2, 2, 48)
    t = student_target("half+half-width", llama)
    assert (t.layers, t.hidden, t.heads) == (4, 32, 2)
    t = student_target("layers=3, hidden=48, kv_heads=1", llama)
    assert (t.layers, t.hidden, t.heads, t.kv_heads, t.ffn) == (3, 48, None, 1, None)
    gpt2 = tiny_causal_lm("gpt2").config  # hidden 32 = 4 heads x 8
    t = student_target("half-width", gpt2)
    assert (t.heads, t.hidden, t.ffn) == (2, 16, 64)  # the hidden width follows the heads
    assert is_decoder_student("half+quarter") and is_decoder_student("layers=2") and not is_decoder_student("tiny")


@pytest.mark.parametrize("spec, message", [("halfish", "unknown decoder student"),
                                           ("layers=99", "above the teacher's"), ("ffn=x", "key=positive integer")])
def test_bad_shapes_are_one_line(spec, message):
    with pytest.raises(ConfigError, match=message):
        student_target(spec, tiny_causal_lm("llama").config)


@pytest.mark.parametrize("name", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("spec, selection", [("half", "uniform"), ("half", "importance"),
                                             ("half-width", "uniform"), ("half+half-width", "importance")])
def test_student_reloads_with_identical_logits(name, spec, selection, tmp_path):
    teacher = tiny_causal_lm(name, **({"n_layer": 4} if name == "gpt2" else {"num_hidden_layers": 4}))
    before = logits(teacher)
    student, report = build_decoder_student(teacher, spec, layer_selection=selection, calibration=calibration())
    assert torch.equal(logits(teacher), before)  # the teacher is left as it was
    assert type(student) is type(teacher) and student.config.model_type == name
    assert report.params_student < report.params_teacher
    assert len(report.kept_layers) == (2 if spec.startswith("half") and spec != "half-width" else 4)
    assert student.get_output_embeddings().weight is student.get_input_embeddings().weight
    student.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.allclose(logits(loaded), logits(student), atol=1e-5)
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight


def test_depth_students_keep_teacher_layers_bit_for_bit():
    teacher = tiny_causal_lm("llama", num_hidden_layers=4)
    student, report = build_decoder_student(teacher, "half")  # uniform: no calibration needed
    assert report.kept_layers == [0, 3] and report.calibration_tokens == 0
    for s_block, t_index in zip(student.model.layers, [0, 3], strict=True):
        t_block = teacher.model.layers[t_index]
        for (name, p), (_, q) in zip(s_block.named_parameters(), t_block.named_parameters(), strict=True):
            assert torch.equal(p, q) and p.data_ptr() != q.data_ptr(), name  # copied, not shared


def test_importance_keeps_the_blocks_that_change_their_input():
    teacher = tiny_causal_lm("llama", num_hidden_layers=4)
    with torch.no_grad():
        for i in (1, 2):  # blocks 1 and 2 pass their input through
            teacher.model.layers[i].self_attn.o_proj.weight.zero_()
            teacher.model.layers[i].mlp.down_proj.weight.zero_()
    _, report = build_decoder_student(teacher, "half", layer_selection="importance", calibration=calibration())
    assert report.kept_layers == [0, 3] and report.calibration_tokens == 64
    assert report.block_importance[1] < 1e-6 and report.block_importance[0] > 1e-3
    _, listed = build_decoder_student(teacher, "half", layer_selection="1,2")
    assert listed.kept_layers == [1, 2]


def test_width_students_need_calibration_unless_random():
    teacher = tiny_causal_lm("llama")
    with pytest.raises(ConfigError, match="calibration"):
        build_decoder_student(teacher, "half-width")
    student, report = build_decoder_student(teacher, "half-width", init="random")
    w = family_of(student).widths(student.config)
    assert (w.hidden, w.heads, w.ffn) == (32, 2, 48) and report.init == "random"
    assert not torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight[:, :32])
