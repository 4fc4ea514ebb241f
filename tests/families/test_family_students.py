"""Students of the teacher's family (students.families): a preset's shape as a config of the teacher's model type
keeps how the teacher reads its ids (RoBERTa's offset positions, DeBERTa-v3's relative attention and buckets,
ModernBERT's rotary and local/global layers, ELECTRA's factorised embeddings); ``--init teacher-layers`` then gives
a student whose copied layers compute exactly the teacher's, and ``teacher-pruned`` cuts the teacher down to the
same config; a BERT student of any teacher reads the teacher's tokenizer."""

from __future__ import annotations

import copy

import pytest
import torch
from family_factories import FAMILY_NAMES, tiny_model, tiny_tokenizer

from compress import PruneConfig, prune_model
from distill.core.errors import ConfigError, ModelError
from distill.core.families import family_of
from students import init_from_teacher
from students.families import build_family_student, family_student_config, student_families
from students.init import pruned_shape, resolve_auto
from students.presets import StudentPreset

TEXTS = (["the movie was superb", "a boring plot and sad actor"], ["it is very good", "ugly"])


def _encoded(name: str) -> dict[str, torch.Tensor]:
    return dict(tiny_tokenizer(name)(*TEXTS, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_tiny_student_is_of_the_teachers_type_and_reads_its_ids(name):
    teacher = tiny_model(name)
    config = family_student_config("tiny", teacher.config)
    family = family_of(config)
    w = family.widths(config)
    assert config.model_type == name and (w.layers, w.hidden, w.heads, w.head_dim, w.ffn) == (2, 128, 2, 64, 512)
    assert (config.vocab_size, config.pad_token_id) == (teacher.config.vocab_size, teacher.config.pad_token_id)
    t = teacher.config
    if name in ("roberta", "xlm-roberta"):
        assert config.max_position_embeddings == t.max_position_embeddings  # offset positions: same table
    if name == "deberta-v2":
        kept = ("relative_attention", "position_buckets", "pos_att_type", "share_att_key", "norm_rel_ebd",
                "position_biased_input", "type_vocab_size", "max_relative_positions")
        assert {k: getattr(config, k) for k in kept} == {k: getattr(t, k) for k in kept}
        assert config.pooler_hidden_size == 128
    if name == "modernbert":
        assert config.layer_types == ["full_attention", "full_attention"]  # teacher layers 0 and 3
        assert (config.rope_parameters, config.local_attention) == (t.rope_parameters, t.local_attention)
    if name == "electra":
        assert config.embedding_size == 32  # factorised like the teacher's (32 under 64)
    student = build_family_student("tiny", teacher.config).eval()
    assert type(student) is type(teacher)
    with torch.no_grad():
        assert student(**_encoded(name)).logits.shape == (2, 2)


def _wide_teacher(name: str):
    """A 4-layer teacher as wide as the ``tiny`` preset (hidden 128, 2 heads, FFN 512), so its layers fit."""
    return tiny_model(name, hidden=128, heads=2, ffn=512)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_teacher_layers_copied_into_a_family_student_compute_the_same(name):
    teacher = _wide_teacher(name)
    same_depth = StudentPreset(4, 128, 2, 512)
    student = build_family_student(same_depth, teacher.config).eval()
    report = init_from_teacher(student, teacher, "auto")
    assert report.strategy == "teacher-layers" and report.layer_pairs == [(0, 0), (1, 1), (2, 2), (3, 3)]
    inputs = _encoded(name)
    with torch.no_grad():
        s = student(**inputs, output_hidden_states=True).hidden_states
        t = teacher(**inputs, output_hidden_states=True).hidden_states
    for a, b in zip(s, t, strict=True):  # embeddings, positions, relative tables, layers: all the teacher's
        assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_tiny_student_takes_every_other_teacher_layer(name):
    teacher = _wide_teacher(name)
    student = build_family_student("tiny", teacher.config)
    assert resolve_auto(StudentPreset(2, 128, 2, 512), teacher.config) == "teacher-layers"
    report = init_from_teacher(student, teacher, "auto")
    first = 0 if name == "modernbert" else 1  # ModernBERT's first block has no attention norm: kept first
    assert report.layer_pairs == [(0, first), (1, 3)] and report.copied_embeddings
    family = family_of(student)
    for s, t in report.layer_pairs:
        s_state = family.blocks(student)[s].state_dict()
        for key, value in family.blocks(teacher)[t].state_dict().items():
            if key in s_state:
                assert torch.equal(s_state[key], value), key
    for path, module in family.shared_modules(student).items():  # deberta's relative-position table and norm
        assert torch.equal(module.weight, family.shared_modules(teacher)[path].weight)


def test_student_config_drops_what_belongs_to_the_loaded_teacher():
    teacher = tiny_model("deberta-v2").to(torch.bfloat16)
    teacher.set_attn_implementation("eager")
    teacher.config.architectures = ["DebertaV2ForSequenceClassification"]
    student = build_family_student("tiny", teacher.config)
    assert next(student.parameters()).dtype == torch.float32 and student.config.architectures is None
    modern = tiny_model("modernbert")
    modern.set_attn_implementation("eager")
    assert build_family_student("tiny", modern.config).config._attn_implementation == "sdpa"


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_teacher_pruned_student_has_the_family_students_shape(name, tmp_path):
    from transformers import AutoModelForSequenceClassification

    teacher = tiny_model(name)  # hidden 64, 4 heads of 16, FFN 128, 4 layers
    preset = StudentPreset(2, 32, 2, 64)
    shape = pruned_shape(preset, teacher.config)
    assert (shape.heads, shape.hidden, shape.ffn) == (2, 32, 64)
    student = copy.deepcopy(teacher)
    inputs = _encoded(name)
    report = prune_model(student, PruneConfig(heads=shape.heads_ratio, ffn=shape.ffn_ratio, layers=shape.layers),
                         inputs)
    assert report.hf_loadable
    want = family_student_config(preset, teacher.config)
    family = family_of(student)
    assert family.widths(student.config) == family.widths(want)
    if name == "modernbert":
        assert shape.layers == [0, 3] and student.config.layer_types == want.layer_types
    student.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.allclose(student.eval()(**inputs).logits, again(**inputs).logits, atol=1e-5)


def test_teacher_pruned_electra_small_keeps_its_embeddings_factorised():
    """electra-small style (embeddings 32 under hidden 64) cut to hidden 32: the embeddings go to 16 with it."""
    teacher = tiny_model("electra")
    shape = pruned_shape(StudentPreset(2, 32, 2, 64), teacher.config)
    report = prune_model(teacher, PruneConfig(heads=shape.heads_ratio, ffn=shape.ffn_ratio, layers=shape.layers),
                         _encoded("electra"))
    assert report.hf_loadable and (teacher.config.embedding_size, teacher.config.hidden_size) == (16, 32)


def test_teacher_pruned_modernbert_keeps_the_first_layer():
    config = tiny_model("modernbert").config
    assert pruned_shape(StudentPreset(2, 32, 2, 64), config, "last-k").layers == [0, 3]
    with pytest.raises(ConfigError, match="first layer"):
        pruned_shape(StudentPreset(2, 32, 2, 64), config, [2, 3])


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_a_bert_student_reads_any_teachers_tokenizer(name):
    teacher = tiny_model(name)
    tok = tiny_tokenizer(name)
    assert student_families(teacher.config, tok)["bert"] is None
    student = build_family_student("tiny", teacher.config, family="bert", tokenizer=tok).eval()
    assert student.config.model_type == "bert" and student.config.vocab_size == teacher.config.vocab_size
    assert student.config.type_vocab_size >= 2 and student.config.max_position_embeddings >= 64
    with torch.no_grad():
        assert student(**_encoded(name)).logits.shape == (2, 2)


def test_auto_init_for_a_student_of_another_family():
    deberta, roberta = _wide_teacher("deberta-v2").config, _wide_teacher("roberta").config
    tiny = StudentPreset(2, 128, 2, 512)
    assert resolve_auto(tiny, deberta) == resolve_auto(tiny, deberta, family="deberta-v2") == "teacher-layers"
    assert resolve_auto(tiny, deberta, family="bert") == "teacher-embeddings"  # other blocks: no layers to copy
    assert resolve_auto(tiny, roberta, family="bert") == "teacher-layers"  # the same blocks: layers load as they are
    assert resolve_auto(StudentPreset(2, 64, 1, 256), roberta, family="bert") == "teacher-embeddings"  # never cut
    student = build_family_student("tiny", roberta, family="bert")
    assert init_from_teacher(student, _wide_teacher("roberta"), "auto").strategy == "teacher-layers"
    student = build_family_student("tiny", deberta, family="bert")  # 52 words, 128 dimensions: no PCA to take
    assert init_from_teacher(student, _wide_teacher("deberta-v2"), "auto").strategy == "teacher-embeddings"


def test_families_a_student_may_take():
    bert, roberta = tiny_model("bert").config, tiny_model("roberta").config
    options = student_families(bert, tiny_tokenizer("bert"))
    assert options["bert"] is None and "token type" in options["distilbert"]
    assert "reads ids only from a roberta tokenizer" in options["roberta"]
    assert student_families(roberta, tiny_tokenizer("roberta"))["distilbert"] is None
    student = build_family_student("tiny", roberta, family="distilbert", tokenizer=tiny_tokenizer("roberta"))
    assert student.config.model_type == "distilbert"
    with pytest.raises(ModelError) as err:
        family_student_config("tiny", bert, family="roberta")
    assert "\n" not in err.value.line() and "--student-family bert" in err.value.line()
    with pytest.raises(ModelError, match="'albert'"):
        family_student_config("tiny", bert, family="albert")


def test_an_albert_teacher_is_one_line_naming_the_supported_families():
    from transformers import AlbertConfig, CamembertConfig

    with pytest.raises(ModelError) as err:
        family_student_config("tiny", AlbertConfig())
    line = err.value.line()
    assert "\n" not in line and "share one set of weights" in line
    assert "bert, deberta-v2, distilbert, electra, modernbert, roberta, xlm-roberta" in line and "qwen2" in line
    assert family_student_config("tiny", CamembertConfig()).model_type == "bert"  # unregistered, BERT-like
