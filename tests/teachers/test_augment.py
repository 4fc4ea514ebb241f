"""TinyBERT-style augmentation: masked-LM word replacement, reproducible by seed, learned from soft targets only."""

import json

import factories
import pytest
import torch

from distill.cli import main
from distill.data import load_splits
from distill.data.tasks import get_task
from distill.objective.losses import IGNORE_INDEX, hard_label_ce, label_mse, logits_mse
from teachers.augment import augment_dataset, augment_texts, load_mlm

TEXTS = ["the movie was very good .", "a bad plot , and a boring actor", "it", "quite lovely film and story"]


@pytest.fixture(scope="module")
def mlm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mlm")
    return load_mlm(str(factories.save_mlm(tmp / "mlm", tmp)))


def test_same_seed_same_texts_other_seed_other_texts(mlm):
    first = augment_texts(TEXTS, mlm, 3, seed=7)
    assert first == augment_texts(TEXTS, mlm, 3, seed=7)
    assert first == augment_texts(TEXTS, mlm, 3, seed=7, batch_size=2)  # batching does not change the result
    assert first != augment_texts(TEXTS, mlm, 3, seed=8)
    assert [len(copies) for copies in first] == [3] * len(TEXTS)
    changed = sum(new != old for copies, old in zip(first, TEXTS, strict=True) for new in copies)
    assert changed >= len(TEXTS) * 3 // 2  # a random tiny MLM still rewrites most copies


def test_whole_words_replaced_at_about_the_mask_rate(mlm):
    vocab = set(mlm.tokenizer.get_vocab())
    for copies, old in zip(augment_texts(TEXTS, mlm, 4, seed=0), TEXTS, strict=True):
        for new in copies:
            before, after = old.split(), new.split()
            assert len(after) == len(before)  # one word replaced by one word (every piece here is a word)
            assert sum(a != b for a, b in zip(before, after, strict=True)) <= max(1, round(0.15 * len(before)))
            replaced = [b for a, b in zip(before, after, strict=True) if a != b]
            assert all(w in vocab and w not in mlm.tokenizer.all_special_tokens for w in replaced)
            punct = [(i, w) for i, w in enumerate(before) if not w.isalnum()]
            assert all(after[i] == w for i, w in punct)  # punctuation is never chosen
    many = augment_texts(TEXTS[1:2], mlm, 1, seed=0, mask_prob=0.5)[0][0]
    assert sum(a != b for a, b in zip(TEXTS[1].split(), many.split(), strict=True)) >= 2


def test_augmented_rows_are_unlabelled_and_pairs_are_both_rewritten(mlm, tmp_path):
    splits = load_splits(get_task("mrpc"), str(factories.write_pairs(tmp_path / "p", n_train=6, n_dev=2)))
    rows = augment_dataset(splits.train, mlm, 2, seed=1)
    assert len(rows) == 6 * 3 and rows.column_names == splits.train.column_names
    assert rows["label"][:6] == splits.train["label"] and set(rows["label"][6:]) == {IGNORE_INDEX}
    assert rows["text"][:6] == splits.train["text"]
    assert rows["text"][6:] != [t for t in splits.train["text"] for _ in range(2)]
    assert rows["text_pair"][6:] != [t for t in splits.train["text_pair"] for _ in range(2)]
    stsb = load_splits(get_task("stsb"), str(factories.write_pairs(tmp_path / "s", regression=True)))
    scored = augment_dataset(stsb.train, mlm, 1)  # regression: score -100, the teacher's score is their target
    assert scored["label"][:len(stsb.train)] == stsb.train["label"]
    assert set(scored["label"][len(stsb.train):]) == {float(IGNORE_INDEX)}


def test_hard_label_ce_skips_unlabelled_rows():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [5.0, -5.0]])
    labels = torch.tensor([0, IGNORE_INDEX, 1])
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]])
    torch.testing.assert_close(hard_label_ce(logits, labels), expected)
    none = hard_label_ce(logits, torch.full((3,), IGNORE_INDEX))
    assert float(none) == 0.0  # a batch of augmented rows only: 0, not NaN


