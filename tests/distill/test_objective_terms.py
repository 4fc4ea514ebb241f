"""The objective's layer terms, schedules, Q/K/V capture and compatibility checks, with tiny real HF models."""

from types import SimpleNamespace

import pytest
import torch
from factories import tiny_bert_config

from distill.core.errors import ConfigError, ModelError
from distill.objective.capture import capture_qkv, eager_attention, find_qkv
from distill.objective.losses import (
    attention_kl,
    attention_relation_kl,
    embedding_mse,
    hard_label_ce,
    hidden_cosine,
    hidden_mse,
    soft_target_kl,
)
from distill.objective.objective import DistillConfig, Objective, disable_unsupported, supported_losses

ALL_TERMS = dict(hidden_weight=0.5, attention_weight=2.0, embedding_weight=0.25, cosine_weight=0.75,
                 relation_weight=3.0, relation_heads=2)


def _models(teacher_heads: int = 4):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    teacher = BertForSequenceClassification(tiny_bert_config(layers=2, hidden=32, heads=teacher_heads)).eval()
    student = BertForSequenceClassification(tiny_bert_config(layers=1, hidden=16, heads=2, ffn=32)).train()
    return student, teacher


def _batch():
    ids = torch.randint(5, 99, (3, 6))
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    return ids, mask, torch.tensor([0, 1, 1])


