"""A fresh regression head starts at the mean training label (issue 15: a 2,000-row STS-B fine-tune spent its first
epoch moving the output from 0 to the label mean), for the teacher fine-tune and a preset student alike."""

import factories
import pytest
import torch

from distill.train.config import TrainConfig
from distill.train.heads import centre_regression_head, output_layer, training_label_mean


def _rows(labels):
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [[2, 5, 3]] * len(labels), "attention_mask": [[1, 1, 1]] * len(labels),
                              "labels": labels})


def _regressor(seed=0):
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(factories.tiny_bert_config(num_labels=1, problem_type="regression"))


def test_bias_is_the_mean_label():
    model = _regressor()
    loader = torch.utils.data.DataLoader(_rows([1.0, 2.0, 4.5, 4.5]), batch_size=2)
    assert training_label_mean(loader) == 3.0
    assert centre_regression_head(model, loader) == 3.0
    assert output_layer(model) is model.classifier
    assert torch.allclose(model.classifier.bias, torch.tensor([3.0]))


def test_batches_when_the_dataset_has_no_label_column():
    batches = [{"labels": torch.tensor([0.0, 1.0])}, {"labels": torch.tensor([5.0])}]
    assert training_label_mean(batches) == 2.0


def test_a_classifier_head_is_left_alone():
    from transformers import BertForSequenceClassification

    model = BertForSequenceClassification(factories.tiny_bert_config(num_labels=2))
    before = model.classifier.bias.clone()
    assert centre_regression_head(model, [{"labels": torch.tensor([0, 1])}]) is None
    assert torch.equal(model.classifier.bias, before)


@pytest.mark.parametrize("fresh", [True, False])
def test_the_teacher_fine_tune_centres_only_a_fresh_head(fresh):
    from distill.data import make_loader
    from teachers import finetune_teacher

    model, tok = _regressor(), factories.tokenizer_from_words(["a", "b"])
    loader = make_loader(_rows([4.0, 5.0, 3.0, 4.0]), tok, 4, shuffle=False)
    before = model.classifier.bias.item()
    finetune_teacher(model, loader, TrainConfig(lr=1e-9, epochs=1, device="cpu"), kind="mse", fresh_head=fresh)
    assert model.classifier.bias.item() == pytest.approx(4.0 if fresh else before, abs=1e-4)


def test_a_preset_student_starts_at_the_mean_label(tmp_path, monkeypatch):
    """``distill run`` on a regression task: the preset student's new head predicts the mean training label when
    distillation starts (the teacher's head, fine-tuned here, is centred too)."""
    from distill.cli import main
    from distill.pipeline.stages import student as stage

    seen = {}
    real_fit = stage.fit

    def spy(model, *args, **kwargs):
        seen["bias"] = float(model.classifier.bias)
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(stage, "fit", spy)
    teacher = factories.save_teacher(tmp_path / "teacher", tmp_path, with_head=False)
    data = factories.write_pairs(tmp_path / "stsb", regression=True, n_train=32, n_dev=8)
    labels = [float(line.split("\t")[-1]) for line in (data / "train.tsv").read_text().splitlines()[1:]]
    assert main(["run", "--teacher", str(teacher), "--student", "tiny", "--init", "teacher-embeddings", "--task",
                 "stsb", "--data", str(data), "--epochs", "1", "--teacher-epochs", "1", "--batch-size", "16",
                 "--max-seq-length", "24", "--no-prune", "--no-quantize", "--output-dir", str(tmp_path / "run"),
                 "--quiet"]) == 0
    assert seen["bias"] == pytest.approx(sum(labels) / len(labels), abs=1e-5)
