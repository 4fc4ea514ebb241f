"""Engine speed features: gradient accumulation, length-grouped batches, the teacher cache, compile, OOM errors."""

import factories
import pytest
import torch

from distill.core.dist import get_accelerator, is_main_process
from distill.core.errors import ConfigError, DistillError
from distill.data import LengthGroupedBatchSampler, load_splits, make_loader, tokenize
from distill.data.tasks import get_task
from distill.objective.objective import DistillConfig, Objective, uniform_layer_map
from distill.train.loop import TrainConfig, fit, teacher_layers_needed


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fast")
    tok = factories.tiny_tokenizer(tmp)
    splits = load_splits(get_task("sst2"), str(factories.write_sst2_like(tmp / "d", n_train=64, n_dev=8)))
    data = tokenize(splits.train, tok, 32, index=True)
    return tok, data, _bert(len(tok), 0, hidden=32, heads=4, layers=2)


def _bert(vocab, seed, **shape):
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(factories.tiny_bert_config(
        vocab=vocab, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **shape))


def _student(tok):
    return _bert(len(tok), 1, hidden=16, heads=2, ffn=32, layers=2)


def _objective(hidden_weight=0.0, **kw):
    return Objective(DistillConfig(hidden_weight=hidden_weight, **kw), student_width=16, teacher_width=32,
                     layer_map=uniform_layer_map(2, 2))


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


