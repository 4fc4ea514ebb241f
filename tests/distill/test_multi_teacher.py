"""Several teachers: the ensemble's closed form, per-teacher feature terms, the training loop, caches and the CLI."""

import json
from types import SimpleNamespace

import factories
import pytest
import torch
import torch.nn.functional as F

from distill.cli import main
from distill.core.errors import ConfigError, ModelError
from distill.data import load_splits, make_loader, tokenize
from distill.data.tasks import get_task
from distill.objective.ensemble import MultiTeacherObjective, ensemble_logits, normalise_weights
from distill.objective.losses import hidden_mse, soft_target_kl
from distill.objective.objective import DistillConfig, Objective, uniform_layer_map
from distill.train.loop import TrainConfig, fit, teacher_layers_needed


def test_ensemble_is_the_weighted_mean_of_softened_probabilities():
    torch.manual_seed(0)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    t = 2.0
    mixed = ensemble_logits([a, b], [0.25, 0.75], t)
    expected = 0.25 * F.softmax(a / t, -1) + 0.75 * F.softmax(b / t, -1)
    torch.testing.assert_close(F.softmax(mixed / t, -1), expected)
    # KL to the ensemble = KL to the hand-made mixture
    s = torch.randn(4, 3)
    by_hand = (expected * (expected.log() - F.log_softmax(s / t, -1))).sum(-1).mean() * t * t
    torch.testing.assert_close(soft_target_kl(s, mixed, t), by_hand)
    # one teacher at weight 1 (or two identical ones) is that teacher's distribution
    torch.testing.assert_close(F.softmax(ensemble_logits([a, b], [1.0, 0.0], t) / t, -1), F.softmax(a / t, -1))
    torch.testing.assert_close(F.softmax(ensemble_logits([a, a], [0.5, 0.5], t) / t, -1), F.softmax(a / t, -1))
    # per-token logits (B, L, C) mix position by position; regression averages the scores
    x, y = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    torch.testing.assert_close(F.softmax(ensemble_logits([x, y], [0.5, 0.5]), -1),
                               0.5 * F.softmax(x, -1) + 0.5 * F.softmax(y, -1))
    torch.testing.assert_close(ensemble_logits([a[:, :1], b[:, :1]], [0.25, 0.75], regression=True),
                               0.25 * a[:, :1] + 0.75 * b[:, :1])


def test_teacher_weights_are_checked_and_normalised():
    assert normalise_weights(None, 4) == [0.25] * 4
    assert normalise_weights([3, 1], 2) == [0.75, 0.25]
    with pytest.raises(ConfigError, match="2 weight.*for 3 teacher"):
        normalise_weights([0.5, 0.5], 3)
    with pytest.raises(ConfigError, match="negative weight or sums to 0"):
        normalise_weights([1, -1], 2)
    with pytest.raises(ConfigError, match="negative weight or sums to 0"):
        normalise_weights([0, 0], 2)


def _out(logits, hidden=None):
    return SimpleNamespace(logits=logits, hidden_states=hidden, attentions=None)


def test_each_teacher_has_its_own_projection_and_weighted_feature_terms():
    torch.manual_seed(0)
    config = DistillConfig(alpha=0.5, temperature=2.0, hidden_weight=0.5)
    parts = [Objective(config, student_width=4, teacher_width=w, layer_map=[(1, j)]) for w, j in ((6, 1), (8, 2))]
    multi = MultiTeacherObjective(parts, [1.0, 3.0])
    assert [p.terms["hidden"].projections[0].out_features for p in multi.parts] == [6, 8]
    assert multi.weights == [0.25, 0.75] and multi.needs_hidden_states and not multi.needs_attentions
    assert [teacher_layers_needed(p) for p in multi.parts] == [[1], [2]]
    labels = torch.tensor([0, 1, 1])
    s_hidden = (torch.randn(3, 5, 4), torch.randn(3, 5, 4, requires_grad=True))
    student = _out(torch.randn(3, 2, requires_grad=True), s_hidden)
    t1 = _out(torch.randn(3, 2), (torch.randn(3, 5, 6), torch.randn(3, 5, 6)))
    t2 = _out(torch.randn(3, 2), (torch.randn(3, 5, 8), torch.randn(3, 5, 8), torch.randn(3, 5, 8)))
    mask = torch.ones(3, 5)
    total, terms = multi(student, labels, [t1, t2], mask)
    h1 = hidden_mse(parts[0].terms["hidden"].projections[0](s_hidden[1]), t1.hidden_states[1], mask)
    h2 = hidden_mse(parts[1].terms["hidden"].projections[0](s_hidden[1]), t2.hidden_states[2], mask)
    kd = soft_target_kl(student.logits, ensemble_logits([t1.logits, t2.logits], [0.25, 0.75], 2.0), 2.0)
    ce = F.cross_entropy(student.logits, labels)
    torch.testing.assert_close(total, 0.5 * ce + 0.5 * kd + 0.5 * (0.25 * h1 + 0.75 * h2))
    assert terms["hidden_t1"] == pytest.approx(h1.item()) and terms["hidden_t2"] == pytest.approx(h2.item())
    total.backward()
    assert all(p.terms["hidden"].projections[0].weight.grad is not None for p in multi.parts)
    # without teachers only the label term remains, at full weight
    alone, alone_terms = multi(student, labels, None)
    torch.testing.assert_close(alone, ce)
    assert set(alone_terms) == {"ce"}
    with pytest.raises(ConfigError, match="1 teacher outputs for an objective of 2"):
        multi(student, labels, [t1], mask)


