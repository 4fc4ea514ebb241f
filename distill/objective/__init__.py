"""The distillation objective: pure loss functions (``losses``), the loss terms built on them (``terms``, registered
in ``LOSS_TERMS``), their settings (``config.DistillConfig``), the per-batch objective that weighs the enabled terms
and picks the output loss by task kind (``objective``), several teachers (``ensemble``), loss-weight schedules
(``schedules``) and the Q/K/V capture and eager attention some terms need (``capture``).

Import from the submodules; this package's ``__init__`` stays empty so ``distill --help`` never loads torch.
"""
