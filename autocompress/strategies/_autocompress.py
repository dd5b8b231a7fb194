"""`autocompress`: the AutoCompress scheme (Liu et al., 2020): simulated annealing proposes per-layer channel
sparsity, ADMM pruning realises it.

The annealing is `anneal`'s (deltas normalised by their running scale, so acceptance falls with temperature)
restricted to the channel-sparsity choices; bit-widths stay at each layer's smallest choice. Proposals ask
for the ``admm`` pruning criterion, which `autocompress.compress` registers: the trial then trains the first
part of its fine-tuning by ADMM towards each layer's channel sparsity (channel-group projection, the coupled
batch norms and residual partners with it), removes the channels physically and fine-tunes the rest
(`autocompress.compress.structured_admm`); ``criterion`` in each stored policy says so.
"""

from __future__ import annotations

from dataclasses import replace

from autocompress.space import Space
from autocompress.strategies._anneal import AnnealController
from autocompress.strategies._base import Proposal


class AutoCompressController(AnnealController):
    name = "autocompress"
    description = (
        "AutoCompress: annealing over per-layer channel sparsity (bits at their minimum), realised by "
        "ADMM pruning (criterion admm); knobs as anneal"
    )
    #: the criterion every proposal asks for: ADMM training towards the channel sparsity, then removal
    criterion = "admm"

    def __init__(self, space: Space, seed: int = 0) -> None:
        super().__init__(space, seed)
        self._dims = [(layer, setting, c) for layer, setting, c in self._dims if setting == "channel_sparsity"]

    def _ask(self, number: int) -> Proposal:
        proposal = super()._ask(number)
        return replace(proposal, policy=replace(proposal.policy, criterion=self.criterion))
