"""Teacher and student with different tokenizers: each tokenizes the raw text, logit KD only, and `distill check`."""

import json
from types import SimpleNamespace

import factories
import pytest
import torch

from distill.cli import main
from distill.core.errors import ConfigError, ModelError
from distill.data import load_splits, make_loader
from distill.data.pairs import (
    PairedPadCollator,
    student_view,
    teacher_columns,
    teacher_view,
    tokenize_two,
)
from distill.data.tasks import get_task
from distill.objective.objective import DIFFERENT_TOKENIZERS, DistillConfig, Objective, supported_losses
from distill.train.loop import TrainConfig, fit

FILLER = [f"filler{i}" for i in range(12)]


def student_tokenizer():
    """Another vocabulary: its own pad id (4), and every word at an id the tiny teacher (30 tokens) does not have."""
    return factories.tokenizer_from_words(["[UNK]", "[CLS]", "[SEP]", "[MASK]", "[PAD]"] + FILLER
                                          + sorted(factories.WORDS))


def save_student(root, tmp_path):
    from transformers import BertForSequenceClassification

    tok = student_tokenizer()
    torch.manual_seed(3)
    BertForSequenceClassification(factories.tiny_bert_config(vocab=len(tok), hidden=16, heads=2, ffn=32)
                                  ).save_pretrained(root)
    tok.save_pretrained(root)
    return root


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cross")
    splits = load_splits(get_task("mrpc"), str(factories.write_pairs(tmp / "d", n_train=32, n_dev=8)))
    s_tok, t_tok = student_tokenizer(), factories.tiny_tokenizer(tmp)
    return splits, s_tok, t_tok, tokenize_two(splits.train, s_tok, t_tok, 32, index=True)


def test_rows_carry_both_tokenizations_padded_with_each_pad_id(paired):
    splits, s_tok, t_tok, data = paired
    assert {"input_ids", "teacher_input_ids", "teacher_attention_mask", "labels", "idx"} <= set(data.column_names)
    row, text = data[0], splits.train[0]
    assert row["input_ids"] == s_tok(text["text"], text["text_pair"])["input_ids"]
    assert row["teacher_input_ids"] == t_tok(text["text"], text["text_pair"])["input_ids"]
    assert row["input_ids"] != row["teacher_input_ids"]
    batch = PairedPadCollator(s_tok, t_tok)([data[i] for i in range(8)])
    assert batch["input_ids"].shape[0] == batch["teacher_input_ids"].shape[0] == 8
    pad_s = batch["input_ids"][batch["attention_mask"] == 0]
    pad_t = batch["teacher_input_ids"][batch["teacher_attention_mask"] == 0]
    assert set(pad_s.tolist()) <= {s_tok.pad_token_id} and set(pad_t.tolist()) <= {t_tok.pad_token_id}
    assert s_tok.pad_token_id != t_tok.pad_token_id
    theirs, mine = teacher_view(batch), student_view(batch)
    assert torch.equal(theirs["input_ids"], batch["teacher_input_ids"]) and torch.equal(theirs["idx"], batch["idx"])
    assert not any(k.startswith("teacher_") for k in mine) and torch.equal(mine["input_ids"], batch["input_ids"])
    assert teacher_view(mine) is mine  # one tokenization: the teacher reads the same columns
    as_teacher = teacher_columns(data)
    assert as_teacher[0]["input_ids"] == row["teacher_input_ids"] and "labels" in as_teacher.column_names


def test_the_engine_feeds_each_model_its_own_ids(paired):
    from transformers import BertForSequenceClassification

    splits, s_tok, t_tok, data = paired
    torch.manual_seed(0)
    teacher = BertForSequenceClassification(factories.tiny_bert_config(vocab=len(t_tok))).eval()
    student = BertForSequenceClassification(factories.tiny_bert_config(vocab=len(s_tok), hidden=16, heads=2, ffn=32))
    seen = {"teacher": [], "student": []}
    for name, model in (("teacher", teacher), ("student", student)):
        model.bert.embeddings.word_embeddings.register_forward_hook(
            lambda m, args, out, name=name: seen[name].append(int(args[0].max())))
    loader = make_loader(data, s_tok, 8, shuffle=True, seed=0, collate_fn=PairedPadCollator(s_tok, t_tok))
    result = fit(student, Objective(DistillConfig(hidden_weight=0.0)), loader, TrainConfig(lr=1e-3, epochs=1),
                 teacher=teacher)
    assert torch.isfinite(torch.tensor(result.history[0]["kd"]))
    assert max(seen["teacher"]) < len(t_tok) <= max(seen["student"])  # student ids would not fit the teacher


