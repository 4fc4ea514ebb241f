"""``distill.train.sharding``: which blocks FSDP shards, when a run shards its teacher, and that a sharded model runs,
gathers and copies back exactly (two gloo processes; the end-to-end run is in test_launch.py)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import factories
import pytest
import torch
from transformers import BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

from distill.core.errors import UnknownNameError
from distill.train.sharding import blocks, is_sharded, resolve_shard

ROOT = Path(__file__).resolve().parents[2]


def test_blocks_are_the_transformer_layers():
    bert = BertForSequenceClassification(factories.tiny_bert_config(layers=3))
    assert [type(b).__name__ for b in blocks(bert)] == ["BertEmbeddings"] + ["BertLayer"] * 3  # the big units
    distil = DistilBertForSequenceClassification(DistilBertConfig(dim=16, hidden_dim=32, n_layers=2, n_heads=2,
                                                                  vocab_size=50))
    assert [type(b).__name__ for b in blocks(distil)] == ["TransformerBlock"] * 2  # no _no_split_modules: the list

    class Plain(torch.nn.Module):  # no _no_split_modules: the longest ModuleList's items
        def __init__(self):
            super().__init__()
            self.short = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
            self.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(4)])

    plain = Plain()
    assert blocks(plain) == list(plain.layers)
    assert not is_sharded(plain)


def test_when_a_run_shards_its_teacher(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert resolve_shard("fsdp", 2) and not resolve_shard("fsdp", 1)  # one process: nothing to shard across
    assert not resolve_shard("auto", 2) and not resolve_shard("none", 2)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --use_fsdp` exports
    assert resolve_shard("auto", 2) and not resolve_shard("none", 2)
    with pytest.raises(UnknownNameError, match="teacher-shard"):
        resolve_shard("zero3", 2)


SCRIPT = textwrap.dedent('''
    import os, sys, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[1])
    import factories
    from transformers import BertForSequenceClassification
    from distill.train.sharding import full_state_dict, local_parameters, shard, unsharded_copy
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = BertForSequenceClassification(factories.tiny_bert_config(layers=2, hidden=32, heads=4, ffn=64)).eval()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(5, 99, (3, 12))
    with torch.no_grad():
        expected = model(ids).logits
    assert shard(model, torch.device("cpu")) is model and shard(model, torch.device("cpu")) is model  # once
    held, total = local_parameters(model)
    assert total == sum(v.numel() for k, v in reference.items() if "position_ids" not in k), (total,)
    assert abs(held - total / 2) < 100, (held, total)  # half each (rows split as torch.chunk does)
    with torch.inference_mode():
        got = model(ids).logits  # every process runs the same batch: the all-gathers line up
    assert torch.allclose(got, expected, atol=1e-6), (got - expected).abs().max()
    state = full_state_dict(model)
    plain = unsharded_copy(model)
    if dist.get_rank() == 0:
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)
        assert type(plain) is BertForSequenceClassification and not hasattr(plain, "_distill_shards")
        with torch.no_grad():
            assert torch.allclose(plain(ids).logits, expected, atol=1e-6)
    else:
        assert state == {} and plain is None
    dist.barrier()  # rank 1 must not tear its pairs down while rank 0 still finishes the gather
    dist.destroy_process_group()
    # one write(2) of a short line is atomic on a pipe: print's pieces from the two ranks interleaved once
    # ("okok False / False")
    os.write(1, f"ok {dist.is_initialized()}\\n".encode())
    # checked; skip interpreter finalization, where gloo's worker threads still holding tensors can abort
    # ("terminate called without an active exception", seen once under CI load; pytorch/pytorch#179291)
    os._exit(0)
''')


def test_a_sharded_model_runs_gathers_and_copies_back_exactly(tmp_path):
    script = tmp_path / "shard_check.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), str(ROOT / "tests")],
                         capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-1000:] + res.stderr[-3000:]
    assert res.stdout.count("ok False") == 2


def test_one_process_with_fsdp_says_it_holds_the_whole_teacher(tmp_path, capsys):
    from distill.cli import main

    data = factories.write_sst2_like(tmp_path / "data", n_train=24, n_dev=8)
    teacher = factories.save_teacher(tmp_path / "teacher", tmp_path)
    assert main(["run", "--teacher", str(teacher), "--student", "tiny", "--task", "sst2", "--data", str(data),
                 "--epochs", "1", "--no-prune", "--no-quantize", "--latency-runs", "1", "--teacher-shard", "fsdp",
                 "--output-dir", str(tmp_path / "out")]) == 0
    text = " ".join(capsys.readouterr().err.split())
    assert "--teacher-shard fsdp needs several processes" in text
