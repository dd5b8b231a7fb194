"""`anneal`: simulated annealing over the per-layer choices.

Each proposal is a neighbour of the current state: ``neighbours`` settings, each moved one step along its
ordered choices. A better outcome is always accepted; a worse one with probability
``exp(delta / (T * scale))``, where ``scale`` is the running mean of |delta| seen so far. Normalising by that
scale is what keeps the walk from being random: NNI's annealer compares raw accuracy deltas (~0.001) with a
temperature of order 1, so it accepts nearly every move. Here a typical worse move is accepted with
probability about exp(-1/T), which falls as T cools by ``cooling`` after every result.

The walk starts (knob ``start``) from the unpruned, quantized state: every sparsity at its smallest choice,
every bit-width at 8 where allowed (the fastest real kernel) or else its smallest, so it begins at a fast
and accurate point and anneals towards sparsity. A random start (``start: random``, as before) too often
begins among policies whose accuracy has collapsed (MobileNetV2-like at 1 fine-tune epoch: best accuracy
0.48 over 30 trials in bench_search) and the neighbours of such a state are no better.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from autocompress.errors import UserError
from autocompress.space import Policy, Space
from autocompress.strategies._base import Controller, Outcome, Proposal, scalar_score


class AnnealController(Controller):
    name = "anneal"
    description = (
        "simulated annealing over per-layer sparsity/bits; knobs: initial_temperature (1.0), "
        "cooling (0.9 per result), neighbours (2 settings moved per step), min_temperature (0.01), "
        "start (unpruned: smallest sparsity, 8 bits | random)"
    )
    knobs = {"initial_temperature": 1.0, "cooling": 0.9, "neighbours": 2, "min_temperature": 0.01, "start": "unpruned"}

    def __init__(self, space: Space, seed: int = 0) -> None:
        super().__init__(space, seed)
        if self.options["start"] not in ("unpruned", "random"):
            raise UserError(
                f"space: strategy.{self.name}.start",
                f"{self.options['start']!r} is not a start; use 'unpruned' or 'random'",
            )
        self._rng = np.random.default_rng(seed)
        self._dims = space.dimensions()
        self.temperature = float(self.options["initial_temperature"])
        self._start: dict[str, int] | None = None  # computed at the first ask, over the final dimensions
        self._current: dict[str, int] | None = None  # choice index per "layer/setting"
        self._current_score = float("-inf")
        self._reference: dict[str, float] | None = None
        self._proposed: dict[int, dict[str, int]] = {}
        self._abs_deltas: list[float] = []
        #: (temperature, accepted) for every worse outcome, for diagnostics and tests
        self.worse_moves: list[tuple[float, bool]] = []

    def _key(self, layer: str, setting: str) -> str:
        return f"{layer}/{setting}"

    def _start_state(self) -> dict[str, int]:
        if self.options["start"] == "random":
            return {self._key(layer, s): int(self._rng.integers(len(c))) for layer, s, c in self._dims}
        state = {}
        for layer, setting, choices in self._dims:
            pick = 8 if setting.endswith("bits") and 8 in choices else min(choices)
            state[self._key(layer, setting)] = list(choices).index(pick)
        return state

    def _neighbour(self, state: dict[str, int]) -> dict[str, int]:
        moved = dict(state)
        count = min(int(self.options["neighbours"]), len(self._dims))
        for index in self._rng.choice(len(self._dims), size=count, replace=False):
            layer, setting, choices = self._dims[int(index)]
            key = self._key(layer, setting)
            step = -1 if self._rng.random() < 0.5 else 1
            if not 0 <= moved[key] + step < len(choices):
                step = -step
            moved[key] = min(max(moved[key] + step, 0), len(choices) - 1)
        return moved

    def _ask(self, number: int) -> Proposal:
        if self._current is not None:
            state = self._neighbour(self._current)
        elif self._start is not None:  # the start is still in flight, or failed
            state = self._neighbour(self._start)
        else:
            state = self._start = self._start_state()
        self._proposed[number] = state
        params: dict[str, Any] = {
            self._key(layer, s): choices[state[self._key(layer, s)]] for layer, s, choices in self._dims
        }
        return Proposal(number, self.space.policy_from_params(params), self.full_fidelity)

    def _score(self, outcome: Outcome) -> float:
        """`scalar_score` against the first complete outcome, which sets the objectives' scale."""
        if outcome.state == "complete" and self._reference is None:
            self._reference = {m: outcome.values[m] for m in self.space.objectives}
        return scalar_score(outcome, self.space.objectives, self._reference)

    def _observe(self, policy: Policy, outcome: Outcome) -> None:
        """The walk starts from the best observed trial (the temperature is left as it is)."""
        score = self._score(outcome)
        if score > self._current_score:
            self._current = {
                self._key(layer, s): list(choices).index(getattr(policy[layer], s)) for layer, s, choices in self._dims
            }
            self._current_score = score

    def _tell(self, number: int, outcome: Outcome) -> None:
        state = self._proposed.pop(number)
        score = self._score(outcome)
        if self._current is None:
            if score > float("-inf"):
                self._current, self._current_score = state, score
        else:
            delta = score - self._current_score
            if math.isfinite(delta):
                self._abs_deltas.append(abs(delta))
            if delta >= 0:
                self._current, self._current_score = state, score
            else:
                scale = (sum(self._abs_deltas) / len(self._abs_deltas)) if self._abs_deltas else 1.0
                probability = math.exp(delta / (self.temperature * (scale or 1.0))) if math.isfinite(delta) else 0.0
                accepted = bool(self._rng.random() < probability)
                self.worse_moves.append((self.temperature, accepted))
                if accepted:
                    self._current, self._current_score = state, score
        self.temperature = max(
            self.temperature * float(self.options["cooling"]), float(self.options["min_temperature"])
        )
