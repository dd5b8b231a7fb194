"""`netadapt`: NetAdapt's greedy layer-by-layer pruning, as ask/tell proposals.

NetAdapt proper shrinks a resource budget by a fixed amount per iteration and prunes each layer just enough to
meet it; this version reads no budget and takes fixed steps instead: one step of the space's sparsity choices
per layer and iteration, and the only resource test is "faster than the current policy".

Each iteration starts from the current policy and proposes, for every prunable layer that can go further,
the current policy with that layer pruned one step more (the smallest pruning available, which cuts
latency), evaluated with the short fine-tune (the space's first fidelity rung). When all candidates of the
iteration are back, the most accurate one that is faster than the current policy becomes the new current
policy and is proposed once more with the long fine-tune (the last rung): that is the iteration's result,
and the sequence of them traces the accuracy/latency trade-off. Iterations go on until no layer can be
pruned further, then the search restarts from the dense policy.

While an iteration waits for its last candidates and a worker is free, a random policy is proposed so no
worker idles; those trials are recorded like any other but do not steer the iteration.
"""

from __future__ import annotations

import numpy as np

from autocompress.space import Space
from autocompress.strategies._base import Controller, Outcome, Proposal


class NetAdaptController(Controller):
    name = "netadapt"
    description = (
        "NetAdapt: each iteration prunes every layer one step in turn (short fine-tune), keeps the most "
        "accurate faster candidate, then long fine-tunes it (no knobs; rungs from the space's fidelity)"
    )

    manages_fidelity = True

    def __init__(self, space: Space, seed: int = 0) -> None:
        super().__init__(space, seed)
        self._rng = np.random.default_rng(seed)
        self._sparsity = [(layer, c) for layer, s, c in space.dimensions() if s == "channel_sparsity"]
        self._bits = {layer: max(c.weight_bits) for layer, c in space.layers.items()}
        self._current = {layer: 0 for layer, _ in self._sparsity}
        self._current_speedup = 0.0
        self._queue: list[dict[str, int]] = []  # candidates of this iteration not yet asked
        self._waiting: dict[int, dict[str, int]] = {}  # asked candidates: number -> state
        self._results: list[tuple[float, float, int, dict[str, int]]] = []  # (accuracy, speedup, number, state)
        self._role: dict[int, str] = {}
        self._winner: dict[str, int] | None = None  # the last iteration's pick, to be long fine-tuned
        self._start_iteration()

    def _start_iteration(self) -> None:
        self._queue = []
        for layer, choices in self._sparsity:
            if self._current[layer] + 1 < len(choices):
                self._queue.append({**self._current, layer: self._current[layer] + 1})
        if not self._queue:  # fully pruned: start again from dense
            self._current = {layer: 0 for layer, _ in self._sparsity}
            self._current_speedup = 0.0
            self._start_iteration()

    def _policy(self, state: dict[str, int]):
        params = {f"{layer}/channel_sparsity": choices[state[layer]] for layer, choices in self._sparsity}
        params.update({f"{layer}/weight_bits": bits for layer, bits in self._bits.items()})
        return self.space.policy_from_params(params)

    def _ask(self, number: int) -> Proposal:
        short = self.space.finetune_epochs[0]
        if self._winner is not None:
            state, self._winner = self._winner, None
            self._role[number] = "winner"
            return Proposal(number, self._policy(state), self.full_fidelity)
        if self._queue:
            state = self._queue.pop(0)
            self._waiting[number] = state
            self._role[number] = "candidate"
            return Proposal(number, self._policy(state), short)
        self._role[number] = "filler"
        state = {layer: int(self._rng.integers(len(choices))) for layer, choices in self._sparsity}
        return Proposal(number, self._policy(state), short)

    def _tell(self, number: int, outcome: Outcome) -> None:
        role = self._role.pop(number)
        if role != "candidate":
            return
        state = self._waiting.pop(number)
        if outcome.state == "complete":
            self._results.append((outcome.values["accuracy"], outcome.values["speedup"], number, state))
        if self._queue or self._waiting:
            return
        faster = [r for r in self._results if r[1] > self._current_speedup] or self._results
        self._results = []
        if faster:
            _, speedup, _, best = max(faster, key=lambda r: (r[0], r[1], -r[2]))
            self._current, self._current_speedup, self._winner = best, speedup, best
        self._start_iteration()
