"""`netadapt`: NetAdapt's greedy layer-by-layer pruning, as ask/tell proposals.

As in NetAdapt, each iteration shrinks a resource budget by a fixed amount and prunes each layer just enough to
meet it. The resource is latency, read from the study's measured `LatencyTable` (each layer alone on the
study's runtimes, at each kept width): iteration i's target is the current policy's predicted latency less
``latency_step`` of the dense model's.

Each iteration starts from the current policy and proposes, for every prunable layer, the current policy with
that layer pruned to the smallest of its sparsity choices whose predicted latency meets the target (a layer
that cannot meet it alone is left out), evaluated with the short fine-tune (the space's first fidelity rung).
When all candidates of the iteration are back, the most accurate becomes the new current policy and is
proposed once more with the long fine-tune (the last rung): that is the iteration's result, and the sequence
of them traces the accuracy/latency trade-off. A space with one fine-tune rung has no longer fine-tune to give
the winner, so its candidate's trial is the result and nothing is repeated. When no layer can meet the target,
the step is halved (up to `STEP_HALVINGS` times; NetAdapt's own experiments decay it too), so the model keeps
shrinking in smaller steps. When no layer can take even the smallest, NetAdapt is done: after the last winner's
long fine-tune the strategy is `exhausted` and the study ends, whatever trial budget is left (an earlier version
restarted from the dense model and repeated its first iteration). When even the dense model cannot meet one, each
layer is proposed at its largest sparsity.

As in NetAdapt, the model is carried forward: each candidate goes on from the current policy's model, the
previous winner's short-fine-tuned weights (`Proposal.parent`), its one layer losing the channels beyond them
(chosen by the policy's criterion on those weights), and fine-tunes the short fine-tune more; the winner's long
fine-tune goes on from its candidate's weights for the rest of the last rung. So fine-tuning accumulates over
the iterations (a trial's ``finetune_epochs`` is the total its weights have had) while each trial costs one
short fine-tune. Only the first iteration's candidates, and those after a restart, start from the trained
baseline; a trial whose parent's weights are gone starts from it too (its ``parent_weights`` metric says why).

NetAdapt only prunes: every layer stays at one weight bit-width, by default the widest the space offers
(``weight_bits: max``; float where it offers 32, as in the paper). ``weight_bits: min`` keeps each layer at the
narrowest instead: NetAdapt on the int8 model a user deploys, its latency steps read from the table's int8 entries.
A bit-width whose quantizer trains (QAT, LSQ, ...) cannot carry its weights forward: the candidates then start
from the baseline (``parent_weights`` ``incompatible``).

While an iteration waits for its last candidates and a worker is free, a random policy is proposed so no
worker idles; those trials are recorded like any other but do not steer the iteration.
"""

from __future__ import annotations

import numpy as np

from autocompress.space import Space
from autocompress.strategies._base import Controller, Outcome, Proposal, fixed_bits

#: how many times an iteration halves the latency step when no layer can meet it alone, before NetAdapt is done
#: with the current model: an int8 ResNet-18's layers met a 10 % step only in the first two iterations
STEP_HALVINGS = 3


