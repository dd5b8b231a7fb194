"""The line beside the Pareto front: does the per-layer search beat the best uniform recipe (one sparsity and
bit-width on every layer)? Uniform trials are recognised from their policies against the real digits space
(pinned and unprunable layers included). Studies are written to a real SQLite store through the store's life
cycle (no training), with feasibility judged by the real constraints and test-split figures that would flip
the verdict if it read them; the report, `autocompress leaderboard` and `autocompress report` must all say it.
A real digits search (annealing, whose first trial is a uniform recipe) is judged the same way end to end."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

import autocompress
from autocompress.space import Policy, Space, discover_layers, parse_space, resolve_space, uniform_recipe, violations
from autocompress.store import COMPLETE, StudyStore, VersusPoint, versus_uniform
from autocompress.strategies import make_controller
from experiments.tasks.digits import DigitsNet, task
from tests.conftest import FAST_SPACE, run_cli

SPACE = """task: experiments.tasks.digits:task
objectives: {accuracy: max, latency_ms: min}
constraints: {max_accuracy_drop: 0.02, min_speedup: 1.2}
defaults: {channel_sparsity: [0.0, 0.25, 0.5, 0.75], weight_bits: [8, 32]}
layers:
  "stem.0": {channel_sparsity: [0.0, 0.25, 0.5]}
"""
BASELINE = {"accuracy": 0.98, "latency_ms": 1.0}


@pytest.fixture(scope="module")
def space() -> Space:
    return resolve_space(parse_space(SPACE), discover_layers(DigitsNet().eval(), task.example_input(1)))


def uniform(space: Space, sparsity: float, bits: int) -> Policy:
    """The uniform sweep's own point for (sparsity, bits): proposals of the real `uniform` strategy."""
    sweep = make_controller("uniform", space, 0)
    for _ in range(8):
        policy = sweep.ask().policy
        if policy["block1.conv1"].channel_sparsity == sparsity and policy["fc"].weight_bits == bits:
            return policy
    raise AssertionError(f"no grid point {sparsity}, {bits}")


def per_layer(space: Space, sparsity: float) -> Policy:
    """A per-layer policy: int8 everywhere, `sparsity` on one layer only."""
    base = uniform(space, 0.0, 8)
    return Policy.from_mapping(
        {name: {"channel_sparsity": sparsity if name == "down.0" else 0.0, "weight_bits": 8} for name, _ in base},
        base.criterion,
    )


def write_study(folder: Path, name: str, space: Space, trials: list[tuple[Policy, float, float, float]]):
    """A study in a real SQLite store with finished trials of (policy, val accuracy, speedup, test accuracy);
    the test figure is added as the search adds it, after the trial finished."""
    store = StudyStore(f"sqlite:///{folder / 'store.db'}", create=True)
    store.create_study(
        name=name,
        task=space.task,
        strategy="tpe",
        seed=0,
        space=space.to_dict(),
        space_text=SPACE,
        budgets={"trials": len(trials)},
        baseline=BASELINE,
        controller_state={},
    )
    for number, (policy, accuracy, speedup, test) in enumerate(trials):
        metrics = {
            "accuracy": accuracy,
            "accuracy_drop": BASELINE["accuracy"] - accuracy,
            "latency_ms": BASELINE["latency_ms"] / speedup,
            "speedup": speedup,
        }
        store.start_trial(name, number, policy.to_dict(), 1.0, {})
        store.finish_trial(
            name,
            number,
            state=COMPLETE,
            metrics=metrics,
            violations=violations(metrics, space.constraints),
            error="",
            worker="w",
            intermediate=[],
            artefacts=[],
            controller_state={},
            spent={},
        )
        store.add_metrics(name, number, {"test_accuracy": test})
    return autocompress.Study(name, store)


def reference_trials(space: Space) -> list[tuple[Policy, float, float, float]]:
    """Uniform trials 0-2: the best feasible one is trial 0 (1.50x at 0.975 val); trial 1 is faster but breaks
    max_accuracy_drop, trial 2 is slower."""
    return [
        (uniform(space, 0.25, 8), 0.975, 1.50, 0.960),
        (uniform(space, 0.5, 8), 0.950, 2.00, 0.990),
        (uniform(space, 0.0, 8), 0.979, 1.30, 0.970),
    ]


