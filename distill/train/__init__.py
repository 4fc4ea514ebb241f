"""Training: the one loop every stage runs (``loop.fit``), its checkpoints, progress tracking and teacher sharding.

Import from the submodules; this package's ``__init__`` stays empty so ``distill --help`` never loads torch.
"""
