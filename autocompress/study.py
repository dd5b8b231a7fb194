"""The Python API, mirroring the CLI: `search`, `resume`, `load_study` and the `Study` handle.

The CLI is a thin layer over these functions, so a notebook user and a shell user get the same behaviour,
the same validation and the same errors (`UserError` for anything the user can fix).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from autocompress.errors import UserError
from autocompress.store import ArtefactCheck, StudyRecord, StudyStore, TrialRecord, UniformVerdict

if TYPE_CHECKING:  # torch, Ray and Optuna load only where a search runs: readers start in a fraction of a second
    from autocompress.runtime import Budget, Executor, Progress
    from autocompress.space import LayerChoices, Space
    from autocompress.strategies import Controller

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str | float | None, flag: str = "--time") -> float | None:
    """'90', '90s', '30m', '2h', '1d' -> seconds; must be positive."""
    if text is None:
        return None
    match = _DURATION.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise UserError(flag, f"{text!r} is not a positive duration; e.g. 90s, 30m, 2h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def _check_trials(trials: int | None) -> None:
    if trials is not None and trials < 1:
        raise UserError("--trials", f"{trials} is not a positive number of trials")


def _check_workers(workers: int) -> None:
    if workers < 1:
        raise UserError("--workers", f"{workers} is not a positive number of workers")


def _check_timeout(seconds: float | None) -> None:
    if seconds is not None and seconds <= 0:
        raise UserError("--trial-timeout", f"{seconds} is not a positive number of seconds")


def default_study_name(space_path: str | Path) -> str:
    return f"{Path(space_path).stem}-{datetime.now():%Y%m%d-%H%M%S}"


def study_logger(store: StudyStore, name: str) -> logging.Logger:
    """A logger that appends to the study's log file, ``<artefacts>/<study>/study.log``."""
    folder = store.artifacts_root / name
    folder.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"autocompress.study.{name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    path = str((folder / "study.log").resolve())
    if not any(getattr(h, "baseFilename", None) == path for h in logger.handlers):
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    return logger


def _with_runtimes(space: Space, source: str) -> Space:
    """`space` with ``measure.runtimes`` checked (known, installed) or, when the file names none, set to every
    installed runtime."""
    from autocompress.deploy import RUNTIMES, installed_runtimes

    names = space.measure.get("runtimes") or installed_runtimes()
    for name in names:
        if name not in RUNTIMES:
            raise UserError(f"{source}: measure.runtimes", f"unknown runtime {name!r}; known: {', '.join(RUNTIMES)}")
        if not RUNTIMES[name].available():
            package = RUNTIMES[name].package
            raise UserError(f"{source}: measure.runtimes", f"runtime {name!r} is not installed; pip install {package}")
    return dataclasses.replace(space, measure={**space.measure, "runtimes": list(names)})


def _budget(
    trials: int | None,
    time_budget: str | float | None,
    cpu_hours: float | None,
    max_failures: int | None,
    on_budget: str,
    base: Budget | None = None,
    store_retry: str | float | None = None,
) -> Budget:
    """Validate budget flags; values not given keep those of `base` (on resume) or the defaults."""
    from autocompress.runtime import Budget

    _check_trials(trials)
    time_s = parse_duration(time_budget)
    if cpu_hours is not None and cpu_hours <= 0:
        raise UserError("--cpu-hours", f"{cpu_hours} is not a positive number of CPU hours")
    if max_failures is not None and max_failures < 1:
        raise UserError("--max-failures", f"{max_failures} is not a positive number of failures")
    if on_budget not in ("finish", "cancel"):
        raise UserError("--on-budget", f"{on_budget!r} is not one of: finish, cancel")
    base = base or Budget(trials=None if (trials or time_s or cpu_hours) else 20)
    return Budget(
        trials=trials if trials is not None else base.trials,
        time_s=time_s if time_s is not None else base.time_s,
        cpu_s=cpu_hours * 3600 if cpu_hours is not None else base.cpu_s,
        max_failures=max_failures if max_failures is not None else base.max_failures,
        max_retries=base.max_retries,
        store_retry_s=parse_duration(store_retry, "--store-retry") or base.store_retry_s,
        on_budget=on_budget,  # type: ignore[arg-type]
    )


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.I)


