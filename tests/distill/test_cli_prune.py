"""``distill prune`` on any HF model dir: plain reload, recovery from a teacher, and clear errors."""

import json

import factories
import torch

from distill.cli import main


def test_prune_bare_encoder_without_data(tmp_path):
    from transformers import AutoModel

    src = factories.save_teacher(tmp_path / "enc", tmp_path, with_head=False, hidden=32, heads=4, ffn=64)
    out = tmp_path / "out"
    assert main(["prune", str(src), "--heads", "0.5", "--ffn", "0.5", "--output-dir", str(out), "--quiet"]) == 0
    model = AutoModel.from_pretrained(out)
    assert (model.config.hidden_size, model.config.num_attention_heads, model.config.intermediate_size) == (16, 2, 32)
    report = json.loads((out / "prune_report.json").read_text())
    assert report["params_after"] < report["params_before"]
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[2, 5, 3]])).last_hidden_state.shape == (1, 3, 16)


def test_prune_layers_with_taylor_and_teacher_recovery(tmp_path):
    from transformers import AutoModelForSequenceClassification

    teacher = factories.save_teacher(tmp_path / "t", tmp_path, layers=4)
    data = factories.write_sst2_like(tmp_path / "d", n_train=32, n_dev=8)
    out = tmp_path / "out"
    assert main(["prune", str(teacher), "--layers", "2", "--ffn", "0.25", "--importance", "taylor", "--teacher",
                 str(teacher), "--task", "sst2", "--data", str(data), "--steps", "2", "--batch-size", "8",
                 "--max-seq-length", "16", "--output-dir", str(out), "--quiet"]) == 0
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_hidden_layers == 2 and model.config.intermediate_size == 48
    history = json.loads((out / "prune_report.json").read_text())["history"]
    assert [s["step"] for s in history["prune_steps"]] == [1, 2]
    assert all(0 <= s["metric"] <= 1 for s in history["prune_steps"])
