"""The `Controller` contract: how a search strategy proposes policies and learns from results."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from autocompress.errors import UserError
from autocompress.space import LatencyTable, Policy, Space


@dataclass(frozen=True)
class Proposal:
    """What to try next: a policy at a fidelity (fine-tune epochs). `number` is the trial number.

    ``finetune_epochs`` is the fine-tuning the trial's final weights will have had in all. A proposal with a
    ``parent`` (the number of an earlier trial of this study that kept its weights) goes on from that trial's
    fine-tuned weights, after the parent's own fine-tune, and trains only the difference: the same policy (an
    ASHA promotion), or one that prunes every layer at least as much, whose extra channels are removed from the
    parent's model (NetAdapt carrying its model forward). ``keep_weights`` asks the trial to keep its fine-tuned
    weights, for a later proposal to name it as its parent (`Controller.weights_needed` says how long).
    ``schedule_epochs``, when set, makes the trial's training a stretch of one fine-tune of that many epochs
    (`autocompress.task.FinetunePart`): ASHA sets it to its top rung, so a rung trial trains on the top rung's
    schedule and its promotion goes on along it.
    """

    number: int
    policy: Policy
    finetune_epochs: float
    parent: int | None = None
    keep_weights: bool = False
    schedule_epochs: float | None = None


@dataclass(frozen=True)
class Outcome:
    """What a trial gave back to the controller.

    ``values`` holds the trial metrics (at least the space's objectives when ``state == "complete"``);
    ``violations`` maps each named constraint to how far it is broken (> 0) or met (<= 0).
    """

    state: Literal["complete", "failed"]
    values: dict[str, float] = field(default_factory=dict)
    violations: dict[str, float] = field(default_factory=dict)

    @property
    def feasible(self) -> bool:
        return self.state == "complete" and all(v <= 0 for v in self.violations.values())

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "values": self.values, "violations": self.violations}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        return cls(data["state"], dict(data["values"]), dict(data["violations"]))


class Controller(ABC):
    """A search strategy driven by ask/tell.

    Life cycle of a trial, as seen by a controller:

    1. The loop calls `ask` whenever a worker is free. Several proposals may be in flight at once; those
       asked but not yet told are `pending` and the controller may use them (e.g. as constant liars) so it
       does not propose the same thing twice.
    2. The loop calls `tell` exactly once per proposal, in completion order, which need not be ask order.
       A trial that raised, crashed or timed out is told with ``Outcome(state="failed")``; a controller
       must not stall on failures. Outcomes carry every metric, so a controller may optimise what it needs.
    3. After every `tell` the loop stores `state_dict()` in the study. `state_dict` returns JSON-compatible
       data only (never pickle); `load_state_dict` on a fresh instance of the same class, seed and space
       restores it so that the next `ask` returns exactly what the uninterrupted controller would have. Each
       stored ask holds its proposal's `proposal_digest`, so a replay that proposes otherwise (a study resumed
       under a changed strategy) stops with an error instead of mixing two searches in one study.
    4. Before its first ask, a controller may be told trials it never asked (`observe`): a warm start from a
       finished study on the same task. They are outside the trial numbering, logged as events like asks and
       tells (so a restore replays them), and each strategy learns from them what it can (`_observe`; the
       default ignores them).
    5. A strategy that has nothing more to propose says why in `exhausted` (None while it has more). The loop
       then asks no more, lets the running trials finish and ends the session with that reason, whatever trial
       budget is left; a resumed study replays to the same state and ends at once. `ask` refuses meanwhile.

    Controllers are deterministic for a given space, seed and sequence of asks, tells and observations. The
    default state is the event log of asks, tells and observations, restored by replaying it; a strategy whose
    state is cheaper to hold directly may override both methods (and must keep the same guarantee). A strategy
    with neural weights (`amc`, `haq`) keeps them out of the JSON: replaying the log retrains them, and the state
    holds only their sha256, which a restore checks the replay reproduced.

    Subclasses implement `_ask(number)` and `_tell(number, outcome)`; ``name`` and ``description`` feed
    ``autocompress strategies``. ``knobs`` maps each option a strategy reads from the space file's
    ``strategy: {NAME: {...}}`` section to its default; `self.options` holds the values in force.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    knobs: ClassVar[dict[str, Any]] = {}
    #: True for strategies that choose fine-tune epochs themselves (they are never wrapped in ASHA)
    manages_fidelity: ClassVar[bool] = False

    def __init__(self, space: Space, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        given = space.strategy_options.get(self.name, {})
        unknown = sorted(set(given) - set(self.knobs))
        if unknown:
            allowed = ", ".join(self.knobs) or "none"
            raise UserError(
                f"space: strategy.{self.name}.{unknown[0]}", f"unknown option; {self.name} takes: {allowed}"
            )
        for key, value in given.items():
            default = self.knobs[key]
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if (
                isinstance(default, str) != isinstance(value, str)
                or (not isinstance(default, str) and not numeric)
                or (isinstance(default, int) and isinstance(value, float) and not value.is_integer())
            ):
                kind = "text" if isinstance(default, str) else "whole number" if isinstance(default, int) else "number"
                raise UserError(
                    f"space: strategy.{self.name}.{key}", f"{value!r} is not a {kind} (default {default!r})"
                )
        self.options: dict[str, Any] = {
            **self.knobs,
            **{k: v if isinstance(v, str) else type(self.knobs[k])(v) for k, v in given.items()},
        }
        self.pending: dict[int, Proposal] = {}
        self._events: list[list[Any]] = []
        self._next_number = 0

    @classmethod
    def wants_latency_table(cls, space: Space) -> bool:
        """Whether this strategy, with the knobs of `space`, steers by the study's measured `LatencyTable`: the
        study then measures it when it is created and hands it over in ``space.latency_table``."""
        return False

    @property
    def latency_table(self) -> LatencyTable:
        if self.space.latency_table is None:
            raise ValueError(
                f"{self.name} steers by the study's measured latency table and this space has none; "
                "a study created by autocompress.search measures it (autocompress.runtime.measure_latency_table)"
            )
        return self.space.latency_table

    @property
    def exhausted(self) -> str | None:
        """Why this strategy has nothing more to propose (it is done, as NetAdapt is when no layer can shrink
        further), or None while it has; by default a strategy always has more."""
        return None

    def ask(self) -> Proposal:
        if self.exhausted is not None:
            raise RuntimeError(f"{self.name} has nothing more to propose: {self.exhausted}")
        number = self._next_number
        proposal = self._ask(number)
        self._next_number += 1
        self.pending[number] = proposal
        self._events.append(["ask", number, proposal_digest(proposal)])
        return proposal

    def tell(self, number: int, outcome: Outcome) -> None:
        if number not in self.pending:
            raise ValueError(f"trial {number} is not pending (told twice, or never asked)")
        self._tell(number, outcome)
        del self.pending[number]
        self._events.append(["tell", number, outcome.to_dict()])

    def observe(self, policy: Policy, outcome: Outcome) -> None:
        """Learn from a trial run elsewhere (another study on the same task) at `learns_at` fine-tune epochs, as
        if it had been asked and told; `policy` is inside this controller's space. Only before the first ask."""
        if self._next_number:
            raise RuntimeError("observe comes before the first ask")
        self._observe(policy, outcome)
        self._events.append(["observe", policy.to_dict(), outcome.to_dict()])

    def _observe(self, policy: Policy, outcome: Outcome) -> None:  # noqa: B027 - by default a strategy learns nothing
        """What this strategy learns from an observed trial; by default nothing (random and grid strategies, and
        the ones whose state is a trajectory of their own proposals)."""

    @property
    def learns_at(self) -> float:
        """The fine-tune epochs of the outcomes this controller learns from: observed trials must have run at
        these epochs to be comparable with its own."""
        return self.full_fidelity

    @property
    def event_count(self) -> int:
        """Asks plus tells so far: the version of `state_dict`, which only ever grows."""
        return len(self._events)

    def weights_needed(self) -> set[int]:
        """Numbers of the trials whose kept weights (`Proposal.keep_weights`) a proposal may still go on from:
        the loop deletes every other trial's. By default the parents of the pending proposals (a trial re-run
        after a crash needs its parent again); a strategy that names parents later adds the ones it may name."""
        return {p.parent for p in self.pending.values() if p.parent is not None}

    def state_dict(self) -> dict[str, Any]:
        return {"controller": self.name, "seed": self.seed, "events": [list(e) for e in self._events]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._events:
            raise RuntimeError("load_state_dict needs a fresh controller")
        if state.get("controller") != self.name or state.get("seed") != self.seed:
            raise ValueError(f"state belongs to {state.get('controller')!r} seed {state.get('seed')}")
        for event in state["events"]:
            if event[0] == "ask":
                proposal = self.ask()
                if proposal.number != event[1] or event[2:] not in ([], [proposal_digest(proposal)]):
                    raise RuntimeError(
                        f"replay diverged at ask {event[1]}: this {self.name} proposes another trial than the stored "
                        "one (a study started by another version of the strategy); start a new study"
                    )
            elif event[0] == "observe":
                self.observe(Policy.from_dict(event[1]), Outcome.from_dict(event[2]))
            else:
                self.tell(event[1], Outcome.from_dict(event[2]))

    @abstractmethod
    def _ask(self, number: int) -> Proposal:
        """Propose trial `number` (inside the space)."""

    @abstractmethod
    def _tell(self, number: int, outcome: Outcome) -> None:
        """Learn from the outcome of trial `number`."""

    @property
    def full_fidelity(self) -> float:
        return self.space.finetune_epochs[-1]


def fixed_bits(space: Space, strategy: str, choice: str) -> dict[str, int]:
    """The weight bits every layer keeps under a strategy that only prunes: the narrowest each layer offers
    (`choice` ``min``) or the widest (``max``); anything else is bad input to the strategy's ``weight_bits`` knob."""
    if choice not in ("min", "max"):
        raise UserError(
            f"space: strategy.{strategy}.weight_bits",
            f"{choice!r} is not 'min' or 'max' (the bit-width every layer keeps while it prunes)",
        )
    pick = min if choice == "min" else max
    return {layer: pick(c.weight_bits) for layer, c in space.layers.items()}


def proposal_digest(proposal: Proposal) -> str:
    """A short fingerprint of what a proposal asks (policy, epochs, parent, weights kept, the schedule it is a
    stretch of when set), stored with each ask so a replay that proposes anything else is caught (asks stored
    before it have none and are checked by number)."""
    asked = [proposal.policy.to_dict(), proposal.finetune_epochs, proposal.parent, proposal.keep_weights]
    if proposal.schedule_epochs is not None:
        asked.append(proposal.schedule_epochs)
    text = json.dumps(asked, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def scalar_score(outcome: Outcome, objectives: dict[str, str], reference: dict[str, float] | None = None) -> float:
    """One number per outcome, larger is better, for strategies that need a scalar (annealing, ASHA).

    Each objective is turned to larger-is-better and divided by ``|reference[metric]|`` when a reference is
    given (so objectives of different units weigh alike), averaged, then the total constraint violation is
    subtracted so feasible outcomes outrank infeasible ones of similar quality. Failures score -inf.
    """
    if outcome.state != "complete":
        return float("-inf")
    total = 0.0
    for metric, direction in objectives.items():
        value = outcome.values[metric] / ((abs(reference[metric]) or 1.0) if reference else 1.0)
        total += value if direction == "max" else -value
    return total / len(objectives) - sum(max(0.0, v) for v in outcome.violations.values())