class NetAdaptController(Controller):
    name = "netadapt"
    description = (
        "NetAdapt: each iteration's latency target (from the study's measured per-layer table) is the current "
        "prediction less latency_step (0.1) of the dense model's; every layer of the last winner's fine-tuned model "
        "is pruned just enough to meet it (short fine-tune), the most accurate is carried forward and long "
        "fine-tuned (rungs from the space's fidelity); prunes only, every layer at the space's widest "
        "(weight_bits: max) or narrowest (min) bits"
    )
    knobs = {"latency_step": 0.1, "weight_bits": "max"}

    manages_fidelity = True

    def __init__(self, space: Space, seed: int = 0) -> None:
        super().__init__(space, seed)
        self._rng = np.random.default_rng(seed)
        self._sparsity = [(layer, c) for layer, s, c in space.dimensions() if s == "channel_sparsity"]
        self._bits = fixed_bits(space, self.name, self.options["weight_bits"])
        self._current = {layer: 0 for layer, _ in self._sparsity}
        self._queue: list[dict[str, int]] = []  # candidates of this iteration not yet asked
        self._waiting: dict[int, dict[str, int]] = {}  # asked candidates: number -> state
        self._results: list[tuple[float, int, dict[str, int]]] = []  # (accuracy, number, state)
        self._role: dict[int, str] = {}
        #: the trial whose fine-tuned weights hold the current policy's model, and their total fine-tune epochs;
        #: None for the trained baseline (the dense policy)
        self._parent: tuple[int, float] | None = None
        self._winner: tuple[int, float, dict[str, int]] | None = None  # the last pick (number, epochs, state)
        #: this iteration's latency target (ms, predicted by the table); None until the first ask
        self.target_ms: float | None = None
        self._done: str | None = None  # why no iteration can follow the current one

    @classmethod
    def wants_latency_table(cls, space: Space) -> bool:
        return True

    def predicted_ms(self, state: dict[str, int]) -> float:
        """The table's latency of a state (sparsity choice index per prunable layer)."""
        keep = {layer: 1.0 - choices[state[layer]] for layer, choices in self._sparsity}
        return self.latency_table.total(keep, self._bits)

    def _start_iteration(self) -> None:
        dense = {layer: 0 for layer, _ in self._sparsity}
        full_step = float(self.options["latency_step"]) * self.predicted_ms(dense)
        for halvings in range(STEP_HALVINGS + 1):
            self.target_ms = self.predicted_ms(self._current) - full_step / 2**halvings
            for layer, choices in self._sparsity:
                for index in range(self._current[layer] + 1, len(choices)):
                    state = {**self._current, layer: index}
                    if self.predicted_ms(state) <= self.target_ms:
                        self._queue.append(state)
                        break
            if self._queue:
                return
        if self._parent is not None:
            self._done = (
                f"no layer can meet even 1/{2**STEP_HALVINGS} of the latency step alone "
                f"(the model of trial {self._parent[0]} is NetAdapt's last)"
            )
            return
        self._queue = [{**dense, layer: len(choices) - 1} for layer, choices in self._sparsity if len(choices) > 1]

    @property
    def exhausted(self) -> str | None:
        """Done once no layer can take even the smallest step and the last winner has had its long fine-tune."""
        return self._done if self._winner is None else None

    def _policy(self, state: dict[str, int]):
        params = {f"{layer}/channel_sparsity": choices[state[layer]] for layer, choices in self._sparsity}
        params.update({f"{layer}/weight_bits": bits for layer, bits in self._bits.items()})
        return self.space.policy_from_params(params)

    def _ask(self, number: int) -> Proposal:
        if self.target_ms is None:
            self._start_iteration()
        short = self.space.finetune_epochs[0]
        if self._winner is not None:
            (parent, epochs, state), self._winner = self._winner, None
            self._role[number] = "winner"
            total = round(epochs + self.full_fidelity - short, 9)  # without the float sum's trailing digits
            return Proposal(number, self._policy(state), total, parent=parent)
        if self._queue:
            state = self._queue.pop(0)
            self._waiting[number] = state
            self._role[number] = "candidate"
            current = self._parent[0] if self._parent else None
            return Proposal(number, self._policy(state), self._candidate_epochs(), parent=current, keep_weights=True)
        self._role[number] = "filler"
        state = {layer: int(self._rng.integers(len(choices))) for layer, choices in self._sparsity}
        return Proposal(number, self._policy(state), short)

    def _candidate_epochs(self) -> float:
        """The fine-tune total of this iteration's candidates: the current model's, plus the short fine-tune."""
        return round((self._parent[1] if self._parent else 0.0) + self.space.finetune_epochs[0], 9)

    def weights_needed(self) -> set[int]:
        """The current model's trial (the next candidates go on from it) and this iteration's finished candidates
        (one of them will be the next); once NetAdapt is done (its last winner's long fine-tune asked), only what
        its pending trials go on from."""
        if self.exhausted is not None:
            return super().weights_needed()
        told = {number for _, number, _ in self._results}
        return told | ({self._parent[0]} if self._parent else set()) | super().weights_needed()

    def _tell(self, number: int, outcome: Outcome) -> None:
        role = self._role.pop(number)
        if role != "candidate":
            return
        state = self._waiting.pop(number)
        if outcome.state == "complete":
            self._results.append((outcome.values["accuracy"], number, state))
        if self._queue or self._waiting:
            return
        if self._results:  # every candidate met the target: the most accurate one wins
            _, winner, best = max(self._results, key=lambda r: (r[0], -r[1]))
            epochs = self._candidate_epochs()
            self._current, self._parent = best, (winner, epochs)
            self._winner = (winner, epochs, best) if len(self.space.finetune_epochs) > 1 else None
        self._results = []
        self._start_iteration()