def test_token_classification_mixes_each_labelled_token():
    from distill.objective.losses import token_kl

    torch.manual_seed(2)
    parts = [Objective(DistillConfig(alpha=0.0, temperature=2.0, hidden_weight=0.0)) for _ in range(2)]
    multi = MultiTeacherObjective(parts)
    labels = torch.tensor([[-100, 1, 2, -100, 0], [-100, 0, -100, -100, -100]])
    student, t1, t2 = _out(torch.randn(2, 5, 3)), _out(torch.randn(2, 5, 3)), _out(torch.randn(2, 5, 3))
    total, _ = multi(student, labels, [t1, t2])
    mixed = ensemble_logits([t1.logits, t2.logits], [0.5, 0.5], 2.0)
    torch.testing.assert_close(total, token_kl(student.logits, mixed, labels != -100, 2.0))


def test_one_teacher_ensemble_equals_the_single_teacher_objective():
    torch.manual_seed(1)
    config = DistillConfig(alpha=0.3, temperature=3.0, hidden_weight=0.0)
    single = Objective(config)
    multi = MultiTeacherObjective([Objective(config)])
    student, teacher, labels = _out(torch.randn(5, 3)), _out(torch.randn(5, 3)), torch.tensor([0, 1, 2, 0, 1])
    torch.testing.assert_close(multi(student, labels, [teacher])[0], single(student, labels, teacher)[0])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import BertForSequenceClassification

    tmp = tmp_path_factory.mktemp("multi")
    tok = factories.tiny_tokenizer(tmp)
    splits = load_splits(get_task("sst2"), str(factories.write_sst2_like(tmp / "d", n_train=64, n_dev=16)))
    data = tokenize(splits.train, tok, 32, index=True)
    torch.manual_seed(0)
    wide = BertForSequenceClassification(factories.tiny_bert_config(vocab=len(tok), hidden=32, heads=4, layers=2))
    deep = BertForSequenceClassification(factories.tiny_bert_config(vocab=len(tok), hidden=24, heads=2, layers=3))
    return tok, data, [wide.eval(), deep.eval()], tmp


def _student(vocab):
    from transformers import BertForSequenceClassification

    torch.manual_seed(1)
    return BertForSequenceClassification(factories.tiny_bert_config(vocab=vocab, hidden=16, heads=2, ffn=32))


def _multi(student, teachers, **terms):
    config = DistillConfig(hidden_weight=1.0, **terms)
    parts = [Objective(config, student_width=16, teacher_width=t.config.hidden_size, student_heads=2,
                       layer_map=uniform_layer_map(2, t.config.num_hidden_layers)) for t in teachers]
    return MultiTeacherObjective(parts, [0.6, 0.4])


def test_fit_learns_from_two_teachers_of_different_shapes(setup):
    tok, data, teachers, _ = setup
    student = _student(len(tok))
    objective = _multi(student, teachers, attention_weight=1.0, relation_weight=1.0, relation_heads=2)
    before = [p.detach().clone() for p in student.parameters()]
    loader = make_loader(data, tok, 16, shuffle=True, seed=0)
    result = fit(student, objective, loader, TrainConfig(lr=1e-3, epochs=1, batch_size=16), teacher=teachers)
    terms = result.history[0]
    for name in ("kd", "hidden", "attention", "relation", "hidden_t1", "hidden_t2", "relation_t2"):
        assert torch.isfinite(torch.tensor(terms[name])), name
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))


