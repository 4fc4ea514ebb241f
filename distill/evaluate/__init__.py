"""Evaluation: predictions and task metrics through ``evaluate`` (``predict``, offline metric scripts in
``metrics/``), comparison with the teacher (``agreement``) and per-stage scores (``scoring``)."""
