"""The comparison metrics of experiments/bench_search.py on hand-made (accuracy, speed) points: a strategy
against the best uniform recipe at equal speed and at equal accuracy, the feasible front, the hypervolume
curve over CPU time and the per-pair verdict, including a strategy that loses."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.bench_search import (
    PAIRS,
    STRATEGIES,
    VARIANTS,
    Point,
    StrategySummary,
    VsUniform,
    accuracy_at_speed,
    append_row,
    check_machine,
    grid_size,
    hypervolume_curve,
    load_rows,
    machines_line,
    pareto_front,
    repeat_spread,
    settings_for,
    space_yaml,
    speed_at_accuracy,
    training_line,
    verdict,
    versus_uniform,
    within_budget,
)

#: uniform's trials: the float model (1.0x), int8 (1.5x), two pruned recipes within a 1 pt budget below a
#: 0.98 baseline (floor 0.97), one beyond it, and one dominated
UNIFORM = [(0.980, 1.00), (0.979, 1.50), (0.975, 2.00), (0.971, 2.40), (0.950, 3.00), (0.970, 1.80)]
FLOOR = 0.97


def test_the_front_keeps_only_points_no_other_beats_on_both_fastest_first() -> None:
    assert pareto_front(UNIFORM) == [(0.950, 3.00), (0.971, 2.40), (0.975, 2.00), (0.979, 1.50), (0.980, 1.00)]
    assert pareto_front([(0.9, 2.0), (0.9, 2.0), (0.8, 2.0)]) == [(0.9, 2.0)]


def test_accuracy_at_speed_is_the_best_accuracy_among_points_at_least_that_fast() -> None:
    assert accuracy_at_speed(UNIFORM, 2.0) == 0.975
    assert accuracy_at_speed(UNIFORM, 2.1) == 0.971
    assert accuracy_at_speed(UNIFORM, 3.5) is None


def test_speed_at_accuracy_is_the_best_speed_among_points_at_least_that_accurate() -> None:
    assert speed_at_accuracy(UNIFORM, 0.975) == 2.0
    assert speed_at_accuracy(UNIFORM, 0.9) == 3.0
    assert speed_at_accuracy(UNIFORM, 0.99) is None


def test_a_strategy_faster_at_the_best_uniform_recipe_accuracy_has_a_ratio_above_one() -> None:
    # best uniform recipe: the fastest trial within the budget, 2.4x at 0.971 (3.0x at 0.950 is below the floor)
    strategy = [(0.972, 3.0), (0.976, 2.4), (0.96, 4.0)]
    vs = versus_uniform(strategy, UNIFORM, FLOOR)
    assert vs is not None
    assert (vs.uniform_accuracy, vs.uniform_speed) == (0.971, 2.4)
    assert vs.ratio_best == pytest.approx(3.0 / 2.4)  # 0.972 >= 0.971 at 3.0x
    assert vs.gain_pt_best == pytest.approx(100 * (0.976 - 0.971))  # the most accurate trial at >= 2.4x
    # over the front: at (0.975, 2.0) only the 2.4x trial is as accurate (1.2x) and it is 0.1 pt more
    # accurate; at (0.979, 1.5) and (0.980, 1.0) no trial is as accurate (no ratio) and 0.976 loses points
    assert vs.ratio_max == pytest.approx(3.0 / 2.4)
    assert vs.gain_pt_max == pytest.approx(100 * (0.976 - 0.971))
    # within the budget (>= 0.97) its fastest trial is 3.0x; 4.0x at 0.96 is below the floor
    assert vs.ratio_budget == pytest.approx(3.0 / 2.4)


def test_a_losing_strategy_gets_negative_gains_and_none_where_it_never_gets_there() -> None:
    # never as fast as 2.4x and never as accurate as 0.971: its best accuracy at >= 2.4x is undefined
    loser = [(0.965, 1.9), (0.94, 2.2)]
    vs = versus_uniform(loser, UNIFORM, FLOOR)
    assert vs is not None
    assert vs.gain_pt_best is None and vs.ratio_best is None and vs.ratio_max is None
    assert vs.ratio_budget is None  # no trial within the budget
    # at uniform's slower front points its best accuracy is 0.94 (at >= 2.0x) or 0.965: always a loss, the
    # smallest at (0.979, 1.5)
    assert vs.gain_pt_max == pytest.approx(100 * (0.965 - 0.979))
    # a fast but inaccurate trial gives a loss in points at the best recipe's speed, not a gain
    vs = versus_uniform([(0.96, 2.5)], UNIFORM, FLOOR)
    assert vs is not None and vs.gain_pt_best == pytest.approx(-1.1)
    # feasible but less accurate than the best uniform recipe: no ratio at its accuracy, yet one within the budget
    vs = versus_uniform([(0.970, 3.0)], UNIFORM, FLOOR)
    assert vs is not None and vs.ratio_best is None and vs.ratio_budget == pytest.approx(3.0 / 2.4)


def test_uniform_against_itself_is_level_and_without_a_feasible_trial_there_is_no_comparison() -> None:
    vs = versus_uniform(UNIFORM, UNIFORM, FLOOR)
    assert vs is not None and vs.gain_pt_best == 0.0 and vs.ratio_best == 1.0
    assert versus_uniform([(0.99, 5.0)], [(0.9, 2.0)], FLOOR) is None


def test_the_hypervolume_curve_follows_cpu_time_and_counts_feasible_points_above_the_reference() -> None:
    points = [
        Point(0, 0.98, 1.5, 3600.0),  # adds (0.98 - 0.97) x (1.5 - 1.0)
        Point(1, None, None, 1800.0),  # failed: costs CPU, adds nothing
        Point(2, 0.95, 3.0, 1800.0),  # below the floor: adds nothing
        Point(3, 0.975, 2.5, 3600.0),  # adds (0.975 - 0.97) x (2.5 - 1.5)
    ]
    curve = hypervolume_curve(points, FLOOR)
    assert [x for x, _ in curve] == [1.0, 1.5, 2.0, 3.0]
    assert [round(v, 6) for _, v in curve] == [0.005, 0.005, 0.005, 0.01]


def _summary(strategy: str, versus: list[VsUniform | None]) -> StrategySummary:
    n = len(versus)
    return StrategySummary(strategy, n, [0.0] * n, versus, [None] * n, [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n)


def _vs(ratio: float | None, gain: float | None) -> VsUniform:
    return VsUniform(0.97, 2.0, gain, gain, ratio, ratio)


def test_the_verdict_names_the_best_strategy_and_whether_it_meets_the_goal() -> None:
    level = _summary("uniform", [_vs(1.0, 0.0)] * 3)
    fast = _summary("tpe", [_vs(1.2, 0.1), _vs(1.4, 0.2), _vs(1.3, 0.0)])
    line, met = verdict("p", [level, fast])
    assert met and "tpe: 1.30x" in line and "meets the 1.25x goal" in line
    accurate = _summary("amc", [_vs(1.0, 0.6), _vs(1.1, 0.5), _vs(1.0, 0.7)])
    line, met = verdict("p", [level, accurate])
    assert met and "amc: +0.60 pt" in line
    # a seed where the strategy never matched uniform counts against it, however good the other seeds are
    patchy = _summary("haq", [_vs(2.0, 1.0), None, _vs(None, None)])
    line, met = verdict("p", [level, patchy, _summary("random", [_vs(1.1, 0.2)] * 3)])
    assert not met and "beyond 1.10x (random)" in line and "+0.20 pt (random)" in line
    # past the goal on fewer seeds than the goal asks for is said, not counted
    line, met = verdict("p", [level, _summary("amc", [_vs(1.98, 0.0)])])
    assert not met and "amc: 1.98x" in line and "past the 1.25x goal on 1 of 3 seeds" in line
    # short of the goal too, the best strategy says when it stands on fewer seeds
    line, met = verdict("p", [level, _summary("anneal", [_vs(0.92, -0.1)])])
    assert not met and "beyond 0.92x (anneal, 1 of 3 seeds)" in line and "-0.10 pt (anneal, 1 of 3 seeds)" in line
    # no trial as accurate as the best uniform recipe in any seed: said so, not "n/a"
    line, met = verdict("p", [level, _summary("netadapt", [_vs(None, -0.58)] * 3)])
    assert not met and "no strategy has a trial as accurate as the best uniform recipe in every seed" in line
    assert "beyond -0.58 pt (netadapt) at equal speed" in line and "n/a" not in line
    # one seed with such a trial is not every seed: the line says "in every seed", not that none has one
    line, met = verdict("p", [level, _summary("haq", [_vs(1.65, 0.0), _vs(None, -0.06), _vs(None, -0.02)])])
    assert not met and "as accurate as the best uniform recipe in every seed" in line and "-0.03 pt (haq)" in line


def test_the_spread_compares_each_recipe_with_its_repeat_one_grid_later() -> None:
    # a grid of 2 recipes swept twice: trial 2 repeats trial 0 (10 % faster, 0.4 pt less accurate), trial 3
    # repeats trial 1 (same speed, 0.2 pt more accurate); trial 4 repeats trial 2's recipe but failed
    points = [
        Point(0, 0.970, 2.0, 1.0),
        Point(1, 0.960, 3.0, 1.0),
        Point(2, 0.966, 2.2, 1.0),
        Point(3, 0.962, 3.0, 1.0),
        Point(4, None, None, 1.0),
    ]
    spread = repeat_spread(points, 2)
    assert spread is not None and spread.repeats == 2
    assert spread.speed_pct_max == pytest.approx(10.0) and spread.speed_pct_median == pytest.approx(5.0)
    assert spread.accuracy_pt_max == pytest.approx(0.4) and spread.accuracy_pt_median == pytest.approx(0.3)
    assert repeat_spread(points[:2], 2) is None


def test_the_grid_size_is_every_sparsity_times_every_bit_width_the_space_names() -> None:
    assert grid_size(PAIRS["mnist-resnet18"]) == 4 * 2
    assert grid_size(PAIRS["mnist-resnet50"]) == 4 * 2
    assert PAIRS["mnist-resnet50"].base()["task"] == "experiments.tasks.mnist:resnet50"
    assert grid_size(PAIRS["minilm"]) == 5 * 2  # value 0/8.3/16.7 %, intermediate 0/12.5/25 %; int8 or float
    assert grid_size(PAIRS["mnist-resnet18-deep"]) == 6 * 2  # the space's grid with 0.875 and 0.9375 added
    converged = PAIRS["mnist-resnet18-converged"].base()
    assert converged["task"] == "experiments.tasks.mnist:resnet18_converged"
    assert converged["defaults"]["channel_sparsity"][-2:] == [0.875, 0.9375] and converged["defaults"]["round_to"] == 8
    tight = PAIRS["mnist-resnet18-tight"].base()
    assert tight["constraints"]["max_accuracy_drop"] == 0.002 and converged["constraints"]["max_accuracy_drop"] == 0.01


def test_within_the_budget_names_the_fastest_feasible_strategy_over_every_seed() -> None:
    def vs(budget: float | None) -> VsUniform:
        return VsUniform(0.97, 2.0, None, None, None, None, budget)

    level = _summary("uniform", [vs(1.0)] * 2)
    line = within_budget([level, _summary("amc", [vs(1.6), vs(1.2)]), _summary("haq", [vs(3.0), None])])
    assert "amc, 1.40x" in line  # haq's second seed has no feasible trial: it does not count
    assert "no strategy" in within_budget([level, _summary("haq", [vs(3.0), None])])


def _row(seed: int, strategy: str, cpu: str) -> dict:
    """A results.csv row as a study writes it (the figures do not matter here)."""
    figures = dict.fromkeys(["baseline_accuracy", "floor", "hypervolume", "cpu_s", "setup_cpu_s", "wall_s"], 0.5)
    return {"pair": "p", "strategy": strategy, "seed": seed, "settings": "{}", "target": None, "cpu": cpu} | figures


def test_a_row_keeps_the_cpu_it_ran_on_and_an_older_row_reads_as_not_recorded(tmp_path: Path) -> None:
    append_row(tmp_path, {**_row(0, "uniform", "AMD EPYC (no VNNI)"), "points": [Point(0, 0.9, 1.5, 1.0)]})
    append_row(tmp_path, {**_row(1, "uniform", ""), "points": []})
    rows = load_rows(tmp_path)
    assert [r["cpu"] for r in rows] == ["AMD EPYC (no VNNI)", ""]
    assert rows[0]["points"] == [Point(0, 0.9, 1.5, 1.0)]


def test_a_row_keeps_the_epochs_behind_each_trial_and_an_older_row_reads_them_as_unknown(tmp_path: Path) -> None:
    append_row(
        tmp_path, {**_row(0, "netadapt", ""), "points": [Point(0, 0.9, 1.5, 1.0, 0.25), Point(1, None, None, 1.0)]}
    )
    path = tmp_path / "results.csv"
    row = path.read_text().splitlines()[1]
    older = row.replace("[[0, 0.9, 1.5, 1.0, 0.25], [1, null, null, 1.0, null]]", "[[0, 0.9, 1.5, 1.0]]")
    path.write_text(path.read_text() + older + "\n")  # a row written before the epochs were kept: 4 fields a trial
    rows = load_rows(tmp_path)
    assert rows[0]["points"] == [Point(0, 0.9, 1.5, 1.0, 0.25), Point(1, None, None, 1.0, None)]
    assert rows[1]["points"] == [Point(0, 0.9, 1.5, 1.0, None)]


def _points(*trials: tuple[float, float, float]) -> list[Point]:
    return [Point(i, acc, speed, 1.0, epochs) for i, (acc, speed, epochs) in enumerate(trials)]


def test_the_training_line_says_where_the_strategys_compared_trial_carried_more_than_one_trials_fine_tune() -> None:
    # one trial fine-tunes 0.05 epoch; uniform's best recipe: its fastest trial above the 0.97 floor (2.0x at
    # 0.975, unpruned int8: 0 epochs); the strategy's compared trial: its fastest at least 0.975 accurate
    def row(seed: int, strategy: str, *trials: tuple[float, float, float]) -> dict:
        return {
            **_row(seed, strategy, ""),
            "settings": '{"finetune": 0.05}',
            "floor": FLOOR,
            "points": _points(*trials),
        }

    uniform = [row(seed, "uniform", (0.975, 2.0, 0.0), (0.96, 3.0, 0.05)) for seed in (0, 1)]
    carried = row(0, "netadapt", (0.976, 3.0, 0.25), (0.99, 1.0, 0.05))  # a chain of five 0.05-epoch links
    one_trial = row(1, "netadapt", (0.976, 3.0, 0.05))  # pruned, one trial's fine-tune: uniform's pruned recipes get it
    line = training_line([*uniform, carried, one_trial], "netadapt")
    assert line is not None
    assert "seed 0: 0.25 vs 0, seed 1: 0.05 vs 0." in line
    assert "In seed 0 netadapt's trial carried more fine-tuning than one trial gets" in line
    assert "not at equal training" in line
    assert "carried" not in training_line([*uniform, one_trial], "netadapt")  # type: ignore[operator]
    older = {**carried, "points": [Point(0, 0.976, 3.0, 1.0)]}  # a row from before the epochs were kept
    assert training_line([*uniform, older], "netadapt") is None


def test_a_results_file_in_another_format_is_refused_in_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "results.csv").write_text("model,strategy,seed,trials,hypervolume,curve\nresnet,random,0,30,0.2,[]\n")
    with pytest.raises(SystemExit, match=r"results\.csv lacks the columns pair, settings, .*points") as refused:
        load_rows(tmp_path)
    assert "\n" not in str(refused.value)


def test_the_cpu_line_warns_when_one_seed_compares_machines_and_notes_seeds_on_different_ones() -> None:
    epyc, xeon = "AMD EPYC (no VNNI)", "Intel Xeon (VNNI)"
    same = machines_line([_row(0, "uniform", epyc), _row(0, "tpe", epyc), _row(1, "uniform", epyc)])
    assert same == "CPU per seed: seed 0: AMD EPYC (no VNNI); seed 1: AMD EPYC (no VNNI)."
    across = machines_line([_row(0, "uniform", xeon), _row(1, "uniform", epyc), _row(1, "tpe", epyc)])
    assert "means over seeds mix machines" in across and "Warning" not in across
    unknown = machines_line([_row(0, "uniform", ""), _row(1, "uniform", epyc)])
    assert "seed 0: not recorded" in unknown and "may mix machines" in unknown and "Warning" not in unknown
    within = machines_line([_row(0, "uniform", ""), _row(0, "tpe", epyc)])
    assert "seed 0: AMD EPYC (no VNNI) + not recorded" in within
    assert "**Warning: the studies of seed 0 ran on different CPUs" in within


def test_a_seed_measured_on_one_cpu_refuses_a_study_on_another() -> None:
    epyc, xeon = "AMD EPYC (VNNI)", "Intel(R) Xeon(R) Processor (VNNI)"
    rows = [_row(0, "uniform", epyc), _row(1, "uniform", ""), _row(2, "uniform", xeon)]
    with pytest.raises(SystemExit, match="seed 0 rows measured on AMD EPYC"):
        check_machine(rows, rows[0]["pair"], 0, xeon)
    check_machine(rows, rows[0]["pair"], 0, epyc)
    check_machine(rows, rows[0]["pair"], 1, xeon)  # not recorded: an older row, nothing to compare
    check_machine(rows, rows[0]["pair"], 2, xeon)
    check_machine(rows, "another-pair", 0, xeon)


def test_a_variant_sets_its_strategys_knobs_in_its_own_space_only() -> None:
    import argparse

    import yaml

    from autocompress.space import parse_space

    args = argparse.Namespace(
        trials=4, cpu_hours=None, finetune=None, repeats=None, runtimes=None, no_target=False, threads=1
    )
    pair = PAIRS["digits-resnet"]
    settings = settings_for(pair, args)
    int8 = space_yaml(pair, settings, "netadapt-int8")
    assert parse_space(int8).strategy == {"netadapt": {"weight_bits": "min"}}
    assert "strategy" not in yaml.safe_load(space_yaml(pair, settings, "netadapt"))
    assert VARIANTS["netadapt-int8"][0] == "netadapt" and "netadapt-int8" in STRATEGIES