def test_supported_losses_across_tokenizers():
    student, teacher = SimpleNamespace(num_labels=2, hidden_size=16), SimpleNamespace(num_labels=2, hidden_size=32)
    seq = supported_losses(student, teacher, same_tokenizer=False)
    assert seq["ce"] is None and seq["kd"] is None
    assert all(seq[t] == DIFFERENT_TOKENIZERS for t in ("hidden", "embedding", "cosine", "attention", "relation"))
    token = supported_losses(student, teacher, same_tokenizer=False, token=True)
    assert "word piece" in token["kd"] and token["ce"] is None


def test_what_cannot_work_across_tokenizers_is_refused(tmp_path):
    from distill.pipeline.checks import student_tokenizer as _student_tokenizer
    from distill.pipeline.config import RunConfig

    student = save_student(tmp_path / "s", tmp_path)
    t_tok = factories.tiny_tokenizer(tmp_path)
    cfg = RunConfig(teacher="t", student=str(student))
    assert _student_tokenizer(cfg, str(student), t_tok, get_task("sst2")) is not None
    assert _student_tokenizer(cfg, str(student), student_tokenizer(), get_task("sst2")) is None  # same vocabulary
    with pytest.raises(ConfigError, match="token classification needs one label per word piece"):
        _student_tokenizer(cfg, str(student), t_tok, get_task("conll2003"))
    with pytest.raises(ConfigError, match="--prune-importance distillation"):
        _student_tokenizer(RunConfig(teacher="t", student=str(student), prune_importance="distillation"),
                           str(student), t_tok, get_task("sst2"))
    factories.tokenizer_from_words(factories.SPECIAL + [f"w{i}" for i in range(60)]).save_pretrained(student)
    with pytest.raises(ModelError, match="tokenizer of 65 tokens but only 42 embeddings"):
        _student_tokenizer(cfg, str(student), t_tok, get_task("sst2"))


def test_cli_run_and_check_with_a_student_of_another_vocabulary(tmp_path, capsys):
    teacher = factories.save_teacher(tmp_path / "t", tmp_path)
    student = save_student(tmp_path / "s", tmp_path)
    data = factories.write_sst2_like(tmp_path / "data", n_train=48, n_dev=16)
    out = tmp_path / "run"
    assert main(["run", "--teacher", str(teacher), "--student", str(student), "--task", "sst2", "--data", str(data),
                 "--epochs", "1", "--recover-epochs", "1", "--batch-size", "16", "--max-seq-length", "32",
                 "--latency-runs", "2", "--attention-weight", "1", "--cache-teacher", "--output-dir", str(out)]) == 0
    err = capsys.readouterr().err
    assert "its own tokenizer" in err and "--hidden-weight set to 0" in err and "--attention-weight set to 0" in err
    report = json.loads((out / "report.json").read_text())
    assert set(report["history"]["student"][0]) >= {"ce", "kd"}
    assert not {"hidden", "attention"} & set(report["history"]["student"][0])
    assert [s["name"] for s in report["stages"]] == ["teacher", "student", "pruned", "int8"]
    from transformers import AutoTokenizer

    for stage in ("student", "pruned", "int8"):  # every student stage ships the student's own tokenizer
        assert AutoTokenizer.from_pretrained(out / stage).get_vocab() == student_tokenizer().get_vocab()
    assert (out / "teacher_cache" / "manifest.json").is_file()
    assert main(["check", "--teacher", str(teacher), "--student", str(student), "--task", "sst2",
                 "--json", str(tmp_path / "check.json")]) == 0
    text = capsys.readouterr().out
    assert "different tokenizers" in text and "do not line up" in text
    pair = json.loads((tmp_path / "check.json").read_text())["pairs"][0]
    assert not pair["same_tokenizer"] and pair["losses"]["kd"] is None and pair["losses"]["hidden"]
    assert main(["check", "--teacher", str(teacher), "--student", str(student), "--task", "conll2003",
                 "--json", str(tmp_path / "check.json")]) == 0
    assert "word piece" in json.loads((tmp_path / "check.json").read_text())["pairs"][0]["losses"]["kd"]
