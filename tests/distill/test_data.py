"""Reading tasks and local data: GLUE layouts, generic files, and the errors for bad input."""

import json

import factories
import pytest

from distill.core.errors import DataError, UnknownNameError
from distill.data import load_splits, make_loader, tokenize
from distill.data.tasks import TASKS, get_task

SHARED = factories.SHARED_DATA


def test_every_glue_task_is_known():
    glue = {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}
    assert glue <= set(TASKS.names())
    assert all(TASKS.get(n).hub == ("nyu-mll/glue", n) for n in glue)
    assert get_task("SST-2").name == "sst2"
    assert get_task("stsb").is_regression
    assert get_task("mrpc").metrics == ("f1", "accuracy")
    assert get_task("cola").main_metric == "matthews_correlation"


def test_unknown_task_suggests():
    with pytest.raises(UnknownNameError, match="did you mean 'sst2'"):
        get_task("sst3")


def test_glue_sst2_dir(tmp_path):
    data = factories.write_sst2_like(tmp_path, n_train=20, n_dev=8)
    s = load_splits(get_task("sst2"), str(data))
    assert len(s.train) == 20 and len(s.dev) == 8
    assert set(s.train.column_names) == {"text", "label"}
    assert set(s.train["label"]) <= {0, 1}


def test_cola_has_no_header(tmp_path):
    rows = "gj04\t1\t\tthe sailors rode the breeze clear of the rocks .\ngj04\t0\t*\tthe more we study .\n"
    for f in ("train.tsv", "dev.tsv"):
        (tmp_path / f).write_text(rows)
    s = load_splits(get_task("cola"), str(tmp_path))
    assert s.train["text"][0].startswith("the sailors") and s.train["label"] == [1, 0]


def test_quotes_are_kept_verbatim(tmp_path):
    body = 'sentence\tlabel\n"a quoted \t1\nit \'s "fine" \t0\n'
    for f in ("train.tsv", "dev.tsv"):
        (tmp_path / f).write_text(body)
    s = load_splits(get_task("sst2"), str(tmp_path))
    assert s.train["text"] == ['"a quoted', 'it \'s "fine"']


def test_mnli_string_labels(tmp_path):
    header = "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label\n"
    row = "0\t1\t2\tg\tx\tx\tx\tx\tA man.\tA person.\tentailment\t{}\n"
    (tmp_path / "train.tsv").write_text(header + row.format("contradiction") + row.format("neutral"))
    (tmp_path / "dev_matched.tsv").write_text(header + row.format("entailment"))
    s = load_splits(get_task("mnli"), str(tmp_path))
    assert s.train["label"] == [2, 1] and s.dev["label"] == [0] and s.train["text_pair"][0] == "A person."


def test_generic_jsonl_infers_labels(tmp_path):
    rows = [{"review": f"text {i}", "stars": ["neg", "pos", "mid"][i % 3]} for i in range(30)]
    (tmp_path / "all.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    s = load_splits(None, str(tmp_path / "all.jsonl"), text_columns=("review",), label_column="stars")
    assert s.task.num_labels == 3 and s.task.label_names == ("mid", "neg", "pos")
    assert len(s.dev) == 3 and len(s.train) == 27


def test_max_train_samples(tmp_path):
    data = factories.write_sst2_like(tmp_path, n_train=50, n_dev=5)
    assert len(load_splits(get_task("sst2"), str(data), max_train_samples=7).train) == 7


@pytest.mark.parametrize("setup,match", [
    (lambda p: None, "does not exist"),
    (lambda p: (p.mkdir(), (p / "train.tsv").write_text("sentence\tlabel\nx\t1\n")), "has no dev.tsv"),
    (lambda p: (p.mkdir(), (p / "train.tsv").write_text(""), (p / "dev.tsv").write_text("")), "is empty"),
    (lambda p: (p.mkdir(), (p / "train.tsv").write_text("text\tlabel\nx\t1\n"),
                (p / "dev.tsv").write_text("text\tlabel\nx\t1\n")), "column 'sentence' is missing"),
    (lambda p: (p.mkdir(), (p / "train.tsv").write_text("sentence\tlabel\nx\t5\n"),
                (p / "dev.tsv").write_text("sentence\tlabel\nx\t1\n")), "outside the 2 classes"),
])
def test_bad_data(tmp_path, setup, match):
    root = tmp_path / "d"
    setup(root)
    with pytest.raises(DataError, match=match):
        load_splits(get_task("sst2"), str(root))


def test_mixed_label_types(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"t": "a", "y": 1}\n{"t": "b", "y": "pos"}\n')
    (tmp_path / "dev.jsonl").write_text('{"t": "a", "y": 1}\n')
    with pytest.raises(DataError, match="mix"):
        load_splits(None, str(tmp_path), text_columns=("t",), label_column="y")


def test_loader_pads_dynamically(tmp_path):
    tok = factories.tiny_tokenizer(tmp_path)
    s = load_splits(get_task("sst2"), str(factories.write_sst2_like(tmp_path / "d", n_train=8, n_dev=4)))
    batch = next(iter(make_loader(tokenize(s.train, tok, 64), tok, 4, shuffle=False)))
    assert batch["input_ids"].shape[1] == max(int(m.sum()) for m in batch["attention_mask"])
    assert batch["labels"].shape == (4,)


@factories.needs_shared("MRPC", "SST-2")
def test_real_glue_files():
    mrpc = load_splits(get_task("mrpc"), str(SHARED / "MRPC"))
    assert (len(mrpc.train), len(mrpc.dev)) == (3668, 408)
    assert sum(mrpc.dev["label"]) == 279
    sst2 = load_splits(get_task("sst2"), str(SHARED / "SST-2"))
    assert (len(sst2.train), len(sst2.dev)) == (67349, 872)
