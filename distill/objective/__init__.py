"""The distillation objective: pure loss functions (``losses``), the per-batch objective that weighs them
(``objective``), several teachers (``ensemble``) and loss-weight schedules (``schedules``).

Import from the submodules; this package's ``__init__`` stays empty so ``distill --help`` never loads torch.
"""
