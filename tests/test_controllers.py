"""The contract every search strategy must meet, run over every strategy (add one to STRATEGIES and it is
tested): proposals stay in the space; same seed and history give the same proposals; a controller restored
from its state after N tells proposes exactly what the uninterrupted one does; failures and out-of-order
tells are handled. Outcomes are synthetic but deterministic functions of the policy: controllers only ever
see numbers."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from autocompress.errors import UserError
from autocompress.space import discover_layers, parse_space, resolve_space
from autocompress.strategies import STRATEGIES, AnnealController, Outcome, make_controller
from experiments.tasks.digits import DigitsNet, task
from tests.conftest import with_measured_table

SPACE = """task: experiments.tasks.digits:task
constraints: {max_accuracy_drop: 0.02, min_speedup: 1.5}
defaults: {channel_sparsity: [0.0, 0.25, 0.5, 0.75], weight_bits: [8, 32]}
"""


@pytest.fixture(scope="module")
def layers():
    return discover_layers(DigitsNet().eval(), task.example_input(1))


@pytest.fixture(scope="module")
def space(layers):
    """The digits space with its measured latency table, which `haq` and `netadapt` steer by."""
    return with_measured_table(resolve_space(parse_space(SPACE), layers))


def outcome_for(proposal, fail_every: int = 0) -> Outcome:
    if fail_every and proposal.number % fail_every == fail_every - 1:
        return Outcome("failed")
    sparsity = sum(s.channel_sparsity for _, s in proposal.policy) / len(proposal.policy.layers)
    int8 = sum(s.weight_bits == 8 for _, s in proposal.policy) / len(proposal.policy.layers)
    accuracy = 0.99 - 0.2 * sparsity**2 + 0.001 * int8
    speedup = 1 + 3 * sparsity + 1.5 * int8
    values = {"accuracy": accuracy, "latency_ms": 1 / speedup, "speedup": speedup, "accuracy_drop": 0.99 - accuracy}
    violations = {"max_accuracy_drop": (values["accuracy_drop"] - 0.02) / 0.02, "min_speedup": (1.5 - speedup) / 1.5}
    return Outcome("complete", values, violations)


def drive(controller, steps: int, in_flight: int = 3, reverse: bool = False, fail_every: int = 0) -> list:
    """Ask/tell with several proposals in flight; tells newest-first when `reverse` (out of order). Asks no more
    once the controller is `exhausted` (netadapt, when its measured table leaves no layer a step to take)."""
    asked, pending = [], []
    for _ in range(steps):
        while len(pending) < in_flight and controller.exhausted is None:
            pending.append(controller.ask())
            asked.append(pending[-1])
        if not pending:
            break
        done = pending.pop(-1 if reverse else 0)
        controller.tell(done.number, outcome_for(done, fail_every))
    return asked


def key(proposal) -> tuple:
    return proposal.number, proposal.policy, proposal.finetune_epochs


@pytest.mark.parametrize("name", list(STRATEGIES))
class TestControllerContract:
    def test_proposals_stay_inside_the_space(self, name, space) -> None:
        for proposal in drive(make_controller(name, space, 0), 25):
            assert space.contains(proposal.policy), proposal.policy

    def test_same_seed_and_history_give_the_same_proposals(self, name, space) -> None:
        a = [key(p) for p in drive(make_controller(name, space, 7), 20)]
        b = [key(p) for p in drive(make_controller(name, space, 7), 20)]
        assert a == b

    @pytest.mark.parametrize("told", [0, 5, 17])
    def test_restored_controller_proposes_what_the_uninterrupted_one_does(self, name, space, told) -> None:
        original = make_controller(name, space, 3)
        drive(original, told, fail_every=4)
        state = json.loads(json.dumps(original.state_dict()))  # JSON only, never pickle
        restored = make_controller(name, space, 3)
        restored.load_state_dict(state)
        assert sorted(restored.pending) == sorted(original.pending)
        for _ in range(8):
            assert restored.exhausted == original.exhausted
            if original.exhausted is not None:
                break
            a, b = original.ask(), restored.ask()
            assert key(a) == key(b)
            original.tell(a.number, outcome_for(a))
            restored.tell(b.number, outcome_for(b))

    def test_a_replay_that_proposes_another_trial_is_an_error_and_older_states_still_load(self, name, space) -> None:
        original = make_controller(name, space, 3)
        drive(original, 5, fail_every=4)
        state = json.loads(json.dumps(original.state_dict()))
        older = {**state, "events": [e[:2] if e[0] == "ask" else e for e in state["events"]]}  # asks without digests
        restored = make_controller(name, space, 3)
        restored.load_state_dict(older)
        assert key(restored.ask()) == key(original.ask())
        last_ask = max(i for i, e in enumerate(state["events"]) if e[0] == "ask")
        state["events"][last_ask][2] = "0" * 16  # as if the stored trial had been proposed by other code
        with pytest.raises(RuntimeError, match=f"replay diverged at ask {state['events'][last_ask][1]}"):
            make_controller(name, space, 3).load_state_dict(state)

    def test_a_restore_replays_the_trials_observed_before_the_first_ask(self, name, space) -> None:
        elsewhere = drive(make_controller(name, space, 5), 6, fail_every=4)  # another study's trials
        original = make_controller(name, space, 3)
        for proposal in elsewhere:
            original.observe(proposal.policy, outcome_for(proposal, fail_every=4))
        drive(original, 4)
        restored = make_controller(name, space, 3)
        restored.load_state_dict(json.loads(json.dumps(original.state_dict())))
        for _ in range(6):
            assert restored.exhausted == original.exhausted
            if original.exhausted is not None:
                break
            a, b = original.ask(), restored.ask()
            assert key(a) == key(b)
            original.tell(a.number, outcome_for(a))
            restored.tell(b.number, outcome_for(b))
        with pytest.raises(RuntimeError, match="before the first ask"):
            original.observe(elsewhere[0].policy, outcome_for(elsewhere[0]))

    def test_failures_and_out_of_order_tells_are_handled(self, name, space) -> None:
        controller = make_controller(name, space, 1)
        proposals = drive(controller, 20, in_flight=4, reverse=True, fail_every=3)
        assert len({p.number for p in proposals}) == len(proposals)
        assert len(controller.pending) == 3  # four in flight, the last one told
        told = next(p.number for p in proposals if p.number not in controller.pending)
        with pytest.raises(ValueError, match="not pending"):
            controller.tell(told, Outcome("failed"))  # told twice


def test_uniform_sweeps_one_global_setting(space) -> None:
    proposals = drive(make_controller("uniform", space, 0), 8, in_flight=1)
    for proposal in proposals:
        prunable = {s.channel_sparsity for n, s in proposal.policy if space.layers[n].channel_sparsity != (0.0,)}
        assert len(prunable) == 1 and len({s.weight_bits for _, s in proposal.policy}) == 1
    assert len({p.policy for p in proposals}) == 8  # 4 sparsities x 2 bit-widths, no repeats in one sweep


def test_annealing_acceptance_falls_as_temperature_falls(layers) -> None:
    space = resolve_space(
        parse_space(SPACE + "strategy: {anneal: {cooling: 0.97, initial_temperature: 2.0}}\n"), layers
    )
    controller = make_controller("anneal", space, 0)
    assert isinstance(controller, AnnealController) and controller.options["cooling"] == 0.97
    drive(controller, 150, in_flight=1)
    moves = controller.worse_moves
    hot = [accepted for t, accepted in moves if t > 0.5]
    cold = [accepted for t, accepted in moves if t < 0.1]
    assert len(hot) >= 10 and len(cold) >= 10
    hot_rate, cold_rate = sum(hot) / len(hot), sum(cold) / len(cold)
    assert 0.2 < hot_rate < 0.9  # worse moves are often taken while hot, but it is no random walk
    assert cold_rate < 0.1 and hot_rate > 3 * cold_rate


@pytest.mark.parametrize("strategy", ["anneal", "autocompress"])
def test_annealing_starts_unpruned_at_8_bits_and_its_next_proposals_are_neighbours(space, strategy) -> None:
    controller = make_controller(strategy, space, 0)
    first, second = controller.ask(), controller.ask()  # the second is asked while the start is in flight
    assert {s.channel_sparsity for _, s in first.policy} == {0.0}
    assert {s.weight_bits for _, s in first.policy} == {8}
    moved = [n for (n, s), (_, t) in zip(second.policy, first.policy, strict=True) if s != t]
    assert 1 <= len(moved) <= controller.options["neighbours"]


def test_annealing_random_start_and_a_bad_start_name(layers) -> None:
    random_start = resolve_space(parse_space(SPACE + "strategy: {anneal: {start: random}}\n"), layers)
    first = make_controller("anneal", random_start, 0).ask()
    assert {s.channel_sparsity for _, s in first.policy} != {0.0}
    bad = resolve_space(parse_space(SPACE + "strategy: {anneal: {start: middle}}\n"), layers)
    with pytest.raises(UserError, match="strategy.anneal.start: 'middle'"):
        make_controller("anneal", bad, 0)


@pytest.mark.parametrize("strategy", ["tpe", "nsga2"])
def test_optuna_strategies_try_the_uniform_grid_first_unless_told_not_to(layers, space, strategy) -> None:
    uniform = make_controller("uniform", space, 0)
    grid = [uniform.ask().policy for _ in range(8)]  # 4 sparsities x 2 bit-widths
    assert grid[0].is_identity  # the baseline: not worth a trial
    warm = make_controller(strategy, space, 0)
    assert [warm.ask().policy for _ in range(7)] == grid[1:]
    cold_space = resolve_space(parse_space(SPACE + f"strategy: {{{strategy}: {{warm_start: none}}}}\n"), layers)
    cold = make_controller(strategy, cold_space, 0)
    assert [cold.ask().policy for _ in range(7)] != grid[1:]
    bad = resolve_space(parse_space(SPACE + f"strategy: {{{strategy}: {{warm_start: grid}}}}\n"), layers)
    with pytest.raises(UserError, match=f"strategy.{strategy}.warm_start: 'grid'"):
        make_controller(strategy, bad, 0)


@pytest.mark.parametrize("strategy", ["tpe", "nsga2"])
def test_optuna_strategies_learn_observed_trials_and_skip_them_in_the_grid(space, strategy) -> None:
    cold = make_controller(strategy, space, 0)
    seen = [cold.ask() for _ in range(3)]  # the first points of the uniform grid
    warm = make_controller(strategy, space, 0)
    for proposal in seen:
        warm.observe(proposal.policy, outcome_for(proposal))
    trials = warm._study.get_trials()  # type: ignore[attr-defined]
    assert [t.values for t in trials] == [
        [outcome_for(p).values["accuracy"], outcome_for(p).values["latency_ms"]] for p in seen
    ]
    assert [t.constraints for t in trials] == [outcome_for(p).violations for p in seen]
    assert warm.ask().policy == cold.ask().policy  # the grid goes on where the observed trials left it


def test_annealing_walks_from_the_best_observed_trial(space) -> None:
    elsewhere = drive(make_controller("random", space, 4), 6, in_flight=1)
    best = max(elsewhere, key=lambda p: outcome_for(p).values["accuracy"] - outcome_for(p).values["latency_ms"])
    controller = make_controller("anneal", space, 0)
    for proposal in elsewhere:
        controller.observe(proposal.policy, outcome_for(proposal))
    first = controller.ask().policy
    moved = [n for (n, s), (_, t) in zip(first, best.policy, strict=True) if s != t]
    assert 1 <= len(moved) <= controller.options["neighbours"]  # a neighbour of the best, not the unpruned start


def test_unknown_strategy_option_is_a_user_error(layers) -> None:
    space = resolve_space(parse_space(SPACE + "strategy: {anneal: {colling: 0.9}}\n"), layers)
    with pytest.raises(UserError, match="strategy.anneal.colling"):
        make_controller("anneal", space, 0)


def test_netadapt_prunes_one_layer_per_candidate_and_long_finetunes_the_winner(space) -> None:
    space = dataclasses.replace(space, finetune_epochs=(1, 5))
    controller = make_controller("netadapt", space, 0)
    assert type(controller).__name__ == "NetAdaptController"  # uses the rungs itself, no ASHA around it
    first = [controller.ask()]
    first += [controller.ask() for _ in range(len(controller._queue))]  # iteration 1: one candidate per layer
    assert len({next(n for n, s in p.policy if s.channel_sparsity > 0) for p in first}) == len(first) > 1
    for proposal in first:
        pruned = [n for n, s in proposal.policy if s.channel_sparsity > 0]
        assert len(pruned) == 1 and proposal.finetune_epochs == 1
    for proposal in first:
        controller.tell(proposal.number, outcome_for(proposal))
    winner = controller.ask()
    best = max(first, key=lambda p: outcome_for(p).values["accuracy"])
    assert winner.policy == best.policy
    # the long fine-tune goes on from the candidate's weights for the rest of the last rung: 1 + (5 - 1) epochs
    assert (winner.parent, winner.finetune_epochs, winner.keep_weights) == (best.number, 5, False)
    second = controller.ask()
    assert sum(s.channel_sparsity > 0 for _, s in second.policy) in (1, 2)  # builds on the winner
    assert (second.parent, second.finetune_epochs, second.keep_weights) == (best.number, 2, True)  # from its model


def test_importing_autocompress_loads_neither_optuna_nor_shadows_the_strategies_package():
    code = (
        "import sys, autocompress, autocompress.strategies as s; "
        "assert 'optuna' not in sys.modules, 'optuna loaded'; "
        "assert hasattr(s, 'STRATEGIES') and callable(autocompress.search)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", ["amc", "haq"])
def test_agent_state_names_its_weights_and_a_diverging_replay_is_an_error(name, space) -> None:
    original = make_controller(name, space, 3)
    drive(original, 6)
    state = json.loads(json.dumps(original.state_dict()))
    assert state["agent"]["format"] == "safetensors" and len(state["agent"]["sha256"]) == 64
    make_controller(name, space, 3).load_state_dict(state)  # the replay reproduces the weights it names
    state["agent"]["sha256"] = "0" * 64
    with pytest.raises(RuntimeError, match="did not reproduce the agent weights"):
        make_controller(name, space, 3).load_state_dict(state)
