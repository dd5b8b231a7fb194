"""ASHA over fine-tune rungs: promotions of the top 1/eta, bookkeeping, and exact resume from state."""

from __future__ import annotations

import pytest

from autocompress.space import discover_layers, parse_space, resolve_space
from autocompress.strategies import ASHAController, Outcome, make_controller
from autocompress.strategies._asha import below_top_rung
from experiments.tasks.digits import DigitsNet, task


@pytest.fixture(scope="module")
def space():
    spec = parse_space(
        "task: experiments.tasks.digits:task\nfidelity: {finetune_epochs: [1, 3, 9], eta: 3}\n"
        "constraints: {max_accuracy_drop: 0.02}"
    )
    return resolve_space(spec, discover_layers(DigitsNet().eval(), task.example_input(1)))


def fake_outcome(policy) -> Outcome:
    """A deterministic stand-in result: less sparsity, higher accuracy (controllers see only numbers)."""
    sparsity = sum(s.channel_sparsity for _, s in policy)
    accuracy = 1.0 - 0.05 * sparsity
    return Outcome(
        "complete",
        {"accuracy": accuracy, "latency_ms": 1.0 - 0.1 * sparsity, "accuracy_drop": 0.0},
        {"max_accuracy_drop": -1.0},
    )


def drive(controller, steps: int, pending: int = 2) -> list:
    """Ask/tell with `pending` proposals in flight, telling oldest first."""
    proposals, in_flight = [], []
    for _ in range(steps):
        while len(in_flight) < pending:
            proposal = controller.ask()
            proposals.append(proposal)
            in_flight.append(proposal)
        done = in_flight.pop(0)
        controller.tell(done.number, fake_outcome(done.policy))
    return proposals


def test_make_controller_wraps_multi_rung_spaces_in_asha(space) -> None:
    assert isinstance(make_controller("random", space, 0), ASHAController)


def test_top_third_is_promoted_to_the_next_rung(space) -> None:
    controller = make_controller("random", space, seed=1)
    proposals = drive(controller, 30)
    epochs = [p.finetune_epochs for p in proposals]
    assert epochs.count(1) > epochs.count(3) > epochs.count(9) > 0
    for proposal in proposals:
        rung, parent = controller.promotion_of(proposal.number)
        assert proposal.finetune_epochs == (1, 3, 9)[rung]
        if parent is not None:
            assert proposals[parent].policy == proposal.policy and controller.promotion_of(parent)[0] == rung - 1
    promoted = [p for p in proposals if p.finetune_epochs == 3]
    rung0 = [p for p in proposals if p.finetune_epochs == 1]
    mean = lambda ps: sum(fake_outcome(p.policy).values["accuracy"] for p in ps) / len(ps)  # noqa: E731
    assert mean(promoted) > mean(rung0)  # promotions pick the better configurations


def test_restored_asha_proposes_what_the_uninterrupted_one_does(space) -> None:
    original = make_controller("tpe", space, seed=2)
    drive(original, 12)
    restored = make_controller("tpe", space, seed=2)
    restored.load_state_dict(original.state_dict())
    assert restored.pending.keys() == original.pending.keys()
    for _ in range(5):
        a, b = original.ask(), restored.ask()
        assert (a.number, a.policy, a.finetune_epochs) == (b.number, b.policy, b.finetune_epochs)
        original.tell(a.number, fake_outcome(a.policy))
        restored.tell(b.number, fake_outcome(b.policy))


def test_asha_passes_observed_trials_to_its_inner_strategy_and_a_restore_replays_them(space) -> None:
    elsewhere = [make_controller("random", space, seed=4).ask() for _ in range(5)]
    original = make_controller("tpe", space, seed=2)
    for proposal in elsewhere:
        original.observe(proposal.policy, fake_outcome(proposal.policy))
    assert original.learns_at == 1  # the lowest rung, where the inner controller learns
    assert len(original.inner._study.get_trials()) == len(elsewhere)  # type: ignore[attr-defined]
    drive(original, 6)
    restored = make_controller("tpe", space, seed=2)
    restored.load_state_dict(original.state_dict())
    for _ in range(4):
        a, b = original.ask(), restored.ask()
        assert (a.number, a.policy, a.finetune_epochs) == (b.number, b.policy, b.finetune_epochs)
        original.tell(a.number, fake_outcome(a.policy))
        restored.tell(b.number, fake_outcome(b.policy))


