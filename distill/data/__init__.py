"""Task data: task kinds, reading train/dev splits (sentence tables, token-tagged text, the Hub), tokenizing, batching.

``kinds`` (what a task kind is: ``TaskKind`` and the ``TASK_KINDS`` registry), ``task`` (the ``Task`` record),
``splits`` (the two datasets), ``batching`` (padding, length-grouped batches, loaders), ``text`` and ``tokens``
(readers for sentence and token-classification sources), ``builtin_kinds`` (the sequence-classification,
regression and token-classification entries), ``tasks`` (the named GLUE and CoNLL tasks), ``load`` (reads and
tokenizes through ``task.kind``) and ``pairs`` (rows tokenized for two tokenizers). Imports flow in that order;
nothing here imports torch or datasets at module level.
"""

import distill.data.builtin_kinds  # noqa: F401  (registers the built-in task kinds before any Task is made)
from distill.data.batching import IGNORE_INDEX as IGNORE_INDEX
from distill.data.batching import LengthGroupedBatchSampler as LengthGroupedBatchSampler
from distill.data.batching import PadCollator as PadCollator
from distill.data.batching import TokenPadCollator as TokenPadCollator
from distill.data.batching import make_loader as make_loader
from distill.data.batching import row_lengths as row_lengths
from distill.data.kinds import TASK_KINDS as TASK_KINDS
from distill.data.kinds import TaskKind as TaskKind
from distill.data.kinds import get_kind as get_kind
from distill.data.load import load_splits as load_splits
from distill.data.load import tokenize as tokenize
from distill.data.splits import Splits as Splits
from distill.data.tasks import Task as Task
from distill.data.tasks import get_task as get_task
