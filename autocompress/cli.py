"""The `autocompress` command line (contract in DESIGN.md).

Exit codes: 0 success; 2 bad input (one line on stderr naming the place and what would be right);
1 any other failure; 130 interrupted (the study resumes with ``autocompress resume``).
``--format json`` prints one JSON document on stdout and nothing else there.
"""

from __future__ import annotations

import csv
import functools
import inspect
import io
import json
import math
import signal
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer import Abort, Exit

try:  # typer >= 0.26 vendors click; its usage errors are not click's
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover - older typer on plain click
    from click.exceptions import UsageError  # type: ignore[assignment]

from autocompress import study as api
from autocompress.errors import SearchStopped, UserError

if TYPE_CHECKING:
    from autocompress.runtime import Progress as LoopProgress

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Search how to compress a trained PyTorch model, then export the best one.",
)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


class TableFormat(StrEnum):
    table = "table"
    json = "json"


class BoardFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"
    parquet = "parquet"


Storage = Annotated[
    str | None,
    typer.Option("--storage", help="SQLAlchemy URL [default: $AUTOCOMPRESS_STORAGE or sqlite:///autocompress.db]"),
]
Trials = Annotated[int | None, typer.Option("--trials", help="total finished trials")]
Time = Annotated[str | None, typer.Option("--time", help="total wall time, e.g. 30m")]
CpuHours = Annotated[float | None, typer.Option("--cpu-hours", help="total CPU hours used by trials")]
MaxFailures = Annotated[int | None, typer.Option("--max-failures", help="failed trials before the study stops")]
OnBudget = Annotated[str, typer.Option("--on-budget", help="running trials when a budget runs out: finish|cancel")]
Workers = Annotated[int, typer.Option("--workers", help="trials run at once, one Ray worker (CPU) each")]
RayAddress = Annotated[str | None, typer.Option("--ray-address", help="join an existing Ray cluster")]
TrialTimeout = Annotated[float | None, typer.Option("--trial-timeout", help="seconds before a trial is failed")]
StoreRetry = Annotated[
    str | None,
    typer.Option("--store-retry", help="how long to retry an unreachable study store before stopping [default: 60s]"),
]
TrialMemory = Annotated[
    str | None, typer.Option("--trial-memory", help="memory one trial may add, e.g. 2GB; past it the trial fails")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar")]
Executor = Annotated[str, typer.Option("--executor", hidden=True, help="ray (default) or inline")]


def _progress_reporter(quiet: bool) -> tuple[Any, Any]:
    if quiet:
        return None, None
    bar = Progress(
        TextColumn("[bold]trials"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[best]}"),
        console=err,
        transient=False,
    )
    task_id = bar.add_task("search", total=None, best="")

    def report(progress: LoopProgress) -> None:
        if not bar.live.is_started:  # started by the first finished trial: bad input prints nothing else
            bar.start()
        best = f"best feasible accuracy {progress.best_feasible:.4f}" if progress.best_feasible else "none feasible yet"
        if progress.time_left_s is not None:
            best += f", {progress.time_left_s:.0f} s left"
        bar.update(task_id, completed=progress.finished, total=progress.budget_trials, best=best)

    return bar, report


def _interruptible() -> None:
    """SIGINT and SIGTERM raise KeyboardInterrupt. SIGINT is set too: a search started as a background job of a
    script inherits SIGINT ignored, and Python then leaves it ignored, so `kill -INT` would go unheard."""

    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise)


def _print_board(study: api.Study, top: int = 5) -> None:
    rows = study.leaderboard(top=top)
    out.print(_board_table(rows))
    _print_versus_uniform(study)


def _print_versus_uniform(study: api.Study) -> None:
    """The one line saying whether the per-layer search beat the best uniform recipe (`Study.versus_uniform`),
    unwrapped."""
    out.print(study.versus_uniform().line, soft_wrap=True, highlight=False, markup=False)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def _board_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(show_lines=False)
    columns = [
        "rank",
        "trial",
        "state",
        "feasible",
        "pareto",
        "accuracy",
        "test_accuracy",
        "accuracy_drop",
        "speedup",
        "speedup_b32",
        "latency_ms",
        "size_bytes",
        "uniform",
        "violation",
        "error",
    ]
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_fmt(row.get(c)) for c in columns))
    return table


#: the flags `search` and `resume` share, in --help order after each command's own: parameter -> (annotation,
#: default). All but ``quiet`` are keys of `api.RunOptions`.
_RUN_FLAGS: dict[str, tuple[Any, Any]] = {
    "trials": (Trials, None),
    "time_budget": (Time, None),
    "cpu_hours": (CpuHours, None),
    "max_failures": (MaxFailures, None),
    "on_budget": (OnBudget, "finish"),
    "workers": (Workers, 1),
    "ray_address": (RayAddress, None),
    "trial_timeout": (TrialTimeout, None),
    "store_retry": (StoreRetry, None),
    "trial_memory": (TrialMemory, None),
    "quiet": (Quiet, False),
    "executor": (Executor, "ray"),
}