def test_below_the_top_rung_accuracy_is_ranked_not_held_to_the_accuracy_budget(space) -> None:
    # after 1 of 9 epochs: A is under the accuracy budget but fast enough, B within it but too slow, C both
    controller = make_controller("random", space, seed=0)
    a, b, c = (controller.ask() for _ in range(3))
    told = {
        a.number: ({"accuracy": 0.96}, {"max_accuracy_drop": 0.4, "min_speedup": -0.1}),
        b.number: ({"accuracy": 0.97}, {"max_accuracy_drop": -0.2, "min_speedup": 0.3}),
        c.number: ({"accuracy": 0.95}, {"max_accuracy_drop": 0.6, "min_speedup": 0.2}),
    }
    for number, (values, violations) in told.items():
        controller.tell(number, Outcome("complete", {**values, "latency_ms": 1.0}, violations))
    promoted = controller.ask()
    assert promoted.finetune_epochs == 3 and promoted.policy == a.policy  # held to the budget, B would go on
    assert below_top_rung(Outcome("complete", {}, told[a.number][1])).violations == {"min_speedup": -0.1}
    # the inner strategy learns the speed target from the lowest rung, not the accuracy budget
    tells = [e for e in controller.inner.state_dict()["events"] if e[0] == "tell"]
    assert [t[2]["violations"] for t in tells] == [{"min_speedup": v} for v in (-0.1, 0.3, 0.2)]


def test_a_result_goes_on_when_within_the_top_third_of_its_rung_so_far(space) -> None:
    # rung-0 accuracies told in this order; eta 3: each goes on when it is at least the k-th best of the rung's
    # results so far, itself included, k = max(results // 3, 1)
    told = [0.90, 0.95, 0.93, 0.96, 0.92, 0.97, 0.94, 0.965]
    went_on = [True, True, False, True, False, True, False, True]  # the last: second of 8
    controller = make_controller("random", space, seed=3)
    for accuracy, expected in zip(told, went_on, strict=True):
        proposal = controller.ask()
        assert proposal.finetune_epochs == 1
        outcome = Outcome("complete", {"accuracy": accuracy, "latency_ms": 1.0}, {"max_accuracy_drop": 0.5})
        controller.tell(proposal.number, outcome)
        if expected:  # a promotion runs next: the same policy at the next rung, from this trial's weights
            promoted = controller.ask()
            assert (promoted.finetune_epochs, promoted.parent, promoted.policy) == (3, proposal.number, proposal.policy)
            assert controller.weights_needed() == {proposal.number}
            controller.tell(promoted.number, Outcome("failed"))  # a failure goes on from no rung
    assert len(controller._scores[0]) == len(told)


def test_the_first_configuration_runs_to_the_top_rung_at_once(space) -> None:
    controller = make_controller("tpe", space, seed=0)
    first = [controller.ask()]
    for _ in range(2):
        controller.tell(first[-1].number, fake_outcome(first[-1].policy))
        first.append(controller.ask())
    assert [p.finetune_epochs for p in first] == [1, 3, 9]
    assert [p.parent for p in first] == [None, 0, 1] and first[0].policy == first[1].policy == first[2].policy
    assert [p.keep_weights for p in first] == [True, True, False]


def test_a_result_too_slow_for_the_target_or_failed_does_not_go_on(space) -> None:
    controller = make_controller("random", space, seed=5)
    slow, failed = controller.ask(), controller.ask()
    # more accurate than the later result (even less its violation), but short of the speed target, which
    # fine-tuning cannot change
    controller.tell(slow.number, Outcome("complete", {"accuracy": 0.99, "latency_ms": 1.0}, {"min_speedup": 0.05}))
    controller.tell(failed.number, Outcome("failed"))
    fresh = controller.ask()
    assert fresh.finetune_epochs == 1 and fresh.parent is None and controller.weights_needed() == set()
    controller.tell(fresh.number, Outcome("complete", {"accuracy": 0.90, "latency_ms": 1.0}, {"min_speedup": -0.1}))
    promoted = controller.ask()  # the first result at its rung that can become feasible: the slow one is no rival
    assert (promoted.finetune_epochs, promoted.parent) == (3, fresh.number)
