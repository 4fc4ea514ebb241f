"""Offline, deterministic test settings shared by every test."""

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

sys.path.insert(0, str(Path(__file__).parent))  # so tests can `import factories`


import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tests use tiny matrices: a second thread only adds sync cost (10-100x slower on a busy 2-core box).
    Latency measurements set their own thread count and restore this one."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
