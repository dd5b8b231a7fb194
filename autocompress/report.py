"""The study report: one self-contained HTML page with its plots, for reading a study without the CLI.

`write_report` reads the store only (the loop stays the single writer) and writes into `out`:
``index.html`` with every plot embedded as a PNG data URI (so the page alone can be mailed or archived) and
the same PNGs beside it (for slides). Plots use matplotlib's object API with the Agg renderer, so no display
and no global pyplot state are involved.

What the page shows, and why:
- the Pareto front over the study's own objectives (the first two as axes: the first up, the second across;
  the front marked is the ranked one, over all objectives), feasible and infeasible trials told apart, the
  constraints that fall on these axes as lines and the baseline, so the trade-off and the budgets are seen
  together; uniform recipes (the same settings on every layer) drawn as squares;
- beside the front, one line saying whether the per-layer search beat the best feasible uniform recipe at
  equal validation accuracy, with the numbers (`Study.versus_uniform`), since beating that one-line recipe
  is what a per-layer search is for;
- a heat map of the per-layer policy of the top trials, to see which layers the good trials compress;
- the best feasible value of the first objective so far and the hypervolume of the first two objectives
  after every finished trial, to judge whether more trials would help (reference point: `Frame.reference`,
  stated on the page);
- failed trials with their reasons; a study with no feasible trial names its closest one and how to export it;
- the artefacts of the trials in the leaderboard table checked against their stored sha256, so a damaged or
  missing model file is seen before anyone tries to export it;
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
from autocompress.space import CONSTRAINTS
from autocompress.store import (
    COMPLETE,
    FAILED,
    ArtefactCheck,
    StudyRecord,
    TrialRecord,
    UniformVerdict,
    hypervolume_2d,
    oriented,
)

if TYPE_CHECKING:
    from autocompress.study import Study

#: file name of a sensitivity table in a study's artefact folder (``<artefacts>/<study>/sensitivity.csv``)
SENSITIVITY_CSV = "sensitivity.csv"
#: columns a sensitivity table must have: one row per (layer, channel sparsity) with the accuracy measured
SENSITIVITY_COLUMNS = ("layer", "sparsity", "accuracy")

_FEASIBLE, _INFEASIBLE, _BASELINE, _FRONT, _UNIFORM = "#1b7837", "#b2182b", "#2166ac", "#1b7837", "#762a83"


@dataclass(frozen=True)
class Plot:
    """One rendered plot: its file stem, a title and a caption for the page, and the PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Frame:
    """The two objectives the report plots and measures the hypervolume in: the study's first two (the first
    up, the second across), with the hypervolume's reference point in their units.

    The reference is what compression must beat: the uncompressed baseline's value of each objective (a
    speedup of 1.0), except accuracy, which compression trades away, at 0. A study with one objective is
    drawn against ``speedup`` (not an objective: the hypervolume then measures that objective alone)."""

    objectives: dict[str, str]
    reference: tuple[float, float]
    #: the study's objectives beyond the first two (the ranking's front is over them too)
    others: tuple[str, ...] = ()

    @property
    def y(self) -> str:
        return next(iter(self.objectives))

    @property
    def x(self) -> str:
        return list(self.objectives)[1]

    @classmethod
    def of(cls, record: StudyRecord, values: list[dict[str, Any]]) -> Frame:
        declared = list(record.space["objectives"].items())
        objectives = dict(declared[:2])
        if len(objectives) == 1:
            objectives.setdefault("speedup", "max")
        reference = []
        for metric, direction in objectives.items():
            if metric == "accuracy":
                reference.append(0.0)
            elif metric.startswith("speedup"):
                reference.append(1.0)
            elif metric in record.baseline:
                reference.append(float(record.baseline[metric]))
            else:  # no baseline value: the worst value seen
                seen = [v[metric] for v in values if v.get(metric) is not None] or [0.0]
                reference.append(min(seen) if direction == "max" else max(seen))
        return cls(objectives, (reference[0], reference[1]), tuple(m for m, _ in declared[2:]))

    def point(self, metrics: dict[str, Any]) -> tuple[float, float]:
        """A trial's (first, second) objective values oriented larger-is-better, for `hypervolume_2d`."""
        y, x = oriented(metrics, self.objectives)
        return y, x

    @property
    def oriented_reference(self) -> tuple[float, float]:
        y, x = oriented(dict(zip(self.objectives, self.reference, strict=True)), self.objectives)
        return y, x

    def describe_reference(self) -> str:
        return ", ".join(f"{m} {v:g}" for m, v in zip(self.objectives, self.reference, strict=True))


