"""Ranking trials against the budgets: feasible first, Pareto fronts, hypervolume; and the verdict of a
study's per-layer trials against its best uniform recipe (`versus_uniform`).

Pure functions over plain values so that the leaderboard, the report, export and benchmarks agree. The
store (`StudyStore.ranked`) runs the same order with SQL doing the cheap parts: only feasible trials'
objective values reach Python (for `rank_feasible`), infeasible and unfinished ones come sorted and cut to
what ``--top`` needs; the non-dominated sort of two objectives is O(n log n).
"""

from __future__ import annotations

import bisect
import heapq
import math
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


@dataclass(frozen=True)
class RankRow:
    """The fields ranking needs of one trial: its objective values oriented larger-is-better
    (see `oriented`) and its total normalised constraint violation (0 when every constraint is met)."""

    number: int
    state: str
    values: tuple[float, ...]
    violation: float


def oriented(values: Mapping[str, Any], objectives: Mapping[str, str]) -> tuple[float, ...]:
    """Objective values turned so that larger is better for all; a missing or null value is the worst."""
    out = []
    for metric, direction in objectives.items():
        value = values.get(metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            out.append(-math.inf)
        else:
            out.append(float(value) if direction == "max" else -float(value))
    return tuple(out)


def total_violation(violations: Mapping[str, float]) -> float:
    """Sum of the broken constraints' normalised violations (met constraints count 0)."""
    return sum(max(0.0, v) for v in violations.values())


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def pareto_fronts(points: Sequence[Sequence[float]]) -> list[int]:
    """Non-dominated sorting (larger is better): the front index (0 = Pareto front) of every point.

    Two objectives take an O(n log n) sweep; more objectives the O(k n^2)-per-front peeling. Equal points
    never dominate each other, so they share a front.
    """
    if points and len(points[0]) == 2:
        return _fronts_2d(points)
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


def _fronts_2d(points: Sequence[Sequence[float]]) -> list[int]:
    """Sweep over distinct points by (x, y) descending: every earlier distinct point has x' >= x, so it
    dominates the current one iff y' >= y. Front f's largest y so far never increases with f, so the
    current point joins the first front whose largest y is below its own (binary search)."""
    distinct = sorted({(float(p[0]), float(p[1])) for p in points}, reverse=True)
    neg_best_y: list[float] = []  # -(largest y in front f): non-decreasing, searchable with bisect
    front_of: dict[tuple[float, float], int] = {}
    for x, y in distinct:
        f = bisect.bisect_right(neg_best_y, -y)
        if f == len(neg_best_y):
            neg_best_y.append(-y)
        else:
            neg_best_y[f] = min(neg_best_y[f], -y)
        front_of[(x, y)] = f
    return [front_of[(float(p[0]), float(p[1]))] for p in points]


def hypervolume_2d(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Area dominated by `points` (larger is better on both axes) above the `reference` point.

    The reference point is the caller's statement of the worst acceptable values (the report uses accuracy
    0 and speedup 1.0, i.e. the baseline's speed); points not strictly better on both axes add nothing.
    """
    pts = sorted((p for p in points if p[0] > reference[0] and p[1] > reference[1]), key=lambda p: -p[0])
    area, best_y = 0.0, reference[1]
    for x, y in pts:
        if y > best_y:
            area += (x - reference[0]) * (y - best_y)
            best_y = y
    return area


#: how export picks one trial of the feasible Pareto front (see `preferred`)
PREFERENCES = ("knee", "accurate", "fast")


def preferred(points: Sequence[Sequence[float]], prefer: str) -> int:
    """Index of the preferred point of a Pareto front, given oriented (larger-is-better) objective values in
    the study's objective order; ties go to the earlier point (pass the front in leaderboard order).

    ``accurate``: the best first objective (accuracy in the shipped spaces; the leaderboard's rank 1).
    ``fast``: the best second objective (latency or speedup in the shipped spaces).
    ``knee``: the best balance: each objective scaled to [0, 1] over the front (1 = the front's best), the
    point nearest to all-ones (the ideal no single trial reaches).
    """
    if prefer not in PREFERENCES:
        raise ValueError(f"unknown preference {prefer!r}; choose one of {', '.join(PREFERENCES)}")
    if prefer == "accurate":
        axis = 0
    elif prefer == "fast":
        axis = min(1, len(points[0]) - 1)
    else:
        lows = [min(p[k] for p in points) for k in range(len(points[0]))]
        spans = [max(p[k] for p in points) - lows[k] for k in range(len(points[0]))]

        def gap(p: Sequence[float]) -> float:
            scaled = ((v - lo) / span if span else 1.0 for v, lo, span in zip(p, lows, spans, strict=True))
            return math.fsum((1 - x) ** 2 for x in scaled)

        return min(range(len(points)), key=lambda i: (gap(points[i]), i))
    return min(range(len(points)), key=lambda i: (-points[i][axis], i))


def rank_feasible(
    numbers: Sequence[int], points: Sequence[Sequence[float]], top: int | None = None
) -> list[RankedTrial]:
    """Feasible complete trials (`numbers`, with their oriented objective `points`) ranked 1..n by Pareto
    front, then first objective, then number; only the first `top` when given (a partial sort)."""
    fronts = pareto_fronts(points)

    def key(i: int) -> tuple[int, float, int]:
        return fronts[i], -points[i][0], numbers[i]

    order = sorted(range(len(numbers)), key=key) if top is None else heapq.nsmallest(top, range(len(numbers)), key)
    return [RankedTrial(numbers[i], rank + 1, True, fronts[i], 0.0) for rank, i in enumerate(order)]


def rank_rows(rows: Sequence[RankRow]) -> list[RankedTrial]:
    """Order trials: feasible complete ones as `rank_feasible`; then infeasible complete ones by total
    normalised violation, then number; then the rest (failed, running, queued) by number."""
    complete = [r for r in rows if r.state == "complete"]
    feasible = [r for r in complete if r.violation <= 0]
    ranked = rank_feasible([r.number for r in feasible], [r.values for r in feasible])
    for r in sorted((r for r in complete if r.violation > 0), key=lambda r: (r.violation, r.number)):
        ranked.append(RankedTrial(r.number, len(ranked) + 1, False, None, r.violation))
    for r in sorted((r for r in rows if r.state != "complete"), key=lambda r: r.number):
        ranked.append(RankedTrial(r.number, len(ranked) + 1, False, None, math.inf))
    return ranked


def rank_trials(trials: Sequence[Mapping[str, Any]], objectives: Mapping[str, str]) -> list[RankedTrial]:
    """`rank_rows` over trial mappings with ``number``, ``state``, ``metrics`` and ``violations``."""
    return rank_rows(
        [
            RankRow(t["number"], t["state"], oriented(t["metrics"], objectives), total_violation(t["violations"]))
            for t in trials
        ]
    )


@dataclass(frozen=True)
class VersusPoint:
    """One feasible complete trial as `versus_uniform` reads it: its validation accuracy (the figure ranking
    reads; never the test split), its speedup, its fine-tune epochs and, when its policy is a uniform recipe
    (`autocompress.space.uniform_recipe`), that recipe in words; None marks a per-layer policy."""

    number: int
    accuracy: float
    speedup: float
    finetune_epochs: float
    recipe: str | None = None


@dataclass(frozen=True)
class UniformVerdict:
    """Whether a study's per-layer search beat its best uniform recipe: `beats` (None when the study cannot
    tell), the one `line` that says so with the measured numbers, the `speed` metric compared and the two
    trials the line names."""

    beats: bool | None
    line: str
    speed: str
    uniform: VersusPoint | None = None
    per_layer: VersusPoint | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "beats": self.beats,
            "line": self.line,
            "speed_metric": self.speed,
            "uniform_trial": self.uniform.number if self.uniform else None,
            "per_layer_trial": self.per_layer.number if self.per_layer else None,
        }


def versus_uniform(points: Sequence[VersusPoint], speed: str = "speedup", no_reference: str = "") -> UniformVerdict:
    """Compare a study's feasible per-layer trials with its best feasible uniform recipe, at equal accuracy.

    The reference is the fastest feasible uniform trial (every feasible trial meets the accuracy budget, so
    the fastest is the one a user would ship; ties: the more accurate, then the lower number). Per-layer
    search beats it when a feasible per-layer trial Pareto-dominates it on (val accuracy, `speed`): at least
    as accurate and faster (speed ratio > 1.0), or at least as fast and more accurate. There is no noise
    margin: the line prints the measured figures and the trials so the reader judges a 1.01x. When it does not
    beat, the line gives the best per-layer speed at >= the uniform's accuracy and the best per-layer accuracy
    at >= its speed. `no_reference` is the advice appended when no feasible trial is a uniform recipe.
    """
    uniform = [p for p in points if p.recipe is not None]
    per_layer = [p for p in points if p.recipe is None]
    if not points:
        return UniformVerdict(None, "No feasible trial yet: nothing to compare with a uniform recipe.", speed)
    if not uniform:
        line = (
            f"No uniform reference: none of this study's {len(points)} feasible trials is a uniform recipe, so it "
            f"cannot say whether per-layer search beats one. {no_reference}"
        )
        return UniformVerdict(None, line.strip(), speed)
    ref = max(uniform, key=lambda p: (p.speedup, p.accuracy, -p.number))
    best = f"best uniform {ref.speedup:.2f}x {speed} at {ref.accuracy:.4f} val (trial {ref.number}: {ref.recipe})"
    if not per_layer:
        return UniformVerdict(None, f"No feasible per-layer trial to compare with: {best}.", speed, ref)
    as_accurate = [p for p in per_layer if p.accuracy >= ref.accuracy]
    as_fast = [p for p in per_layer if p.speedup >= ref.speedup]
    faster = max(as_accurate, key=lambda p: (p.speedup, p.accuracy, -p.number), default=None)
    sharper = max(as_fast, key=lambda p: (p.accuracy, p.speedup, -p.number), default=None)

    def epochs(p: VersusPoint) -> str:
        same = p.finetune_epochs == ref.finetune_epochs
        return "" if same else f"; fine-tuned {p.finetune_epochs:g} vs {ref.finetune_epochs:g} epochs"

    if faster is not None and faster.speedup > ref.speedup:
        line = (
            f"Per-layer search beats the best uniform recipe: {faster.speedup:.2f}x vs {ref.speedup:.2f}x {speed} "
            f"at >= the uniform's val accuracy (trial {faster.number}, {faster.accuracy:.4f} val, vs uniform trial "
            f"{ref.number}, {ref.accuracy:.4f} val: {ref.recipe}{epochs(faster)})"
        )
        return UniformVerdict(True, line, speed, ref, faster)
    if sharper is not None and sharper.accuracy > ref.accuracy:
        line = (
            f"Per-layer search beats the best uniform recipe: {sharper.accuracy:.4f} vs {ref.accuracy:.4f} val "
            f"accuracy at >= the uniform's {ref.speedup:.2f}x {speed} (trial {sharper.number}, "
            f"{sharper.speedup:.2f}x, vs uniform trial {ref.number}: {ref.recipe}{epochs(sharper)})"
        )
        return UniformVerdict(True, line, speed, ref, sharper)
    parts = [f"Per-layer search does not beat the best uniform recipe on this model: {best}"]
    if faster is not None:
        parts.append(
            f"best per-layer at >= that accuracy {faster.speedup:.2f}x (trial {faster.number}{epochs(faster)})"
        )
    else:
        parts.append("no feasible per-layer trial reaches that accuracy")
    if sharper is not None:
        parts.append(
            f"at >= {ref.speedup:.2f}x the best per-layer reaches {sharper.accuracy:.4f} val "
            f"(trial {sharper.number}{epochs(sharper)})"
        )
    else:
        parts.append(f"no feasible per-layer trial reaches {ref.speedup:.2f}x")
    return UniformVerdict(False, "; ".join(parts), speed, ref, faster or sharper)