class _NoIdx(torch.nn.Module):
    """A student wrapper that fails if the engine forwards the ``idx`` column to it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, **inputs):
        assert "idx" not in inputs
        return self.model(**inputs)


def test_grad_accumulation_matches_the_larger_batch(setup):
    tok, data, teacher = setup
    runs = []
    for batch, accum in ((16, 1), (8, 2)):
        model = _student(tok)
        result = fit(model, _objective(), make_loader(data, tok, batch, shuffle=True, seed=0),
                     TrainConfig(lr=1e-2, epochs=2, seed=0, batch_size=batch, grad_accum_steps=accum), teacher=teacher)
        runs.append((_weights(model), result.steps))
    assert runs[0][1] == runs[1][1] == 8
    torch.testing.assert_close(runs[0][0], runs[1][0], atol=1e-5, rtol=1e-4)


def test_length_grouped_batches_repeat_per_seed_and_epoch(setup):
    tok, data, _ = setup
    lengths = [len(x) for x in data["input_ids"]]
    sampler = LengthGroupedBatchSampler(lengths, 4, seed=7, bucket_factor=4)
    first = sampler.batches()
    assert first == LengthGroupedBatchSampler(lengths, 4, seed=7, bucket_factor=4).batches()
    sampler.set_epoch(1)
    assert sampler.batches() != first
    assert sorted(i for b in first for i in b) == list(range(len(lengths))) and len(first) == len(sampler)
    from datasets import Dataset

    gen = torch.Generator().manual_seed(0)
    rows = [[2] + [5] * int(n) + [3] for n in torch.randint(1, 30, (64,), generator=gen)]
    varied = Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows], "labels": [0] * 64})

    def padding(loader):
        return sum(int((b["attention_mask"] == 0).sum()) for b in loader)

    grouped = padding(make_loader(varied, tok, 4, shuffle=True, seed=7, group_by_length=True, bucket_factor=4))
    assert grouped < padding(make_loader(varied, tok, 4, shuffle=True, seed=7)) / 3


def test_cached_teacher_trains_like_the_teacher(setup, tmp_path):
    from teachers import cache_teacher_outputs

    tok, data, teacher = setup
    objective = _objective(hidden_weight=1.0)
    cache = cache_teacher_outputs(teacher, data, tmp_path / "c", hidden_layers=teacher_layers_needed(objective),
                                  tokenizer=tok)
    runs = []
    for who in (teacher, cache):
        model = _student(tok)
        loader = make_loader(data, tok, 16, shuffle=True, seed=0, group_by_length=True)
        fit(_NoIdx(model), _objective(hidden_weight=1.0), loader, TrainConfig(lr=1e-2, epochs=2, seed=0),
            teacher=who)
        runs.append(_weights(model))
    torch.testing.assert_close(runs[0], runs[1], atol=2e-3, rtol=1e-2)  # fp16 teacher outputs
    assert cache.summary()["passes_served"] == 2
    with pytest.raises(ConfigError, match="no attention maps"):
        fit(_student(tok), _objective(attention_weight=1.0), loader, TrainConfig(epochs=1), teacher=cache)
    without_idx = make_loader(data.remove_columns("idx"), tok, 16, shuffle=False)
    with pytest.raises(DistillError, match="no 'idx' column"):
        fit(_student(tok), _objective(), without_idx, TrainConfig(epochs=1), teacher=cache)


def test_out_of_memory_names_the_batch_size_and_the_fix(setup, monkeypatch):
    tok, data, teacher = setup
    objective = _objective()

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(objective, "forward", boom)
    with pytest.raises(DistillError, match="out of GPU memory at batch size 16.*--cache-teacher.*--grad-accum"):
        fit(_student(tok), objective, make_loader(data, tok, 16, shuffle=False), TrainConfig(epochs=1),
            teacher=teacher)


def test_out_of_memory_in_the_teacher_or_on_dev_is_one_line(setup, monkeypatch):
    tok, data, teacher = setup

    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    big = _bert(len(tok), 0, hidden=32, heads=4, layers=2)
    monkeypatch.setattr(big, "forward", boom)  # the teacher's forward, as a large teacher on a small GPU
    loader = make_loader(data, tok, 8, shuffle=False)
    with pytest.raises(DistillError) as err:
        fit(_student(tok), _objective(), loader, TrainConfig(epochs=1), teacher=big)
    line = err.value.line()
    assert "\n" not in line and "out of GPU memory at batch size 8" in line
    for fix in ("--cache-teacher", "--teacher-dtype bf16", "--batch-size"):
        assert fix in line
    with pytest.raises(DistillError, match="out of GPU memory while scoring the dev set; use --cache-teacher"):
        fit(_student(tok), _objective(), loader, TrainConfig(epochs=1), teacher=teacher, evaluate=boom)


def test_compile_wraps_only_the_forward(setup, monkeypatch):
    tok, data, _ = setup
    calls = []

    def fake_compile(model, **kwargs):
        calls.append(kwargs)
        return lambda **inputs: model(**inputs)

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = _student(tok)
    keys = set(model.state_dict())
    fit(model, _objective(), make_loader(data, tok, 32, shuffle=False), TrainConfig(epochs=1, compile=True))
    assert calls == [{"dynamic": True}] and set(model.state_dict()) == keys


def test_settings_and_single_process_defaults():
    with pytest.raises(ConfigError, match="--grad-accum 0"):
        TrainConfig(grad_accum_steps=0)
    with pytest.raises(ConfigError, match="--teacher-dtype 'int4'.*bf16"):
        TrainConfig(teacher_dtype="int4")
    assert is_main_process() and get_accelerator() is None


def test_every_kind_of_teacher_becomes_a_list_of_sources(setup, tmp_path):
    from distill.train.teacher import LiveTeacher, TeacherSource, as_teachers
    from teachers import cache_teacher_outputs

    tok, data, teacher = setup
    cache = cache_teacher_outputs(teacher, data, tmp_path / "c", tokenizer=tok)
    assert as_teachers(None) == []
    (live,) = as_teachers(teacher)
    assert type(live) is LiveTeacher and live.module is teacher
    assert as_teachers(cache) == [cache] and isinstance(cache, TeacherSource)
    both = as_teachers([teacher, cache])
    assert [type(t) for t in both] == [LiveTeacher, type(cache)] and as_teachers((cache,)) == [cache]
    with pytest.raises(TypeError, match="nn.Module or a TeacherSource"):
        as_teachers(lambda batch: None)


class _FixedTeacher:
    """A TeacherSource of one's own: logits that always favour label 1 (the loop asks nothing else of it)."""

    def __init__(self):
        self.calls = 0

    def prepare(self, device, dtype):
        self.device = device

    def check(self, part):
        assert not part.needs_hidden_states

    def watch(self, stack, attentions, qkv_layer):
        return None

    def outputs(self, batch, hidden, attentions):
        from types import SimpleNamespace

        self.calls += 1
        n = len(batch["input_ids"])
        return SimpleNamespace(logits=torch.tensor([[-3.0, 3.0]] * n, device=self.device))


def test_fit_learns_from_any_teacher_source(setup):
    tok, data, _ = setup
    model, source = _student(tok), _FixedTeacher()
    result = fit(model, Objective(DistillConfig(alpha=0.0, hidden_weight=0.0)),
                 make_loader(data, tok, 16, shuffle=True, seed=0), TrainConfig(lr=1e-2, epochs=2, seed=0),
                 teacher=source)
    assert source.calls == 8 and result.history[-1]["kd"] < result.history[0]["kd"]
    batch = {k: v for k, v in next(iter(make_loader(data, tok, 16, shuffle=False))).items() if k not in ("labels",
                                                                                                         "idx")}
    assert (model(**batch).logits.argmax(-1) == 1).all()
