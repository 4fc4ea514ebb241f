"""Evaluation: predictions and task metrics through ``evaluate`` (``predict``, offline metric scripts in
``metrics/``), comparison with the teacher (``agreement``), per-stage scores (``scoring``) and the trivial
baseline (``baseline``). What each computes for a task comes from its kind (``task.kind``)."""
