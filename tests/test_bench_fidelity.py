"""The measure of experiments/bench_fidelity.py: the CPU time a mode took to first reach a feasible accuracy,
and the space each mode searches (the pair's published space with its speed target and fine-tune rungs)."""

from __future__ import annotations

from pathlib import Path

import yaml

from experiments.bench_fidelity import FIDELITY, cpu_to_reach, space_text

#: (cumulative trial CPU seconds, accuracy) of the feasible trials, in trial order
REACHED = [(10.0, 0.960), (35.0, 0.968), (50.0, 0.966), (90.0, 0.971)]


def test_cpu_to_reach_is_the_cumulative_cpu_at_the_first_trial_that_accurate() -> None:
    assert cpu_to_reach(REACHED, 0.968) == 35.0
    assert cpu_to_reach(REACHED, 0.970) == 90.0
    assert cpu_to_reach(REACHED, 0.960) == 10.0


def test_an_accuracy_never_reached_or_no_accuracy_to_reach_has_no_cpu_time() -> None:
    assert cpu_to_reach(REACHED, 0.980) is None
    assert cpu_to_reach(REACHED, None) is None
    assert cpu_to_reach([], 0.9) is None


def test_each_mode_searches_the_published_space_with_the_target_and_its_rungs() -> None:
    rungs, target = FIDELITY["mnist-resnet18"]
    published = yaml.safe_load((Path(__file__).parents[1] / "search_spaces/mnist-resnet18.yaml").read_text())
    full = yaml.safe_load(space_text("mnist-resnet18", rungs[-1:], target))
    asha = yaml.safe_load(space_text("mnist-resnet18", rungs, target))
    assert full["fidelity"] == {"finetune_epochs": [0.45], "eta": 3}
    assert asha["fidelity"] == {"finetune_epochs": [0.05, 0.15, 0.45], "eta": 3}
    for space in (full, asha):
        assert space["task"] == published["task"] and space["defaults"] == published["defaults"]
        assert space["constraints"] == {"max_accuracy_drop": 0.01, "min_speedup": 2.5}
