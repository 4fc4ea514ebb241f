"""Token classification (CoNLL-2003 NER): IOB1 → IOB2, word-piece alignment, token KL, entity F1, end to end."""

import json
import math
import random
from pathlib import Path

import factories
import numpy as np
import pytest
import torch

from distill.cli import main
from distill.core.errors import DataError
from distill.data import load_splits, make_loader, tokenize
from distill.data.batching import TokenPadCollator
from distill.data.tasks import CONLL2003_TAGS, get_task
from distill.data.tokens import align_labels, iob1_to_iob2, read_conll, word_predictions
from distill.evaluate.predict import compute_metrics, load_metric, predict
from distill.objective.losses import LOSSES, token_ce, token_kl
from distill.objective.objective import DistillConfig, Objective

REAL = factories.SHARED_DATA / "conll2003"
PER, LOC, ORG = ["john", "mary", "smith"], ["paris", "london"], ["acme", "globex"]
FILLER = ["the", "a", "said", "in", "visited", "and", "today", "."]
PIECES = ["glob", "##ex"]  # "globex" is not in the vocabulary: it becomes two word pieces


def ner_tokenizer():
    return factories.tokenizer_from_words(factories.SPECIAL + PER + LOC + ["acme"] + FILLER + PIECES)


def ner_sentence(rng: random.Random) -> list[tuple[str, str]]:
    """Words with IOB1 tags; entities (one or two words of one type) are separated by untagged words, so the
    tags follow from the words."""
    out: list[tuple[str, str]] = []
    for _ in range(rng.randint(1, 3)):
        out.append((rng.choice(FILLER), "O"))
        kind = rng.choice(["PER", "LOC", "ORG"])
        words = {"PER": PER, "LOC": LOC, "ORG": ORG}[kind]
        out += [(rng.choice(words), f"I-{kind}") for _ in range(rng.randint(1, 2))]
    return out


