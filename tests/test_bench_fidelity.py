"""The measure of experiments/bench_fidelity.py: the CPU time a mode took to first reach a feasible accuracy,
and the space each mode searches (the pair's published space with its speed target and fine-tune rungs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml

import autocompress
from experiments.bench_fidelity import (
    FIDELITY,
    cpu_to_reach,
    kept_runs,
    report,
    reused_full,
    space_text,
    summarise,
    with_run,
)
from experiments.bench_search import DEEP, cpu_model
from tests.conftest import FAST_SPACE

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


def test_the_converged_pair_searches_the_deep_grid_on_the_converged_baseline() -> None:
    rungs, target = FIDELITY["mnist-resnet18-converged"]
    space = yaml.safe_load(space_text("mnist-resnet18-converged", rungs, target))
    assert space["task"] == "experiments.tasks.mnist:resnet18_converged"
    assert space["defaults"]["channel_sparsity"] == list(DEEP)
    assert space["constraints"] == {"max_accuracy_drop": 0.01, "min_speedup": 6.0}


def _run(seed: int, asha_reach: float | None, cpu_hours: float = 0.3) -> dict:
    """A run record as bench_fidelity writes it: full reached its best after 500 trial CPU-s."""
    mode = {"rungs": [0.45], "trials": 10, "finetune_epochs": 4.5, "trained_epochs": 4.5, "hypervolume": 0.05}
    mode |= {"best_feasible_accuracy": 0.98, "cpu_s": 1000.0, "wall_s": 2000.0}
    full = {**mode, "mode": "full", "cpu_to_reach_s": 500.0}
    asha = {**mode, "mode": "asha", "cpu_to_reach_s": asha_reach, "rungs": [0.05, 0.15, 0.45]}
    return {"pair": "mnist-resnet18", "seed": seed, "cpu_hours": cpu_hours, "modes": [full, asha]}


def _no_full_front(seed: int, asha_best: float | None, asha_first: float | None) -> dict:
    """A run where full fidelity found no feasible trial; ASHA's best and first feasible trial as given."""
    record = _run(seed, None)
    full, asha = record["modes"]
    full |= {"best_feasible_accuracy": None, "cpu_to_reach_s": None, "hypervolume": 0.0}
    asha |= {"best_feasible_accuracy": asha_best, "first_feasible_cpu_s": asha_first}
    return record


def test_a_rerun_replaces_its_own_run_and_keeps_the_other_seeds_in_order() -> None:
    runs = with_run([], _run(1, None))
    runs = with_run(runs, _run(0, None))
    runs = with_run(runs, _run(1, 200.0))
    runs = with_run(runs, _run(1, 400.0, cpu_hours=0.6))
    assert [(r["seed"], r["cpu_hours"]) for r in runs] == [(0, 0.3), (1, 0.3), (1, 0.6)]
    assert runs[1]["modes"][1]["cpu_to_reach_s"] == 200.0


def test_a_run_under_another_speed_target_is_its_own_run_and_counted_apart() -> None:
    # runs from before --target carry none: they searched under their pair's target (2.5x for mnist-resnet18)
    runs = with_run([_run(0, 200.0)], {**_run(0, None), "target": 2.0})
    runs = with_run(runs, {**_run(0, 400.0), "target": 2.5})  # the pair's own target: replaces the first run
    assert [(r.get("target"), r["modes"][1]["cpu_to_reach_s"]) for r in runs] == [(2.0, None), (2.5, 400.0)]
    lines = report(runs)
    assert "## mnist-resnet18 at 2x, seed 0" in lines and "## mnist-resnet18 at 2.5x, seed 0" in lines
    assert "**mnist-resnet18 at 2x: ASHA met the goal in 0 of 1 seeds.**" in lines
    assert "**mnist-resnet18 at 2.5x: ASHA met the goal in 0 of 1 seeds.**" in lines  # 400 / 500 misses
    assert any("speed target 2x (constraint)" in line for line in lines)


def test_a_run_with_other_rungs_is_its_own_run_and_named_with_them() -> None:
    longer = _run(0, None)
    longer["modes"][0]["rungs"], longer["modes"][1]["rungs"] = [1.35], [0.15, 0.45, 1.35]
    runs = with_run([_run(0, 200.0)], longer)
    assert len(runs) == 2
    lines = report(runs)
    assert "## mnist-resnet18 at 2.5x, seed 0" in lines  # the pair's own rungs go unnamed
    assert "## mnist-resnet18 at 2.5x, rungs [0.15, 0.45, 1.35], seed 0" in lines
    assert "**mnist-resnet18 at 2.5x, rungs [0.15, 0.45, 1.35]: ASHA met the goal in 0 of 1 seeds.**" in lines
    assert "**mnist-resnet18 at 2.5x: ASHA met the goal in 1 of 1 seeds.**" in lines