def _run_command(command: Callable[..., None]) -> Callable[..., None]:
    """A command that runs a study: Typer sees the command's own parameters followed by `_RUN_FLAGS`, and the
    command is called with its own ones plus ``options`` (the flags as one `api.RunOptions`) and ``quiet``.
    Written once, so that `search` and `resume` cannot drift apart."""
    own = [
        p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name not in ("options", "quiet")
    ]
    shared = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (annotation, default) in _RUN_FLAGS.items()
    ]

    @functools.wraps(command)
    def run(**kwargs: Any) -> None:
        flags = {name: kwargs.pop(name) for name in _RUN_FLAGS}
        quiet = flags.pop("quiet")
        command(**kwargs, options=cast(api.RunOptions, flags), quiet=quiet)

    params = [*own, *shared]
    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


@app.command()
@_run_command
def search(
    space: Annotated[str, typer.Argument(help="space YAML file")],
    study: Annotated[str | None, typer.Option("--study", help="study name [default: SPACE-date]")] = None,
    storage: Storage = None,
    strategy: Annotated[str, typer.Option("--strategy", help="see 'autocompress strategies'")] = "tpe",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    warm_start: Annotated[
        str | None,
        typer.Option(
            "--warm-start",
            metavar="STUDY",
            help="first tell the strategy the finished trials of STUDY (same storage, same task); "
            "they are not copied into this study nor counted in its budget",
        ),
    ] = None,
    *,
    options: api.RunOptions,
    quiet: bool,
) -> None:
    """Create a study from SPACE and search until the budget is spent."""
    name = study or api.default_study_name(space)
    _run_study(
        name,
        quiet,
        lambda report: api.search(
            space,
            study=name,
            storage=storage,
            strategy=strategy,
            seed=seed,
            warm_start_from=warm_start,
            **(options | {"on_progress": report}),
        ),
    )


def _run_study(name: str, quiet: bool, run: Callable[[Any], api.Study]) -> None:
    """Run a search or resume with a progress bar; Ctrl-C or SIGTERM exit 130 with how to go on, and the
    end prints why it stopped and the top of the leaderboard."""
    _interruptible()
    bar, report = _progress_reporter(quiet)
    try:
        result = run(report)
    except KeyboardInterrupt:
        err.print(f"interrupted; finished trials are stored. Go on with: autocompress resume {name}")
        raise typer.Exit(130) from None
    except SearchStopped as exc:
        sys.stderr.write(f"autocompress: stopped: {exc}\n")
        raise typer.Exit(1) from None
    finally:
        if bar:
            bar.stop()
    record = result.record
    if "warm_start" in record.spent:
        err.print(api.WarmStart(**record.spent["warm_start"]).line())
    err.print(f"study {result.name!r}: {record.stop_reason}")
    _print_board(result)


@app.command()
@_run_command
def resume(
    name: Annotated[str, typer.Argument(help="study name")],
    storage: Storage = None,
    *,
    options: api.RunOptions,
    quiet: bool,
) -> None:
    """Continue a study from the store; --trials and --time set new totals."""
    _run_study(name, quiet, lambda report: api.resume(name, storage=storage, **(options | {"on_progress": report})))


@app.command()
def studies(
    storage: Storage = None,
    format: Annotated[TableFormat, typer.Option("--format")] = TableFormat.table,
) -> None:
    """List the studies in the store."""
    from autocompress.store import StudyStore

    records = StudyStore(storage, create=False).studies()
    rows: list[dict[str, Any]] = [
        {
            "name": r.name,
            "task": r.task,
            "strategy": r.strategy,
            "status": r.status,
            "trials": r.counts,
            "created_at": r.created_at.isoformat(timespec="seconds"),
        }
        for r in records
    ]
    if format is TableFormat.json:
        print(json.dumps(rows))
        return
    table = Table()
    for column in ("name", "task", "strategy", "status", "trials", "created_at"):
        table.add_column(column)
    for row in rows:
        row["trials"] = ", ".join(f"{k} {v}" for k, v in sorted(row["trials"].items())) or "none"
        table.add_row(*(str(row[c]) for c in ("name", "task", "strategy", "status", "trials", "created_at")))
    out.print(table)


