"""Structured pruning with torch-pruning: what to cut (``importance``), the cut itself (``pruner``), the widths
it leaves (``layout``), pruning in steps (``schedule``), and saving/reloading pruned models (``io``)."""
