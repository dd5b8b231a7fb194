"""The study report: one self-contained HTML page with its plots, for reading a study without the CLI.

`write_report` reads the store only (the loop stays the single writer) and writes into `out`:
``index.html`` with every plot embedded as a PNG data URI (so the page alone can be mailed or archived) and
the same PNGs beside it (for slides). Plots use matplotlib's object API with the Agg renderer, so no display
and no global pyplot state are involved.

What the page shows, and why:
- the Pareto front in accuracy vs speedup, feasible and infeasible trials told apart, the constraint lines
  and the baseline, so the trade-off and the budgets are seen together;
- a heat map of the per-layer policy of the top trials, to see which layers the good trials compress;
- the best feasible accuracy so far and the hypervolume after every finished trial, to judge whether more
  trials would help (reference point: `HV_REFERENCE`);
- failed trials with their reasons; a study with no feasible trial names its closest one and how to export it;
- sensitivity curves (accuracy vs channel sparsity per layer) when a sensitivity CSV is found.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from autocompress.errors import UserError
from autocompress.store import COMPLETE, FAILED, StudyRecord, TrialRecord, hypervolume_2d, pareto_fronts

if TYPE_CHECKING:
    from autocompress.study import Study

#: file name of a sensitivity table in a study's artefact folder (``<artefacts>/<study>/sensitivity.csv``)
SENSITIVITY_CSV = "sensitivity.csv"
#: columns a sensitivity table must have: one row per (layer, channel sparsity) with the accuracy measured
SENSITIVITY_COLUMNS = ("layer", "sparsity", "accuracy")
#: hypervolume reference point in (accuracy, speedup): zero accuracy, no faster than the baseline
HV_REFERENCE = (0.0, 1.0)

_FEASIBLE, _INFEASIBLE, _BASELINE, _FRONT = "#1b7837", "#b2182b", "#2166ac", "#1b7837"


@dataclass(frozen=True)
class Plot:
    """One rendered plot: its file stem, a title and a caption for the page, and the PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class SensitivityPoint:
    layer: str
    sparsity: float
    accuracy: float


def write_report(study: Study, out: str | Path, *, sensitivity: str | Path | None = None, top: int = 10) -> Path:
    """Write ``index.html`` and its PNGs for `study` into `out`; return the path of ``index.html``.

    `sensitivity` is a CSV file (or a folder holding ``sensitivity.csv``) with columns `SENSITIVITY_COLUMNS`;
    without it, ``sensitivity.csv`` in the study's artefact folder is used when present. `top` is how many
    of the best trials the policy heat map and the leaderboard table show.
    """
    if top < 1:
        raise UserError("--top", f"{top} is not a positive number of trials")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}", "is a file; give a folder (it is created if missing)")
    record = study.record
    trials = study.trials()
    board = study.leaderboard()
    points = _sensitivity_points(study, sensitivity)

    plots = [
        _pareto_plot(board, record.baseline, record.space["constraints"]),
        _policy_plot(board, {t.number: t for t in trials}, top),
        _progress_plot(trials, {row["trial"]: row["feasible"] for row in board}),
    ]
    if points:
        plots.append(sensitivity_plot(points, record.baseline.get("accuracy")))

    out.mkdir(parents=True, exist_ok=True)
    for plot in plots:
        (out / f"{plot.name}.png").write_bytes(plot.png)
    page = out / "index.html"
    where = study.store.engine.url.render_as_string(hide_password=True)
    page.write_text(_page(record, where, trials, board, plots, top), encoding="utf-8")
    return page


# -- inputs ---------------------------------------------------------------------------------------------------
def _sensitivity_points(study: Study, given: str | Path | None) -> list[SensitivityPoint]:
    if given is None:
        default = study.store.artifacts_root / study.name / SENSITIVITY_CSV
        return load_sensitivity(default) if default.is_file() else []
    path = Path(given)
    if path.is_dir():
        path = path / SENSITIVITY_CSV
    if not path.is_file():
        raise UserError(
            f"--sensitivity {given}",
            f"no such file; give a CSV with columns "
            f"{','.join(SENSITIVITY_COLUMNS)} or a folder holding {SENSITIVITY_CSV}",
        )
    return load_sensitivity(path)