def parse_size(text: str | int | None, flag: str = "--trial-memory") -> int | None:
    """'2GB', '2G', '512MB', '1.5GiB' or a number of bytes -> bytes (binary units); must be positive."""
    if text is None:
        return None
    match = _SIZE.match(str(text))
    if not match or float(match.group(1)) <= 0:
        raise UserError(flag, f"{text!r} is not a positive memory size; e.g. 2GB, 512MB")
    return int(float(match.group(1)) * 1024 ** "_kmgt".index(match.group(2).lower() or "_"))


def _executor(
    kind: str, workers: int, ray_address: str | None, trial_timeout: float | None, trial_memory: int | None
) -> Executor:
    from autocompress.runtime import InlineExecutor, RayExecutor

    if kind == "inline":
        return InlineExecutor(trial_memory)
    return RayExecutor(workers, address=ray_address, trial_timeout=trial_timeout, trial_memory=trial_memory)


def check_feasible_up_front(space: Space, model: Any, example_input: Any, source: str) -> None:
    """Reject constraints no policy in the space can meet, before any trial runs.

    Bounds: the most compressed policy's MACs (every layer at its largest sparsity) for ``max_macs``; for
    ``min_speedup`` and ``min_speedup_b32``, that MACs ratio times 32 / (smallest weight bits), a generous
    upper bound on what pruning plus quantization can give on any backend.
    """
    import copy

    from autocompress.compress import prune
    from autocompress.measure import count_macs
    from autocompress.space import LayerSetting, Policy

    if not {"min_speedup", "min_speedup_b32", "max_macs"} & space.constraints.keys():
        return
    extreme = Policy.from_mapping(
        {n: LayerSetting(max(c.channel_sparsity), min(c.weight_bits)) for n, c in space.layers.items()},
        "l1",
        round_to=space.round_to,
    )
    base_macs = sum(count_macs(model, example_input).values())
    pruned_macs = sum(count_macs(prune(copy.deepcopy(model), extreme, example_input), example_input).values())
    bits = min(min(c.weight_bits) for c in space.layers.values())
    bound = base_macs / max(pruned_macs, 1) * 32 / bits
    for name in ("min_speedup", "min_speedup_b32"):
        if space.constraints.get(name, 0) > bound:
            raise UserError(
                f"{source}: constraints.{name}",
                f"{space.constraints[name]:g} cannot be met: even the most compressed policy of "
                f"this space is bounded by {bound:.1f}x; lower it or allow more sparsity/fewer bits",
            )
    if space.constraints.get("max_macs", float("inf")) < pruned_macs:
        raise UserError(
            f"{source}: constraints.max_macs",
            f"{space.constraints['max_macs']:g} cannot be met: the most compressed policy of this space "
            f"still has {pruned_macs} MACs",
        )


def with_latency_table(space: Space, strategy: str) -> Space:
    """`space` with the measured per-layer `LatencyTable` when `strategy` steers by one and the space has none
    yet (measured once per study, in this process, then stored with the space and reused on resume)."""
    from autocompress.runtime import measure_latency_table
    from autocompress.strategies import STRATEGIES

    if space.latency_table is not None or not STRATEGIES[strategy].wants_latency_table(space):
        return space
    return dataclasses.replace(space, latency_table=measure_latency_table(space))


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """What a warm start replayed into a new study's controller: from study `study`, `replayed` finished trials;
    `skipped` counts the others by reason. Stored with the new study as ``spent["warm_start"]``."""

    study: str
    replayed: int
    skipped: dict[str, int]

    def line(self) -> str:
        skipped = "; ".join(f"{count} {why}" for why, count in sorted(self.skipped.items())) or "none"
        return (
            f"warm start from study {self.study!r}: {self.replayed} trials replayed into the controller "
            f"(not copied, not counted in this study's budget); skipped: {skipped}"
        )