def _run(obj, student, teacher, ids, mask):
    """What the engine does: eager attention, Q/K/V hooks, the teacher under inference_mode."""
    s_layer, t_layer = obj.qkv_layers
    with eager_attention(student), eager_attention(teacher), \
            capture_qkv(student, [s_layer]) as s_qkv, capture_qkv(teacher, [t_layer]) as t_qkv:
        kw = dict(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        with torch.inference_mode():
            t_out = teacher(**kw)
        t_out.logits, t_out.hidden_states = t_out.logits.clone(), tuple(h.clone() for h in t_out.hidden_states)
        s_out = student(**kw)
    return s_out, t_out, s_qkv[s_layer], t_qkv[t_layer]


def test_all_terms_with_real_hf_outputs():
    student, teacher = _models()
    ids, mask, labels = _batch()
    obj = Objective(DistillConfig(alpha=0.3, **ALL_TERMS), student_width=16, teacher_width=32,
                    layer_map=[(1, 2)], student_heads=2)
    assert obj.needs_hidden_states and obj.needs_attentions and obj.needs_qkv and obj.qkv_layers == (-1, -1)
    s_out, t_out, s_qkv, t_qkv = _run(obj, student, teacher, ids, mask)
    assert s_qkv["query"].shape == (3, 6, 16) and t_qkv["value"].shape == (3, 6, 32)
    total, terms = obj(s_out, labels, t_out, mask, student_qkv=s_qkv, teacher_qkv=t_qkv)
    hs, ht = s_out.hidden_states, t_out.hidden_states
    expected = {
        "ce": hard_label_ce(s_out.logits, labels),
        "kd": soft_target_kl(s_out.logits, t_out.logits, 2.0),
        "hidden": hidden_mse(obj.terms["hidden"].projections[0](hs[1]), ht[2], mask),
        "embedding": embedding_mse(obj.terms["embedding"].projection(hs[0]), ht[0], mask),
        "cosine": hidden_cosine(obj.terms["cosine"].projection(hs[-1]), ht[-1], mask),
        "attention": attention_kl(s_out.attentions[0], t_out.attentions[1], mask),
        "relation": sum(attention_relation_kl(s_qkv[k], t_qkv[k], mask, 2) for k in ("query", "key", "value")),
    }
    assert set(terms) == set(expected)
    for name, value in expected.items():
        assert terms[name] == pytest.approx(value.item(), rel=1e-5, abs=1e-7), name
        assert value.item() >= -1e-6, name  # every term is a divergence or distance
    weights = {"hidden": 0.5, "attention": 2.0, "embedding": 0.25, "cosine": 0.75, "relation": 3.0}
    manual = 0.3 * expected["ce"] + 0.7 * expected["kd"] + sum(w * expected[k] for k, w in weights.items())
    assert total.item() == pytest.approx(manual.item(), rel=1e-5)
    total.backward()
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    assert all(p.grad is not None for p in obj.parameters())


def test_relation_loss_does_not_depend_on_teacher_head_count():
    student, teacher4 = _models(teacher_heads=4)
    _, teacher2 = _models(teacher_heads=2)
    teacher2.load_state_dict(teacher4.state_dict())  # same weights, only the head split differs
    ids, mask, labels = _batch()
    # teacher layer 1 reads the embeddings, so its Q/K/V are the same; its attention maps are not
    obj = Objective(DistillConfig(relation_weight=1.0, relation_heads=2, relation_layer=1, hidden_weight=0.0))
    assert obj.qkv_layers == (-1, 0)
    runs = [_run(obj, student.eval(), t, ids, mask) for t in (teacher4, teacher2)]
    assert runs[0][1].attentions[0].shape[1] == 4 and runs[1][1].attentions[0].shape[1] == 2
    values = [obj(s, labels, t, mask, student_qkv=sq, teacher_qkv=tq)[1]["relation"] for s, t, sq, tq in runs]
    assert values[0] > 0 and values[0] == pytest.approx(values[1], rel=1e-5)


def test_eager_attention_restores_and_gives_normalised_maps():
    student, _ = _models()
    ids, mask, _ = _batch()
    dropout = student.bert.encoder.layer[0].attention.self.dropout
    assert student.config._attn_implementation == "sdpa" and dropout.p > 0
    with eager_attention(student):
        maps = student(input_ids=ids, attention_mask=mask, output_attentions=True).attentions[0]  # train mode
    assert torch.allclose(maps.sum(-1)[0], torch.ones(2, 6), atol=1e-5)
    assert student.config._attn_implementation == "sdpa" and dropout.p > 0


def test_capture_qkv_hooks_and_errors():
    student, _ = _models()
    query = student.bert.encoder.layer[0].attention.self.query
    with capture_qkv(student, [0]):
        assert query._forward_hooks
    assert not query._forward_hooks
    with pytest.raises(ConfigError, match="--relation-layer"), capture_qkv(student, [3]):
        pass
    with pytest.raises(ModelError, match="query/key/value"), capture_qkv(torch.nn.Linear(2, 2), [0]):
        pass


def test_find_qkv_on_distilbert():
    from transformers import DistilBertConfig, DistilBertModel

    model = DistilBertModel(DistilBertConfig(vocab_size=50, dim=16, n_layers=2, n_heads=2, hidden_dim=32))
    layers = find_qkv(model)
    assert len(layers) == 2 and layers[1]["key"] is model.transformer.layer[1].attention.k_lin


def _out(logits, hidden=None, attentions=None):
    return SimpleNamespace(logits=logits, hidden_states=hidden, attentions=attentions)


def test_defaults_keep_todays_behaviour():
    assert DistillConfig(2.0, 0.5, 0.1) == DistillConfig()
    obj = Objective(DistillConfig(), student_width=4, teacher_width=8, layer_map=[(1, 1)])
    assert not obj.needs_attentions and not obj.needs_qkv
    assert list(obj.terms) == ["ce", "kd", "hidden"]  # no embedding or cosine term, so no projection for them
    assert sum(p.numel() for p in obj.parameters()) == 4 * 8 + 8


def test_schedules_drive_temperature_alpha_and_feature_scale():
    cfg = DistillConfig(temperature=4.0, temperature_schedule="linear", temperature_end=2.0, alpha=0.8,
                        hidden_weight=1.0,
                        alpha_schedule="cosine", alpha_end=0.2, feature_schedule="linear", feature_scale_end=0.0)
    obj = Objective(cfg, student_width=3, teacher_width=3, layer_map=[(1, 1)])
    assert (obj.temperature, obj.alpha, obj.feature_scale) == (4.0, 0.8, 1.0)
    obj.set_progress(0.5)
    assert obj.temperature == pytest.approx(3.0) and obj.alpha == pytest.approx(0.5)
    s, t = torch.randn(2, 3), torch.randn(2, 3)
    hs, ht = (None, torch.randn(2, 4, 3)), (None, torch.randn(2, 4, 3))
    labels = torch.tensor([0, 2])
    total, terms = obj(_out(s, hs), labels, _out(t, ht))
    assert terms["kd"] == pytest.approx(soft_target_kl(s, t, 3.0).item(), rel=1e-5)
    assert total.item() == pytest.approx(0.5 * terms["ce"] + 0.5 * terms["kd"] + 0.5 * terms["hidden"], rel=1e-5)
    obj.set_progress(2.0)  # clamped: the end values, features faded out
    total, terms = obj(_out(s, hs), labels, _out(t, ht))
    assert total.item() == pytest.approx(0.2 * terms["ce"] + 0.8 * terms["kd"], rel=1e-5)


def test_attention_mse_over_mapped_layers_and_missing_maps():
    obj = Objective(DistillConfig(hidden_weight=0.0, attention_weight=1.0, attention_loss="mse"),
                    layer_map=[(1, 2), (2, 4)])
    assert obj.terms["attention"].pairs == [(0, 1), (1, 3)]
    s = tuple(torch.full((1, 1, 2, 2), 0.5) for _ in range(2))
    t = tuple(torch.eye(2).view(1, 1, 2, 2) * (i % 2) + 0.5 * (1 - i % 2) for i in range(4))
    logits = torch.zeros(1, 2)
    _, terms = obj(_out(logits, attentions=s), torch.tensor([0]), _out(logits, attentions=t))
    assert terms["attention"] == pytest.approx(2 * 0.25)  # both mapped teacher layers (2, 4) are the identity
    with pytest.raises(ConfigError, match="eager"):
        obj(_out(logits, attentions=()), torch.tensor([0]), _out(logits, attentions=t))


def test_relation_configuration_errors():
    with pytest.raises(ConfigError, match="--relation-heads"):
        Objective(DistillConfig(relation_weight=1.0))
    with pytest.raises(ConfigError, match="--relation-heads 3 does not divide"):
        Objective(DistillConfig(relation_weight=1.0, relation_heads=3), student_width=16, teacher_width=33)
    obj = Objective(DistillConfig(relation_weight=1.0, relation_layer=2), student_heads=2)
    assert obj.terms["relation"].heads == 2 and obj.qkv_layers == (-1, 1)
    with pytest.raises(ConfigError, match="capture_qkv"):
        obj(_out(torch.zeros(1, 2)), torch.tensor([0]), _out(torch.zeros(1, 2)))


@pytest.mark.parametrize("kw,flag", [
    ({"attention_weight": -1}, "--attention-weight"), ({"embedding_weight": -1}, "--embedding-weight"),
    ({"cosine_weight": -0.5}, "--cosine-weight"), ({"relation_weight": -1}, "--relation-weight"),
    ({"attention_loss": "l1"}, "--attention-loss"), ({"relation_heads": 0}, "--relation-heads"),
    ({"relation_layer": 0}, "--relation-layer"), ({"temperature_schedule": "cos"}, "--temperature-schedule"),
    ({"temperature_end": 1.0}, "--temperature-schedule"), ({"alpha_schedule": "linear"}, "--alpha-end"),
    ({"alpha_schedule": "linear", "alpha_end": 1.5}, "--alpha-end"),
    ({"temperature_schedule": "linear", "temperature_end": 0}, "--temperature-end"),
    ({"feature_schedule": "cosine", "feature_scale_end": -1}, "--feature-scale-end"),
])
def test_bad_layer_settings_name_the_flag(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        DistillConfig(**kw)


def test_supported_losses_and_disabling():
    s, t = tiny_bert_config(hidden=16, heads=2), tiny_bert_config()
    assert all(v is None for v in supported_losses(s, t, same_tokenizer=True).values())
    support = supported_losses(s, t, same_tokenizer=False)
    assert support["ce"] is None and support["kd"] is None
    assert all("tokenizers" in support[k] for k in ("hidden", "embedding", "cosine", "attention", "relation"))
    assert "outputs" in supported_losses(tiny_bert_config(num_labels=3), t, True)["kd"]
    cfg, messages = disable_unsupported(DistillConfig(attention_weight=1.0), support)
    assert cfg.hidden_weight == 0 and cfg.attention_weight == 0 and cfg.alpha == 0.5
    assert [m.split(" ")[0] for m in messages] == ["--hidden-weight", "--attention-weight"]
    assert disable_unsupported(DistillConfig(), supported_losses(s, t, True)) == (DistillConfig(), [])


# ---- loss terms as registered objects ------------------------------------------------------------------------------

def test_every_term_is_registered_in_order_with_its_weight_field_and_formula():
    from dataclasses import fields

    from distill.objective.config import weight_fields
    from distill.objective.terms import LOSS_TERMS

    assert LOSS_TERMS.names() == ["ce", "kd", "hidden", "embedding", "cosine", "attention", "relation"]
    names = {f.name for f in fields(DistillConfig)}
    for name, cls in LOSS_TERMS.items():
        assert cls.name == name and cls.weight_field in names and "=" in (cls.__doc__ or ""), name
    feature_fields = {cls.weight_field for _, cls in LOSS_TERMS.items() if cls.per_teacher}
    assert feature_fields == set(weight_fields())  # every *_weight setting is a registered term's


def test_a_new_term_is_one_class_and_one_setting(monkeypatch):
    """A plug-in term: its weight setting (here on a DistillConfig subclass) turns it on; the objective computes,
    weighs and logs it, supported_losses/disable_unsupported and the cache's layer list know it."""
    from dataclasses import dataclass

    from distill.objective.terms import LOSS_TERMS, LossTerm, Scale, TermInputs
    from distill.train.loop import teacher_layers_needed

    @dataclass
    class WithL1(DistillConfig):
        l1_weight: float = 0.0

    class LastLayerL1(LossTerm):
        """l1 = mean |h_s[-1] − h_t[-1]| over every element, (B, L, D) each."""

        name, weight_field, needs_hidden_states = "l1", "l1_weight", True

        def teacher_layers(self) -> set[int]:
            return {-1}

        def compute(self, inputs: TermInputs) -> torch.Tensor:
            return (inputs.student.hidden_states[-1] - inputs.teacher.hidden_states[-1]).abs().mean()

    monkeypatch.setitem(LOSS_TERMS._items, "l1", LastLayerL1)
    config = WithL1(alpha=0.5, hidden_weight=0.0, l1_weight=2.0)
    obj = Objective(config, student_width=3, teacher_width=3)
    assert list(obj.terms) == ["ce", "kd", "l1"] and obj.needs_hidden_states
    assert teacher_layers_needed(obj) == [-1]
    hs, ht = (torch.randn(2, 4, 3),), (torch.randn(2, 4, 3),)
    s, t, labels = _out(torch.randn(2, 2), hs), _out(torch.randn(2, 2), ht), torch.tensor([0, 1])
    total, terms = obj(s, labels, t)
    l1 = (hs[-1] - ht[-1]).abs().mean()
    assert terms["l1"] == pytest.approx(l1.item())
    assert total.item() == pytest.approx(0.5 * terms["ce"] + 0.5 * terms["kd"] + 2.0 * l1.item(), rel=1e-6)
    assert obj.terms["l1"](TermInputs(s, labels, teacher=t), Scale(0.5, 2.0, 0.5)).item() == pytest.approx(l1.item())
    support = supported_losses(tiny_bert_config(), tiny_bert_config(), same_tokenizer=False)
    assert "tokenizers" in support["l1"]
    off, messages = disable_unsupported(config, support)
    assert off.l1_weight == 0 and messages[-1].startswith("--l1-weight set to 0: student and teacher use different")


def test_the_task_kind_picks_the_output_loss(monkeypatch):
    from distill.core.errors import UnknownNameError
    from distill.objective.objective import OUTPUT_LOSSES, OutputLoss, output_loss

    token_logits, seq_logits = torch.randn(2, 5, 3), torch.randn(2, 3)
    assert output_loss(None, token_logits) is OUTPUT_LOSSES.get("token_ce_kl")
    assert output_loss(None, seq_logits) is OUTPUT_LOSSES.get("ce_kl")
    assert Objective(DistillConfig(), regression=True).kind == Objective(DistillConfig(), kind="mse").kind
    with pytest.raises(UnknownNameError, match="causal-lm"):
        Objective(DistillConfig(), kind="causal-lm")
    # a new task kind plugs in its own output loss: here next-token CE/KL over (B, L, V) logits
    monkeypatch.setitem(OUTPUT_LOSSES._items, "causal-lm", OutputLoss(
        hard=lambda logits, labels: torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()),
        soft=lambda logits, target, labels, t: soft_target_kl(logits.flatten(0, 1), target.flatten(0, 1), t)))
    obj = Objective(DistillConfig(hidden_weight=0.0), kind="causal-lm")
    labels = torch.randint(0, 3, (2, 5))
    total, terms = obj(_out(token_logits), labels, _out(torch.randn(2, 5, 3)))
    assert terms["ce"] == pytest.approx(torch.nn.functional.cross_entropy(token_logits.flatten(0, 1),
                                                                          labels.flatten()).item(), rel=1e-6)


def test_distill_settings_carry_the_help_of_their_flags(capsys):
    from dataclasses import fields

    from distill.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for f in fields(DistillConfig):
        help_text = f.metadata.get("help")
        assert help_text, f.name
        assert " ".join(help_text.split()) in text, f.name
    attention_loss = next(f for f in fields(DistillConfig) if f.name == "attention_loss")
    assert attention_loss.metadata["choices"] == ("kl", "mse")


def test_the_settings_load_without_torch():
    """The settings schema (and flags generated from it) may read DistillConfig and TrainConfig without torch."""
    import subprocess
    import sys

    code = "import sys, distill.objective.config, distill.train.config; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
