"""Student size presets (BERT miniatures naming, Turc et al. 2019): layers / hidden / heads / FFN."""

from __future__ import annotations

from dataclasses import dataclass

from distill.core.registry import Registry


@dataclass(frozen=True)
class StudentPreset:
    """The shape of a BERT student; vocabulary and positions come from the teacher."""

    layers: int
    hidden: int
    heads: int
    ffn: int

    def describe(self) -> str:
        return f"L{self.layers}/H{self.hidden}/A{self.heads}/FFN{self.ffn}"


# A student cut out of a teacher keeps at least this many residual (hidden) channels when the teacher has them. Measured
# on STS-B (regression, 2,000 rows) with all-MiniLM-L6 (H384): `mini` cut to H256 reached dev Pearson 0.21 of the
# teacher's 0.80, and a linear probe on its features before training only 0.05, while cuts that kept the residual
# width (layers, heads or FFN only) kept probes of 0.31-0.37 and a 4-layer H384 student reached 0.70 after one epoch
# (experiments/README.md, "Keep the teacher's width"). On SST-2 at 67k rows the H256 cut had matched the teacher:
# plenty of data can rebuild a narrowed residual stream, a few thousand rows cannot.
MIN_CUT_HIDDEN = 384


def cut_hidden(preset_hidden: int, teacher_hidden: int, floor: int = MIN_CUT_HIDDEN) -> int:
    """The residual width of a student cut out of a teacher: the preset's, raised to ``floor`` when the teacher is
    at least that wide (a narrower teacher is cut as the preset says). Depends on widths only, never on the task."""
    return max(preset_hidden, floor) if teacher_hidden >= floor else preset_hidden


PRESETS: Registry[StudentPreset] = Registry("student preset")
PRESETS.register("tiny", StudentPreset(2, 128, 2, 512))
PRESETS.register("mini", StudentPreset(4, 256, 4, 1024))
PRESETS.register("small", StudentPreset(4, 512, 8, 2048))
PRESETS.register("medium", StudentPreset(8, 512, 8, 2048))