def load_sensitivity(path: Path) -> list[SensitivityPoint]:
    """Read a sensitivity table; a missing column or a bad number raises `UserError` naming file and line."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in SENSITIVITY_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(
                str(path),
                f"missing column(s) {', '.join(missing)}; the header must include {','.join(SENSITIVITY_COLUMNS)}",
            )
        points = []
        for line, row in enumerate(reader, start=2):
            try:
                sparsity, accuracy = float(row["sparsity"]), float(row["accuracy"])
            except (TypeError, ValueError):
                raise UserError(
                    f"{path}:{line}",
                    f"sparsity and accuracy must be numbers (got {row['sparsity']!r}, {row['accuracy']!r})",
                ) from None
            if not (0 <= sparsity < 1 and 0 <= accuracy <= 1):
                raise UserError(
                    f"{path}:{line}", f"sparsity must be in [0, 1) and accuracy in [0, 1] (got {sparsity}, {accuracy})"
                )
            points.append(SensitivityPoint(row["layer"], sparsity, accuracy))
    return points


# -- plots ----------------------------------------------------------------------------------------------------
def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _empty(axes: Any, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes, color="#555555")
    axes.set_xticks([])
    axes.set_yticks([])


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The non-dominated points (both coordinates larger-is-better), sorted by the first coordinate."""
    fronts = pareto_fronts(points)
    return sorted({p for p, f in zip(points, fronts, strict=True) if f == 0})