def test_uniform_recipes_are_recognised_whatever_the_space_pins(space) -> None:
    sweep = make_controller("uniform", space, 0)
    described = [uniform_recipe(sweep.ask().policy, space.layers) for _ in range(8)]
    assert [r.describe() if r else None for r in described] == [
        "no pruning, float",
        "no pruning, int8",
        "25% channels pruned, float",
        "25% channels pruned, int8",
        "50% channels pruned, float",
        "50% channels pruned, int8",
        "75% channels pruned, float",  # stem.0 allows 50% at most, the unprunable layers 0%: still the recipe
        "75% channels pruned, int8",
    ]
    assert uniform(space, 0.75, 8)["stem.0"].channel_sparsity == 0.5
    assert uniform_recipe(per_layer(space, 0.5), space.layers) is None
    mixed_bits = Policy.from_mapping(
        {n: {"channel_sparsity": 0.0, "weight_bits": 32 if n == "fc" else 8} for n, _ in uniform(space, 0.0, 8)}
    )
    assert uniform_recipe(mixed_bits, space.layers) is None
    anneal_start = make_controller("anneal", space, 0).ask().policy  # annealing starts from a uniform recipe
    assert uniform_recipe(anneal_start, space.layers).describe() == "no pruning, int8"


def test_verdict_beats_when_a_feasible_per_layer_trial_is_faster_at_the_uniforms_accuracy(
    space, tmp_path, capsys
) -> None:
    study = write_study(
        tmp_path,
        "beats",
        space,
        [
            *reference_trials(space),
            (per_layer(space, 0.5), 0.977, 1.80, 0.950),  # trial 3: as accurate, faster
            (per_layer(space, 0.75), 0.940, 3.00, 0.990),  # trial 4: infeasible, must not count
        ],
    )
    verdict = study.versus_uniform()
    assert verdict.beats is True and (verdict.uniform.number, verdict.per_layer.number) == (0, 3)
    line = (
        "Per-layer search beats the best uniform recipe: 1.80x vs 1.50x speedup at >= the uniform's val accuracy "
        "(trial 3, 0.9770 val, vs uniform trial 0, 0.9750 val: 25% channels pruned, int8)"
    )
    assert verdict.line == line

    board = run_cli("leaderboard", "beats", "--storage", study.store.url)
    assert board.returncode == 0, board.stderr
    assert line in board.stdout.splitlines()  # one unwrapped line below the table
    rows = json.loads(run_cli("leaderboard", "beats", "--storage", study.store.url, "--format", "json").stdout)
    assert {r["trial"]: r["uniform"] for r in rows} == {
        0: "25% channels pruned, int8",
        1: "50% channels pruned, int8",
        2: "no pruning, int8",
        3: None,
        4: None,
    }
    report = run_cli("report", "beats", "--out", str(tmp_path / "report"), "--storage", study.store.url)
    assert report.returncode == 0, report.stderr
    assert line in report.stdout.splitlines()
    page = (tmp_path / "report" / "index.html").read_text()
    section = page[page.index('<h2 id="pareto">') : page.index('<h2 id="policy">')]
    assert f'<p id="versus-uniform" class="good"><b>Versus uniform:</b> {html.escape(line)}</p>' in section


def test_verdict_does_not_beat_on_val_even_where_test_figures_would(space, tmp_path) -> None:
    """Trial 4 is faster than the best uniform recipe and, on the test split, more accurate (0.99 vs 0.96):
    a verdict reading test figures would say "beats". On val it is less accurate, so per-layer search loses."""
    study = write_study(
        tmp_path,
        "loses",
        space,
        [
            *reference_trials(space),
            (per_layer(space, 0.25), 0.978, 1.40, 0.900),  # trial 3: more accurate, slower
            (per_layer(space, 0.5), 0.970, 1.70, 0.990),  # trial 4: faster, less accurate on val
        ],
    )
    verdict = study.versus_uniform()
    line = (
        "Per-layer search does not beat the best uniform recipe on this model: best uniform 1.50x speedup at "
        "0.9750 val (trial 0: 25% channels pruned, int8); best per-layer at >= that accuracy 1.40x (trial 3); "
        "at >= 1.50x the best per-layer reaches 0.9700 val (trial 4)"
    )
    assert verdict.beats is False and verdict.line == line
    page = study.report(tmp_path / "report").read_text()
    assert f'<p id="versus-uniform" class="bad"><b>Versus uniform:</b> {html.escape(line)}</p>' in page


