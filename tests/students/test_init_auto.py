"""``--init auto`` picks the strongest init the preset and teacher allow (students.init.resolve_auto)."""

from __future__ import annotations

import pytest
from transformers import BertConfig, DistilBertConfig

from students import PRESETS
from students.init import cut_presets, resolve_auto
from students.presets import StudentPreset

MINILM = BertConfig(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536)


@pytest.mark.parametrize("preset, teacher, expected", [
    (PRESETS.get("mini"), MINILM, "teacher-pruned"),  # 4 of 6 layers, FFN 1024, the teacher's H384 kept
    (PRESETS.get("tiny"), MINILM, "teacher-embeddings"),  # H128 is under half the teacher's 384: cut too deep
    (StudentPreset(3, 384, 12, 1536), MINILM, "teacher-layers"),  # the teacher's widths: copy layers
    (StudentPreset(8, 384, 12, 1536), MINILM, "teacher-embeddings"),  # deeper than the teacher: cannot copy or cut
    (PRESETS.get("small"), MINILM, "teacher-embeddings"),  # H512 is wider than the teacher: embeddings lifted
    (StudentPreset(2, 200, 4, 512), MINILM, "teacher-embeddings"),  # 200 is not a multiple of the head size 32
    (PRESETS.get("tiny"), DistilBertConfig(), "teacher-embeddings"),  # no BERT-style FFN name: no pruned init
])
def test_resolve_auto(preset, teacher, expected):
    assert resolve_auto(preset, teacher) == expected


@pytest.mark.parametrize("teacher, expected", [
    (MINILM, ["mini"]),  # tiny is too narrow to cut, small and medium are wider than H384
    (BertConfig(), ["small", "medium"]),  # BERT-base (H768): mini's H256 is under half of it
    (DistilBertConfig(), ["small"]),  # widths read through its family; medium's 8 layers exceed its 6
])
def test_cut_presets_are_the_presets_auto_builds_from_the_teachers_layers(teacher, expected):
    assert cut_presets(teacher) == expected
    assert all(resolve_auto(PRESETS.get(name), teacher) in ("teacher-pruned", "teacher-layers") for name in expected)
