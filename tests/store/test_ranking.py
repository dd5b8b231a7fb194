"""Ranking: the O(n log n) two-objective non-dominated sort agrees with the definition, and it is fast."""

from __future__ import annotations

import random

import pytest

from autocompress.store import dominates, hypervolume_2d, pareto_fronts


def fronts_by_definition(points: list[tuple[float, ...]]) -> list[int]:
    """Reference: peel off the points no remaining point dominates, front after front."""
    remaining, fronts, level = set(range(len(points))), [0] * len(points), 0
    while remaining:
        front = {i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining if j != i)}
        for i in front:
            fronts[i] = level
        remaining -= front
        level += 1
    return fronts


@pytest.mark.parametrize("seed", range(30))
def test_two_objective_fronts_match_the_definition_with_ties(seed: int) -> None:
    rng = random.Random(seed)
    grid = rng.choice([3, 6, 50])  # coarse grids give equal coordinates and duplicate points
    points = [(rng.randint(0, grid) / grid, -rng.randint(0, grid) / 3) for _ in range(rng.randint(1, 120))]
    assert pareto_fronts(points) == fronts_by_definition(points)


def test_three_objective_fronts_match_the_definition() -> None:
    rng = random.Random(0)
    points = [tuple(float(rng.randint(0, 5)) for _ in range(3)) for _ in range(80)]
    assert pareto_fronts(points) == fronts_by_definition(points)


def test_two_objective_sort_of_100k_points_finds_the_true_front() -> None:
    """At benchmark scale (its speed is measured in experiments/bench_store.py, not asserted here)."""
    rng = random.Random(1)
    points = [(rng.random(), rng.random()) for _ in range(100_000)]
    fronts = pareto_fronts(points)
    front0 = [p for p, f in zip(points, fronts, strict=True) if f == 0]
    assert not any(dominates(q, p) for p in front0 for q in points[:2000])


def test_hypervolume_counts_the_area_above_the_reference_point() -> None:
    # two steps: (0.9, 2) and (0.8, 3) over reference (0, 1): 0.9*1 + 0.8*1
    assert hypervolume_2d([(0.9, 2.0), (0.8, 3.0), (0.5, 1.5)], (0.0, 1.0)) == pytest.approx(1.7)
    assert hypervolume_2d([(0.9, 0.5)], (0.0, 1.0)) == 0.0  # not better than the reference on speed
