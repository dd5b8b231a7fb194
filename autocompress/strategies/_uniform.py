"""`uniform`: one global sparsity and one bit-width for every layer, swept over a grid.

What a user tries first by hand, and so the baseline a per-layer search has to beat. The grid is every
sparsity any layer allows times every bit-width, swept from least to most compressed, then again.
Layers that do not allow the global value take their closest allowed one below it (or the smallest).
"""

from __future__ import annotations

import itertools
from typing import Any

from autocompress.space import Space
from autocompress.strategies._base import Controller, Outcome, Proposal


def _closest_at_most(value: float, allowed: tuple[float, ...] | tuple[int, ...]) -> float:
    below = [a for a in allowed if a <= value]
    return max(below) if below else min(allowed)


def uniform_grid(space: Space) -> list[dict[str, Any]]:
    """The sweep's points, least to most compressed, as ``{"layer/setting": value}`` parameters."""
    sparsities = sorted({s for c in space.layers.values() for s in c.channel_sparsity})
    bits = sorted({b for c in space.layers.values() for b in c.weight_bits}, reverse=True)
    grid = []
    for sparsity, width in itertools.product(sparsities, bits):
        params: dict[str, Any] = {}
        for name, c in space.layers.items():
            params[f"{name}/channel_sparsity"] = _closest_at_most(sparsity, c.channel_sparsity)
            params[f"{name}/weight_bits"] = int(_closest_at_most(width, c.weight_bits))
        grid.append(params)
    return grid


class UniformController(Controller):
    name = "uniform"
    description = "one global sparsity x bit-width for all layers, swept over a grid (no knobs)"

    def __init__(self, space: Space, seed: int = 0) -> None:
        super().__init__(space, seed)
        self._grid = uniform_grid(space)

    def _ask(self, number: int) -> Proposal:
        params = self._grid[number % len(self._grid)]
        return Proposal(number, self.space.policy_from_params(params), self.full_fidelity)

    def _tell(self, number: int, outcome: Outcome) -> None:
        """A sweep does not adapt."""
