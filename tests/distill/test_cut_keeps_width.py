"""A student cut from a teacher at least ``students.presets.MIN_CUT_HIDDEN`` wide keeps that residual width: the
run builds it, records it and distils it (issue 15 item 1: all-MiniLM-L6's H384 cut to ``mini``'s H256 lost
STS-B; keeping H384 kept 95% of the teacher, experiments/README.md)."""

import json

import factories

from distill.cli import main


def test_a_regression_student_cut_from_a_384_wide_teacher_keeps_its_width(tmp_path, capsys):
    # teacher L3/H384/A12/FFN512 (head size 32) -> preset tiny L2/H128/FFN512: layers and FFN cut, width and heads kept
    teacher = factories.save_teacher(tmp_path / "t", tmp_path, num_labels=1, layers=3, hidden=384, heads=12, ffn=512)
    data = factories.write_pairs(tmp_path / "stsb", regression=True, n_train=32, n_dev=8)
    out = tmp_path / "run"
    assert main(["distil", "--teacher", str(teacher), "--student", "tiny", "--init", "teacher-pruned",
                 "--task", "stsb", "--data", str(data), "--epochs", "1", "--batch-size", "16",
                 "--max-seq-length", "32", "--latency-runs", "1", "--quiet", "--output-dir", str(out)]) == 0
    config = json.loads((out / "student" / "config.json").read_text())
    got = (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
           config["intermediate_size"])
    assert got == (2, 384, 12, 512)
    report = json.loads((out / "report.json").read_text())
    cut = report["history"]["init_pruned"]
    assert cut["teacher_layers"] == [1, 2]
    assert report["stages"][1]["name"] == "student" and report["history"]["student"]
    capsys.readouterr()
