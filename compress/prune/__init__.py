"""Structured pruning with torch-pruning: the settings (``config``), what to cut (``importance``), the widths a
prune leaves (``plan``, without a model; ``layout``, read from one), the cut itself (``pruner``), pruning in steps
(``schedule``), and saving/reloading pruned models (``io``). Model structure comes from ``distill.core.families``."""