def test_a_study_without_a_feasible_uniform_trial_says_how_to_get_one(space, tmp_path) -> None:
    study = write_study(
        tmp_path,
        "none",
        space,
        [
            (uniform(space, 0.5, 8), 0.950, 2.00, 0.990),  # the only uniform trial: infeasible
            (per_layer(space, 0.5), 0.977, 1.80, 0.950),
        ],
    )
    verdict = study.versus_uniform()
    assert verdict.beats is None and verdict.uniform is None
    assert verdict.line == (
        "No uniform reference: none of this study's 1 feasible trials is a uniform recipe, so it cannot say "
        "whether per-layer search beats one. Search the same space with --strategy uniform --trials 8 (its "
        "uniform grid) for one, or with tpe or nsga2, whose default warm start runs that grid first."
    )


def test_beating_needs_strict_dominance_and_unequal_fine_tuning_is_stated() -> None:
    """`versus_uniform` over plain values: a per-layer trial equal to the reference does not beat it; one as fast
    and more accurate does; trials fine-tuned for other epochs than the reference say so."""
    ref = VersusPoint(0, 0.99, 2.0, 1.0, "50% channels pruned, int8")
    tie = versus_uniform([ref, VersusPoint(1, 0.99, 2.0, 1.0)])
    assert tie.beats is False and tie.per_layer.number == 1
    sharper = versus_uniform([ref, VersusPoint(1, 0.995, 2.0, 3.0)])
    assert sharper.beats is True and sharper.line == (
        "Per-layer search beats the best uniform recipe: 0.9950 vs 0.9900 val accuracy at >= the uniform's 2.00x "
        "speedup (trial 1, 2.00x, vs uniform trial 0: 50% channels pruned, int8; fine-tuned 3 vs 1 epochs)"
    )
    slower = versus_uniform([ref, VersusPoint(1, 0.995, 1.5, 1.0)], "speedup_b32")
    assert slower.beats is False and slower.line.endswith(
        "best per-layer at >= that accuracy 1.50x (trial 1); no feasible per-layer trial reaches 2.00x"
    )
    assert "2.00x speedup_b32 at 0.9900 val" in slower.line
    assert versus_uniform([]).beats is None
    assert versus_uniform([ref]).line == (
        "No feasible per-layer trial to compare with: best uniform 2.00x speedup at 0.9900 val "
        "(trial 0: 50% channels pruned, int8)."
    )


@pytest.mark.slow
def test_a_real_search_states_its_verdict_in_the_report_leaderboard_and_manifest(tmp_path) -> None:
    """Three annealing trials on digits: the first is the uniform recipe it starts from (no pruning, int8),
    the others its per-layer neighbours; the verdict must follow from the leaderboard's own val figures."""
    space = tmp_path / "digits.yaml"
    space.write_text(FAST_SPACE.replace("max_accuracy_drop: 0.02, min_speedup: 1.2", "max_accuracy_drop: 0.5"))
    storage = f"sqlite:///{tmp_path / 'store.db'}"
    study = autocompress.search(space, study="real", storage=storage, strategy="anneal", trials=3, executor="inline")
    rows = [r for r in study.leaderboard() if r["feasible"]]
    assert len(rows) == 3  # no speed constraint and a loose accuracy one: every trial is feasible
    reference = [r for r in rows if r["uniform"]]
    assert [r["trial"] for r in reference] == [0] and reference[0]["uniform"] == "no pruning, int8"
    ref = reference[0]
    winners = [
        r
        for r in rows
        if not r["uniform"]
        and r["accuracy"] >= ref["accuracy"]
        and r["speedup"] >= ref["speedup"]
        and (r["accuracy"], r["speedup"]) != (ref["accuracy"], ref["speedup"])
    ]
    verdict = study.versus_uniform()
    assert verdict.uniform.number == 0 and verdict.beats is bool(winners), (verdict.line, rows)
    assert f"{ref['speedup']:.2f}x" in verdict.line and f"{ref['accuracy']:.4f} val" in verdict.line

    board = run_cli("leaderboard", "real", "--storage", storage)
    assert verdict.line in board.stdout.splitlines(), board.stdout
    exported = run_cli("export", "real", "--storage", storage, "--out", str(tmp_path / "export"))
    assert exported.returncode == 0, exported.stderr
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["versus_uniform"] == verdict.to_dict()
