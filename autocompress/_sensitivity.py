"""Per-layer sensitivity analysis: how much accuracy each layer loses when it alone is pruned.

For every layer the space lets the search prune, a fresh copy of the trained baseline loses the fraction `s`
of that layer's output channels (the space's criterion, physically removed through the same `prune` a trial
uses, so coupled layers shrink with it), is optionally fine-tuned briefly, and is evaluated as a trial is
(``task.evaluate`` on the validation split). Steep curves mark layers the search should leave wide; flat ones are
free MACs. The table is what the study report draws (`autocompress.report.SENSITIVITY_COLUMNS`), so
``autocompress report NAME --sensitivity DIR`` shows the curves beside a study.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autocompress.errors import UserError

#: sparsities analysed when none are given
DEFAULT_SPARSITIES = (0.25, 0.5, 0.75)
#: the CSV's columns: the report's three (layer, sparsity, accuracy) first, then what helps reading it
CSV_COLUMNS = (
    "layer",
    "sparsity",
    "accuracy",
    "accuracy_drop",
    "channels",
    "channels_kept",
    "baseline_accuracy",
    "finetune_epochs",
)
CSV_NAME, PNG_NAME = "sensitivity.csv", "sensitivity.png"


@dataclass(frozen=True)
class SensitivityRow:
    """One measurement: `layer` alone pruned to `sparsity` (`channels_kept` of its `channels` outputs)."""

    layer: str
    sparsity: float
    accuracy: float
    accuracy_drop: float
    channels: int
    channels_kept: int


@dataclass(frozen=True)
class Sensitivity:
    """The result of `sensitivity`: every row, the baseline, and where the CSV and PNG were written."""

    task: str
    criterion: str
    baseline_accuracy: float
    finetune_epochs: float
    sparsities: tuple[float, ...]
    rows: tuple[SensitivityRow, ...]
    csv: Path
    png: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "criterion": self.criterion,
            "baseline_accuracy": self.baseline_accuracy,
            "finetune_epochs": self.finetune_epochs,
            "sparsities": list(self.sparsities),
            "rows": [asdict(r) for r in self.rows],
            "csv": str(self.csv),
            "png": str(self.png),
        }


def parse_sparsities(text: str | Sequence[float], flag: str = "--sparsities") -> tuple[float, ...]:
    """'0.25,0.5' or a sequence of numbers -> sorted unique sparsities, each in (0, 1); else `UserError`."""
    items = [part.strip() for part in text.split(",")] if isinstance(text, str) else list(text)
    values = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise UserError(
                flag, f"{item!r} is not a number; give fractions of channels in (0, 1), e.g. 0.25,0.5,0.75"
            ) from None
        if not (0 < value < 1) or math.isnan(value):
            raise UserError(
                flag, f"{value:g} is not in (0, 1): a layer keeps at least one channel and sparsity 0 is the baseline"
            )
        values.append(value)
    if not values:
        raise UserError(flag, "no sparsity given; e.g. 0.25,0.5,0.75")
    return tuple(sorted(set(values)))


def sensitivity(
    space: str | Path,
    out: str | Path,
    *,
    sparsities: str | Sequence[float] = DEFAULT_SPARSITIES,
    finetune_epochs: float = 0.0,
    on_row: Callable[[SensitivityRow, int, int], None] | None = None,
) -> Sensitivity:
    """Prune each prunable layer of `space` alone at each of `sparsities`; write ``sensitivity.csv`` and
    ``sensitivity.png`` into `out` and return the rows.

    A layer is analysed when the graph says it can be pruned and the space allows it a sparsity above 0
    (a layer the space pins to ``[0.0]`` is one the user chose to keep). Channels are chosen and counted as
    in a trial: the space's criterion (prepared on each copy when it needs the task) and its ``round_to``.
    `finetune_epochs` > 0 fine-tunes every pruned copy that long (seed 0) before evaluating it; 0 measures
    the raw damage, which ranks layers the same way at a fraction of the cost. `on_row(row, done, total)` is
    called after each measurement. All input is checked (`UserError`) before the model is loaded; nothing is
    written until every row is in.
    """
    import copy

    from autocompress.compress import prepare_criterion, prune
    from autocompress.space import LayerSetting, Policy, discover_layers, load_space_file, resolve_space
    from autocompress.task import load_task

    levels = parse_sparsities(sparsities)
    if not (finetune_epochs >= 0) or math.isinf(finetune_epochs):
        raise UserError("--finetune-epochs", f"{finetune_epochs} is not a number of epochs >= 0")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}", "is a file; give a folder (it is created if missing)")
    spec, _ = load_space_file(space)
    task = load_task(spec.task, where=f"{space}: task")
    baseline = task.baseline_model()
    example = task.example_input(1)
    infos = discover_layers(baseline, example)
    resolved = resolve_space(spec, infos, str(space))
    layers = [i for i in infos if i.prunable and max(resolved.layers[i.name].channel_sparsity) > 0]
    if not layers:
        raise UserError(
            str(space),
            "no layer may be pruned (every prunable layer is pinned to channel_sparsity [0.0]); nothing to analyse",
        )

    baseline_accuracy = task.evaluate(baseline, "val")
    rows: list[SensitivityRow] = []
    total = len(layers) * len(levels)
    for info in layers:
        for level in levels:
            model = copy.deepcopy(baseline)
            policy = Policy.from_mapping(
                {info.name: LayerSetting(channel_sparsity=level)}, resolved.criterion, round_to=resolved.round_to
            )
            importance = prepare_criterion(resolved.criterion, model, task, finetune_epochs)
            prune(model, policy, example, importance=importance)
            if finetune_epochs > 0:
                task.finetune(model, finetune_epochs, seed=0)
            accuracy = task.evaluate(model, "val")
            kept = dict(model.named_modules())[info.name]
            row = SensitivityRow(
                info.name,
                level,
                accuracy,
                baseline_accuracy - accuracy,
                info.out_channels,
                getattr(kept, "out_channels", None) or kept.out_features,
            )
            rows.append(row)
            if on_row is not None:
                on_row(row, len(rows), total)

    result = Sensitivity(
        spec.task,
        resolved.criterion,
        baseline_accuracy,
        float(finetune_epochs),
        levels,
        tuple(rows),
        out / CSV_NAME,
        out / PNG_NAME,
    )
    _write(result)
    return result


def _write(result: Sensitivity) -> None:
    from autocompress.report import SensitivityPoint, sensitivity_plot

    result.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(result.csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in result.rows:
            writer.writerow(
                {
                    **asdict(row),
                    "baseline_accuracy": result.baseline_accuracy,
                    "finetune_epochs": result.finetune_epochs,
                }
            )
    points = [SensitivityPoint(r.layer, r.sparsity, r.accuracy) for r in result.rows]
    ft = f", {result.finetune_epochs:g} epoch(s) fine-tuning" if result.finetune_epochs else ", no fine-tuning"
    title = f"{result.task}: one layer pruned at a time ({result.criterion}{ft})"
    result.png.write_bytes(sensitivity_plot(points, result.baseline_accuracy, title).png)
