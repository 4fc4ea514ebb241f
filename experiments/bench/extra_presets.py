"""The distill CLI with extra student shapes registered as presets, to try a shape before adding it to the code.

    OMP_NUM_THREADS=1 PYTHONPATH=. python experiments/bench/extra_presets.py distil --student l4h384 ...

Used for issue 15 item 1 (experiments/README.md, "Keep the teacher's width"): ``l4h384`` is all-MiniLM-L6 with 4 of
its 6 layers and its full width, which ``--init auto`` initialises by copying the teacher's layers.
"""

import sys

import torch

from students.presets import PRESETS, StudentPreset

torch.set_num_threads(1)
PRESETS.register("l4h384", StudentPreset(4, 384, 12, 1536))
PRESETS.register("l3h384", StudentPreset(3, 384, 12, 1536))

if __name__ == "__main__":
    from distill.cli import main

    sys.exit(main(sys.argv[1:]))