def check_warm_start(store: StudyStore, source: str, task: str) -> None:
    """The study to warm-start from exists in `store` and is on `task` (`UserError` naming ``--warm-start``)."""
    if not store.study_exists(source):
        raise UserError(f"--warm-start {source}", "no study of that name in this storage; see 'autocompress studies'")
    other = store.study(source).task
    if other != task:
        raise UserError(
            f"--warm-start {source}",
            f"that study is on task {other!r} and this space on {task!r}; warm-start from a study on the same task",
        )


def warm_start(store: StudyStore, source: str, space: Space, controller: Controller) -> WarmStart:
    """Tell a fresh `controller` the finished trials of study `source` (`Controller.observe`), before its first ask.

    A trial is replayed when it ran at the fine-tune epochs the controller learns from (`Controller.learns_at`;
    the lowest rung under ASHA), its policy is a point of `space` (every searched setting among this space's
    choices, every other option as this space fixes it) and it has this space's objectives and constrained
    metrics. Its objectives are its stored metrics; its feasibility is judged again by this space's
    constraints, so tightening a budget re-ranks the old trials. Failed trials are replayed as failures. The
    others are skipped, counted by reason.

    Replayed trials are only told to the controller: they are not copied into the new study, so its leaderboard
    and its trial budget hold only its own trials (the controller state keeps them as ``observe`` events, so a
    resume replays them too)."""
    from autocompress.space import CONSTRAINTS, Policy, violations
    from autocompress.store import COMPLETE, FINISHED
    from autocompress.strategies import Outcome

    replayed = 0
    skipped: dict[str, int] = {}
    searched = space.dimensions()
    needed = [*space.objectives, *(CONSTRAINTS[name].metric for name in space.constraints)]
    for trial in store.trials(source, FINISHED):
        policy = Policy.from_dict(trial.policy)
        why, outcome = "", Outcome("failed")
        if trial.finetune_epochs != controller.learns_at:
            why = f"ran at other fine-tune epochs than {controller.learns_at:g}"
        elif not space.contains(policy) or policy != space.policy_from_params(
            {f"{layer}/{setting}": getattr(policy[layer], setting) for layer, setting, _ in searched}
        ):
            why = "outside this space"
        elif trial.state == COMPLETE:
            missing = [metric for metric in needed if metric not in trial.metrics]
            if missing:
                why = f"lack the metric {missing[0]!r} this space needs"
            else:
                outcome = Outcome("complete", dict(trial.metrics), violations(trial.metrics, space.constraints))
        if why:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        controller.observe(policy, outcome)
        replayed += 1
    return WarmStart(source, replayed, skipped)


def _controller_from_state(strategy: str, space: Space, seed: int, state: dict[str, Any]) -> Controller:
    from autocompress.strategies import make_controller

    controller = make_controller(strategy, space, seed)
    controller.load_state_dict(state)
    return controller


class RunOptions(TypedDict, total=False):
    """The keyword arguments `search` and `resume` share. The study's budget, as totals over all its
    sessions: `trials` (finished trials), `time_budget` (wall time, e.g. "30m"), `cpu_hours`,
    `max_failures`, `on_budget` ("finish": running trials finish, or "cancel": they are queued for the next
    resume). How trials run: `workers` (default 1), `ray_address` (join a cluster), `executor` ("ray", the
    default, or "inline"), `trial_timeout` (seconds), `trial_memory` (what a trial may add to its process's
    address space, e.g. "2GB"), `store_retry` (how long transient store errors are retried, e.g. "60s") and
    `on_progress` (called with a `Progress` after every finished trial)."""

    trials: int | None
    time_budget: str | float | None
    cpu_hours: float | None
    max_failures: int | None
    on_budget: str
    workers: int
    ray_address: str | None
    executor: str
    trial_timeout: float | None
    trial_memory: str | int | None
    store_retry: str | float | None
    on_progress: Callable[[Progress], None] | None


