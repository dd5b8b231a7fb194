"""Ranking trials against the budgets: feasible first, Pareto fronts, hypervolume.

Pure functions over plain values so that the leaderboard, the report, export and benchmarks agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RankedTrial:
    number: int
    rank: int
    feasible: bool
    pareto_front: int | None
    violation: float


def _oriented(values: Mapping[str, float], objectives: Mapping[str, str]) -> tuple[float, ...]:
    """Objective values turned so that larger is better for all."""
    return tuple(values[m] if d == "max" else -values[m] for m, d in objectives.items())


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def pareto_fronts(points: Sequence[Sequence[float]]) -> list[int]:
    """Non-dominated sorting (larger is better): the front index (0 = Pareto front) of every point."""
    remaining = set(range(len(points)))
    fronts = [0] * len(points)
    level = 0
    while remaining:
        front = {i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining if j != i)}
        for i in front:
            fronts[i] = level
        remaining -= front
        level += 1
    return fronts


def hypervolume_2d(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Area dominated by `points` (larger is better on both axes) above the `reference` point."""
    pts = sorted((p for p in points if p[0] > reference[0] and p[1] > reference[1]), key=lambda p: -p[0])
    area, best_y = 0.0, reference[1]
    for x, y in pts:
        if y > best_y:
            area += (x - reference[0]) * (y - best_y)
            best_y = y
    return area


def rank_trials(trials: Sequence[Mapping[str, Any]], objectives: Mapping[str, str]) -> list[RankedTrial]:
    """Order trials: feasible complete ones by Pareto front then first objective; then infeasible complete
    ones by total normalised violation; then the rest (failed, running) by number.

    Each trial is a mapping with ``number``, ``state``, ``metrics`` and ``violations``.
    """
    complete = [t for t in trials if t["state"] == "complete"]
    violation = {t["number"]: sum(max(0.0, v) for v in t["violations"].values()) for t in complete}
    feasible = [t for t in complete if violation[t["number"]] <= 0]
    infeasible = [t for t in complete if violation[t["number"]] > 0]
    fronts = pareto_fronts([_oriented(t["metrics"], objectives) for t in feasible])
    first = next(iter(objectives))
    sign = -1 if objectives[first] == "max" else 1
    order_feasible = sorted(
        zip(feasible, fronts, strict=True), key=lambda tf: (tf[1], sign * tf[0]["metrics"][first], tf[0]["number"])
    )
    ranked: list[RankedTrial] = []
    for t, front in order_feasible:
        ranked.append(RankedTrial(t["number"], len(ranked) + 1, True, front, 0.0))
    for t in sorted(infeasible, key=lambda t: (violation[t["number"]], t["number"])):
        ranked.append(RankedTrial(t["number"], len(ranked) + 1, False, None, violation[t["number"]]))
    for t in sorted((t for t in trials if t["state"] != "complete"), key=lambda t: t["number"]):
        ranked.append(RankedTrial(t["number"], len(ranked) + 1, False, None, float("inf")))
    return ranked