def _on_axis(name: str, limit: float, metric: str, baseline: dict[str, Any]) -> float | None:
    """Where constraint `name` at `limit` lies on the axis of `metric`, or None when it does not: on its own
    metric; an accuracy drop on accuracy; a speedup on the latency it divides (and a latency on speedup)."""
    bound = CONSTRAINTS[name].metric
    if bound == metric:
        return limit
    if bound == "accuracy_drop" and metric == "accuracy" and "accuracy" in baseline:
        return float(baseline["accuracy"]) - limit
    latency = {"speedup": "latency_ms", "speedup_b32": "latency_ms_b32"}
    if latency.get(bound) == metric and metric in baseline:
        return float(baseline[metric]) / limit
    if latency.get(metric) == bound and bound in baseline:
        return float(baseline[bound]) / limit
    return None


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

    frame = Frame.of(record, [t.metrics for t in trials if t.state == COMPLETE])
    metrics = {t.number: t.metrics for t in trials}
    plots = [
        _pareto_plot(board, metrics, frame, record.baseline, record.space["constraints"]),
        _policy_plot(board, {t.number: t for t in trials}, top),
        _progress_plot(trials, {row["trial"]: row["feasible"] for row in board}, frame),
    ]
    if points:
        plots.append(sensitivity_plot(points, record.baseline.get("accuracy")))

    out.mkdir(parents=True, exist_ok=True)
    for plot in plots:
        (out / f"{plot.name}.png").write_bytes(plot.png)
    page = out / "index.html"
    where = study.store.engine.url.render_as_string(hide_password=True)
    by_number = {t.number: t for t in trials}
    shown = [row["trial"] for row in board if row["state"] == COMPLETE][:top]
    checks = [study.store.check_artefact(n, a) for n in shown for a in by_number[n].artefacts]
    verdict = study.versus_uniform()
    page.write_text(_page(record, where, trials, board, plots, top, checks, verdict), encoding="utf-8")
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


