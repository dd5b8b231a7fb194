"""`uniform`: one global sparsity and one bit-width for every layer, swept over a grid.

What a user tries first by hand, and so the baseline a per-layer search has to beat. The grid is every
sparsity any layer allows times every bit-width, swept from least to most compressed, then again.
Layers that do not allow the global value take their closest allowed one below it (or the smallest).
"""

from __future__ import annotations

import itertools

from autocompress.search._base import Controller, Outcome, Proposal
from autocompress.space import LayerSetting, Policy


def _closest_at_most(value: float, allowed: tuple[float, ...] | tuple[int, ...]) -> float:
    below = [a for a in allowed if a <= value]
    return max(below) if below else min(allowed)


class UniformController(Controller):
    name = "uniform"
    description = "one global sparsity x bit-width for all layers, swept over a grid (no knobs)"

    def _grid(self) -> list[tuple[float, int]]:
        sparsities = sorted({s for c in self.space.layers.values() for s in c.channel_sparsity})
        bits = sorted({b for c in self.space.layers.values() for b in c.weight_bits}, reverse=True)
        return list(itertools.product(sparsities, bits))

    def _ask(self, number: int) -> Proposal:
        grid = self._grid()
        sparsity, bits = grid[number % len(grid)]
        layers = {
            name: LayerSetting(_closest_at_most(sparsity, c.channel_sparsity),
                               int(_closest_at_most(bits, c.weight_bits)))
            for name, c in self.space.layers.items()
        }
        return Proposal(number, Policy.from_mapping(layers, self.space.criterion), self.full_fidelity)

    def _tell(self, number: int, outcome: Outcome) -> None:
        """A sweep does not adapt."""