def _pareto_plot(board: list[dict[str, Any]], baseline: dict[str, Any], constraints: dict[str, float]) -> Plot:
    figure = Figure(figsize=(7.5, 5.0))
    axes = figure.add_subplot()
    complete = [r for r in board if r["state"] == COMPLETE]
    base_acc = baseline.get("accuracy")
    if not complete:
        _empty(axes, "no finished trial yet")
    else:
        for feasible, colour, marker, label in (
            (True, _FEASIBLE, "o", "feasible"),
            (False, _INFEASIBLE, "x", "infeasible"),
        ):
            rows = [r for r in complete if r["feasible"] is feasible]
            if rows:
                axes.scatter(
                    [r["speedup"] for r in rows],
                    [r["accuracy"] for r in rows],
                    c=colour,
                    marker=marker,
                    s=40,
                    label=f"{label} ({len(rows)})",
                    zorder=3,
                )
        feasible_xy = [(r["speedup"], r["accuracy"]) for r in complete if r["feasible"]]
        if feasible_xy:
            front = _front(feasible_xy)
            axes.step(
                [x for x, _ in front],
                [y for _, y in front],
                where="pre",
                color=_FRONT,
                lw=1.2,
                alpha=0.7,
                label="Pareto front (feasible)",
                zorder=2,
            )
        if len(complete) <= 40:
            for r in complete:
                axes.annotate(
                    str(r["trial"]),
                    (r["speedup"], r["accuracy"]),
                    textcoords="offset points",
                    xytext=(4, 3),
                    fontsize=7,
                    color="#333333",
                )
        if base_acc is not None:
            axes.scatter([1.0], [base_acc], marker="*", s=180, c=_BASELINE, label="baseline", zorder=4)
        if "min_speedup" in constraints:
            axes.axvline(
                constraints["min_speedup"],
                color="#666666",
                ls="--",
                lw=1,
                label=f"min_speedup {constraints['min_speedup']:g}",
            )
        if "max_accuracy_drop" in constraints and base_acc is not None:
            axes.axhline(
                base_acc - constraints["max_accuracy_drop"],
                color="#666666",
                ls=":",
                lw=1.2,
                label=f"max_accuracy_drop {constraints['max_accuracy_drop']:g}",
            )
        axes.set_xlabel("speedup at batch 1 (baseline on its fastest float runtime / candidate on its fastest)")
        axes.set_ylabel("accuracy (test split)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="best")
    drawn = {"min_speedup", "max_accuracy_drop"}
    others = ", ".join(f"{k} {v:g}" for k, v in constraints.items() if k not in drawn)
    caption = (
        "Every finished trial; green dots meet all constraints, red crosses do not; numbers are trial "
        "numbers; dashed/dotted lines are the constraints; the star is the uncompressed baseline."
    )
    if others:
        caption += f" Constraints not on these axes: {others}."
    return Plot("pareto", "Pareto front: accuracy vs speedup", caption, _png(figure))


def _policy_plot(board: list[dict[str, Any]], trials: dict[int, TrialRecord], top: int) -> Plot:
    rows = [r for r in board if r["state"] == COMPLETE][:top]
    layers = sorted(trials[rows[0]["trial"]].policy["layers"]) if rows else []
    figure = Figure(figsize=(max(7.5, 1.2 + 1.1 * len(layers)), 1.6 + 0.42 * max(len(rows), 1)))
    if not rows:
        _empty(figure.add_subplot(), "no finished trial yet")
        return Plot("policy", "Per-layer policy of the top trials", "", _png(figure))
    sparsity = [[trials[r["trial"]].policy["layers"][n]["channel_sparsity"] for n in layers] for r in rows]
    bits = [[trials[r["trial"]].policy["layers"][n]["weight_bits"] for n in layers] for r in rows]
    labels = [f"#{r['rank']} trial {r['trial']}" + ("" if r["feasible"] else " (infeasible)") for r in rows]
    left, right = figure.subplots(1, 2, sharey=True)
    for axes, values, title, cmap, fmt, vmax in (
        (left, sparsity, "channel sparsity (fraction removed)", "Reds", "{:.0%}", 1.0),
        (right, bits, "weight bits (8 = int8, 32 = float)", "Blues_r", "{:d}", 40),
    ):
        image = axes.imshow(values, cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
        axes.set_title(title, fontsize=9)
        axes.set_xticks(range(len(layers)), layers, rotation=45, ha="right", fontsize=8)
        axes.set_yticks(range(len(labels)), labels, fontsize=8)
        for i, row in enumerate(values):
            for j, value in enumerate(row):
                shade = image.norm(value)
                dark = shade > 0.55 if cmap == "Reds" else shade < 0.45
                axes.text(
                    j, i, fmt.format(value), ha="center", va="center", fontsize=7, color="white" if dark else "black"
                )
    caption = (
        f"The {len(rows)} best finished trials in leaderboard order (feasible first); one column per "
        "prunable or quantizable layer."
    )
    return Plot("policy", "Per-layer policy of the top trials", caption, _png(figure))


def _progress_plot(trials: list[TrialRecord], feasible: dict[int, bool]) -> Plot:
    finished = sorted(
        (t for t in trials if t.state in (COMPLETE, FAILED) and t.finished_at is not None),
        key=lambda t: (t.finished_at, t.number),
    )
    figure = Figure(figsize=(10, 3.8))
    best_axes, hv_axes = figure.subplots(1, 2)
    if not finished:
        _empty(best_axes, "no finished trial yet")
        _empty(hv_axes, "no finished trial yet")
    else:
        steps = list(range(1, len(finished) + 1))
        best_feasible, best_any, hv_feasible, hv_any = [], [], [], []
        seen_feasible: list[tuple[float, float]] = []
        seen_any: list[tuple[float, float]] = []
        for t in finished:
            if t.state == COMPLETE:
                point = (t.metrics["accuracy"], t.metrics["speedup"])
                seen_any.append(point)
                if feasible.get(t.number):
                    seen_feasible.append(point)
            best_feasible.append(max((p[0] for p in seen_feasible), default=math.nan))
            best_any.append(max((p[0] for p in seen_any), default=math.nan))
            hv_feasible.append(hypervolume_2d(seen_feasible, HV_REFERENCE))
            hv_any.append(hypervolume_2d(seen_any, HV_REFERENCE))
        best_axes.plot(
            steps,
            best_feasible,
            drawstyle="steps-post",
            marker="o",
            ms=3,
            color=_FEASIBLE,
            label="feasible trials" if seen_feasible else "feasible trials (none yet)",
        )
        best_axes.plot(
            steps,
            best_any,
            drawstyle="steps-post",
            marker="o",
            ms=3,
            color="#777777",
            ls="--",
            label="all finished trials",
        )
        for i, step in enumerate(s for s, t in zip(steps, finished, strict=True) if t.state == FAILED):
            best_axes.axvline(step, color=_INFEASIBLE, lw=1, alpha=0.5, label=None if i else "failed trial")
        best_axes.set_title("best accuracy so far", fontsize=9)
        hv_axes.plot(
            steps, hv_feasible, drawstyle="steps-post", marker="o", ms=3, color=_FEASIBLE, label="feasible trials"
        )
        hv_axes.plot(
            steps,
            hv_any,
            drawstyle="steps-post",
            marker="o",
            ms=3,
            color="#777777",
            ls="--",
            label="all finished trials",
        )
        hv_axes.set_title(f"hypervolume (accuracy x speedup), reference {HV_REFERENCE}", fontsize=9)
        for axes in (best_axes, hv_axes):
            axes.set_xlabel("finished trials (in finishing order)")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.grid(alpha=0.3)
            axes.legend(fontsize=8, loc="lower right")
    caption = (
        f"Left: the best accuracy after each finished trial. Right: the area dominated in (accuracy, "
        f"speedup) above the reference point {HV_REFERENCE} (zero accuracy, baseline speed), computed "
        "with autocompress.store.hypervolume_2d; a flat curve means the last trials found nothing new."
    )
    return Plot("progress", "Best so far and hypervolume vs trials", caption, _png(figure))


def sensitivity_plot(points: list[SensitivityPoint], baseline_accuracy: float | None, title: str | None = None) -> Plot:
    """Accuracy vs channel sparsity, one line per layer (in the order the points list them), the baseline
    dashed, the legend outside the axes so that no curve hides behind it. Also what ``autocompress
    sensitivity`` writes as ``sensitivity.png``."""
    layers = list(dict.fromkeys(p.layer for p in points))
    figure = Figure(figsize=(8.5, 4.8))
    axes = figure.add_subplot()
    colours = colormaps["tab10" if len(layers) <= 10 else "tab20"]
    for index, layer in enumerate(layers):
        curve = sorted((p.sparsity, p.accuracy) for p in points if p.layer == layer)
        axes.plot(
            [s for s, _ in curve],
            [a for _, a in curve],
            marker="os^vD<>"[index % 7],
            ms=4,
            lw=1.4,
            color=colours(index % colours.N),
            label=layer,
        )
    if baseline_accuracy is not None:
        axes.axhline(baseline_accuracy, color="#444444", ls="--", lw=1.2, label=f"baseline {baseline_accuracy:.3f}")
    axes.set_xticks(sorted({p.sparsity for p in points}))
    axes.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("fraction of that layer's output channels removed (it and the layers coupled to it only)")
    axes.set_ylabel("accuracy")
    if title:
        axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 if len(layers) <= 20 else 2, frameon=False
    )
    caption = (
        "Accuracy when one layer alone (with the layers its channels are coupled to) is pruned to each "
        "sparsity; steep curves mark sensitive layers."
    )
    return Plot("sensitivity", "Per-layer sensitivity", caption, _png(figure))


# -- the page -------------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .5em;
text-align:left;vertical-align:top;white-space:pre-wrap}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.85em;
color:#555}.bad{color:#b2182b}.good{color:#1b7837}
.note{background:#fff7e6;border-left:4px solid #f0a020;padding:.5em 1em}
"""

_BOARD_COLUMNS = (
    "rank",
    "trial",
    "feasible",
    "accuracy",
    "accuracy_drop",
    "speedup",
    "speedup_b32",
    "latency_ms",
    "runtime",
    "runtime_b32",
    "size_bytes",
    "macs",
    "finetune_epochs",
    "violation",
)


def _cell(value: Any) -> str:
    if value is None:
        return "<td>-</td>"
    if isinstance(value, bool):
        return f'<td class="{"good" if value else "bad"}">{"yes" if value else "no"}</td>'
    if isinstance(value, float):
        text = "inf" if math.isinf(value) else f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
        return f'<td class="num">{text}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _table(header: list[str] | None, rows: list[list[Any]]) -> str:
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def _figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<h2 id="{plot.name}">{html.escape(plot.title)}</h2><figure><img src="data:image/png;base64,{data}" '
        f'alt="{html.escape(plot.title)}"><figcaption>{html.escape(plot.caption)} '
        f'(also <a href="{plot.name}.png">{plot.name}.png</a>)</figcaption></figure>'
    )


def _summary(record: StudyRecord, board: list[dict[str, Any]]) -> str:
    facts = [
        ["study", record.name],
        ["task", record.task],
        ["strategy", f"{record.strategy} (seed {record.seed})"],
        ["status", f"{record.status}: {record.stop_reason}" if record.stop_reason else record.status],
        ["objectives", ", ".join(f"{m} {d}" for m, d in record.space["objectives"].items())],
        ["constraints", ", ".join(f"{k} {v:g}" for k, v in record.space["constraints"].items()) or "none"],
        ["budgets", ", ".join(f"{k} {v}" for k, v in record.budgets.items() if v is not None)],
        ["trials", ", ".join(f"{state} {n}" for state, n in sorted(record.counts.items())) or "none"],
        [
            "baseline",
            ", ".join(
                f"{k} {record.baseline[k]:.4g}"
                for k in ("accuracy", "latency_ms", "latency_ms_b32", "size_bytes", "macs")
                if k in record.baseline
            ),
        ],
    ]
    parts = [_table(None, facts)]
    complete = [r for r in board if r["state"] == COMPLETE]
    if complete and not complete[0]["feasible"]:
        closest = complete[0]
        parts.append(
            f'<p class="note">No trial meets the constraints. The closest is trial {closest["trial"]} '
            f"(total normalised violation {closest['violation']:.3g}); export it anyway, marked "
            f"infeasible, with <code>autocompress export {html.escape(record.name)} --out DIR "
            f"--allow-infeasible</code>, or relax the constraints and search again.</p>"
        )
    return "".join(parts)


def _failures(trials: list[TrialRecord]) -> str:
    failed = [t for t in trials if t.state == FAILED]
    if not failed:
        return '<h2 id="failures">Failures</h2><p>No trial failed.</p>'
    kinds = Counter(
        t.error.strip().splitlines()[0].split(":")[0] if t.error.strip() else "no reason recorded" for t in failed
    )
    summary = _table(["reason", "trials"], [[kind, n] for kind, n in kinds.most_common()])
    rows = [[t.number, t.attempts, t.worker or "-", t.error.strip() or "no reason recorded"] for t in failed]
    detail = _table(["trial", "attempts", "worker", "reason"], rows)
    return f'<h2 id="failures">Failures ({len(failed)})</h2>{summary}{detail}'


def _page(
    record: StudyRecord, where: str, trials: list[TrialRecord], board: list[dict[str, Any]], plots: list[Plot], top: int
) -> str:
    leaders = [[row.get(c) for c in _BOARD_COLUMNS] for row in board if row["state"] == COMPLETE][:top]
    name = html.escape(record.name)
    sensitivity = (
        ""
        if any(p.name == "sensitivity" for p in plots)
        else (
            f'<h2 id="sensitivity">Per-layer sensitivity</h2><p>No sensitivity table found (looked for '
            f"<code>{SENSITIVITY_CSV}</code> in the study's artefact folder).</p>"
        )
    )
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>autocompress report: {name}</title><style>{_CSS}</style></head><body>"
        f"<h1>Study {name}</h1>{_summary(record, board)}"
        f'<h2 id="leaderboard">Leaderboard (top {len(leaders)})</h2>'
        f"{_table(list(_BOARD_COLUMNS), leaders) if leaders else '<p>No finished trial yet.</p>'}"
        + "".join(_figure(p) for p in plots)
        + _failures(trials)
        + sensitivity
        + f'<p style="color:#777;font-size:.8em">Generated {generated} from {html.escape(where)}'
        f" by autocompress report.</p></body></html>\n"
    )