def _pareto_plot(
    board: list[dict[str, Any]],
    metrics: dict[int, dict[str, Any]],
    frame: Frame,
    baseline: dict[str, Any],
    constraints: dict[str, float],
) -> Plot:
    figure = Figure(figsize=(7.5, 5.0))
    axes = figure.add_subplot()
    x, y = frame.x, frame.y
    complete = [r for r in board if r["state"] == COMPLETE]

    def xy(rows: list[dict[str, Any]]) -> tuple[list[Any], list[Any]]:
        return [metrics[r["trial"]].get(x) for r in rows], [metrics[r["trial"]].get(y) for r in rows]

    drawn = set()
    if not complete:
        _empty(axes, "no finished trial yet")
    else:
        for feasible, colour, marker, label in (
            (True, _FEASIBLE, "o", "feasible"),
            (False, _INFEASIBLE, "x", "infeasible"),
        ):
            rows = [r for r in complete if r["feasible"] is feasible]
            if rows:
                axes.scatter(*xy(rows), c=colour, marker=marker, s=40, label=f"{label} ({len(rows)})", zorder=3)
        uniform = [r for r in complete if r["uniform"]]
        if uniform:  # the reference a per-layer search has to beat
            axes.scatter(
                *xy(uniform),
                marker="s",
                s=75,
                facecolors="none",
                edgecolors=_UNIFORM,
                lw=1.2,
                label=f"uniform recipe ({len(uniform)})",
                zorder=2,
            )
        front = sorted((r for r in complete if r["pareto"]), key=lambda r: metrics[r["trial"]].get(x) or 0.0)
        if front:  # the ranked front: non-dominated over all the study's objectives
            xs, ys = xy(front)
            axes.scatter(xs, ys, s=110, facecolors="none", edgecolors=_FRONT, lw=1.2, label="Pareto front", zorder=2)
            if not frame.others and len(front) > 1:  # with two objectives the front is a staircase in this plane
                axes.step(
                    xs,
                    ys,
                    where="pre" if frame.objectives[x] == "max" else "post",
                    color=_FRONT,
                    lw=1.2,
                    alpha=0.5,
                    zorder=2,
                )
        if len(complete) <= 40:
            for r in complete:
                axes.annotate(
                    str(r["trial"]),
                    (metrics[r["trial"]].get(x), metrics[r["trial"]].get(y)),
                    textcoords="offset points",
                    xytext=(4, 3),
                    fontsize=7,
                    color="#333333",
                )
        base_x = 1.0 if x.startswith("speedup") else baseline.get(x)
        base_y = 1.0 if y.startswith("speedup") else baseline.get(y)
        if base_x is not None and base_y is not None:
            axes.scatter([float(base_x)], [float(base_y)], marker="*", s=180, c=_BASELINE, label="baseline", zorder=4)
        for name, limit in constraints.items():
            for metric, line, style in ((x, axes.axvline, "--"), (y, axes.axhline, ":")):
                at = _on_axis(name, limit, metric, baseline)
                if at is not None and name not in drawn:
                    line(at, color="#666666", ls=style, lw=1.1, label=f"{name} {limit:g}")
                    drawn.add(name)
        axes.set_xlabel(f"{x} ({frame.objectives[x]}imise)")
        axes.set_ylabel(f"{y} ({frame.objectives[y]}imise)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="best")
    others = ", ".join(f"{k} {v:g}" for k, v in constraints.items() if k not in drawn)
    caption = (
        f"Every finished trial in the study's objectives {y} and {x}; green dots meet all constraints, red "
        "crosses do not; ringed dots are the leaderboard's Pareto front (feasible, non-dominated over all "
        "objectives); squares mark uniform recipes (the same sparsity and bits on every layer); numbers are "
        "trial numbers; dashed/dotted lines are the constraints; the star is the uncompressed baseline."
    )
    if frame.others:
        caption += f" The front is also over {', '.join(frame.others)}, which this plane does not show."
    if others:
        caption += f" Constraints not on these axes: {others}."
    return Plot("pareto", f"Pareto front: {y} vs {x}", caption, _png(figure))


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


def _progress_plot(trials: list[TrialRecord], feasible: dict[int, bool], frame: Frame) -> Plot:
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
        sign = 1.0 if frame.objectives[frame.y] == "max" else -1.0  # back from larger-is-better to the metric
        best_feasible, best_any, hv_feasible, hv_any = [], [], [], []
        seen_feasible: list[tuple[float, float]] = []
        seen_any: list[tuple[float, float]] = []
        for t in finished:
            if t.state == COMPLETE:
                point = frame.point(t.metrics)
                seen_any.append(point)
                if feasible.get(t.number):
                    seen_feasible.append(point)
            best_feasible.append(sign * max((p[0] for p in seen_feasible), default=math.nan))
            best_any.append(sign * max((p[0] for p in seen_any), default=math.nan))
            hv_feasible.append(hypervolume_2d(seen_feasible, frame.oriented_reference))
            hv_any.append(hypervolume_2d(seen_any, frame.oriented_reference))
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
        best_axes.set_title(f"best {frame.y} so far", fontsize=9)
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
        hv_axes.set_title(f"hypervolume ({frame.y} x {frame.x}), reference {frame.describe_reference()}", fontsize=9)
        for axes in (best_axes, hv_axes):
            axes.set_xlabel("finished trials (in finishing order)")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.grid(alpha=0.3)
            axes.legend(fontsize=8, loc="lower right")
    caption = (
        f"Left: the best {frame.y} after each finished trial. Right: the area dominated in ({frame.y}, "
        f"{frame.x}) beyond the reference point {frame.describe_reference()} (each objective at the "
        "uncompressed baseline's value, accuracy at 0), computed with autocompress.store.hypervolume_2d; a "
        "flat curve means the last trials found nothing new."
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
    "test_accuracy",
    "accuracy_drop",
    "speedup",
    "speedup_b32",
    "latency_ms",
    "runtime",
    "runtime_b32",
    "size_bytes",
    "macs",
    "finetune_epochs",
    "uniform",
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


def _figure(plot: Plot, note: str = "") -> str:
    """A plot's section: its heading, `note` (HTML) when given, the image and its caption."""
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<h2 id="{plot.name}">{html.escape(plot.title)}</h2>{note}<figure><img src="data:image/png;base64,{data}" '
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
                for k in ("accuracy", "test_accuracy", "latency_ms", "latency_ms_b32", "size_bytes", "macs")
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


def _artefacts(checks: list[ArtefactCheck], name: str) -> str:
    bad = [c for c in checks if c.problem]
    head = '<h2 id="artefacts">Artefacts</h2>'
    if not bad:
        return f"{head}<p>The {len(checks)} artefacts of the trials above match their stored sha256.</p>"
    rows = [[c.trial, c.artefact.kind, c.status, str(c.path)] for c in bad]
    return (
        f'{head}<p class="note">{len(bad)} of {len(checks)} artefacts of the trials above fail their sha256 '
        f"check; <code>autocompress verify {html.escape(name)}</code> checks every trial, export refuses these.</p>"
        + _table(["trial", "kind", "status", "path"], rows)
    )


def _page(
    record: StudyRecord,
    where: str,
    trials: list[TrialRecord],
    board: list[dict[str, Any]],
    plots: list[Plot],
    top: int,
    checks: list[ArtefactCheck],
    verdict: UniformVerdict,
) -> str:
    tone = {True: "good", False: "bad", None: "note"}[verdict.beats]
    versus = f'<p id="versus-uniform" class="{tone}"><b>Versus uniform:</b> {html.escape(verdict.line)}</p>'
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
        + _artefacts(checks, record.name)
        + "".join(_figure(p, versus if p.name == "pareto" else "") for p in plots)
        + _failures(trials)
        + sensitivity
        + f'<p style="color:#777;font-size:.8em">Generated {generated} from {html.escape(where)}'
        f" by autocompress report.</p></body></html>\n"
    )