@app.command()
def status(
    name: Annotated[str, typer.Argument()],
    storage: Storage = None,
    format: Annotated[TableFormat, typer.Option("--format")] = TableFormat.table,
) -> None:
    """Budgets, what was spent, trial counts and the best feasible trial of a study."""
    study = api.load_study(name, storage)
    record = study.record
    best = study.leaderboard(top=1, feasible_only=True)
    doc = {
        "name": record.name,
        "status": record.status,
        "stop_reason": record.stop_reason,
        "strategy": record.strategy,
        "seed": record.seed,
        "task": record.task,
        "budgets": record.budgets,
        "spent": record.spent,
        "trials": record.counts,
        "baseline": record.baseline,
        "best_feasible": best[0] if best else None,
    }
    if format is TableFormat.json:
        print(json.dumps(doc))
        return
    table = Table(show_header=False)
    for key, value in doc.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else _fmt(value))
    out.print(table)


@app.command()
def leaderboard(
    name: Annotated[str, typer.Argument()],
    storage: Storage = None,
    top: Annotated[int | None, typer.Option("--top", min=1)] = None,
    feasible_only: Annotated[bool, typer.Option("--feasible-only")] = False,
    pareto: Annotated[bool, typer.Option("--pareto", help="only the Pareto front of feasible trials")] = False,
    format: Annotated[BoardFormat, typer.Option("--format")] = BoardFormat.table,
    out_file: Annotated[str | None, typer.Option("--out", help="file to write (needed by --format parquet)")] = None,
) -> None:
    """Trials ranked: feasible first (Pareto front, then accuracy), infeasible by constraint violation.

    The table ends with one line saying whether the per-layer search beat the best uniform recipe (the
    ``uniform`` column names the trials that are one). ``--format parquet --out F`` writes the ranked rows
    to the Parquet file F (for every trial with its layer settings, use ``Study.to_parquet`` in Python)."""
    if format is BoardFormat.parquet and not out_file:
        raise UserError("--format parquet", "needs --out FILE.parquet to write to")
    study = api.load_study(name, storage)
    rows = study.leaderboard(top=top, feasible_only=feasible_only, pareto_only=pareto)
    if format is BoardFormat.parquet:
        import pandas as pd

        pd.DataFrame(rows, columns=list(rows[0]) if rows else ["rank", "trial"]).to_parquet(out_file, index=False)
        err.print(f"{len(rows)} rows written to {out_file}")
    elif format is BoardFormat.json:
        print(json.dumps(rows))
    elif format is BoardFormat.csv:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["rank", "trial"])
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(buffer.getvalue())
    else:
        out.print(_board_table(rows))
        _print_versus_uniform(study)


@app.command()
def export(
    name: Annotated[str, typer.Argument()],
    out_dir: Annotated[str, typer.Option("--out", help="folder for model.pt and manifest.json")],
    storage: Storage = None,
    trial: Annotated[
        int | None, typer.Option("--trial", help="trial number [default: --prefer's pick of the feasible front]")
    ] = None,
    allow_infeasible: Annotated[
        bool, typer.Option("--allow-infeasible", help="export the closest trial when none is feasible")
    ] = False,
    prefer: Annotated[
        str,
        typer.Option(
            "--prefer",
            help="which trial of the feasible Pareto front: knee (best balance of the objectives, each scaled "
            "over the front), accurate (best first objective) or fast (best second objective)",
        ),
    ] = "knee",
) -> None:
    """Export a trial's model (TorchScript) with a manifest, verified in a fresh process."""
    study = api.load_study(name, storage)
    path = study.export(out_dir, trial, allow_infeasible=allow_infeasible, prefer=prefer)
    manifest = json.loads((path.parent / "manifest.json").read_text())
    feasible = "" if manifest["feasible"] else " (INFEASIBLE: meets no constraint set; closest trial)"
    out.print(
        f"exported trial {manifest['trial']}{feasible} to {path} "
        f"(verified: val accuracy {manifest['verified']['accuracy']:.4f}, "
        f"test accuracy {manifest['verified']['test_accuracy']:.4f})"
    )


@app.command()
def verify(
    name: Annotated[str, typer.Argument()],
    storage: Storage = None,
    format: Annotated[TableFormat, typer.Option("--format")] = TableFormat.table,
) -> None:
    """Check every stored artefact of a study against its stored sha256; exit 1 when one is missing or damaged."""
    checks = api.load_study(name, storage).verify()
    bad = [c for c in checks if c.problem]
    if format is TableFormat.json:
        print(
            json.dumps(
                [
                    {"trial": c.trial, "kind": c.artefact.kind, "path": c.artefact.path, "status": c.status}
                    for c in checks
                ]
            )
        )
    else:
        for check in bad:
            err.print(f"autocompress: {check.problem}", highlight=False, soft_wrap=True)
        trials = len({c.trial for c in checks})
        out.print(f"{len(checks) - len(bad)} of {len(checks)} artefacts of {trials} trials match their sha256")
    if bad:
        raise typer.Exit(1)


