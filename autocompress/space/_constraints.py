"""The constraints a space file may name: one table that the schema, the docs, `violations` and the report read.

Adding a constraint is one line in `CONSTRAINTS`: the schema gains the key (with its bounds and description),
the generated reference lists it, and trials are judged by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: relative difference within which a metric equals its constraint's limit: float rounding of a difference of
#: metrics (an accuracy drop), far below any difference a metric can show (one image in a million)
ROUNDING = 1e-9


@dataclass(frozen=True)
class Constraint:
    """A bound on one trial metric. ``direction`` ``max``: the metric may be at most the limit (latency, size);
    ``min``: at least the limit (speedup). ``whole``: the limit is a count; ``fraction``: it lies in [0, 1].
    ``scale_floor`` keeps the normalised violation finite for a limit of (nearly) zero. ``trained``: the metric
    moves with fine-tuning (accuracy), so only a trial fine-tuned for the full budget can be held to it; the
    others (latency, size, MACs) are fixed once the model is pruned and quantized."""

    metric: str
    direction: Literal["max", "min"]
    description: str
    whole: bool = False
    fraction: bool = False
    scale_floor: float = 0.0
    trained: bool = False

    def violation(self, value: float, limit: float) -> float:
        """Normalised violation: > 0 broken (by that fraction of the limit), <= 0 met. A value at the limit up to
        float rounding meets it: 50 of 5,000 images below a 0.9706 baseline is a drop of exactly 1 pt, which
        computes as 0.010000000000000009 and would otherwise break a 1-pt budget that the same accuracy, held
        against the floor 0.9706 - 0.01, keeps."""
        excess = value - limit if self.direction == "max" else limit - value
        if abs(excess) <= ROUNDING * max(abs(value), abs(limit), 1.0):
            excess = 0.0
        return excess / max(limit, self.scale_floor)


#: constraint name (the space file's key) -> the metric it bounds and how
CONSTRAINTS: dict[str, Constraint] = {
    "max_accuracy_drop": Constraint(
        "accuracy_drop", "max", "baseline accuracy minus accuracy", fraction=True, scale_floor=0.01, trained=True
    ),
    "min_speedup": Constraint("speedup", "min", "baseline latency (batch 1) / latency"),
    "min_speedup_b32": Constraint(
        "speedup_b32", "min", "baseline latency (batch 32) / latency, for models served in batches"
    ),
    "max_latency_ms": Constraint("latency_ms", "max", "latency at batch 1 in ms"),
    "max_size_bytes": Constraint("size_bytes", "max", "serialised model size", whole=True),
    "max_macs": Constraint("macs", "max", "multiply-accumulates per sample", whole=True),
}


def violations(metrics: dict[str, float], constraints: dict[str, float]) -> dict[str, float]:
    """Each named constraint's normalised violation: > 0 broken (by that fraction of its limit), <= 0 met."""
    return {
        name: CONSTRAINTS[name].violation(metrics[CONSTRAINTS[name].metric], limit)
        for name, limit in constraints.items()
    }
