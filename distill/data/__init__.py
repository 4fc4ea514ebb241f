"""Task data: task kinds, reading train/dev splits (sentence tables, token-tagged text, the Hub), tokenizing, batching.

``tasks`` (what a task is), ``splits`` (the two datasets), ``text`` and ``tokens`` (readers for sentence and
token-classification sources), ``load`` (picks the reader), ``batching`` (padding, length-grouped batches,
loaders) and ``pairs`` (rows tokenized for two tokenizers). Imports flow in that order; nothing here imports torch
or datasets at module level.
"""

from distill.data.batching import IGNORE_INDEX as IGNORE_INDEX
from distill.data.batching import LengthGroupedBatchSampler as LengthGroupedBatchSampler
from distill.data.batching import PadCollator as PadCollator
from distill.data.batching import TokenPadCollator as TokenPadCollator
from distill.data.batching import make_loader as make_loader
from distill.data.batching import row_lengths as row_lengths
from distill.data.load import load_splits as load_splits
from distill.data.load import tokenize as tokenize
from distill.data.splits import Splits as Splits
from distill.data.tasks import Task as Task
from distill.data.tasks import get_task as get_task
