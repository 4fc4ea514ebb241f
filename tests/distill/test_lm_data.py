"""Raw text for causal LMs: documents per format, EOS packing, blocks, files, and the one-line errors."""

import json

import pytest
from lm_factories import EOS, sentences, tiny_lm_tokenizer, write_wikitext_like

from distill.core.errors import ConfigError, DataError, ModelError
from distill.data.lm import (
    IGNORE_INDEX,
    check_block_size,
    find_lm_files,
    lm_dataset,
    load_lm_splits,
    pack_blocks,
    read_documents,
    split_paragraphs,
    split_wikitext,
    token_stream,
)


@pytest.fixture(scope="module")
def tok():
    return tiny_lm_tokenizer()


def test_wikitext_articles_split_at_top_level_headings_only(tmp_path):
    path = write_wikitext_like(tmp_path / "wiki.valid.raw", articles=3)
    text = path.read_text()
    docs = read_documents(path)
    assert len(docs) == 3
    assert [d.split("\n")[0] for d in docs] == [" = Article 0 = ", " = Article 1 = ", " = Article 2 = "]
    assert all("= = Section" in d for d in docs)  # sections stay inside their article
    assert "".join(split_wikitext(text)) == text[len(" \n"):]  # lossless apart from the leading blank line


def test_blank_lines_separate_documents_in_plain_text(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text("first doc line one\nline two\n\n\n  second doc  \n \nthird\n")
    assert read_documents(path) == ["first doc line one\nline two", "second doc", "third"]
    assert split_paragraphs("one\r\n\r\ntwo") == ["one", "two"]


def test_jsonl_rows_are_documents(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["a b", "", "c d e"])) + "\n")
    assert read_documents(path) == ["a b", "c d e"]
    path.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataError, match="no 'text' field"):
        read_documents(path)
    assert read_documents(path, text_field="body") == ["x"]
    path.write_text("{not json\n")
    with pytest.raises(DataError, match="line 1"):
        read_documents(path)


def test_packing_puts_eos_between_documents_and_cuts_full_blocks():
    docs = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    cols = pack_blocks(docs, 4, eos_id=0)
    assert cols["input_ids"] == [[5, 6, 7, 0], [8, 9, 0, 10], [11, 12, 13, 0]]
    assert cols["labels"] == cols["input_ids"]
    assert all(m == [1, 1, 1, 1] for m in cols["attention_mask"])
    tail = pack_blocks(docs, 5, eos_id=0, drop_last=False, pad_id=99)
    assert tail["input_ids"] == [[5, 6, 7, 0, 8], [9, 0, 10, 11, 12], [13, 0, 99, 99, 99]]
    assert tail["labels"][-1] == [13, 0, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert tail["attention_mask"][-1] == [1, 1, 0, 0, 0]


def test_split_mode_never_lets_a_block_cross_a_document():
    cols = pack_blocks([[5, 6, 7], [8, 9, 10, 11, 12]], 4, eos_id=0, boundaries="split")
    assert cols["input_ids"] == [[5, 6, 7, 0], [8, 9, 10, 11], [12, 0, 0, 0]]
    assert cols["attention_mask"][2] == [1, 1, 0, 0]
    assert cols["labels"][2] == [12, 0, IGNORE_INDEX, IGNORE_INDEX]
    with pytest.raises(ConfigError, match="boundary"):
        pack_blocks([[1]], 4, eos_id=0, boundaries="overlap")


def test_token_stream_adds_no_bos_and_ends_documents_with_eos(tok):
    stream = token_stream(["the cat", "a dog"], tok)
    eos = tok.convert_tokens_to_ids(EOS)
    assert stream.count(eos) == 2 and stream[-1] == eos
    assert stream[0] != eos  # no BOS in front of raw text
    assert token_stream(["the cat"], tok, eos=False) == tok("the cat", add_special_tokens=False)["input_ids"]


def test_lm_dataset_has_causal_lm_columns(tok):
    ds = lm_dataset(sentences(30), tok, 16)
    assert set(ds.column_names) == {"input_ids", "attention_mask", "labels"}
    assert all(len(r) == 16 for r in ds["input_ids"])


def test_folder_files_and_the_wikitext_fallback(tmp_path, tok):
    (tmp_path / "train.txt").write_text("\n\n".join(sentences(40)))
    (tmp_path / "dev.txt").write_text("\n\n".join(sentences(20, seed=1)))
    files, note = find_lm_files(tmp_path)
    assert files == {"train": tmp_path / "train.txt", "dev": tmp_path / "dev.txt"} and note == ""
    splits = load_lm_splits(tmp_path, tok, 16)
    assert len(splits.train) > len(splits.dev) > 0 and splits.stats["train_documents"] == 40

    wiki = tmp_path / "wikitext"
    wiki.mkdir()
    write_wikitext_like(wiki / "wiki.valid.raw", seed=1)
    write_wikitext_like(wiki / "wiki.test.raw", seed=2)
    files, note = find_lm_files(wiki)
    assert files == {"train": wiki / "wiki.valid.raw", "dev": wiki / "wiki.test.raw"}
    assert "training on wiki.valid.raw" in note


def test_single_file_holds_out_every_tenth_document(tmp_path, tok):
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps({"text": s}) for s in sentences(40)) + "\n")
    splits = load_lm_splits(path, tok, 8)
    assert splits.stats["train_documents"] == 36 and splits.stats["dev_documents"] == 4
    assert "every 10th document" in splits.note


def test_bad_input_is_one_line(tmp_path, tok):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "train.txt").write_text("  \n\n")
    (empty / "dev.txt").write_text("some text here")
    with pytest.raises(DataError, match="is empty"):
        load_lm_splits(empty, tok, 8)
    with pytest.raises(DataError, match="has no train and dev"):
        find_lm_files(tmp_path)  # holds only the folder "empty"
    with pytest.raises(DataError, match="fewer than one block"):
        lm_dataset(["the cat"], tok, 64)
    with pytest.raises(DataError, match="does not exist"):
        load_lm_splits(tmp_path / "missing", tok, 8)


def test_tokenizer_without_eos_is_refused(tmp_path):
    tok = tiny_lm_tokenizer()
    tok.eos_token = None
    (tmp_path / "train.txt").write_text("a b c")
    with pytest.raises(ModelError, match="no EOS token") as err:
        load_lm_splits(tmp_path / "train.txt", tok, 8)
    assert "\n" not in err.value.line()


def test_block_size_must_fit_the_model_context():
    from lm_factories import tiny_causal_lm

    check_block_size(128, tiny_causal_lm("llama").config)
    with pytest.raises(ConfigError, match="above the model's context of 128"):
        check_block_size(256, tiny_causal_lm("llama").config)
    with pytest.raises(ConfigError, match="context of 128"):
        check_block_size(129, tiny_causal_lm("gpt2").config)  # GPT-2 calls it n_positions
    with pytest.raises(ConfigError, match="too small"):
        check_block_size(1)