def test_the_kept_runs_are_read_from_the_file_as_it_is_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "bench_fidelity.json"
    assert kept_runs(path) == []
    path.write_text(json.dumps({"runs": [_run(0, None)]}))
    assert kept_runs(path) == [_run(0, None)]
    path.write_text(json.dumps({"runs": with_run(kept_runs(path), _run(1, 200.0))}))  # a run beside it ended
    assert [r["seed"] for r in kept_runs(path)] == [0, 1]


def test_the_report_counts_the_seeds_where_asha_met_the_goal() -> None:
    # 200 / 500 = 40 % meets the 60 % goal; 400 / 500 = 80 % misses it; never reaching it misses it
    lines = report([_run(0, 200.0), _run(1, 400.0), _run(2, None)])
    assert "**mnist-resnet18 at 2.5x: ASHA met the goal in 1 of 3 seeds.**" in lines
    assert any("in 40% of the CPU time" in line and "met." in line for line in lines)
    assert any("in 80% of the CPU time" in line and "missed." in line for line in lines)
    assert sum("did not reach" in line for line in lines) == 1


def test_without_a_full_fidelity_front_the_goal_is_not_counted_and_what_asha_found_is_said() -> None:
    lines = report([_run(0, 200.0), _no_full_front(1, 0.9612, 250.0), _no_full_front(2, None, None)])
    count = (
        "**mnist-resnet18 at 2.5x: ASHA met the goal in 1 of 3 seeds (full fidelity found no feasible trial in 2).**"
    )
    assert count in lines
    found = next(line for line in lines if "Full fidelity found no feasible trial" in line)
    assert "ASHA found one after 250 trial CPU-s (25% of full fidelity's), best 0.9612" in found
    assert "not counted as met" in found
    assert any("Neither mode found a feasible trial" in line for line in lines)
    assert not any("did not reach" in line for line in lines)  # the measure is not said to be missed


def test_the_accuracy_at_the_speed_target_is_shown_where_kept_and_a_dash_for_older_runs() -> None:
    record = _no_full_front(0, None, None)
    record["modes"][1]["accuracy_at_target"] = 0.9542
    lines = report([record, _run(1, 200.0)])
    rows = [line for line in lines if line.startswith("| full |") or line.startswith("| asha |")]
    assert "| 0.9542 |" in rows[1] and "| – |" in rows[0]  # seed 0: ASHA's front at the target, full none
    assert all("| – |" in row for row in rows[2:])  # seed 1 was written before the column was kept


def test_a_mode_is_summarised_from_its_real_study(tmp_path: Path) -> None:
    """An inline ASHA search on digits (rungs 0.1 / 0.3 epoch, eta 2, a speed target every policy meets: trial 0
    at the low rung goes on as trial 1, as the first result at a rung does, then trial 2 at the low rung): the
    summary counts every trial's epochs, and reads the speed target's accuracy from the top rung only."""
    space = tmp_path / "asha.yaml"
    space.write_text(
        FAST_SPACE.replace(
            "fidelity: {finetune_epochs: [0.5]}", "fidelity: {finetune_epochs: [0.1, 0.3], eta: 2}"
        ).replace("min_speedup: 1.2", "min_speedup: 0.5")
    )
    study = autocompress.search(
        space, study="asha", storage=f"sqlite:///{tmp_path / 's.db'}", strategy="random", trials=3, executor="inline"
    )
    summary, reached = summarise(study, "asha", (0.1, 0.3), wall_s=1.0)
    trials = sorted(study.trials(), key=lambda t: t.number)
    assert [t.finetune_epochs for t in trials] == [0.1, 0.3, 0.1]
    assert summary.trials == 3 and summary.finetune_epochs == 0.5 and summary.wall_s == 1.0
    cumulative = [sum(t.metrics["cpu_s"] for t in trials[: i + 1]) for i in range(3)]
    feasible = [i for i, t in enumerate(trials) if not any(v > 0 for v in t.violations.values())]
    assert reached == [(cumulative[i], trials[i].metrics["accuracy"]) for i in feasible]
    assert summary.first_feasible_cpu_s == (cumulative[feasible[0]] if feasible else None)
    assert summary.accuracy_at_target == trials[1].metrics["accuracy"]


def test_reusing_full_fidelity_refuses_a_run_from_another_cpu() -> None:
    args = argparse.Namespace(pair="mnist-resnet18", seed=0, cpu_hours=0.3, target=2.5, rungs=[0.05, 0.15, 0.45])
    here, elsewhere = {**_run(0, 300.0), "cpu": cpu_model()}, {**_run(0, 300.0), "cpu": "Another CPU (VNNI)"}
    assert reused_full([here], args).mode == "full"
    with pytest.raises(SystemExit, match="ran on Another CPU"):
        reused_full([elsewhere], args)
    with pytest.raises(SystemExit, match="ran on a CPU not recorded"):  # an older run: its machine is unknown
        reused_full([_run(0, 300.0)], args)
