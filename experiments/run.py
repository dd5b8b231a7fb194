"""One command per experiment: ``python -m experiments.run NAME [--trials N] [--strategy S] [--workers K]``.

Each experiment is a search space in ``search_spaces/`` (or a task searched in `DEFAULT_SPACE`) with a stated
default budget. The run creates a fresh study in ``OUT/NAME/study.db`` (SQLite, with its artefacts beside it;
both gitignored), searches, and writes what is kept in the repository: ``leaderboard.csv``, the report
(``report/index.html`` and its PNGs) and the exported model's ``manifest.json`` (the model binary is left out
to keep the repository small). A run replaces the previous results of the same experiment.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from autocompress.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results"


#: the space of an experiment that names only its task (`Experiment.task`): int8 or float per layer and up to
#: half the channels, judged on accuracy and batch-1 latency, at most 2 points of accuracy lost
DEFAULT_SPACE = """task: {task}
objectives: {{accuracy: max, latency_ms: min}}
constraints: {{max_accuracy_drop: 0.02}}
fidelity: {{finetune_epochs: [1]}}
defaults: {{channel_sparsity: [0.0, 0.25, 0.5], weight_bits: [8, 32]}}
"""


@dataclass(frozen=True)
class Experiment:
    """A search space, or only a task (``module:attribute``; the run then searches `DEFAULT_SPACE` for it),
    and the budget a run spends on it unless told otherwise: `trials`, stopped early at `time` (wall clock)."""

    space: str = ""
    trials: int = 12
    time: str = "20m"
    strategy: str = "tpe"
    workers: int = 1
    note: str = ""
    task: str = ""

    def space_file(self, target: Path) -> Path:
        """The space file to search: the named one, or the default space for the task written to `target`."""
        if bool(self.space) == bool(self.task):
            raise UserError("EXPERIMENTS", "an experiment names either a space file or a task, not both")
        if self.task:
            path = target / "space.yaml"
            path.write_text(DEFAULT_SPACE.format(task=self.task))
            return path
        space = ROOT / self.space
        if not space.exists():
            raise UserError(self.space, "search space file is missing")
        return space


#: default budgets fit about 20 minutes each on 2 shared cores
EXPERIMENTS: dict[str, Experiment] = {
    "digits": Experiment("search_spaces/digits.yaml", 12, note="residual CNN on sklearn digits"),
    "resnet": Experiment("search_spaces/resnet.yaml", 24, note="ResNet-like on digits 16x16"),
    "mobilenet": Experiment("search_spaces/mobilenet.yaml", 24, note="MobileNetV2-like on digits 16x16"),
    "densenet": Experiment("search_spaces/densenet.yaml", 24, note="DenseNet-like on digits 16x16"),
    "transformer": Experiment("search_spaces/transformer.yaml", 24, note="2-layer transformer encoder on text"),
    "minilm": Experiment(
        "search_spaces/minilm.yaml",
        24,
        time="60m",
        note="all-MiniLM-L6-v2 as transformers ships it, fidelity = cosine to original; heads, FFN width and "
        "the FFN output bits per layer",
    ),
    "mnist-resnet18": Experiment(
        "search_spaces/mnist-resnet18.yaml", 16, time="30m", note="torchvision ResNet-18 on the real MNIST"
    ),
    "mnist-resnet50": Experiment(
        "search_spaces/mnist-resnet50.yaml", 16, time="30m", note="torchvision ResNet-50 on the real MNIST"
    ),
    "mnist-mobilenetv2": Experiment(
        "search_spaces/mnist-mobilenetv2.yaml", 16, time="30m", note="torchvision MobileNetV2 on the real MNIST"
    ),
    "mnist-mobilenetv3": Experiment(
        "search_spaces/mnist-mobilenetv3.yaml", 16, time="30m", note="torchvision MobileNetV3-Small on the real MNIST"
    ),
    "mnist-efficientnet": Experiment(
        "search_spaces/mnist-efficientnet.yaml", 16, time="30m", note="torchvision EfficientNet-B0 on the real MNIST"
    ),
}


def run_experiment(
    name: str,
    out: Path = RESULTS,
    trials: int | None = None,
    strategy: str | None = None,
    workers: int | None = None,
    time_budget: str | None = None,
    executor: str = "ray",
) -> dict[str, object]:
    """Run experiment `name` into ``out/name`` and return its summary (also written as ``summary.json``)."""
    import autocompress

    if name not in EXPERIMENTS:
        raise UserError("NAME", f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    target = out / name
    for stale in ("study.db", "autocompress-artifacts", "report"):
        path = target / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    target.mkdir(parents=True, exist_ok=True)
    space = exp.space_file(target)
    budget = dict(
        trials=trials or exp.trials,
        time_budget=time_budget or exp.time,
        strategy=strategy or exp.strategy,
        workers=workers or exp.workers,
    )
    start = time.perf_counter()
    study = autocompress.search(
        space, study=name, storage=f"sqlite:///{target / 'study.db'}", executor=executor, **budget
    )
    wall = time.perf_counter() - start
    board = study.leaderboard()
    with (target / "leaderboard.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(board[0]) if board else ["trial"])
        writer.writeheader()
        writer.writerows(board)
    study.report(target / "report")
    with tempfile.TemporaryDirectory() as tmp:
        study.export(tmp, allow_infeasible=True)
        shutil.copyfile(Path(tmp) / "manifest.json", target / "manifest.json")
    manifest = json.loads((target / "manifest.json").read_text())
    summary = {
        "experiment": name,
        "space": exp.space or f"default space for {exp.task}",
        **budget,
        "wall_s": round(wall, 1),
        "trials_complete": sum(1 for row in board if row["state"] == "complete"),
        "exported_trial": manifest["trial"],
        "feasible": manifest["feasible"],
        "baseline": _pick(manifest["baseline"]),
        "best": _pick(manifest["metrics"]),
        "versus_uniform": manifest["versus_uniform"]["line"],
    }
    (target / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


_SUMMARY_METRICS = (
    "accuracy",
    "test_accuracy",
    "latency_ms",
    "latency_ms_b32",
    "speedup",
    "speedup_b32",
    "size_bytes",
    "macs",
    "params",
    # where each figure comes from: the candidate's fastest runtime and the baseline's fastest float one
    "runtime",
    "runtime_b32",
    "baseline_runtime",
    "baseline_runtime_b32",
)


def _pick(metrics: dict[str, float | str]) -> dict[str, float | str]:
    return {key: metrics[key] for key in _SUMMARY_METRICS if key in metrics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__.splitlines()[0])
    parser.add_argument("name", help=f"one of: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--trials", type=int, help="trial budget (default: the experiment's)")
    parser.add_argument("--strategy", help="search strategy (default: the experiment's)")
    parser.add_argument("--workers", type=int, help="concurrent trials (default: the experiment's)")
    parser.add_argument("--time", help="wall-clock cap such as 20m (default: the experiment's)")
    parser.add_argument("--executor", default="ray", choices=("ray", "inline"))
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: experiments/results)")
    args = parser.parse_args(argv)
    try:
        summary = run_experiment(
            args.name, args.out, args.trials, args.strategy, args.workers, args.time, args.executor
        )
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
