"""The causal-lm task kind, its output loss, its metrics and baseline, teacher aliases, and its bad input (one line,
exit 2, nothing written). Tiny in-process models only (tests/lm_factories.py)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import lm_factories
import numpy as np
import pytest
import torch

from distill.cli import main

# ---- the kind --------------------------------------------------------------------------------------------------

def test_causal_lm_task_and_kind_are_registered():
    from distill.data.kinds import kind_for_config
    from distill.data.tasks import get_task

    task = get_task("causal-lm")
    assert task.kind == "causal-lm" and task.main_metric == "perplexity"
    assert task.kind.output_loss == "lm_kd" and task.kind.model_class().__name__ == "AutoModelForCausalLM"
    for arch in ("LlamaForCausalLM", "Qwen2ForCausalLM", "GPT2LMHeadModel"):
        assert kind_for_config({"architectures": [arch]}) == "causal-lm"
    assert kind_for_config({"architectures": ["BertForSequenceClassification"]}) != "causal-lm"


def test_demo_data_names_the_task_and_reads_as_documents():
    from distill.data.load import load_splits

    splits = load_splits(None, "wikitext-2-demo")
    assert splits.task.name == "causal-lm"
    assert len(splits.train) == 6 and len(splits.dev) == 3
    assert splits.train[0]["text"].startswith(" = Homarus gammarus = ")


def test_tokenize_packs_blocks_and_the_collator_stacks_them(tmp_path):
    from distill.data.lm_kind import BlockCollator, tokenize_lm
    from distill.data.load import load_splits
    from distill.data.tasks import get_task

    data = tmp_path / "data"
    data.mkdir()
    lm_factories.write_wikitext_like(data / "train.txt", articles=4, seed=1)
    lm_factories.write_wikitext_like(data / "dev.txt", articles=2, seed=2)
    tok = lm_factories.tiny_lm_tokenizer()
    splits = load_splits(get_task("causal-lm"), str(data))
    blocks = tokenize_lm(splits.train, tok, 16, index=True)
    assert set(blocks.column_names) == {"input_ids", "attention_mask", "labels", "idx"}
    assert all(len(ids) == 16 for ids in blocks["input_ids"])
    batch = BlockCollator(tok)([blocks[0], blocks[1]])
    assert batch["input_ids"].shape == (2, 16) and torch.equal(batch["labels"], batch["input_ids"])
    assert batch["idx"].tolist() == [0, 1]


def test_metrics_are_shifted_perplexity_and_agreement_per_token():
    from distill.data.lm_kind import lm_metrics, real_positions, same_token

    vocab = 5
    labels = np.array([[1, 2, 3, -100]])
    logits = np.zeros((1, 4, vocab))
    logits[0, 0, 2] = logits[0, 1, 3] = 50.0  # position i predicts token i+1 perfectly; the padded one is not scored
    out = lm_metrics(None, logits, labels)
    assert out["perplexity"] == pytest.approx(1.0) and out["token_accuracy"] == 1.0
    uniform = lm_metrics(None, np.zeros((1, 4, vocab)), labels)
    assert uniform["perplexity"] == pytest.approx(vocab)
    assert real_positions(logits, labels).shape == (3, vocab)
    assert same_token(np.array([1, 2, 3]), np.array([1, 0, 3])) == pytest.approx(2 / 3)


def test_unigram_baseline_is_the_frequency_model():
    from distill.data.lm_kind import unigram_perplexity, unigram_predictor

    train = np.array([[0, 0, 0, 1, -100]])
    # add-one counts: token 0 -> 4, token 1 -> 2, token 2 -> 1 (of 7)
    assert unigram_perplexity(train, [0, 1], 3) == pytest.approx(math.exp(-(math.log(4 / 7) + math.log(2 / 7)) / 2))
    trivial = unigram_predictor(None, train, np.zeros((2, 3)), vocab_size=3)
    assert trivial.logits.shape == (1, 1, 3) and "unigram" in trivial.description


def test_lm_output_loss_is_next_token_ce_and_masked_forward_kl():
    from distill.objective.lm_losses import forward_kl
    from distill.objective.objective import OUTPUT_LOSSES

    torch.manual_seed(0)
    loss = OUTPUT_LOSSES.get("lm_kd")
    s, t = torch.randn(2, 6, 11), torch.randn(2, 6, 11)
    labels = torch.randint(0, 11, (2, 6))
    labels[1, 4:] = -100
    ce = torch.nn.functional.cross_entropy(s[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(loss.hard(s, labels), ce)
    assert torch.allclose(loss.soft(s, t, labels, 2.0), forward_kl(s, t, labels != -100, 2.0))
    changed = t.clone()
    changed[1, 4:] += 100.0  # padding positions do not count
    assert torch.allclose(loss.soft(s, changed, labels, 2.0), loss.soft(s, t, labels, 2.0))
    for name in ("lm_reverse_kl", "lm_jsd", "lm_tv"):
        assert OUTPUT_LOSSES.get(name).soft(s, t, labels, 1.0) > 0


def test_compare_stages_runs_the_teacher_once_and_matches_one_by_one():
    from distill.evaluate.lm import compare_stages, compare_with_teacher

    teacher = lm_factories.tiny_causal_lm("llama", vocab=50, seed=0)
    student = lm_factories.tiny_causal_lm("llama", vocab=50, seed=1, num_hidden_layers=1)
    ids = list(range(1, 49)) * 2
    many = compare_stages({"a": student, "b": teacher}, teacher, ids, window=16)
    one = compare_with_teacher(student, teacher, ids, window=16)
    assert many["a"].model.perplexity == pytest.approx(one.model.perplexity)
    assert many["a"].agreement.top1 == pytest.approx(one.agreement.top1)
    assert many["b"].agreement.top1 == 1.0 and many["b"].agreement.kl == pytest.approx(0.0, abs=1e-5)


def test_teacher_aliases_and_gguf_sources():
    from teachers.lm import lm_source
    from teachers.registry import TEACHERS

    for alias in ("smollm2-135m", "smollm2-360m", "qwen2.5-0.5b", "gpt2", "smollm2-135m-pip"):
        assert alias in TEACHERS
    assert lm_source("/x/model.Q4_1.gguf") == "/x/model.Q4_1.gguf"


# ---- bad input -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    import factories

    tmp = tmp_path_factory.mktemp("lmbad")
    lm = lm_factories.save_tiny_lm(tmp / "lm", "llama")
    gpt2 = lm_factories.save_tiny_lm(tmp / "gpt2", "gpt2")
    enc = factories.save_teacher(tmp / "enc", tmp)
    sst2 = factories.write_sst2_like(tmp / "sst2", n_train=16, n_dev=8)
    text = tmp / "text"
    text.mkdir()
    lm_factories.write_wikitext_like(text / "train.txt", articles=3, seed=1)
    lm_factories.write_wikitext_like(text / "dev.txt", articles=2, seed=2)
    empty = tmp / "empty"
    empty.mkdir()
    (empty / "train.txt").write_text("   \n")
    lm_factories.write_wikitext_like(empty / "dev.txt", articles=2, seed=2)
    no_eos = tmp / "no_eos"
    lm_factories.save_tiny_lm(no_eos, "llama")
    tok_cfg = no_eos / "tokenizer_config.json"
    import json

    cfg = json.loads(tok_cfg.read_text())
    for key in ("eos_token", "bos_token", "unk_token", "pad_token"):
        cfg.pop(key, None)
    tok_cfg.write_text(json.dumps(cfg))
    (no_eos / "special_tokens_map.json").unlink(missing_ok=True)
    fake_gguf = tmp / "model.gguf"
    fake_gguf.write_bytes(b"GGUF" + b"\0" * 60)
    names = dict(lm=lm, gpt2=gpt2, enc=enc, sst2=sst2, text=text, empty=empty, no_eos=no_eos, gguf=fake_gguf, tmp=tmp)
    return {k: str(v) for k, v in names.items()}


LM_RUN = ["run", "--teacher", "{lm}", "--student", "{gpt2}", "--task", "causal-lm", "--data", "{text}",
          "--block-size", "16", "--output-dir", "{out}", "--quiet"]


def _lm(**changes: str) -> list[str]:
    argv = list(LM_RUN)
    for flag, value in changes.items():
        flag = "--" + flag.replace("_", "-")
        argv[argv.index(flag) + 1] = value
    return argv


CASES = {
    "encoder-teacher-for-causal-lm": (_lm(teacher="{enc}"), r"not a causal language model.*;"),
    "causal-lm-teacher-for-sst2": (["run", "--teacher", "{lm}", "--student", "tiny", "--task", "sst2", "--data",
                                    "{sst2}", "--output-dir", "{out}", "--quiet"],
                                   r"is a causal language model, which cannot teach.*--task causal-lm"),
    "gguf-teacher-for-sst2": (["run", "--teacher", "{gguf}", "--student", "tiny", "--task", "sst2", "--data",
                               "{sst2}", "--output-dir", "{out}", "--quiet"], r"causal language model"),
    "tokenizer-without-eos": (_lm(teacher="{no_eos}"), r"has no EOS token"),
    "block-above-context": (_lm(block_size="4096"), r"block size 4096 is above the model's context of 128"),
    "empty-text-file": (_lm(data="{empty}"), r"text file '.*train.txt' is empty"),
    "student-not-a-causal-lm": (_lm(student="{enc}"), r"not a causal language model"),
    "cache-top-k-zero": ([*LM_RUN, "--cache-teacher", "--cache-top-k", "0"], r"--cache-top-k 0 must be ≥ 1"),
    "cache-teacher-with-hidden-loss": ([*LM_RUN, "--cache-teacher", "--hidden-weight", "0.5"],
                                       r"top-k log-probabilities only.*--hidden-weight.*;.*--hidden-weight 0"),
    "cache-teacher-with-temperature-schedule": ([*LM_RUN, "--cache-teacher", "--temperature-schedule", "linear",
                                                 "--temperature-end", "1"], r"--temperature-schedule linear changes T"),
    "general-data-unsupported": ([*LM_RUN, "--general-data", "{text}"], r"--general-data is not supported for --task"),
    "unknown-preset": (_lm(student="halff"), r"unknown decoder student 'halff'"),
}


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _check(env, capsys, argv, expect):
    fill = {**env, "out": str(Path(env["tmp"]) / "out")}
    argv = [a.format(**fill) for a in argv]
    before = _snapshot(Path(env["tmp"]))
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, f"exit {code}: {err}"
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and ";" in err, err
    assert re.search(expect, err), err
    assert _snapshot(Path(env["tmp"])) == before, "something was written"


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input(env, capsys, case):
    argv, expect = CASES[case]
    _check(env, capsys, argv, expect)


def test_gguf_without_the_gguf_package(env, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    _check(env, capsys, _lm(teacher="{gguf}"), r"needs the gguf package.*pip install gguf")


def test_distill_report_rewrites_a_causal_lm_report_and_checks_gates(tmp_path, capsys):
    row = {"name": "teacher", "perplexity": 10.0, "perplexity_ratio": 1.0, "retention": 1.0, "agreement": 1.0,
           "kl": 0.0, "params": 1000, "size_mb": 1.0, "latency_ms": 5.0, "prefill_ms": 5.0,
           "decode_tokens_per_s": 20.0, "prompt_tokens": 8, "new_tokens": 4, "threads": 1, "runtime": "torch fp32",
           "path": "teacher"}
    int8 = {**row, "name": "int8", "perplexity": 20.0, "perplexity_ratio": 2.0, "retention": 0.5, "size_mb": 0.3,
            "runtime": "onnxruntime-genai"}
    report = {"kind": "causal-lm", "task": "causal-lm", "teacher": "t", "student": "half", "data": "d",
              "stages": [row, int8], "perplexity_convention": "sliding window 8", "trivial_perplexity": 50.0,
              "continuations": {"prompts": ["Hi"], "new_tokens": 4, "stages": {"teacher": [" a|b"], "int8": [" c"]}},
              "training": {}, "notes": []}
    (tmp_path / "report.json").write_text(__import__("json").dumps(report))
    assert main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "| int8 | 20.00 | 2.00 |" in md and "a\\|b" in md
    assert main(["report", str(tmp_path), "--min-retention", "0.6"]) == 1
    assert "int8 retention 0.5 < --min-retention 0.6" in capsys.readouterr().err
