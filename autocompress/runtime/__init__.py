"""Runtime: `run_trial` (pure), executors (inline, Ray) and the search loop with budgets and resume."""

from autocompress.runtime._executors import (
    Executor,
    Finished,
    InlineExecutor,
    Job,
    RayExecutor,
    check_ray_address,
)
from autocompress.runtime._loop import Budget, Progress, SearchLoop, violations
from autocompress.runtime._trial import (
    Continuation,
    Gate,
    TrialResult,
    baseline_metrics,
    honest_figures,
    measure_latency_table,
    run_trial,
    shipping_runtime,
    timings_of,
)

__all__ = [
    "Budget",
    "Continuation",
    "Executor",
    "Finished",
    "Gate",
    "InlineExecutor",
    "Job",
    "Progress",
    "RayExecutor",
    "SearchLoop",
    "TrialResult",
    "baseline_metrics",
    "check_ray_address",
    "honest_figures",
    "measure_latency_table",
    "run_trial",
    "shipping_runtime",
    "timings_of",
    "violations",
]