def test_label_mse_skips_unlabelled_rows():
    scores, gold = torch.tensor([[1.0], [4.0], [2.0]]), torch.tensor([0.5, float(IGNORE_INDEX), 3.0])
    torch.testing.assert_close(label_mse(scores, gold), torch.tensor((0.25 + 1.0) / 2))
    torch.testing.assert_close(label_mse(scores, torch.tensor([0.5, 4.5, 3.0])), logits_mse(scores, torch.tensor(
        [0.5, 4.5, 3.0])))  # every row labelled: plain MSE
    assert float(label_mse(scores, torch.full((3,), float(IGNORE_INDEX)))) == 0.0


def test_only_checkpoints_with_an_mlm_head_qualify(tmp_path):
    assert load_mlm(str(factories.save_teacher(tmp_path / "cls", tmp_path))) is None
    assert load_mlm(str(tmp_path / "nowhere")) is None


def test_cli_augments_with_the_teachers_own_mlm_head(tmp_path, capsys):
    teacher = factories.save_mlm(tmp_path / "t", tmp_path)  # a BertForMaskedLM checkpoint: fine-tuned, and its head
    data = factories.write_sst2_like(tmp_path / "data", n_train=32, n_dev=8)
    common = ["--student", "tiny", "--task", "sst2", "--data", str(data), "--epochs", "1", "--teacher-epochs", "1",
              "--batch-size", "16", "--max-seq-length", "32", "--latency-runs", "2", "--quiet"]
    assert main(["distil", "--teacher", str(teacher), "--augment", "2", "--output-dir", str(tmp_path / "a"),
                 *common]) == 0
    history = json.loads((tmp_path / "a" / "report.json").read_text())["history"]
    assert history["augment"] == {"per_example": 2, "rows": 64, "mlm": str(teacher), "method": "mlm"}
    assert history["student"][0]["step"] == 6  # 96 rows in batches of 16
    assert history["teacher"][0]["step"] == 2  # the teacher was fine-tuned on the 32 labelled rows only
    # --augment-mlm must name a masked LM: a one-line error, nothing written
    classifier = factories.save_teacher(tmp_path / "cls", tmp_path)
    capsys.readouterr()
    code = main(["distil", "--teacher", str(teacher), "--augment", "1", "--augment-mlm", str(classifier),
                 "--output-dir", str(tmp_path / "b"), *common])
    assert code == 2 and "no trained masked-LM head" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_cli_augments_a_regression_task_with_embedding_neighbours_when_the_teacher_has_no_mlm(tmp_path, capsys):
    """A classifier teacher (no MLM head) on STS-B-style pairs: the rows are rewritten from the teacher's input
    embeddings, scored -100 and learned from the teacher's scores alone."""
    teacher = factories.save_teacher(tmp_path / "t", tmp_path, num_labels=1)
    data = factories.write_pairs(tmp_path / "data", regression=True, n_train=32, n_dev=8)
    assert main(["distil", "--teacher", str(teacher), "--student", "tiny", "--task", "stsb", "--data", str(data),
                 "--epochs", "1", "--teacher-epochs", "1", "--batch-size", "16", "--max-seq-length", "32",
                 "--latency-runs", "2", "--augment", "2", "--output-dir", str(tmp_path / "a")]) == 0
    said = capsys.readouterr()
    assert "nearest neighbours in its input embeddings" in " ".join((said.out + said.err).split())  # wrapped lines
    history = json.loads((tmp_path / "a" / "report.json").read_text())["history"]
    assert history["augment"]["method"] == "neighbours" and history["augment"]["rows"] == 64
    assert "input embeddings of" in history["augment"]["mlm"]
    assert history["student"][0]["step"] == 6  # 96 rows in batches of 16