def _budget_of(options: RunOptions, base: Budget | None = None) -> Budget:
    return _budget(
        options.get("trials"),
        options.get("time_budget"),
        options.get("cpu_hours"),
        options.get("max_failures"),
        options.get("on_budget", "finish"),
        base,
        options.get("store_retry"),
    )


def _session(options: RunOptions) -> Callable[[], Executor]:
    """Validate how trials run (`UserError` naming the flag) and return what starts the executor."""
    from autocompress.runtime import check_ray_address

    workers, kind = options.get("workers", 1), options.get("executor", "ray")
    address, timeout = options.get("ray_address"), options.get("trial_timeout")
    _check_workers(workers)
    _check_timeout(timeout)
    memory = parse_size(options.get("trial_memory"))
    if address and kind == "ray":
        check_ray_address(address)
    return lambda: _executor(kind, workers, address, timeout, memory)


def search(
    space_path: str | Path,
    *,
    study: str | None = None,
    storage: str | None = None,
    strategy: str = "tpe",
    seed: int = 0,
    warm_start_from: str | None = None,
    **options: Unpack[RunOptions],
) -> Study:
    """Create a study from a space file and run it until its budget is spent (`RunOptions`: the budget and
    how trials run).

    Everything the user gave is validated before the store is touched; without `trials` or `time_budget`
    the search runs 20 trials. `warm_start_from` names a study in the same storage, on the same task, whose
    finished trials the new controller is told before its first ask (`warm_start`): they are not copied into
    the new study and not counted in its budget; ``spent["warm_start"]`` records how many were replayed.
    """
    from autocompress.runtime import baseline_metrics
    from autocompress.space import discover_layers, load_space_file, resolve_space
    from autocompress.strategies import make_controller
    from autocompress.task import checked_baseline, load_task

    budget = _budget_of(options)
    start_executor = _session(options)
    spec, text = load_space_file(space_path)
    task = load_task(spec.task, where=f"{space_path}: task")
    model, example = checked_baseline(task)
    space = resolve_space(spec, discover_layers(model, example), str(space_path))
    name = study or default_study_name(space_path)
    space = _with_runtimes(space, str(space_path))
    check_feasible_up_front(space, model, example, str(space_path))
    controller = make_controller(strategy, space, seed)  # validates the strategy's knobs
    store = StudyStore(storage, create=True)
    if store.study_exists(name):
        raise UserError(f"--study {name}", "a study of that name exists; resume it or pick another name")
    if warm_start_from is not None:
        check_warm_start(store, warm_start_from, space.task)
    runner = start_executor()  # joins Ray before anything is stored
    try:
        baseline = baseline_metrics(space.task, {**space.measure, **space.shipping()})
        space = with_latency_table(space, strategy)
        controller = make_controller(strategy, space, seed)
        warm = warm_start(store, warm_start_from, space, controller) if warm_start_from is not None else None
        store.create_study(
            name=name,
            task=space.task,
            strategy=strategy,
            seed=seed,
            space=space.to_dict(),
            space_text=text,
            budgets=budget.to_dict(),
            baseline=baseline,
            controller_state=controller.state_dict(),
        )
        if warm is not None:
            store.update_study(name, spent={**store.study(name).spent, "warm_start": dataclasses.asdict(warm)})
            study_logger(store, name).info("%s", warm.line())
    except BaseException:
        runner.shutdown()
        raise
    return _run_loop(store, name, space, strategy, seed, controller, runner, budget, options)


