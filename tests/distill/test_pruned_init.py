"""``--init teacher-pruned``: the student is the teacher cut to a preset's widths, then distilled."""

import json

import factories
import torch
from safetensors.torch import load_file

from distill.cli import main
from students import PRESETS


def test_student_pruned_from_the_teacher_has_the_preset_widths_and_is_distilled(tmp_path, capsys):
    # teacher L3/H192/A6/FFN768 (head size 32) -> preset tiny L2/H128/FFN512 with 128/32 = 4 heads
    teacher = factories.save_teacher(tmp_path / "t", tmp_path, layers=3, hidden=192, heads=6, ffn=768)
    data = factories.write_sst2_like(tmp_path / "data", n_train=48, n_dev=16)
    out = tmp_path / "run"
    assert main(["distil", "--teacher", str(teacher), "--student", "tiny", "--init", "teacher-pruned",
                 "--layer-selection", "0,2", "--task", "sst2", "--data", str(data), "--epochs", "1",
                 "--batch-size", "16", "--max-seq-length", "32", "--latency-runs", "2", "--quiet",
                 "--output-dir", str(out)]) == 0
    config = json.loads((out / "student" / "config.json").read_text())
    tiny = PRESETS.get("tiny")
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]) == \
        (tiny.layers, tiny.hidden, tiny.ffn)
    assert config["num_attention_heads"] == tiny.hidden // (192 // 6) == 4
    report = json.loads((out / "report.json").read_text())
    assert report["history"]["init_pruned"]["teacher_layers"] == [0, 2]
    assert "fresh_layers" not in report["history"]  # its layers are the teacher's: nothing to suggest
    student_history = report["history"]["student"]
    assert student_history and student_history[0]["step"] == 3 and "kd" in student_history[0]
    # it started from the teacher: the kept embeddings are a subset of the teacher's columns (before training
    # moved them), so the student's word embeddings correlate with a selection of the teacher's
    t_words = load_file(teacher / "model.safetensors")["bert.embeddings.word_embeddings.weight"]
    s_words = load_file(out / "student" / "model.safetensors")["bert.embeddings.word_embeddings.weight"]
    assert s_words.shape == (t_words.shape[0], 128)
    best = [max(torch.corrcoef(torch.stack([s_words[:, i], t_words[:, j]]))[0, 1] for j in range(192))
            for i in range(8)]
    assert min(best) > 0.9
    capsys.readouterr()
    code = main(["distil", "--teacher", str(teacher), "--student", str(out / "student"), "--init", "teacher-pruned",
                 "--task", "sst2", "--data", str(data), "--output-dir", str(tmp_path / "bad"), "--quiet"])
    assert code == 2 and "needs a preset student" in capsys.readouterr().err


def test_default_student_lr_shrinks_with_width_for_layers_trained_from_scratch():
    from distill.pipeline.stages.student import default_student_lr

    assert default_student_lr(True, 512) == default_student_lr(True, 128) == 1e-4  # layers from the teacher
    assert default_student_lr(False, 128) == 1e-3  # tiny
    assert default_student_lr(False, 256) == 5e-4
    assert default_student_lr(False, 512) == 2.5e-4  # small: 1e-3 diverged on SST-2
    assert default_student_lr(False, 64) == 1e-3  # never above 1e-3
