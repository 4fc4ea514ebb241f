"""The stages of ``distill run``, one module each: ``teacher`` (and ``--augment``), ``student``, ``prune``,
``quantize`` (and ``--qat``), ``score``; ``teaching`` holds what distillation, recovery and QAT share. Each stage
takes the run's ``Context`` and returns a typed result (``distill.pipeline.results``); ``distill.pipeline.runner``
orders them."""
