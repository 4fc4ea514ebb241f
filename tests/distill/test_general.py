"""General distillation (``--general-data``): the stage runs before task distillation and lowers its loss, the
student body it saves reloads with plain ``AutoModel`` and serves as ``--student DIR`` of a second task, and bad
text sources are one line, exit 2, nothing written. Tiny in-process models only."""

from __future__ import annotations

import json
import random
from pathlib import Path

import factories
import pytest
import torch

from distill.cli import main

# report.json's ``history.general`` (and ``stage_seconds.general``): pinned here, since the default run of
# test_report_schema.py has no general stage
GENERAL_SHAPE = {"data": "str", "rows": "int", "steps": "int", "seconds": "float", "lr": "float", "terms": "list",
                 "loss_before": "dict", "loss_after": "dict", "history": "list", "path": "str"}


def write_text(path: Path, paragraphs: int = 60, seed: int = 1) -> Path:
    """Plain text of the tiny tokenizer's words: paragraphs separated by blank lines."""
    rng = random.Random(seed)
    paras = [" ".join(rng.choice(factories.WORDS) for _ in range(rng.randrange(6, 20))) for _ in range(paragraphs)]
    path.write_text("\n\n".join(paras) + "\n")
    return path


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("general")
    return {"tmp": tmp, "teacher": factories.save_teacher(tmp / "teacher", tmp, with_head=False),
            "data": factories.write_sst2_like(tmp / "data", n_train=48, n_dev=16),
            "pairs": factories.write_pairs(tmp / "pairs", regression=True, n_train=48, n_dev=16),
            "text": write_text(tmp / "text.txt")}


COMMON = ["--epochs", "1", "--teacher-epochs", "1", "--batch-size", "8", "--max-seq-length", "24", "--no-prune",
          "--no-quantize", "--latency-runs", "2", "--quiet"]


@pytest.fixture(scope="module")
def general_run(env) -> Path:
    out = env["tmp"] / "run"
    assert main(["run", "--teacher", str(env["teacher"]), "--student", "tiny", "--task", "sst2", "--data",
                 str(env["data"]), "--general-data", str(env["text"]), "--general-steps", "40", "--general-lr",
                 "3e-3", "--output-dir", str(out), *COMMON]) == 0
    return out


def test_general_stage_lowers_its_loss_and_is_reported(general_run: Path):
    report = json.loads((general_run / "report.json").read_text())
    general = report["history"]["general"]
    assert {k: json_type(v) for k, v in general.items()} == GENERAL_SHAPE
    assert general["steps"] == 40 and general["terms"] == ["hidden", "relation"]
    assert general["rows"] > 0 and general["data"].endswith("text.txt")
    assert set(general["loss_before"]) == {"hidden", "relation", "total"}
    assert general["loss_after"]["total"] < 0.9 * general["loss_before"]["total"]
    assert isinstance(report["stage_seconds"]["general"], float)
    assert list(report["stage_seconds"]).index("general") < list(report["stage_seconds"]).index("distil")
    assert report["settings"]["general_data"].endswith("text.txt")

    from distill.pipeline.results import RunReport

    back = RunReport.from_json(report)
    assert back.general is not None and back.general.to_json() == general


def json_type(value) -> str:
    for kind, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "list"), (dict, "dict")):
        if isinstance(value, kind):
            return name
    return "null"


def test_the_saved_body_reloads_with_plain_automodel_and_starts_task_distillation(general_run: Path):
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoModelForSequenceClassification

    body = AutoModel.from_pretrained(general_run / "general-student")
    assert type(body).__name__ == "BertModel"
    assert (general_run / "general-student" / "tokenizer_config.json").is_file()
    student = AutoModelForSequenceClassification.from_pretrained(general_run / "student")
    assert body.config.hidden_size == student.config.hidden_size
    # task distillation moved the body on from the saved general student (it started there; it did not restart)
    saved = load_file(general_run / "general-student" / "model.safetensors")
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(saved[key], body.state_dict()[key])
    assert not torch.equal(saved[key], student.bert.embeddings.word_embeddings.weight)


def test_general_student_dir_serves_a_second_task_with_task_texts(env, general_run: Path):
    """``--student OUTPUT/general-student`` on a regression pair task, general-distilled again on the task's own
    texts (``--general-data task``)."""
    out = env["tmp"] / "second"
    assert main(["run", "--teacher", str(env["teacher"]), "--student", str(general_run / "general-student"),
                 "--task", "stsb", "--data", str(env["pairs"]), "--general-data", "task", "--general-steps", "5",
                 "--output-dir", str(out), *COMMON]) == 0
    report = json.loads((out / "report.json").read_text())
    body = sum(p.numel() for p in __import__("transformers").AutoModel.from_pretrained(
        general_run / "general-student").parameters())
    student = next(s for s in report["stages"] if s["name"] == "student")
    assert body < student["params"] <= body + 64 * 64 + 64 + 64 + 1  # the body plus a new regression head
    assert report["history"]["general"]["data"] == "task" and report["history"]["general"]["steps"] == 5
    assert report["metric_name"] == "pearson"


