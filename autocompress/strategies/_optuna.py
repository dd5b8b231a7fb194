"""`tpe` and `nsga2`: Optuna 5 samplers driven through ask/tell, multi-objective, constraint-aware.

Optuna does not persist sampler state; our state is the ask/tell log (see `Controller`), and replaying it
against a fresh sampler with the same seed reproduces the sampler's random stream and history exactly.

Warm start (knob ``warm_start: uniform``, the default): the first trials are the `uniform` sweep's grid
(one global sparsity x bit-width) but its uncompressed point, enqueued before the sampler's own proposals, as
a user seeds a search with the settings they would try by hand. Per-layer spaces are large (4 sparsities x 2
bit-widths per layer is 8^L policies over L layers) and random per-layer policies are mostly slow mixes of
int8 and float layers: in bench_search TPE and NSGA-II started from random points fell below the plain uniform sweep at
30 trials (ResNet-like hypervolume 0.23 and 0.22 vs 0.48). ``warm_start: none`` starts from the sampler's
random trials.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from autocompress.errors import UserError
from autocompress.space import Policy, Space, uniform_grid
from autocompress.strategies._base import Controller, Outcome, Proposal

if TYPE_CHECKING:
    import optuna


def _optuna() -> Any:
    """The optuna module, imported on first use: `import autocompress` does not load Optuna."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    return optuna


class _OptunaController(Controller):
    sampler_name: ClassVar[str]
    knobs = {"warm_start": "uniform"}

    def __init__(self, space: Space, seed: int = 0) -> None:
        super().__init__(space, seed)
        if self.options["warm_start"] not in ("uniform", "none"):
            raise UserError(
                f"space: strategy.{self.name}.warm_start",
                f"{self.options['warm_start']!r} is not a warm start; use 'uniform' or 'none'",
            )
        self._objectives = list(space.objectives.items())
        optuna = _optuna()
        self._study = optuna.create_study(
            directions=["maximize" if d == "max" else "minimize" for _, d in self._objectives],
            sampler=self._make_sampler(seed),
        )
        self._trials: dict[int, Any] = {}  # optuna.trial.Trial

    def _enqueue_grid(self) -> None:
        """Queue the uniform grid (knob ``warm_start: uniform``) but the points already measured: the baseline,
        and policies of observed trials (`optuna.Study.enqueue_trial`'s ``skip_if_exists``)."""
        searched = {f"{layer}/{setting}" for layer, setting, _ in self.space.dimensions()}
        for params in uniform_grid(self.space.layers):
            if not self.space.policy_from_params(params).is_identity:
                self._study.enqueue_trial({k: v for k, v in params.items() if k in searched}, skip_if_exists=True)

    def _make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def _observe(self, policy: Policy, outcome: Outcome) -> None:
        """The trial goes into the sampler's history as a finished Optuna trial (`optuna.trial.create_trial`,
        Optuna's way to add trials run elsewhere), with its constraint values, so TPE's densities and NSGA-II's
        population start from it; the uniform warm-start grid later skips the policies seen this way."""
        optuna = _optuna()
        distributions = {
            f"{layer}/{setting}": optuna.distributions.CategoricalDistribution(list(choices))
            for layer, setting, choices in self.space.dimensions()
        }
        params = {key: getattr(policy[key.rpartition("/")[0]], key.rpartition("/")[2]) for key in distributions}
        complete = outcome.state == "complete"
        self._study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                values=[outcome.values[metric] for metric, _ in self._objectives] if complete else None,
                state=optuna.trial.TrialState.COMPLETE if complete else optuna.trial.TrialState.FAIL,
                constraints=dict(outcome.violations) if complete else None,
            )
        )

    def _ask(self, number: int) -> Proposal:
        if number == 0 and self.options["warm_start"] == "uniform":
            self._enqueue_grid()
        trial = self._study.ask()
        params = {
            f"{layer}/{setting}": trial.suggest_categorical(f"{layer}/{setting}", list(choices))
            for layer, setting, choices in self.space.dimensions()
        }
        self._trials[number] = trial
        return Proposal(number, self.space.policy_from_params(params), self.full_fidelity)

    def _tell(self, number: int, outcome: Outcome) -> None:
        trial = self._trials.pop(number)
        if outcome.state != "complete":
            self._study.tell(trial, state=_optuna().trial.TrialState.FAIL)
            return
        for name, value in outcome.violations.items():
            trial.set_constraint(name, value)
        self._study.tell(trial, [outcome.values[metric] for metric, _ in self._objectives])


class TPEController(_OptunaController):
    name = "tpe"
    description = (
        "Optuna multi-objective TPE with constraints and constant liar (startup trials: 10); knobs: "
        "warm_start (uniform: the uniform grid first | none)"
    )

    def _make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return _optuna().samplers.TPESampler(
            seed=seed, n_startup_trials=min(10, max(4, len(self.space.dimensions()))), constant_liar=True
        )


class NSGA2Controller(_OptunaController):
    name = "nsga2"
    description = (
        "Optuna NSGA-II evolutionary multi-objective search with constraints (population 16); knobs: "
        "warm_start (uniform: the uniform grid first | none)"
    )

    def _make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return _optuna().samplers.NSGAIISampler(seed=seed, population_size=16)
