"""Bad input: exit code 2, one line on stderr naming the problem and the fix, no traceback, nothing written.

| case                         | expected message fragment                       |
|------------------------------|-------------------------------------------------|
| unknown teacher alias        | unknown teacher 'bert-larg' ... did you mean    |
| unknown student preset       | unknown student 'tinny' ... did you mean 'tiny' |
| unknown task                 | unknown task 'sst3'                             |
| missing data dir             | does not exist                                  |
| missing column               | column 'review' is missing                      |
| labels outside the task      | outside the 2 classes                           |
| teacher head ≠ task labels   | 3-label head but task 'sst2' has 2 labels       |
| tokenizer vocab mismatch     | different vocabulary                            |
| pickle-only teacher          | pickle                                          |
| output dir not empty         | exists and is not empty ... --overwrite         |
| output dir is a file         | is a file                                       |
| temperature ≤ 0              | --temperature 0.0 must be > 0                   |
| alpha outside [0, 1]         | --alpha 2.0 is outside [0, 1]                   |
| zero epochs                  | --epochs 0.0 must be > 0                        |
| batch size 0                 | --batch-size 0 must be ≥ 1                      |
| pruning ratio ≥ 1            | --prune-heads 1.0 is outside [0, 1)             |
| no task and no data          | no --task and no --data                         |
"""

from pathlib import Path

import factories
import pytest

from distill.cli import main


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    teacher = factories.save_teacher(tmp / "teacher", tmp)
    data = factories.write_sst2_like(tmp / "data", n_train=16, n_dev=8)
    three = factories.save_teacher(tmp / "three", tmp, num_labels=3)
    pickled = factories.save_teacher(tmp / "pickled", tmp)
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    other = tmp / "other_student"
    factories.save_teacher(other, tmp)
    factories.tokenizer_from_words(factories.SPECIAL + ["x", "y", "z"]).save_pretrained(other)
    bad_labels = tmp / "bad_labels"
    bad_labels.mkdir()
    for f in ("train.tsv", "dev.tsv"):
        (bad_labels / f).write_text("sentence\tlabel\na b\t7\n")
    jsonl = tmp / "reviews.jsonl"
    jsonl.write_text('{"text": "good", "label": 1}\n' * 20)
    busy = tmp / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    afile = tmp / "afile"
    afile.write_text("x")
    return {"teacher": str(teacher), "data": str(data), "three": str(three), "pickled": str(pickled),
            "other": str(other), "bad_labels": str(bad_labels), "jsonl": str(jsonl), "busy": str(busy),
            "afile": str(afile), "tmp": tmp}


CASES = [
    ({"--teacher": "bert-larg"}, "unknown teacher 'bert-larg'.*did you mean 'bert-large'"),
    ({"--student": "tinny"}, "unknown student 'tinny'.*did you mean 'tiny'"),
    ({"--task": "sst3"}, "unknown task 'sst3'"),
    ({"--data": "{tmp}/nowhere"}, "does not exist"),
    ({"--data": "{jsonl}", "--task": None, "--text-column": "review"}, "column 'review' is missing"),
    ({"--data": "{bad_labels}"}, "outside the 2 classes"),
    ({"--teacher": "{three}"}, "3-label head but task 'sst2' has 2 labels"),
    ({"--student": "{other}"}, "different vocabulary"),
    ({"--teacher": "{pickled}"}, "pickle"),
    ({"--output-dir": "{busy}"}, "exists and is not empty.*--overwrite"),
    ({"--output-dir": "{afile}"}, "is a file"),
    ({"--temperature": "0"}, r"--temperature 0.0 must be > 0"),
    ({"--alpha": "2"}, r"--alpha 2.0 is outside \[0, 1\]"),
    ({"--epochs": "0"}, r"--epochs 0.0 must be > 0"),
    ({"--batch-size": "0"}, "--batch-size 0 must be ≥ 1"),
    ({"--prune-heads": "1"}, r"--prune-heads 1.0 is outside \[0, 1\)"),
    ({"--task": None, "--data": None}, "no --task and no --data"),
]


@pytest.mark.parametrize("change,match", CASES, ids=[c[1].split(".*")[0][:40] for c in CASES])
def test_bad_input(env, capsys, change, match):
    import re

    args = {"--teacher": "{teacher}", "--student": "tiny", "--task": "sst2", "--data": "{data}",
            "--output-dir": "{tmp}/out"}
    args.update(change)
    argv = ["run", "--quiet"]
    for k, v in args.items():
        if v is not None:
            argv += [k, v.format(**env)]
    before = sorted(p.name for p in Path(env["tmp"]).iterdir())
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(match, err), err
    assert sorted(p.name for p in Path(env["tmp"]).iterdir()) == before, "something was written"
    assert list(Path(env["busy"]).iterdir()) == [Path(env["busy"]) / "keep.txt"]


def test_cuda_out_of_memory_is_one_line_with_the_fixes(env, capsys, monkeypatch):
    import torch
    from transformers import BertForSequenceClassification

    def boom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")

    monkeypatch.setattr(BertForSequenceClassification, "forward", boom)
    code = main(["distil", "--quiet", "--teacher", env["teacher"], "--task", "sst2", "--data", env["data"],
                 "--batch-size", "4", "--output-dir", str(env["tmp"] / "oom")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: out of GPU memory at batch size 4; use --cache-teacher, --teacher-dtype bf16, "
                          "or a smaller --batch-size"), err
