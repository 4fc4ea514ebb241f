"""The families at the command line: every family has teacher aliases for its common checkpoints (offline they fail
with the usual one-line error), an unsupported family (ALBERT) ends ``distill run`` with one line naming the
supported ones and writes nothing, and the README's families table is ``features_markdown()`` exactly."""

from __future__ import annotations

import re
from pathlib import Path

import factories
import pytest
from family_factories import FAMILY_NAMES

from distill.cli import main
from distill.core.families import FAMILIES, features_markdown

README = Path(__file__).parents[2] / "README.md"
SUPPORTED = "bert, deberta-v2, distilbert, electra, modernbert, roberta, xlm-roberta"
# alias -> (Hub id, the model type its config.json names)
FAMILY_ALIASES = {
    "bert-base": ("google-bert/bert-base-uncased", "bert"),
    "roberta-base": ("FacebookAI/roberta-base", "roberta"),
    "roberta-large": ("FacebookAI/roberta-large", "roberta"),
    "distilroberta": ("distilbert/distilroberta-base", "roberta"),
    "xlm-roberta-base": ("FacebookAI/xlm-roberta-base", "xlm-roberta"),
    "xlm-roberta-large": ("FacebookAI/xlm-roberta-large", "xlm-roberta"),
    "electra-small": ("google/electra-small-discriminator", "electra"),
    "electra-base": ("google/electra-base-discriminator", "electra"),
    "electra-large": ("google/electra-large-discriminator", "electra"),
    "distilbert": ("distilbert/distilbert-base-uncased", "distilbert"),
    "deberta-v3-xsmall": ("microsoft/deberta-v3-xsmall", "deberta-v2"),
    "deberta-v3-small": ("microsoft/deberta-v3-small", "deberta-v2"),
    "deberta-v3-base": ("microsoft/deberta-v3-base", "deberta-v2"),
    "deberta-v3-large": ("microsoft/deberta-v3-large", "deberta-v2"),
    "mdeberta-v3-base": ("microsoft/mdeberta-v3-base", "deberta-v2"),
    "modernbert-base": ("answerdotai/ModernBERT-base", "modernbert"),
    "modernbert-large": ("answerdotai/ModernBERT-large", "modernbert"),
}


def _run(tmp_path: Path, teacher: str, *extra: str) -> int:
    data = factories.write_sst2_like(tmp_path / "d", n_train=16, n_dev=8)
    return main(["run", "--teacher", teacher, "--task", "sst2", "--data", str(data), "--output-dir",
                 str(tmp_path / "out"), "--epochs", "1", "--no-prune", "--no-quantize", "--latency-runs", "1",
                 "--max-seq-length", "16", "--quiet", *extra])


def test_every_family_has_aliases_for_its_common_checkpoints():
    from teachers import TEACHERS

    for alias, (hub_id, _) in FAMILY_ALIASES.items():
        assert TEACHERS.get(alias) == hub_id, alias
    assert {family for _, family in FAMILY_ALIASES.values()} == set(FAMILY_NAMES) == {
        name for name, family in FAMILIES.items() if not family.causal}


@pytest.mark.parametrize("alias", ["xlm-roberta-base", "electra-base", "deberta-v3-base", "modernbert-base"])
def test_a_family_alias_offline_is_the_usual_one_line_error(alias, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # never cached
    assert _run(tmp_path, alias, "--offline") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"cannot load the config of '{FAMILY_ALIASES[alias][0]}'" in err
    assert "pass a local model directory" in err
    assert not (tmp_path / "out").exists(), "nothing written"


@pytest.fixture
def albert_teacher(tmp_path) -> Path:
    """A tiny ALBERT (its layers share one set of weights) with a WordPiece tokenizer: enough to be refused."""
    import torch
    from transformers import AlbertConfig, AlbertForSequenceClassification

    torch.manual_seed(0)
    tok = factories.tiny_tokenizer(tmp_path)
    config = AlbertConfig(vocab_size=len(tok), embedding_size=16, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    root = tmp_path / "albert"
    AlbertForSequenceClassification(config).save_pretrained(root)
    tok.save_pretrained(root)
    return root


@pytest.mark.parametrize("extra", [[], ["--student-family", "bert"], ["--init", "random"]])
def test_an_albert_teacher_ends_the_run_with_one_line_naming_the_supported_families(albert_teacher, tmp_path,
                                                                                    capsys, extra):
    assert _run(tmp_path, str(albert_teacher), *extra) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'albert'" in err and SUPPORTED in err, err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_an_unsupported_student_family_is_one_line(tmp_path, capsys):
    teacher = factories.save_teacher(tmp_path / "t", tmp_path)
    assert _run(tmp_path, str(teacher), "--student-family", "albert") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'albert'" in err and SUPPORTED in err, err
    assert not (tmp_path / "out").exists()


def _readme_table() -> str:
    text = README.read_text()
    found = re.search(r"<!-- families table: begin[^\n]*-->\n(.*?)<!-- families table: end -->", text, re.S)
    assert found, "README.md has no generated families table"
    return found.group(1)


def test_readme_families_table_is_generated_from_the_entries():
    """Regenerate with ``python -c "from distill.core.families import features_markdown as f; print(f(), end='')"``
    and paste between the README's markers."""
    assert _readme_table() == features_markdown()


def test_readme_names_what_is_not_supported_and_the_student_family_flag():
    text = README.read_text()
    section = text[text.index("## Model families"):]
    section = section[:section.index("\n## ", 1)]
    assert "albert" in section.lower() and "--student-family" in section