def write_conll(root: Path, n_train: int = 48, n_dev: int = 16, seed: int = 0) -> Path:
    """A CoNLL-2003-style directory (eng.train, eng.testa: ``token POS chunk NER``, IOB1, -DOCSTART- lines)."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in (("eng.train", n_train), ("eng.testa", n_dev)):
        lines = ["-DOCSTART- -X- O O", ""]
        for i in range(n):
            lines += [f"{w} NN I-NP {t}" for w, t in ner_sentence(rng)] + [""]
            if i % 8 == 7:
                lines += ["-DOCSTART- -X- O O", ""]
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def save_ner_teacher(root: Path) -> Path:
    """A tiny bare BERT encoder with the NER tokenizer: the run fine-tunes a token head on it first."""
    from transformers import BertModel

    torch.manual_seed(0)
    tok = ner_tokenizer()
    BertModel(factories.tiny_bert_config(vocab=len(tok), hidden=32, ffn=64)).save_pretrained(root)
    tok.save_pretrained(root)
    return root


# ---- pure pieces -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("iob1,iob2", [
    (["I-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),
    (["I-PER", "B-PER", "I-PER"], ["B-PER", "B-PER", "I-PER"]),      # two adjacent persons
    (["I-ORG", "I-LOC", "I-LOC"], ["B-ORG", "B-LOC", "I-LOC"]),      # type change starts an entity
    (["B-MISC", "I-MISC", "O"], ["B-MISC", "I-MISC", "O"]),          # IOB2 input is unchanged
    ([], []),
])
def test_iob1_to_iob2(iob1, iob2):
    assert iob1_to_iob2(iob1) == iob2
    assert iob1_to_iob2(iob2) == iob2


def test_read_conll_skips_docstart_and_converts(tmp_path):
    path = tmp_path / "eng.train"
    path.write_text("-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\nGerman JJ I-NP I-MISC\n\n"
                    "Peter NNP I-NP I-PER\nBlackburn NNP I-NP I-PER\n\n-DOCSTART- -X- -X- O\n\n")
    assert read_conll(path) == [(["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"]),
                                (["Peter", "Blackburn"], ["B-PER", "I-PER"])]


def test_alignment_first_piece_only():
    tok = ner_tokenizer()
    enc = tok([["john", "visited", "paris", "globex"]], is_split_into_words=True)
    pieces = tok.convert_ids_to_tokens(enc["input_ids"][0])
    assert pieces == ["[CLS]", "john", "visited", "paris", "glob", "##ex", "[SEP]"]
    assert align_labels(enc.word_ids(0), [1, 0, 5, 3]) == [-100, 1, 0, 5, 3, -100, -100]


def test_collator_pads_labels_like_transformers():
    from transformers import DataCollatorForTokenClassification

    tok = ner_tokenizer()
    rows = [{"input_ids": [2, 5, 6, 3], "token_type_ids": [0] * 4, "attention_mask": [1] * 4,
             "labels": [-100, 1, 0, -100]},
            {"input_ids": [2, 7, 3], "token_type_ids": [0] * 3, "attention_mask": [1] * 3, "labels": [-100, 5, -100]}]
    ours = TokenPadCollator(tok)([dict(r) for r in rows])
    theirs = DataCollatorForTokenClassification(tok, return_tensors="pt")([dict(r) for r in rows])
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    assert ours["labels"][1].tolist() == [-100, 5, -100, -100]


def test_token_kl_closed_form():
    """Two labelled tokens, one ignored: KL(p‖q) for p = softmax([ln 3, 0]) = (3/4, 1/4), q uniform, T = 1."""
    assert LOSSES.get("token_kl") is token_kl
    student = torch.zeros(1, 3, 2)
    teacher = torch.tensor([[[math.log(3), 0.0], [0.0, 0.0], [50.0, -50.0]]])
    mask = torch.tensor([[True, True, False]])
    kl_first = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert token_kl(student, teacher, mask).item() == pytest.approx(kl_first / 2, rel=1e-5)
    # T = 2: logits halve, then the T² factor; the masked third token never counts
    p = torch.softmax(torch.tensor([math.log(3) / 2, 0.0]), 0)
    kl_t2 = float((p * (p / 0.5).log()).sum()) * 4
    assert token_kl(student, teacher, mask, temperature=2.0).item() == pytest.approx(kl_t2 / 2, rel=1e-5)
    assert token_kl(student, teacher, torch.zeros(1, 3, dtype=torch.bool)).item() == 0.0


def test_token_ce_ignores_minus_100():
    logits = torch.tensor([[[math.log(3), 0.0], [0.0, 0.0], [9.0, -9.0]]])
    labels = torch.tensor([[0, 1, -100]])
    expected = (-math.log(0.75) - math.log(0.5)) / 2
    assert token_ce(logits, labels).item() == pytest.approx(expected, rel=1e-5)
    assert token_ce(logits, torch.full((1, 3), -100)).item() == 0.0


def test_objective_uses_token_losses():
    class Out:
        def __init__(self, logits):
            self.logits, self.hidden_states = logits, None

    student, teacher = torch.zeros(1, 3, 2), torch.tensor([[[math.log(3), 0.0], [0.0, 0.0], [5.0, 0.0]]])
    labels = torch.tensor([[0, 1, -100]])
    objective = Objective(DistillConfig(alpha=0.5, temperature=1.0, hidden_weight=0.0))
    total, terms = objective(Out(student), labels, Out(teacher))
    assert terms["ce"] == pytest.approx(token_ce(student, labels).item())
    assert terms["kd"] == pytest.approx(token_kl(student, teacher, labels != -100).item())
    assert total.item() == pytest.approx(0.5 * terms["ce"] + 0.5 * terms["kd"], rel=1e-5)


# ---- entity-level F1 ---------------------------------------------------------------------------------------

def _seqeval(pred, gold):
    return load_metric("seqeval_f1").compute(predictions=pred, references=gold)


def test_seqeval_exact_and_partial_spans():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    assert _seqeval(gold, gold)["f1"] == 1.0
    # the PER span is cut short (wrong), LOC right, ORG missed, one spurious MISC
    pred = [["B-PER", "O", "O", "B-LOC"], ["O", "B-MISC"]]
    s = _seqeval(pred, gold)
    assert (s["precision"], s["recall"]) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert s["f1"] == pytest.approx(1 / 3) and s["accuracy"] == pytest.approx(3 / 6)
    assert s["LOC_f1"] == 1.0 and s["PER_f1"] == 0.0 and s["ORG_f1"] == 0.0


def test_seqeval_b_i_mismatches():
    gold = [["B-PER", "I-PER", "O"]]
    # I- after O starts an entity (seqeval default / conlleval): same span as B-PER I-PER
    assert _seqeval([["I-PER", "I-PER", "O"]], gold)["f1"] == 1.0
    # type change inside a span splits it: PER(0,0) and LOC(1,1), neither equals PER(0,1)
    s = _seqeval([["B-PER", "I-LOC", "O"]], gold)
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    # B- inside a span splits it: two PER spans of one word each
    s = _seqeval([["B-PER", "B-PER", "O"]], [["B-PER", "B-PER", "O"]])
    assert s["f1"] == 1.0
    s = _seqeval([["B-PER", "I-PER", "O"]], [["B-PER", "B-PER", "O"]])
    assert (s["precision"], s["recall"]) == (0.0, 0.0)
    # no entities anywhere: 0, not an error
    assert _seqeval([["O", "O"]], [["O", "O"]])["f1"] == 0.0


def test_compute_metrics_on_padded_token_logits():
    """(N, L, C) logits with -100 labels: word-level tags are read at labelled positions only."""
    task = get_task("conll2003")
    ids = {t: i for i, t in enumerate(CONLL2003_TAGS)}
    labels = np.array([[-100, ids["B-PER"], ids["I-PER"], -100, ids["O"], -100],
                       [-100, ids["B-LOC"], -100, -100, -100, -100]])
    preds = np.array([[0, ids["B-PER"], ids["I-PER"], ids["B-ORG"], 0, 0],
                      [0, ids["B-ORG"], ids["B-LOC"], 0, 0, 0]])
    logits = np.eye(len(CONLL2003_TAGS))[preds]
    assert word_predictions(logits, labels) == [[1, 2, 0], [3]]
    scores = compute_metrics(task, logits, labels)
    assert list(scores)[:4] == ["f1", "precision", "recall", "accuracy"]
    assert scores["precision"] == 0.5 and scores["recall"] == 0.5 and scores["accuracy"] == 0.75


# ---- data, loaders, end to end ----------------------------------------------------------------------------

def test_conll_dir_and_jsonl_load(tmp_path):
    task = get_task("CoNLL-2003")
    splits = load_splits(task, str(write_conll(tmp_path / "conll")), max_train_samples=20)
    assert len(splits.train) == 20 and len(splits.dev) == 16
    assert set(splits.train.column_names) == {"tokens", "tags"}
    jsonl = tmp_path / "ner.jsonl"
    rows = [{"tokens": ["john", "visited", "paris"], "tags": ["B-PER", "O", "B-LOC"]}] * 20
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    custom = load_splits(None, str(jsonl))
    assert custom.task.is_token and custom.task.label_names == ("O", "B-LOC", "B-PER")
    assert (len(custom.train), len(custom.dev)) == (18, 2)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"tokens": ["a"], "tags": ["B-XYZ"]}) + "\n")
    with pytest.raises(DataError, match="'B-XYZ'.*not among"):
        load_splits(task, str(tmp_path / "bad.jsonl"))


def test_loader_and_predict_pad_to_one_width(tmp_path):
    from transformers import BertConfig, BertForTokenClassification

    tok = ner_tokenizer()
    splits = load_splits(get_task("conll2003"), str(write_conll(tmp_path / "conll")))
    loader = make_loader(tokenize(splits.dev, tok, 32), tok, 4, shuffle=False)
    batch = next(iter(loader))
    assert batch["labels"].shape == batch["input_ids"].shape
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    model = BertForTokenClassification(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                                  num_attention_heads=2, intermediate_size=32, num_labels=9))
    logits, labels = predict(model, loader, "cpu")
    assert logits.shape[:2] == labels.shape and logits.shape[0] == 16 and logits.shape[2] == 9
    assert (labels != -100).sum() == sum(len(t) for t in splits.dev["tags"])


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ner")
    teacher = save_ner_teacher(tmp / "teacher")
    data = write_conll(tmp / "conll", n_train=128, n_dev=32)
    out = tmp / "run"
    code = main(["run", "--teacher", str(teacher), "--student", "tiny", "--task", "conll2003", "--data", str(data),
                 "--output-dir", str(out), "--epochs", "3", "--teacher-epochs", "10", "--teacher-lr", "5e-3",
                 "--batch-size", "16", "--max-seq-length", "32", "--latency-runs", "2",
                 "--prune-heads", "0.5", "--prune-ffn", "0.5", "--quiet"])  # fixed ratios: pruned is smaller
    assert code == 0
    return out


def test_end_to_end_report(ner_run: Path):
    report = json.loads((ner_run / "report.json").read_text())
    assert report["task"] == "conll2003" and report["metric_name"] == "f1"
    stages = {s["name"]: s for s in report["stages"]}
    assert list(stages) == ["teacher", "student", "pruned", "int8"]
    assert stages["teacher"]["agreement"] == 1.0
    assert stages["teacher"]["metric"] > 0.6, "the fine-tuned teacher should learn the word → tag rule"
    for s in stages.values():
        assert 0.0 <= s["metric"] <= 1.0 and 0.0 <= s["agreement"] <= 1.0
        assert {"f1", "precision", "recall", "accuracy"} <= set(s["metrics"])
        assert s["params"] > 0 and s["size_mb"] > 0 and s["latency_ms"] > 0
    assert stages["pruned"]["params"] < stages["student"]["params"]
    n_words = sum(1 for line in (ner_run.parent / "conll" / "eng.testa").read_text().splitlines()
                  if line and not line.startswith("-DOCSTART-"))
    assert all(len(p) == n_words for p in report["predictions"].values())
    assert report["label_names"] == list(CONLL2003_TAGS)


def test_end_to_end_artifacts_are_token_classifiers(ner_run: Path):
    import onnxruntime as ort
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ner_run / "int8")
    enc = tok([["john", "visited", "paris"]], is_split_into_words=True, return_tensors="np")
    sess = ort.InferenceSession(str(ner_run / "int8" / "model.onnx"), providers=["CPUExecutionProvider"])
    int8 = sess.run(["logits"], {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs()})[0]
    assert int8.shape == (1, 5, 9)
    for stage in ("teacher", "student", "pruned"):
        model = AutoModelForTokenClassification.from_pretrained(ner_run / stage)
        assert model.config.id2label[1] == "B-PER" and model.config.label2id["I-MISC"] == 8
    assert "distill_teacher.json" in {p.name for p in (ner_run / "teacher").iterdir()}


def test_end_to_end_bundle_snippet_tags_word_pieces(ner_run: Path):
    """The INT8 README's snippet (onnxruntime + tokenizers only) prints a tag per word piece."""
    import subprocess
    import sys

    from compress.bundle import readme_snippet

    code = readme_snippet(ner_run / "int8" / "README.md").replace("John Smith visited Paris", "john visited paris")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ner_run / "int8")
    assert res.returncode == 0, res.stderr[-2000:]
    pairs = eval(res.stdout.strip())  # noqa: S307 - our own snippet's printed list of (piece, tag)
    assert [p for p, _ in pairs] == ["[CLS]", "john", "visited", "paris", "[SEP]"]
    assert all(tag in CONLL2003_TAGS for _, tag in pairs)


@pytest.mark.slow
@factories.needs_shared("conll2003/eng.train", "conll2003/eng.testa")
def test_real_conll2003_files():
    task = get_task("conll2003")
    splits = load_splits(task, str(REAL))
    assert (len(splits.train), len(splits.dev)) == (14041, 3250)
    counts = {}
    for tags in splits.train["tags"]:
        for t in tags:
            if CONLL2003_TAGS[t].startswith("B-"):
                counts[CONLL2003_TAGS[t][2:]] = counts.get(CONLL2003_TAGS[t][2:], 0) + 1
    assert counts == {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}  # the README's entity counts
    gold = [[CONLL2003_TAGS[t] for t in tags] for tags in splits.dev["tags"]]
    assert load_metric("seqeval_f1").compute(predictions=gold, references=gold)["f1"] == 1.0
