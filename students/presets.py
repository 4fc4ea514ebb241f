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


PRESETS: Registry[StudentPreset] = Registry("student preset")
PRESETS.register("tiny", StudentPreset(2, 128, 2, 512))
PRESETS.register("mini", StudentPreset(4, 256, 4, 1024))
PRESETS.register("small", StudentPreset(4, 512, 8, 2048))
PRESETS.register("medium", StudentPreset(8, 512, 8, 2048))
