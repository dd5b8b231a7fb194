"""`uniform`: one global sparsity and one bit-width for every layer, swept over a grid.

What a user tries first by hand, and so the baseline a per-layer search has to beat. The grid
(`autocompress.space.uniform_grid`) is every sparsity any layer allows times every bit-width, swept from least
to most compressed, then again. Layers that do not allow the global value take their closest allowed one below
it (or the smallest).
"""

from __future__ import annotations

from autocompress.space import Space, uniform_grid
from autocompress.strategies._base import Controller, Outcome, Proposal


class UniformController(Controller):
    name = "uniform"
    description = "one global sparsity x bit-width for all layers, swept over a grid (no knobs)"

    def __init__(self, space: Space, seed: int = 0) -> None:
        super().__init__(space, seed)
        self._grid = uniform_grid(space.layers)

    def _ask(self, number: int) -> Proposal:
        params = self._grid[number % len(self._grid)]
        return Proposal(number, self.space.policy_from_params(params), self.full_fidelity)

    def _tell(self, number: int, outcome: Outcome) -> None:
        """A sweep does not adapt."""