def resume(name: str, *, storage: str | None = None, **options: Unpack[RunOptions]) -> Study:
    """Continue a study from the store alone; budget options (`RunOptions`) set new totals, the others stay."""
    from autocompress.runtime import Budget
    from autocompress.space import Space

    _check_trials(options.get("trials"))
    start_executor = _session(options)
    store = StudyStore(storage, create=False)
    record = store.study(name)
    importlib.import_module(record.task.partition(":")[0])  # registrations (strategies, criteria) live there
    budget = _budget_of(options, Budget.from_dict(record.budgets))
    space = Space.from_dict(record.space)
    measured = with_latency_table(space, record.strategy)  # a study stored before the table had none
    if measured is not space:
        space = measured
        store.update_study(name, space=space.to_dict())
    try:
        controller = _controller_from_state(record.strategy, space, record.seed, record.controller_state)
    except RuntimeError as exc:  # the stored history does not replay: nothing is changed, the study stays as it is
        raise UserError(f"study {name}: controller_state", str(exc)) from None
    runner = start_executor()
    store.update_study(name, budgets=budget.to_dict(), status="running", stop_reason="")
    return _run_loop(store, name, space, record.strategy, record.seed, controller, runner, budget, options)


def _run_loop(
    store: StudyStore,
    name: str,
    space: Space,
    strategy: str,
    seed: int,
    controller: Controller,
    runner: Executor,
    budget: Budget,
    options: RunOptions,
) -> Study:
    """Run a created or resumed study's search loop until its budget is spent; the loop rebuilds the controller
    from the store's state when another process driving the same study wrote it first."""
    from autocompress.runtime import SearchLoop

    SearchLoop(
        store,
        name,
        space,
        controller,
        runner,
        budget,
        options.get("on_progress"),
        study_logger(store, name),
        rebuild=lambda state: _controller_from_state(strategy, space, seed, state),
    ).run()
    return Study(name, store)


def load_study(name: str, storage: str | None = None) -> Study:
    store = StudyStore(storage, create=False)
    store.check_study(name)
    return Study(name, store)


def _layer_choices(record: StudyRecord) -> dict[str, LayerChoices]:
    """The per-layer choices of a study's space (none for a study stored without them)."""
    from autocompress.space import LayerChoices

    return {name: LayerChoices.from_dict(c) for name, c in record.space.get("layers", {}).items()}


def _recipe(trial: TrialRecord, layers: dict[str, LayerChoices]) -> str | None:
    """The uniform recipe trial's policy applies, in words, or None for a per-layer policy."""
    from autocompress.space import Policy, uniform_recipe

    recipe = uniform_recipe(Policy.from_dict(trial.policy), layers)
    return recipe.describe() if recipe else None


#: ``accuracy`` is the validation figure the search ranked; ``test_accuracy`` is read once it is over, for the
#: final Pareto front and the exported trial only
LEADERBOARD_METRICS = (
    "accuracy",
    "test_accuracy",
    "accuracy_drop",
    "speedup",
    "speedup_b32",
    "latency_ms",
    "latency_ms_b32",
    "runtime",
    "runtime_b32",
    "size_bytes",
    "macs",
    "params",
    "finetune_epochs",
    "rung",
    "promoted_from",
    "continued_from",
)


