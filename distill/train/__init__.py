"""Training: the one loop every stage runs (``loop.fit``), its settings and result (``config``), the teachers it
learns from (``teacher``: live, sharded or cached, one protocol), its position and checkpoint state (``state``,
``checkpoint``), the optimiser (``optim``), scoring on dev (``scoring``), progress tracking and teacher sharding.

Import from the submodules; this package's ``__init__`` stays empty so ``distill --help`` never loads torch.
"""
