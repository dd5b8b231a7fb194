"""`autocompress`: the AutoCompress scheme (Liu et al., 2020): simulated annealing proposes per-layer channel
sparsity, ADMM pruning realises it.

The annealing is `anneal`'s (deltas normalised by their running scale, so acceptance falls with temperature)
restricted to the channel-sparsity choices; bit-widths stay at each layer's smallest choice. Proposals ask
for the ``admm`` pruning criterion when one is registered (`autocompress.compress.register_criterion`), and
otherwise fall back to the space's criterion: until ADMM pruning exists in `autocompress.compress`, this
strategy is annealing over sparsity with magnitude pruning, and `criterion` in each stored policy says which.
"""

from __future__ import annotations

from dataclasses import replace

from autocompress.search._anneal import AnnealController
from autocompress.search._base import Proposal
from autocompress.space import Space


class AutoCompressController(AnnealController):
    name = "autocompress"
    description = ("AutoCompress: annealing over per-layer channel sparsity (bits at their minimum), realised by "
                   "ADMM pruning when the 'admm' criterion is registered; knobs as anneal")

    def __init__(self, space: Space, seed: int = 0) -> None:
        super().__init__(space, seed)
        from autocompress.compress import CRITERIA  # torch-pruning loads only where a search runs

        self.criterion = "admm" if "admm" in CRITERIA else space.criterion
        self._dims = [(layer, setting, c) for layer, setting, c in self._dims if setting == "channel_sparsity"]

    def _ask(self, number: int) -> Proposal:
        proposal = super()._ask(number)
        return replace(proposal, policy=replace(proposal.policy, criterion=self.criterion))