@pytest.mark.parametrize("case", ["missing", "empty-file", "blank-file", "empty-dir", "no-text-files"])
def test_bad_general_data_is_one_line_exit_2_and_writes_nothing(env, case, tmp_path, capsys):
    where = {"missing": tmp_path / "nope.txt", "empty-file": tmp_path / "empty.txt",
             "blank-file": tmp_path / "blank.txt", "empty-dir": tmp_path / "emptydir",
             "no-text-files": tmp_path / "other"}[case]
    if case == "empty-file":
        where.write_text("")
    elif case == "blank-file":
        where.write_text("\n  \n\n")
    elif case == "empty-dir":
        where.mkdir()
    elif case == "no-text-files":
        where.mkdir()
        (where / "data.csv").write_text("a,b\n")
    out = tmp_path / "out"
    code = main(["run", "--teacher", str(env["teacher"]), "--task", "sst2", "--data", str(env["data"]),
                 "--general-data", str(where), "--output-dir", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--general-data" in err[0] and "Traceback" not in err[0]
    assert not out.exists()


def test_general_settings_without_data_or_out_of_range_are_refused(env, tmp_path, capsys):
    base = ["run", "--teacher", str(env["teacher"]), "--task", "sst2", "--data", str(env["data"]), "--output-dir",
            str(tmp_path / "out"), "--quiet"]
    for extra, needle in ((["--general-lr", "1e-4"], "without --general-data"),
                          (["--general-data", "task", "--general-steps", "0"], "--general-steps 0"),
                          (["--general-data", "task", "--general-terms", "hidden,logits"], "--general-terms")):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "out").exists()


def test_general_objective_has_only_the_chosen_feature_terms():
    from distill.objective.config import DistillConfig
    from distill.objective.general import GeneralObjective

    config = factories.tiny_bert_config(layers=2, hidden=16, heads=2)
    teacher = factories.tiny_bert_config(layers=4, hidden=32, heads=4)
    objective = GeneralObjective.between(DistillConfig(), ["hidden", "attention"], config, teacher)
    assert list(objective.terms) == ["hidden", "attention"]
    assert objective.needs_hidden_states and objective.needs_attentions and not objective.needs_qkv

    from transformers import BertModel

    torch.manual_seed(0)
    s, t = BertModel(config).eval(), BertModel(teacher).eval()
    t.set_attn_implementation("eager")
    s.set_attn_implementation("eager")
    ids = torch.randint(5, 90, (3, 7))
    mask = torch.ones_like(ids)
    s_out = s(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    t_out = t(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    total, terms = objective.loss(s_out, torch.zeros(3), [t_out], mask)
    assert set(terms) == {"hidden", "attention"} and total.item() == pytest.approx(sum(terms.values()), rel=1e-5)
    assert total.requires_grad


def test_wikitext_gives_one_passage_per_paragraph_without_headings(tmp_path):
    from distill.pipeline.general_text import read_passages

    (tmp_path / "wiki.valid.raw").write_text(" \n = Film = \n \n The film was good . \n \n = = Plot = = \n \n"
                                             " It is a story . \n")
    (tmp_path / "wiki.test.raw").write_text(" = Actor = \n \n The actor was sad . \n")
    (tmp_path / "notes.csv").write_text("ignored,file\n")
    # no train file: every text file, in name order (wiki.test.raw, wiki.valid.raw)
    assert read_passages(tmp_path) == ["The actor was sad .", "The film was good .", "It is a story ."]
    (tmp_path / "train.txt").write_text("first paragraph here\n\nsecond one\n")
    assert read_passages(tmp_path) == ["first paragraph here", "second one"]  # a train file wins


def test_long_passages_are_cut_into_rows_that_fit(tmp_path):
    from distill.pipeline.stages.general import passage_dataset

    tok = factories.tiny_tokenizer(tmp_path)
    words = " ".join(factories.WORDS[i % len(factories.WORDS)] for i in range(50))
    rows = passage_dataset([words, "good"], tok, 16)
    ids = rows["input_ids"]
    assert len(ids) == 4  # 50 word pieces in pieces of 14; "good" alone is too short to teach anything
    assert all(len(r) <= 16 and r[0] == tok.cls_token_id and r[-1] == tok.sep_token_id for r in ids)
    assert sum(len(r) - 2 for r in ids) == 50 and rows["labels"] == [0] * 4


def test_resume_after_the_general_stage_reuses_the_saved_body(general_run: Path, tmp_path):
    """A run stopped after the general stage resumes from ``general-student``: no second general training, the same
    record in the report, and task distillation starts from the saved body."""
    import shutil

    out = tmp_path / "resumed"
    shutil.copytree(general_run, out)
    stages = json.loads((out / "stages.json").read_text())
    (out / "stages.json").write_text(json.dumps({k: stages[k] for k in ("teacher", "general")}))
    for name in ("report.json", "report.md", "report.html"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "student")
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    first = json.loads((general_run / "report.json").read_text())
    again = json.loads((out / "report.json").read_text())
    assert again["history"]["general"] == first["history"]["general"]
    assert again["stages"][1]["metric"] == pytest.approx(first["stages"][1]["metric"], abs=1e-6)
