"""Asynchronous successive halving (ASHA) over fine-tuning epochs, wrapped around any controller.

Rungs are the space's ``fidelity.finetune_epochs`` (e.g. [1, 3, 9]). New configurations come from the inner
controller and run at the lowest rung. A result below the top rung is judged when it arrives, as Ray Tune's
ASHA and Optuna's successive-halving pruner judge theirs: it goes on when it is within the top 1/eta of the
results its rung has had so far, itself included (eta is the space's ``fidelity.eta``, default 3; the first
result at a rung always goes on, so the first configuration runs to the top rung as early as a full-fidelity
search's first trial does). The rule of Li et al. (2020), which promotes only once a rung holds eta results,
made the first top-rung trial wait for about eta^2 rung-0 trials (mnist-resnet18: 9 rung-0 and 3 rung-1
trials, while full fidelity often had its best feasible trial by its third, `experiments/bench_fidelity.py`).
A promotion runs next, before any new configuration: the same policy runs again at the next rung, going on
from the fine-tuned weights of its trial at the rung below for the extra epochs (its
`Proposal.parent`; the loop carries the weights: `SearchLoop._continuation`; without them it fine-tunes from the
baseline). The rungs are stretches of one fine-tune of the top rung's epochs (`Proposal.schedule_epochs`): a
rung trial trains on that fine-tune's learning-rate schedule and batches and stops at its rung, and its
promotion goes on along them, so a top-rung trial is trained as a full-fidelity trial is, but for the
optimiser's moments, which start afresh at each rung (for a task whose ``finetune`` takes ``part``; others
restart the schedule at each rung, which cost 0.18 ± 0.14 pt at the top rung on MNIST ResNet-18,
`experiments/bench_continuation.py`). A trial below the top rung is judged mid-schedule, not annealed.
The inner controller learns from the lowest rung, where all of its proposals are measured alike.

Below the top rung a trial is held only to the constraints fine-tuning cannot change (speed, size, MACs), and one
that breaks them (or failed) does not go on, nor counts among its rung's results: more fine-tuning cannot make it
feasible. Its accuracy is ranked within its rung, not held to the accuracy budget, judged at the full fine-tune.
Holding a one-ninth fine-tune to that budget rules out exactly the pruned configurations that the rest of the
fine-tune recovers (on mnist-resnet18, rungs 0.05/0.15/0.45 epoch, 8 of the first 9 it promoted were too slow for
the speed target; `experiments/bench_fidelity.py`).
"""

from __future__ import annotations

from typing import Any

from autocompress.space import CONSTRAINTS, Policy
from autocompress.strategies._base import Controller, Outcome, Proposal, scalar_score


class ASHAController(Controller):
    name = "asha"
    description = (
        "multi-fidelity wrapper: successive halving over the space's fine-tune rungs "
        "(reduction factor: the space's fidelity.eta; no strategy knobs)"
    )

    def __init__(self, inner: Controller, eta: int = 3) -> None:
        super().__init__(inner.space, inner.seed)
        self.name = f"asha+{inner.name}"  # type: ignore[misc]
        self.inner = inner
        self.eta = eta
        self.rungs = tuple(inner.space.finetune_epochs)
        self._first = dict([next(iter(inner.space.objectives.items()))])  # rungs compare the first objective
        self._rung: dict[int, int] = {}  # trial number -> rung
        self._config: dict[int, int] = {}  # trial number -> config id (its rung-0 trial number)
        self._inner_number: dict[int, int] = {}  # rung-0 trial number -> inner controller's number
        self._policy: dict[int, Any] = {}  # config id -> policy
        self._scores: list[dict[int, float]] = [{} for _ in self.rungs[:-1]]  # per rung below the top: config -> score
        self._promotions: list[tuple[int, int]] = []  # (config id, rung) to run next, in the order they went on

    def promotion_of(self, number: int) -> tuple[int, int | None]:
        """(rung, trial number it was promoted from) of trial `number`."""
        rung = self._rung[number]
        if rung == 0:
            return 0, None
        return rung, self._trial_at(self._config[number], rung - 1)

    def _goes_on(self, rung: int, score: float) -> bool:
        """Whether a result at `rung` (below the top) is within the top 1/eta of its rung's results so far, itself
        included; results that broke a constraint fine-tuning cannot change are not among them."""
        results = sorted([*self._scores[rung].values(), score], reverse=True)
        return score >= results[max(len(results) // self.eta, 1) - 1]

    def _ask(self, number: int) -> Proposal:
        top = len(self.rungs) - 1
        if self._promotions:
            config, rung = self._promotions.pop(0)
            parent = self._trial_at(config, rung - 1)
            self._rung[number], self._config[number] = rung, config
            return Proposal(
                number,
                self._policy[config],
                self.rungs[rung],
                parent=parent,
                keep_weights=rung < top,
                schedule_epochs=self.rungs[top],
            )
        proposal = self.inner.ask()
        self._rung[number], self._config[number] = 0, number
        self._inner_number[number] = proposal.number
        self._policy[number] = proposal.policy
        return Proposal(number, proposal.policy, self.rungs[0], keep_weights=top > 0, schedule_epochs=self.rungs[top])

    def _trial_at(self, config: int, rung: int) -> int:
        return next(n for n, c in self._config.items() if c == config and self._rung[n] == rung)

    def weights_needed(self) -> set[int]:
        """A promotion waiting to run needs the weights of its trial at the rung below."""
        waiting = {self._trial_at(config, rung - 1) for config, rung in self._promotions}
        return waiting | super().weights_needed()

    @property
    def learns_at(self) -> float:
        return self.rungs[0]

    def _observe(self, policy: Policy, outcome: Outcome) -> None:
        """An observed trial (run at the lowest rung) teaches the inner controller; it is no configuration of
        this study, so it is never promoted (its weights are not here to continue from)."""
        self.inner.observe(policy, below_top_rung(outcome))

    def _tell(self, number: int, outcome: Outcome) -> None:
        rung, config = self._rung[number], self._config[number]
        top = len(self.rungs) - 1
        judged = outcome if rung == top else below_top_rung(outcome)
        if rung < top and judged.feasible:  # else more fine-tuning cannot make it feasible: it competes for nothing
            score = scalar_score(judged, self._first)
            if self._goes_on(rung, score):
                self._promotions.append((config, rung + 1))
            self._scores[rung][config] = score
        if rung == 0:
            self.inner.tell(self._inner_number[number], judged)


def below_top_rung(outcome: Outcome) -> Outcome:
    """The outcome as a rung below the top can judge it: without the violations of constraints on metrics that
    fine-tuning moves (`Constraint.trained`: the accuracy budget)."""
    kept = {n: v for n, v in outcome.violations.items() if not (n in CONSTRAINTS and CONSTRAINTS[n].trained)}
    return Outcome(outcome.state, outcome.values, kept)