@app.command()
def report(
    name: Annotated[str, typer.Argument()],
    out_dir: Annotated[str, typer.Option("--out", help="folder for index.html and its PNGs")],
    storage: Storage = None,
    top: Annotated[int, typer.Option("--top", min=1, help="trials in the policy heat map and table")] = 10,
    sensitivity: Annotated[
        str | None,
        typer.Option(
            "--sensitivity",
            help="CSV with columns layer,sparsity,"
            "accuracy [default: sensitivity.csv in the study's "
            "artefact folder, if any]",
        ),
    ] = None,
) -> None:
    """Write a self-contained HTML report (Pareto front, policies, progress, failures, sensitivity)."""
    study = api.load_study(name, storage)
    page = study.report(out_dir, sensitivity=sensitivity, top=top)
    _print_versus_uniform(study)
    out.print(f"report written to {page}")


@app.command()
def sensitivity(
    space: Annotated[str, typer.Argument(help="space YAML file")],
    out_dir: Annotated[str, typer.Option("--out", help="folder for sensitivity.csv and sensitivity.png")],
    sparsities: Annotated[
        str, typer.Option("--sparsities", help="fractions of channels to remove, comma-separated")
    ] = "0.25,0.5,0.75",
    finetune_epochs: Annotated[
        float, typer.Option("--finetune-epochs", help="fine-tuning of each pruned copy before it is evaluated")
    ] = 0.0,
    format: Annotated[TableFormat, typer.Option("--format")] = TableFormat.table,
) -> None:
    """Prune each prunable layer alone at each sparsity and measure the accuracy (per-layer sensitivity)."""
    from autocompress._sensitivity import sensitivity as analyse

    bar = (
        None
        if format is TableFormat.json
        else Progress(
            TextColumn("[bold]layers x sparsities"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[last]}"),
            console=err,
            transient=True,
        )
    )

    def report(row: Any, done: int, total: int) -> None:
        if bar is None:
            return
        if not bar.live.is_started:
            bar.start()
            bar.add_task("sensitivity", total=total, last="")
        bar.update(bar.task_ids[0], completed=done, last=f"{row.layer} @ {row.sparsity:g}: {row.accuracy:.4f}")

    try:
        result = analyse(space, out_dir, sparsities=sparsities, finetune_epochs=finetune_epochs, on_row=report)
    finally:
        if bar is not None:
            bar.stop()
    if format is TableFormat.json:
        print(json.dumps(result.to_dict()))
        return
    table = Table(
        title=f"accuracy with one layer pruned (baseline {result.baseline_accuracy:.4f}, criterion {result.criterion})"
    )
    table.add_column("layer")
    table.add_column("channels", justify="right")
    for level in result.sparsities:
        table.add_column(f"{level:.0%} removed", justify="right")
    table.add_column("worst drop", justify="right")
    for layer in dict.fromkeys(r.layer for r in result.rows):
        rows = [r for r in result.rows if r.layer == layer]
        worst = max(r.accuracy_drop for r in rows)
        style = "red" if worst > 0.05 else "green" if worst <= 0.01 else ""
        table.add_row(
            layer,
            str(rows[0].channels),
            *(f"{r.accuracy:.4f}" for r in rows),
            f"[{style}]{worst:.4f}[/]" if style else f"{worst:.4f}",
        )
    out.print(table)
    err.print(
        f"written {result.csv} and {result.png}; to see it beside a study: "
        f"autocompress report NAME --sensitivity {out_dir}"
    )


@app.command()
def strategies() -> None:
    """List the search strategies and what each searches."""
    from autocompress.strategies import STRATEGIES

    table = Table()
    table.add_column("strategy")
    table.add_column("what it searches, and its knobs")
    for name, cls in STRATEGIES.items():
        table.add_row(name, cls.description)
    out.print(table)


def main(argv: list[str] | None = None) -> None:
    """Entry point: maps errors to exit codes (2 bad input, 1 failure) with one line on stderr."""
    try:
        code = app(args=argv, standalone_mode=False)
    except UserError as exc:
        sys.stderr.write(f"autocompress: error: {exc}\n")
        sys.exit(2)
    except UsageError as exc:
        where = f"{exc.ctx.command_path}: " if exc.ctx else ""
        sys.stderr.write(f"autocompress: error: {where}{exc.format_message()}\n")
        sys.exit(2)
    except Abort:
        sys.stderr.write("autocompress: interrupted\n")
        sys.exit(130)
    except Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # anything else is our failure: say it in one line, exit 1
        sys.stderr.write(f"autocompress: failed: {type(exc).__name__}: {exc}\n")
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