def test_one_cache_per_teacher_gives_the_live_teachers_loss(setup):
    from teachers import cache_teacher_outputs

    tok, data, teachers, tmp = setup
    loader = make_loader(data, tok, 16, shuffle=False)
    config = TrainConfig(lr=1e-3, epochs=1, batch_size=16)
    student = _student(len(tok))  # then the objective: the same projections for both runs
    live = fit(student, _multi(None, teachers), loader, config, teacher=teachers)
    student = _student(len(tok))
    objective = _multi(None, teachers)
    caches = [cache_teacher_outputs(t, data, tmp / f"c{i}", hidden_layers=teacher_layers_needed(p), tokenizer=tok,
                                    dtype="float32")
              for i, (t, p) in enumerate(zip(teachers, objective.parts, strict=True))]
    cached = fit(student, objective, loader, config, teacher=caches)
    for key in ("loss", "kd", "hidden_t1", "hidden_t2"):
        assert cached.history[0][key] == pytest.approx(live.history[0][key], rel=1e-3), key
    with pytest.raises(ConfigError, match="2 teachers need an objective with one part per teacher"):
        fit(_student(len(tok)), Objective(DistillConfig()), loader, config, teacher=caches)


def test_teachers_must_share_labels_and_tokenizer():
    from distill.pipeline.checks import check_teachers as _check_teachers

    def loaded(labels, words):
        config = SimpleNamespace(num_labels=labels)
        return SimpleNamespace(model=SimpleNamespace(config=config), tokenizer=factories.tokenizer_from_words(words))

    words = factories.SPECIAL + factories.WORDS
    with pytest.raises(ModelError, match="different label counts \\(2 and 3\\)"):
        _check_teachers([loaded(2, words), loaded(3, words)], ["a", "b"])
    with pytest.raises(ModelError, match="different tokenizers"):
        _check_teachers([loaded(2, words), loaded(2, words[:-1])], ["a", "b"])
    _check_teachers([loaded(2, words), loaded(2, words)], ["a", "b"])


def test_cli_two_teachers_end_to_end(tmp_path, capsys):
    a = factories.save_teacher(tmp_path / "a", tmp_path)
    b = factories.save_teacher(tmp_path / "b", tmp_path, with_head=False, seed=1, hidden=24, heads=2, layers=3)
    data = factories.write_sst2_like(tmp_path / "data", n_train=48, n_dev=16)
    common = ["--student", "tiny", "--task", "sst2", "--data", str(data), "--epochs", "1", "--teacher-epochs", "1",
              "--batch-size", "16", "--max-seq-length", "32", "--latency-runs", "2", "--quiet"]
    out = tmp_path / "run"
    assert main(["distil", "--teacher", str(a), "--teacher", str(b), "--teacher-weights", "3,1",
                 "--output-dir", str(out), *common]) == 0
    report = json.loads((out / "report.json").read_text())
    history = report["history"]
    assert [t["teacher"] for t in history["teachers"]] == [str(a), str(b), "ensemble"]
    assert [t["weight"] for t in history["teachers"][:2]] == [0.75, 0.25]
    assert {"hidden_t1", "hidden_t2", "kd"} <= set(history["student"][0])
    assert report["stages"][0]["path"] == str(a)  # the report compares against the first teacher
    assert (out / "teacher_2" / "config.json").is_file() and not (out / "teacher").exists()  # b was fine-tuned
    assert report["settings"]["teachers"] == [str(a), str(b)]
    # the recipe written for the run repeats it (names, weights)
    recipe = (out / "config.yaml").read_text()
    assert "names:" in recipe and "weights:" in recipe
    capsys.readouterr()
    code = main(["distil", "--teachers", f"{a},{b}", "--teacher-weights", "1,1,1", "--output-dir",
                 str(tmp_path / "bad"), *common])
    err = capsys.readouterr().err
    assert code == 2 and "3 weight(s) for 2 teacher(s)" in err and len(err.strip().splitlines()) == 1
    three = factories.save_teacher(tmp_path / "three", tmp_path, num_labels=3)
    code = main(["distil", "--teacher", str(a), "--teacher", str(three), "--output-dir", str(tmp_path / "bad"),
                 *common])
    err = capsys.readouterr().err
    assert code == 2 and "3-label head" in err and not (tmp_path / "bad").exists()