class Study:
    """A handle on a stored study: reads only, except `export`, which writes files outside the store."""

    def __init__(self, name: str, store: StudyStore) -> None:
        self.name = name
        self.store = store

    @property
    def record(self) -> StudyRecord:
        return self.store.study(self.name)

    def trials(self) -> list[TrialRecord]:
        return self.store.trials(self.name)

    def leaderboard(
        self, top: int | None = None, feasible_only: bool = False, pareto_only: bool = False
    ) -> list[dict[str, Any]]:
        """Trials ranked: feasible first (by Pareto front; within a front by the first objective), then by
        constraint violation.

        Ranking reads only numbers, states, violations and objective values; full trial records are loaded
        for the rows returned, so ``top=10`` on a 100k-trial study stays fast."""
        ranked = self.store.ranked(self.name, top=top, feasible_only=feasible_only or pareto_only)
        if pareto_only:  # front 0 comes first among feasible trials, so a prefix of the ranking suffices
            ranked = [r for r in ranked if r.pareto_front == 0]
        trials = {
            t.number: t for t in self.store.trials(self.name, numbers=[r.number for r in ranked] if top else None)
        }
        layers = _layer_choices(self.record)
        rows = []
        for r in ranked:
            trial = trials[r.number]
            row: dict[str, Any] = {
                "rank": r.rank,
                "trial": trial.number,
                "state": trial.state,
                "feasible": r.feasible,
                "pareto": r.pareto_front == 0,
            }
            row.update({m: trial.metrics.get(m) for m in LEADERBOARD_METRICS})
            row["uniform"] = _recipe(trial, layers)
            row["violation"] = r.violation if r.violation != float("inf") else None
            row["error"] = trial.error
            rows.append(row)
        return rows

    def pareto(self) -> list[dict[str, Any]]:
        return self.leaderboard(pareto_only=True)

    def versus_uniform(self) -> UniformVerdict:
        """Whether this study's per-layer search beat its best uniform recipe, as one line with the measured
        numbers (`autocompress.store.versus_uniform`). It reads feasible complete trials only, their
        validation accuracy (never the test split) and ``speedup``, or ``speedup_b32`` when the study's
        objectives are batch-32 figures. A trial is uniform when its policy is a uniform recipe of the study's
        space (`autocompress.space.uniform_recipe`), whichever strategy proposed it."""
        from autocompress.space import uniform_grid
        from autocompress.store import COMPLETE, VersusPoint, versus_uniform

        record = self.record
        layers = _layer_choices(record)
        speed = "speedup_b32" if {"latency_ms_b32", "speedup_b32"} & set(record.space["objectives"]) else "speedup"
        feasible = [r.number for r in self.store.ranked(self.name, feasible_only=True)]
        points = [
            VersusPoint(
                t.number,
                float(t.metrics["accuracy"]),
                float(t.metrics[speed]),
                t.finetune_epochs,
                _recipe(t, layers),
            )
            for t in self.store.trials(self.name, (COMPLETE,), numbers=feasible)
            if t.metrics.get("accuracy") is not None and t.metrics.get(speed) is not None
        ]
        grid = len(uniform_grid(layers))
        advice = (
            f"Search the same space with --strategy uniform{f' --trials {grid}' if grid else ''} (its uniform grid) "
            "for one, or with tpe or nsga2, whose default warm start runs that grid first."
        )
        return versus_uniform(points, speed, advice)

    def to_parquet(self, path: str | Path) -> Path:
        """Write `trials_dataframe` to a Parquet file (via pyarrow) and return its path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.trials_dataframe().to_parquet(target, index=False)
        return target

    def trials_dataframe(self) -> Any:
        """One row per trial: number, state, a column per layer setting and per metric."""
        import pandas as pd

        rows = []
        for trial in self.trials():
            row: dict[str, Any] = {
                "number": trial.number,
                "state": trial.state,
                "error": trial.error,
                "finetune_epochs": trial.finetune_epochs,
            }
            for layer, setting in trial.policy["layers"].items():
                for key, value in setting.items():
                    row[f"{layer}/{key}"] = value
            row.update(trial.metrics)
            row.update({f"violation/{k}": v for k, v in trial.violations.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def verify(self) -> list[ArtefactCheck]:
        """Check every stored artefact of the study against its stored sha256: one `ArtefactCheck` per
        artefact (status ok, missing or damaged), by trial number. Reads files only; the store is unchanged."""
        return self.store.check_artefacts(self.name)

    def export(
        self, out: str | Path, trial: int | None = None, allow_infeasible: bool = False, prefer: str = "knee"
    ) -> Path:
        """Export trial `trial`, or `prefer`'s pick of the feasible Pareto front (see `export_trial`)."""
        from autocompress.export import export_trial

        return export_trial(self, Path(out), trial, allow_infeasible=allow_infeasible, prefer=prefer)

    def report(self, out: str | Path, sensitivity: str | Path | None = None, top: int = 10) -> Path:
        """Write the HTML report with its plots into `out` (see `autocompress.report`); returns index.html."""
        from autocompress.report import write_report

        return write_report(self, out, sensitivity=sensitivity, top=top)
