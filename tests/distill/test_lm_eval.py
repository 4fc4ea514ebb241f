"""Sliding-window perplexity and teacher agreement on tiny random Llamas, against direct computations."""

import math

import pytest
import torch
import torch.nn.functional as F
from lm_factories import tiny_causal_lm

from distill.core.errors import ConfigError
from distill.evaluate.lm import Window, compare_with_teacher, plan_windows, sliding_perplexity, teacher_agreement

VOCAB = 97


@pytest.fixture(scope="module")
def model():
    return tiny_causal_lm("llama", vocab=VOCAB, seed=0)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (70,), generator=torch.Generator().manual_seed(0)).tolist()


def _direct_ppl(model, ids, window, stride, bos_id=None):
    """Each scored token's log-probability from its own forward pass over exactly the context the protocol gives."""
    span = window - 1 if bos_id is not None else window
    nll, count, scored = 0.0, 0, set()
    begin = 0
    while True:
        end = min(begin + span, len(ids))
        for j in range(begin if bos_id is not None else begin + 1, end):
            if j in scored:
                continue
            context = ([bos_id] if bos_id is not None else []) + ids[begin:j]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([context])).logits[0, -1]
            nll -= float(F.log_softmax(logits.double(), -1)[ids[j]])
            count += 1
            scored.add(j)
        if end == len(ids):
            break
        begin += stride
    return math.exp(nll / count), count


def test_windows_score_every_token_once():
    assert plan_windows(10, 4) == [Window(0, 4, 1), Window(4, 8, 5), Window(8, 10, 9)]
    assert plan_windows(10, 4, 2) == [Window(0, 4, 1), Window(2, 6, 4), Window(4, 8, 6), Window(6, 10, 8)]
    with_bos = plan_windows(7, 4, bos=True)
    assert with_bos == [Window(0, 3, 0), Window(3, 6, 3), Window(6, 7, 6)]
    assert sum(w.end - w.first_target for w in with_bos) == 7
    with pytest.raises(ConfigError, match="stride"):
        plan_windows(10, 4, 5)
    with pytest.raises(ConfigError, match="too small"):
        plan_windows(10, 1)


@pytest.mark.parametrize("window,stride", [(16, 16), (16, 8), (16, 1), (32, 12)])
def test_sliding_perplexity_matches_a_token_by_token_computation(model, ids, window, stride):
    got = sliding_perplexity(model, ids, window=window, stride=stride, batch_size=3)
    want, count = _direct_ppl(model, ids, window, stride)
    assert got.tokens == count
    assert got.perplexity == pytest.approx(want, rel=1e-4)


def test_bos_window_scores_every_token(model, ids):
    got = sliding_perplexity(model, ids, window=16, stride=10, bos_id=0)
    want, count = _direct_ppl(model, ids, 16, 10, bos_id=0)
    assert got.tokens == count == len(ids)
    assert got.perplexity == pytest.approx(want, rel=1e-4)
    assert "BOS prepended" in got.convention
    assert "no BOS" in sliding_perplexity(model, ids, window=16).convention


def test_non_overlapping_windows_equal_the_models_own_block_loss(model, ids):
    """stride = window is the blocks protocol: HF's per-block loss, weighted by its (window − 1) tokens."""
    blocks = torch.tensor(ids[:64]).view(4, 16)
    with torch.no_grad():
        loss = model(input_ids=blocks, labels=blocks).loss
    got = sliding_perplexity(model, ids[:64], window=16, batch_size=4)
    assert got.tokens == 4 * 15
    assert got.perplexity == pytest.approx(math.exp(float(loss)), rel=1e-5)


def test_max_windows_and_callables(model, ids):
    short = sliding_perplexity(model, ids, window=16, max_windows=2)
    assert short.tokens == 30
    as_callable = sliding_perplexity(lambda input_ids: model(input_ids=input_ids).logits, ids, window=16)
    assert as_callable.perplexity == pytest.approx(sliding_perplexity(model, ids, window=16).perplexity, rel=1e-6)


def test_agreement_with_itself_is_perfect(model, ids):
    same = teacher_agreement(model, model, ids, window=16)
    assert same.top1 == 1.0 and same.kl == pytest.approx(0.0, abs=1e-6) and same.tokens == len(ids)


def test_agreement_matches_a_direct_computation(model, ids):
    student = tiny_causal_lm("llama", vocab=VOCAB, seed=1)
    got = teacher_agreement(student, model, ids, window=16, batch_size=2)
    agree, kl, n = 0, 0.0, 0
    for b in range(0, len(ids), 16):
        x = torch.tensor([ids[b:b + 16]])
        with torch.no_grad():
            s, t = student(input_ids=x).logits[0].double(), model(input_ids=x).logits[0].double()
        for i in range(x.shape[1]):
            p, q = torch.softmax(t[i], -1), torch.softmax(s[i], -1)
            agree += int(s[i].argmax() == t[i].argmax())
            kl += float((p * (p / q).log()).sum())
            n += 1
    assert got.tokens == n
    assert got.top1 == pytest.approx(agree / n)
    assert got.kl == pytest.approx(kl / n, rel=1e-4)


def test_one_pass_comparison_gives_both_perplexities_and_the_agreement(model, ids):
    student = tiny_causal_lm("llama", vocab=VOCAB, seed=2)
    both = compare_with_teacher(student, model, ids, window=16, batch_size=3)
    assert both.model.perplexity == pytest.approx(sliding_perplexity(student, ids, window=16).perplexity, rel=1e-6)
    assert both.teacher.perplexity == pytest.approx(sliding_perplexity(model, ids, window=16).perplexity, rel=1e-6)
    alone = teacher_agreement(student, model, ids, window=16)
    assert both.agreement.top1 == alone.top1 and both.agreement.kl == pytest.approx(alone.kl, rel=1e-5)
    assert both.model.tokens == 70 - 5 and both.agreement.tokens == 70
