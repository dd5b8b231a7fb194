"""Every search strategy against the best uniform recipe on real (model, data) pairs, equal trial budget,
3 seeds (issue #17, items 1-2).

Pairs (`PAIRS`, ``--pairs``): torchvision ResNet-18 and MobileNetV2 on the real MNIST and all-MiniLM-L6-v2,
each searched in its published space (``search_spaces/mnist-resnet18.yaml``, ``mnist-mobilenetv2.yaml``,
``minilm.yaml``: layers, choices, accuracy budget) with the bench's per-trial settings (fine-tune epochs,
latency repeats and warm-up, runtimes) and the pair's aggressive speed target as a constraint, which the
constraint-aware strategies steer by as they would for a user. ``digits-resnet`` and ``digits-mobilenet``
(the small digits CNNs of the first version of this bench) stay available for cheap smoke runs. Three
ResNet-18 variants (0.45-epoch fine-tune) ask where per-layer allocation could matter: ``mnist-resnet18-deep``
adds 0.875 and 0.9375 channel sparsity to the grid, ``mnist-resnet18-converged`` does so on a baseline trained
2 epochs (so the 1-pt floor sits near what a pruned model recovers), ``mnist-resnet18-tight`` on that baseline
with a 0.2-pt budget.

Strategies (``--strategies``, default `STRATEGIES`): every built-in one, uniform first, and ``netadapt-int8``,
netadapt with ``weight_bits: min`` (`VARIANTS`: it prunes the int8 model, as amc does by default, where plain
netadapt prunes the float one). The nine built-ins were benched before that variant existed, so the cost figures
below count nine studies per seed.

The uniform baseline is the ``uniform`` strategy (one channel sparsity x one bit-width for every layer, swept
over the space's grid) at the same trial budget (``--trials``; ``--cpu-hours`` adds an equal CPU budget per
study). Speed is the trial's honest ``speedup`` (batch 1) or ``speedup_b32`` (MiniLM, whose objective is batch
32): the float baseline on its fastest runtime over the candidate on the runtime it ships on, timed in the
same trial. Accuracy is the validation split, the one the search chose on; the test split is not read.

Metrics, per pair and seed, each strategy against uniform's study of the same seed (`versus_uniform`):
a trial is feasible when its accuracy is at least the floor, baseline accuracy minus the space's
``max_accuracy_drop``; uniform's front is the Pareto front of its feasible trials, and the best uniform recipe
its fastest feasible trial.

- accuracy gain at uniform's speed (pt): at a uniform front point (a, s), the strategy's best accuracy among
  its trials with speed >= s, minus a; given at the best uniform recipe and as the maximum over the front
  (none when no trial of the strategy is that fast);
- speedup ratio at uniform's accuracy: at a uniform front point (a, s), the strategy's best speed among its
  trials with accuracy >= a, over s; at the best uniform recipe and the maximum over the front (none when no
  trial is that accurate);
- hypervolume of the feasible (accuracy, speed) points above the reference (floor, 1.0): trials below the
  accuracy budget or slower than the baseline add nothing;
- accuracy at the target: the best accuracy among trials at least as fast as the pair's speed target.

The goal of the issue: the best strategy >= 1.25x uniform's speed at equal accuracy, or >= 0.5 pt more
accurate at equal speed (both at the best uniform recipe, mean over seeds, every seed defined) on at least
two pairs; summary.md says per pair whether a strategy meets it, and lists every strategy.

Resumable, in pieces: each finished study appends one row (its trials' points, CPU time and the CPU it ran on:
int8 speedups differ between machines, `cpu_model`) to ``results.csv``, and (pair, strategy, seed) rows already
there are skipped. Studies live in a SQLite store (``--storage``, default ``OUT/bench.db``, gitignored), so a
study cut short resumes where it stopped on the next invocation with the same settings (the study name carries
their digest); its artefact files are deleted once its row is written (``--keep-artefacts`` keeps them). A pair's
rows must share one set of settings: a run with other settings for a pair already in the file is refused (use
another ``--out``). ``--report`` only rewrites summary.md and hypervolume.png (hypervolume vs cumulative trial
CPU-hours, mean over seeds). Trials run inline, one at a time, training on ``--threads`` torch threads (default 1:
on the shared 2-core machine 2 threads spent ~10x the CPU per step spinning at barriers); latency is one thread's
CPU time, so two pieces (other pairs or other seeds, never the same pair and seed; same ``--out``) can run side by
side, one per core.

Cost, measured at nice 5 on the shared 2-core machine (load 5-9) with the default settings: a trial that
prunes and fine-tunes takes about 18 CPU-seconds on mnist-resnet18, 29 on mnist-mobilenetv2 and 74 on minilm
(trials that neither prune nor train skip the fine-tune and cost less); each study also measures the
baseline (about 25, 25 and 60 CPU-seconds), and haq and netadapt first measure a per-layer latency table
(about 190 CPU-seconds on mnist-resnet18). The first run of a pair trains its baseline once (about 90
CPU-seconds for ResNet-18, 230 for MobileNetV2; cached after). So one seed of one pair (9 studies of 16
trials) is about 1.0 CPU-hour on mnist-resnet18, 1.4 on mnist-mobilenetv2 and 3.3 on minilm, and the full
run (3 pairs x 9 strategies x 3 seeds x 16 trials = 1,296 trials) about 17 CPU-hours; process totals ran up
to 1.5x the counted CPU time (system time of the runtimes' threads), so plan for 17-25. A process got 30-40 %
of a core there, so wall time is about 2.5-3x its CPU time; two pieces side by side halve the total.
Cheaper: ``--runtimes onnxruntime`` (recorded in the output), fewer ``--strategies`` or ``--trials``.
Commands (each line resumable; run them in any order, two at a time at most):

    nice -n 5 python -m experiments.bench_search --pairs mnist-resnet18 --seeds 0
    nice -n 5 python -m experiments.bench_search --pairs mnist-mobilenetv2 --seeds 0
    nice -n 5 python -m experiments.bench_search --pairs minilm --seeds 0
    nice -n 5 python -m experiments.bench_search --pairs mnist-resnet18 mnist-mobilenetv2 --seeds 1 2
    nice -n 5 python -m experiments.bench_search --pairs minilm --seeds 1
    nice -n 5 python -m experiments.bench_search --pairs minilm --seeds 2
    python -m experiments.bench_search --report

A smoke run (under 5 minutes at nice 5, training the digits baseline included):

    nice -n 5 python -m experiments.bench_search --pairs digits-resnet --strategies uniform tpe --seeds 0 \
        --trials 3 --out /tmp/bench-search-smoke
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import hashlib
import io
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from autocompress.measure import cpu_model
from autocompress.store import hypervolume_2d

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "experiments" / "results" / "bench_search"

#: the space of the digits CNNs (experiments/tasks/cnn.py) for smoke runs: the first version's grid
DIGITS_SPACE = """
task: experiments.tasks.cnn:{model}
objectives: {{accuracy: max, latency_ms: min}}
constraints: {{max_accuracy_drop: 0.02}}
defaults: {{channel_sparsity: [0.0, 0.25, 0.5, 0.75], weight_bits: [8, 32]}}
"""


@dataclass(frozen=True)
class Pair:
    """A (model, data) pair: its space (a file under search_spaces/ or YAML text; its fidelity and measure
    are replaced by the bench's), the speed it is judged on (``speedup`` at batch 1 or ``speedup_b32``), its
    aggressive speed target (a ``min_`` constraint on that speed; None: none) and default per-trial settings.
    `task`, `sparsities` and `budget`: replace the space's task, its default channel-sparsity grid and its
    ``max_accuracy_drop`` (None: the space's own)."""

    space: str
    speed: str
    target: float | None
    finetune: float
    repeats: int
    warmup: int = 3
    task: str | None = None
    sparsities: tuple[float, ...] | None = None
    budget: float | None = None

    def base(self) -> dict[str, Any]:
        text = (ROOT / self.space).read_text() if self.space.endswith(".yaml") else self.space
        space = dict(yaml.safe_load(text))
        if self.task is not None:
            space["task"] = self.task
        if self.sparsities is not None:
            space["defaults"] = {**space["defaults"], "channel_sparsity": list(self.sparsities)}
        if self.budget is not None:
            space["constraints"] = {**space["constraints"], "max_accuracy_drop": self.budget}
        return space


#: a channel-sparsity grid past 0.75, where uniform pruning costs accuracy even after a 0.45-epoch fine-tune
DEEP = (0.0, 0.25, 0.5, 0.75, 0.875, 0.9375)
#: the ResNet-18 space past its 0.75 ceiling: at 0.45 epoch every recipe of the 0.75 grid kept the accuracy
#: budget and uniform's 75 %/int8 corner bound every strategy
RESNET18_DEEP = Pair("search_spaces/mnist-resnet18.yaml", "speedup", 8.0, 0.45, 15, sparsities=DEEP)
#: the same on a converged baseline (2 epochs): the floor sits near what a fine-tuned pruned model reaches
RESNET18_CONVERGED = replace(RESNET18_DEEP, task="experiments.tasks.mnist:resnet18_converged")

PAIRS: dict[str, Pair] = {
    # 0.05 epoch (43 steps of 64 images) and 15 repeats: the published spaces' per-trial settings
    "mnist-resnet18": Pair("search_spaces/mnist-resnet18.yaml", "speedup", 2.5, 0.05, 15),
    "mnist-mobilenetv2": Pair("search_spaces/mnist-mobilenetv2.yaml", "speedup", 1.5, 0.05, 15),
    # chosen when int8 cost 1.6 pt here (the 8-bit logits did, since fixed): ResNet-18's 2.5 would have asked for
    # int8 nearly everywhere; kept, so that the runs before and after the fix share their target
    "mnist-resnet50": Pair("search_spaces/mnist-resnet50.yaml", "speedup", 1.5, 0.05, 15),
    "minilm": Pair("search_spaces/minilm.yaml", "speedup_b32", 2.0, 1.0, 15),
    "mnist-resnet18-deep": RESNET18_DEEP,
    "mnist-resnet18-converged": RESNET18_CONVERGED,
    # the converged pair with a tight accuracy budget (0.2 pt) and no speed target: chosen after seed 0 of the
    # converged pair showed strategies ahead of uniform only at the accurate end of the front; its studies are new
    "mnist-resnet18-tight": replace(RESNET18_CONVERGED, target=None, budget=0.002),
    "digits-resnet": Pair(DIGITS_SPACE.format(model="resnet"), "speedup", None, 1.0, 10, 1),
    "digits-mobilenet": Pair(DIGITS_SPACE.format(model="mobilenet"), "speedup", None, 1.0, 10, 1),
}
REAL_PAIRS = ("mnist-resnet18", "mnist-mobilenetv2", "mnist-resnet50", "minilm")
#: uniform first: every other strategy is judged against it
STRATEGIES = ("uniform", "random", "tpe", "nsga2", "anneal", "netadapt", "amc", "haq", "autocompress", "netadapt-int8")
#: bench strategies that are a strategy with knobs set (the space file's ``strategy`` section): name -> (strategy,
#: knobs). netadapt-int8 prunes the int8 model, as amc does by default, where netadapt prunes the float one
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {"netadapt-int8": ("netadapt", {"weight_bits": "min"})}
#: the issue's bar: this much faster at equal accuracy, or this many points more accurate at equal speed
GOAL_RATIO, GOAL_GAIN_PT = 1.25, 0.5
#: seeds the goal is judged on: a pair with fewer says how far it got, not that it is met
GOAL_SEEDS = 3
FIELDS = [
    "pair",
    "strategy",
    "seed",
    "settings",
    "study",
    "runtimes",
    "speed_metric",
    "target",
    "trials",
    "complete",
    "failed",
    "baseline_accuracy",
    "floor",
    "hypervolume",
    "best_accuracy",
    "best_speed",
    "cpu_s",
    "setup_cpu_s",
    "wall_s",
    "points",
    "cpu",
]


@dataclass(frozen=True)
class Settings:
    """What a study of a pair was run with; rows of one pair must agree on all of it. `runtimes`: those
    asked for (None: every installed one, the deploy default)."""

    trials: int
    cpu_hours: float | None
    finetune: float
    repeats: int
    warmup: int
    runtimes: tuple[str, ...] | None
    target: float | None
    threads: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:8]


def settings_for(pair: Pair, args: argparse.Namespace) -> Settings:
    return Settings(
        trials=args.trials,
        cpu_hours=args.cpu_hours,
        finetune=pair.finetune if args.finetune is None else args.finetune,
        repeats=pair.repeats if args.repeats is None else args.repeats,
        warmup=pair.warmup,
        runtimes=tuple(args.runtimes) if args.runtimes else None,
        target=None if args.no_target else pair.target,
        threads=args.threads,
    )


def space_yaml(pair: Pair, settings: Settings, strategy: str | None = None) -> str:
    """The pair's space with the bench's objective, constraints, fine-tune and measurement settings (and the knobs of
    `strategy` when it is one of the `VARIANTS`)."""
    space = pair.base()
    if strategy in VARIANTS:
        base, knobs = VARIANTS[strategy]
        space["strategy"] = {base: knobs}
    latency = "latency_ms" if pair.speed == "speedup" else "latency_ms_b32"
    space["objectives"] = {"accuracy": "max", latency: "min"}
    space["constraints"] = {"max_accuracy_drop": space["constraints"]["max_accuracy_drop"]}
    if settings.target is not None:
        space["constraints"][f"min_{pair.speed}"] = settings.target
    space["fidelity"] = {"finetune_epochs": [settings.finetune]}
    space["measure"] = {"threads": 1, "repeats": settings.repeats, "warmup": settings.warmup}
    if settings.runtimes:
        space["measure"]["runtimes"] = list(settings.runtimes)
    return yaml.safe_dump(space, sort_keys=False)


# ---- metrics on (accuracy, speed) points ---------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """A trial as the bench sees it: its number, validation accuracy and speed (None for a failed trial), the
    CPU seconds it took and the fine-tune epochs behind its weights, epochs carried from earlier trials included
    (a NetAdapt chain, an ASHA promotion; None for a failed trial and in rows from before it was kept)."""

    number: int
    accuracy: float | None
    speed: float | None
    cpu_s: float
    epochs: float | None = None

    @property
    def complete(self) -> bool:
        return self.accuracy is not None and self.speed is not None


def _pairs(points: Iterable[Point]) -> list[tuple[float, float]]:
    return [(p.accuracy, p.speed) for p in points if p.accuracy is not None and p.speed is not None]


def pareto_front(points: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (accuracy, speed) points no other point beats on both (at least as good on both and better on
    one), fastest first; duplicates kept once."""
    front: list[tuple[float, float]] = []
    for acc, speed in sorted(set(points), key=lambda p: (-p[1], -p[0])):
        if not front or acc > front[-1][0]:
            front.append((acc, speed))
    return front


def accuracy_at_speed(points: Iterable[tuple[float, float]], speed: float) -> float | None:
    """The best accuracy among points at least `speed` fast; None when none is."""
    return max((a for a, s in points if s >= speed), default=None)


def speed_at_accuracy(points: Iterable[tuple[float, float]], accuracy: float) -> float | None:
    """The best speed among points at least `accuracy` accurate; None when none is."""
    return max((s for a, s in points if a >= accuracy), default=None)


@dataclass(frozen=True)
class VsUniform:
    """A strategy's study against uniform's (same pair and seed), at uniform's feasible front (`pareto_front`
    of its trials with accuracy >= the floor): accuracy gain in points at a front point's speed, speed ratio at
    its accuracy; ``_best`` at the best uniform recipe (its fastest feasible trial), ``_max`` the largest over
    the front (None where the strategy has no trial that fast, or that accurate). ``ratio_budget`` answers a
    looser question, a user's with an accuracy budget: the strategy's fastest trial within the budget over the
    best uniform recipe's speed, whatever either's accuracy above the floor (None: no feasible trial); the
    goal of the issue is judged on ``ratio_best``, at equal accuracy, not on it."""

    uniform_accuracy: float
    uniform_speed: float
    gain_pt_best: float | None
    gain_pt_max: float | None
    ratio_best: float | None
    ratio_max: float | None
    ratio_budget: float | None = None


def versus_uniform(
    points: Sequence[tuple[float, float]], uniform: Sequence[tuple[float, float]], floor: float
) -> VsUniform | None:
    """`points` (the strategy's trials, any accuracy) against `uniform`'s feasible front; None when uniform
    has no feasible trial."""
    front = pareto_front(p for p in uniform if p[0] >= floor)
    if not front:
        return None
    gains, ratios = [], []
    for acc, speed in front:
        best_acc, best_speed = accuracy_at_speed(points, speed), speed_at_accuracy(points, acc)
        gains.append(None if best_acc is None else 100 * (best_acc - acc))
        ratios.append(None if best_speed is None else best_speed / speed)
    known_gains, known_ratios = [g for g in gains if g is not None], [r for r in ratios if r is not None]
    fastest_feasible = speed_at_accuracy(points, floor)
    return VsUniform(
        uniform_accuracy=front[0][0],
        uniform_speed=front[0][1],
        gain_pt_best=gains[0],
        gain_pt_max=max(known_gains, default=None),
        ratio_best=ratios[0],
        ratio_max=max(known_ratios, default=None),
        ratio_budget=None if fastest_feasible is None else fastest_feasible / front[0][1],
    )


def fastest_at(points: Iterable[Point], accuracy: float) -> Point | None:
    """The fastest complete point at least `accuracy` accurate, the more accurate of equally fast ones (None:
    none is that accurate): at the floor, the best uniform recipe; at its accuracy, the strategy's trial the
    speed ratio at equal accuracy compares with it."""
    complete = [p for p in points if p.complete and p.accuracy >= accuracy]  # type: ignore[operator]
    return max(complete, key=lambda p: (p.speed, p.accuracy), default=None)


def hypervolume_curve(points: Sequence[Point], floor: float) -> list[tuple[float, float]]:
    """(cumulative CPU-hours, hypervolume of the feasible points so far) after each trial in number order,
    reference (floor, 1.0)."""
    curve, seen, cpu = [], [], 0.0
    for point in sorted(points, key=lambda p: p.number):
        cpu += point.cpu_s
        if point.complete and point.accuracy >= floor:  # type: ignore[operator]
            seen.append((point.accuracy, point.speed))
        curve.append((cpu / 3600, hypervolume_2d(seen, (floor, 1.0))))
    return curve


def grid_size(pair: Pair) -> int:
    """How many recipes uniform's grid holds: every channel sparsity times every bit-width the space file
    names (defaults and layer entries, as `autocompress.space.uniform_grid` takes them over the layers), so a
    uniform study's trials ``i`` and ``i + grid_size`` are the same recipe."""
    space = pair.base()
    entries = [space.get("defaults", {}), *(space.get("layers") or {}).values()]
    sparsities = {s for e in entries for s in e.get("channel_sparsity", ())}
    bits = {b for e in entries for b in e.get("weight_bits", ())}
    return max(len(sparsities), 1) * max(len(bits), 1)


@dataclass(frozen=True)
class Spread:
    """How far two measurements of the same recipe lie apart (uniform sweeps its grid more than once): the
    bench's resolution. `speed_pct`: |speed ratio - 1| in percent; `accuracy_pt`: |accuracy difference| in
    points; median and maximum over `repeats` pairs of trials."""

    repeats: int
    speed_pct_median: float
    speed_pct_max: float
    accuracy_pt_median: float
    accuracy_pt_max: float


def repeat_spread(points: Sequence[Point], period: int) -> Spread | None:
    """The spread between trials ``i`` and ``i + period`` (the same recipe) of a uniform study, over the pairs
    where both completed; None without such a pair."""
    by_number = {p.number: p for p in points if p.complete}
    twins = [(p, by_number[p.number + period]) for p in by_number.values() if p.number + period in by_number]
    if not twins:
        return None
    speed = [abs(b.speed / a.speed - 1) * 100 for a, b in twins]  # type: ignore[operator]
    accuracy = [abs(b.accuracy - a.accuracy) * 100 for a, b in twins]  # type: ignore[operator]
    return Spread(len(twins), statistics.median(speed), max(speed), statistics.median(accuracy), max(accuracy))


# ---- running studies -----------------------------------------------------------------------------------


def load_rows(out: Path) -> list[dict[str, Any]]:
    """The finished studies of `out`; exits with a one-line error when results.csv was written in another format
    (the first digits bench kept hypervolume curves, not trial points), before anything is appended to it."""
    path = out / "results.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [f for f in FIELDS if f != "cpu" and f not in (reader.fieldnames or [])]  # cpu: added later
        if missing:
            sys.exit(
                f"error: {path} lacks the columns {', '.join(missing)}: another bench_search format wrote it; "
                "choose another --out (or read it with the commit that wrote it)"
            )
        rows = list(reader)
    for row in rows:
        row["seed"] = int(row["seed"])
        row["points"] = [Point(*p) for p in json.loads(row["points"])]
        for key in ("baseline_accuracy", "floor", "hypervolume", "cpu_s", "setup_cpu_s", "wall_s"):
            row[key] = float(row[key])
        row["target"] = float(row["target"]) if row["target"] else None
        row["cpu"] = row.get("cpu") or ""  # rows from before the CPU was recorded
    return rows


def append_row(out: Path, row: dict[str, Any]) -> None:
    """Append one row to results.csv in one write, under a lock: pieces run side by side share the file."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FIELDS, lineterminator="\n")
    record = {**row, "points": json.dumps([list(asdict(p).values()) for p in row["points"]])}
    record["target"] = "" if row["target"] is None else row["target"]
    writer.writerow(record)
    with open(out / "results.csv", "a", newline="") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        if handle.tell() == 0:
            header = io.StringIO()
            csv.DictWriter(header, fieldnames=FIELDS, lineterminator="\n").writeheader()
            handle.write(header.getvalue())
        handle.write(text.getvalue())


def check_settings(rows: list[dict[str, Any]], pair: str, settings: Settings) -> None:
    """Refuse to mix settings within a pair: its comparisons would not be like for like."""
    other = {r["settings"] for r in rows if r["pair"] == pair} - {settings.to_json()}
    if other:
        sys.exit(
            f"error: results.csv holds {pair} rows run with {sorted(other)[0]}, not {settings.to_json()}; "
            "pass the same flags or choose another --out"
        )


def check_machine(rows: list[dict[str, Any]], pair: str, seed: int, cpu: str) -> None:
    """Refuse to add a study to a seed measured on another CPU: the comparisons are within a seed, and another
    machine times int8 differently and trains another baseline from the same seed (the converged ResNet-18 came
    out 0.9902 on an AMD EPYC and 0.9922 on an Intel Xeon), so its floor differs too."""
    other = {r["cpu"] for r in rows if r["pair"] == pair and r["seed"] == seed and r["cpu"]} - {cpu}
    if other:
        sys.exit(
            f"error: results.csv holds {pair} seed {seed} rows measured on {sorted(other)[0]}, not {cpu}; "
            "choose another --out (or another seed)"
        )


def run_study(
    pair_name: str, strategy: str, seed: int, settings: Settings, space: Path, storage: str, keep: bool
) -> dict[str, Any]:
    """Run (or resume) one study to its budget and return its results.csv row."""
    import autocompress
    from autocompress.store import StudyStore

    pair = PAIRS[pair_name]
    name = f"{pair_name}-{strategy}-s{seed}-{settings.digest()}"
    budget: dict[str, Any] = {"trials": settings.trials, "executor": "inline"}
    if settings.cpu_hours is not None:
        budget["cpu_hours"] = settings.cpu_hours
    store = StudyStore(storage, create=True)
    before = store.study(name).spent.get("cpu_s", 0.0) if store.study_exists(name) else 0.0
    cpu = time.process_time()
    if store.study_exists(name):
        study = autocompress.resume(name, storage=storage, **budget)
    else:
        base = VARIANTS[strategy][0] if strategy in VARIANTS else strategy
        study = autocompress.search(space, study=name, storage=storage, strategy=base, seed=seed, **budget)
    record = study.record
    setup = time.process_time() - cpu - (record.spent.get("cpu_s", 0.0) - before)
    trials = sorted(study.trials(), key=lambda t: t.number)
    points = [
        Point(
            t.number,
            t.metrics["accuracy"] if t.state == "complete" else None,
            t.metrics[pair.speed] if t.state == "complete" else None,
            float(t.metrics.get("cpu_s", 0.0)),
            float(t.metrics["finetune_epochs"]) if t.state == "complete" else None,
        )
        for t in trials
    ]
    floor = record.baseline["accuracy"] - record.space["constraints"]["max_accuracy_drop"]
    feasible = [(a, s) for a, s in _pairs(points) if a >= floor]
    if not keep:
        for trial in trials:
            for kind in {a.kind for a in trial.artefacts}:
                store.remove_artefacts(name, trial.number, kind)
    return {
        "pair": pair_name,
        "strategy": strategy,
        "seed": seed,
        "settings": settings.to_json(),
        "study": name,
        "runtimes": " ".join(record.space["measure"]["runtimes"]),
        "speed_metric": pair.speed,
        "target": settings.target,
        "trials": len(points),
        "complete": sum(p.complete for p in points),
        "failed": sum(not p.complete for p in points),
        "baseline_accuracy": round(record.baseline["accuracy"], 5),
        "floor": round(floor, 5),
        "hypervolume": round(hypervolume_curve(points, floor)[-1][1] if points else 0.0, 5),
        "best_accuracy": round(max((a for a, _ in feasible), default=math.nan), 5),
        "best_speed": round(max((s for _, s in feasible), default=math.nan), 4),
        "cpu_s": round(record.spent.get("cpu_s", 0.0), 1),
        "setup_cpu_s": round(setup, 1),
        "wall_s": round(record.spent.get("wall_s", 0.0), 1),
        "points": points,
        "cpu": cpu_model(),
    }


def run(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    rows = load_rows(args.out)
    cpu = cpu_model()
    done = {(r["pair"], r["strategy"], r["seed"]) for r in rows}
    storage = args.storage or f"sqlite:///{args.out / 'bench.db'}"
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:  # seed outermost: complete comparisons first if the run is cut short
            for pair_name in args.pairs or REAL_PAIRS:
                settings = settings_for(PAIRS[pair_name], args)
                check_settings(rows, pair_name, settings)
                for strategy in args.strategies:
                    if (pair_name, strategy, seed) in done:
                        continue
                    check_machine(rows, pair_name, seed, cpu)
                    space = Path(tmp) / f"{pair_name}-{strategy}.yaml"
                    space.write_text(space_yaml(PAIRS[pair_name], settings, strategy))
                    row = run_study(pair_name, strategy, seed, settings, space, storage, args.keep_artefacts)
                    append_row(args.out, row)
                    print({k: v for k, v in row.items() if k not in ("points", "settings")}, flush=True)


# ---- report --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategySummary:
    """One strategy on one pair over its seeds; comparisons over the seeds that have a uniform row."""

    strategy: str
    seeds: int
    hypervolume: list[float]
    versus: list[VsUniform | None]
    target_accuracy: list[float | None]
    best_accuracy: list[float]
    best_speed: list[float]
    cpu_h: list[float]
    setup_cpu_h: list[float]

    def of(self, field: str) -> list[float | None]:
        """A `VsUniform` field per seed (None for a seed without a comparison)."""
        return [None if v is None else getattr(v, field) for v in self.versus]


def summarise(rows: list[dict[str, Any]], strategy: str) -> StrategySummary:
    """`rows`: one pair's rows (all strategies)."""
    uniform = {r["seed"]: _pairs(r["points"]) for r in rows if r["strategy"] == "uniform"}
    mine = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["seed"])
    return StrategySummary(
        strategy=strategy,
        seeds=len(mine),
        hypervolume=[r["hypervolume"] for r in mine],
        versus=[
            versus_uniform(_pairs(r["points"]), uniform[r["seed"]], r["floor"]) if r["seed"] in uniform else None
            for r in mine
        ],
        target_accuracy=[
            accuracy_at_speed(_pairs(r["points"]), r["target"]) if r["target"] is not None else None for r in mine
        ],
        best_accuracy=[float(r["best_accuracy"]) for r in mine],
        best_speed=[float(r["best_speed"]) for r in mine],
        cpu_h=[r["cpu_s"] / 3600 for r in mine],
        setup_cpu_h=[r["setup_cpu_s"] / 3600 for r in mine],
    )


def mean_std(values: Sequence[float | None], fmt: str, total: int | None = None) -> str:
    """Mean ± std of the known values, with (known/total) when some are unknown; "n/a" when none is."""
    known = [v for v in values if v is not None and not math.isnan(v)]
    if not known:
        return "n/a"
    text = format(statistics.mean(known), fmt)
    if len(known) > 1:
        text += " ± " + format(statistics.stdev(known), fmt.lstrip("+"))
    total = len(values) if total is None else total
    return text + (f" ({len(known)}/{total})" if len(known) < total else "")


def _all_mean(values: Sequence[float | None]) -> float | None:
    """The mean when every seed has a value, else None: a seed where the strategy never matched uniform
    counts against it."""
    return statistics.mean(values) if values and all(v is not None for v in values) else None  # type: ignore[arg-type]


def _best_strategy(summaries: list[StrategySummary], field: str) -> tuple[str, float] | None:
    """The strategy (not uniform) with the largest mean of a `VsUniform` field over seeds, every seed defined,
    and that mean; None when no strategy has it in every seed."""
    means = {s.strategy: _all_mean(s.of(field)) for s in summaries if s.strategy != "uniform"}
    known = {k: v for k, v in means.items() if v is not None}
    return max(known.items(), key=lambda kv: kv[1], default=None)


def _seeds_of(summaries: list[StrategySummary], strategy: str) -> int:
    return next(s.seeds for s in summaries if s.strategy == strategy)


def _goal_line(pair: str, summaries: list[StrategySummary], strategy: str, figure: str, goal: str) -> tuple[str, bool]:
    """The verdict for a strategy past the goal's figure: met only on `GOAL_SEEDS` seeds or more."""
    seeds = _seeds_of(summaries, strategy)
    if seeds < GOAL_SEEDS:
        return (
            f"{pair}: best strategy {strategy}: {figure} -> past the {goal} goal on {seeds} of {GOAL_SEEDS} seeds",
            False,
        )
    return f"{pair}: best strategy {strategy}: {figure} -> meets the {goal} goal", True


def _with_seeds(summaries: list[StrategySummary], strategy: str) -> str:
    """The strategy's name, with its seed count when it has fewer than the goal's: a one-seed study should not
    read as the pair's best strategy on the same footing as three."""
    seeds = _seeds_of(summaries, strategy)
    return strategy if seeds >= GOAL_SEEDS else f"{strategy}, {seeds} of {GOAL_SEEDS} seeds"


def verdict(pair: str, summaries: list[StrategySummary]) -> tuple[str, bool]:
    """One line on whether the best strategy meets the goal against the best uniform recipe, and whether it
    does."""
    best_ratio = _best_strategy(summaries, "ratio_best")
    best_gain = _best_strategy(summaries, "gain_pt_best")
    if best_ratio is None and best_gain is None:
        return f"{pair}: no strategy compared with uniform on every seed yet", False
    if best_ratio and best_ratio[1] >= GOAL_RATIO:
        return _goal_line(
            pair, summaries, best_ratio[0], f"{best_ratio[1]:.2f}x uniform's speed at equal accuracy", f"{GOAL_RATIO}x"
        )
    if best_gain and best_gain[1] >= GOAL_GAIN_PT:
        return _goal_line(
            pair, summaries, best_gain[0], f"{best_gain[1]:+.2f} pt at uniform's speed", f"{GOAL_GAIN_PT} pt"
        )
    at_accuracy = (
        f"beyond {best_ratio[1]:.2f}x ({_with_seeds(summaries, best_ratio[0])}) at equal accuracy"
        if best_ratio
        else "at equal accuracy (no strategy has a trial as accurate as the best uniform recipe in every seed)"
    )
    at_speed = (
        f"{'' if best_ratio else 'beyond '}{best_gain[1]:+.2f} pt ({_with_seeds(summaries, best_gain[0])}) "
        "at equal speed"
        if best_gain
        else "at equal speed (no strategy has a trial as fast as the best uniform recipe)"
    )
    goal = f"goal {GOAL_RATIO}x or +{GOAL_GAIN_PT} pt"
    return f"{pair}: no strategy beats uniform {at_accuracy} or {at_speed} ({goal})", False


def pair_section(pair: str, rows: list[dict[str, Any]], strategies: list[str]) -> tuple[list[str], bool]:
    first = rows[0]
    settings = json.loads(first["settings"])
    speed = "batch 1" if first["speed_metric"] == "speedup" else "batch 32"
    runtimes = sorted({r["runtimes"] for r in rows})
    cheap = settings["runtimes"] is not None
    target = first["target"]
    lines = [
        f"## {pair}",
        "",
        f"Speed: honest `{first['speed_metric']}` ({speed}: float baseline on its fastest runtime / candidate on "
        f"the runtime it ships on). Baseline accuracy (val) {first['baseline_accuracy']:.4f}; floor "
        f"{first['floor']:.4f} (the space's accuracy budget); hypervolume reference point "
        f"(accuracy {first['floor']:.4f}, speedup 1.0). Speed target (constraint, steering the "
        f"constraint-aware strategies): {f'{target}x' if target else 'none'}.",
        f"Per study: {settings['trials']} trials"
        + (f" or {settings['cpu_hours']} CPU-hours" if settings["cpu_hours"] else "")
        + f", {settings['finetune']} fine-tune epochs per trial, {settings['repeats']} latency repeats "
        f"({settings['warmup']} warm-up), trials inline, {settings['threads']} training thread(s); runtimes: "
        + "; ".join(runtimes)
        + (" (**a cheaper measure than the deploy default, every installed runtime**)" if cheap else "")
        + ".",
    ]
    if len({r["settings"] for r in rows}) > 1:
        lines.append("**Warning: rows of this pair were run with different settings.**")
    lines.append(machines_line(rows))
    lines += [
        "",
        "| strategy | seeds | hypervolume | Δacc @ uniform's speed (pt) | max over front | speed ratio @ uniform's "
        "accuracy | max over front | speed ratio within the budget | acc @ ≥ target | best feasible acc | best "
        "feasible speedup | CPU-h (trials) | CPU-h (setup) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    summaries = [summarise(rows, s) for s in strategies if any(r["strategy"] == s for r in rows)]
    for s in summaries:
        lines.append(
            "| "
            + " | ".join(
                [
                    s.strategy,
                    str(s.seeds),
                    mean_std(s.hypervolume, ".4f"),
                    mean_std(s.of("gain_pt_best"), "+.2f"),
                    mean_std(s.of("gain_pt_max"), "+.2f"),
                    mean_std(s.of("ratio_best"), ".2f"),
                    mean_std(s.of("ratio_max"), ".2f"),
                    mean_std(s.of("ratio_budget"), ".2f"),
                    mean_std(s.target_accuracy, ".4f") if target else "-",
                    mean_std(s.best_accuracy, ".4f"),
                    mean_std(s.best_speed, ".2f"),
                    mean_std(s.cpu_h, ".3f"),
                    mean_std(s.setup_cpu_h, ".3f"),
                ]
            )
            + " |"
        )
    uniform = [v for s in summaries if s.strategy == "uniform" for v in s.versus if v is not None]
    if uniform:
        lines += [
            "",
            "Best uniform recipe (uniform's fastest feasible trial) per seed: "
            + ", ".join(f"{v.uniform_speed:.2f}x at {v.uniform_accuracy:.4f}" for v in uniform)
            + ".",
        ]
    spreads = [
        spread
        for r in rows
        if r["strategy"] == "uniform" and (spread := repeat_spread(r["points"], grid_size(PAIRS[pair])))
    ]
    if spreads:
        n = sum(s.repeats for s in spreads)
        lines += [
            "",
            f"Resolution: uniform measures each recipe of its grid more than once; over {n} such repeats the same "
            "recipe's two measurements differed by a median "
            f"{statistics.median(s.speed_pct_median for s in spreads):.0f} % (at most "
            f"{max(s.speed_pct_max for s in spreads):.0f} %) in speed and "
            f"{statistics.median(s.accuracy_pt_median for s in spreads):.2f} pt (at most "
            f"{max(s.accuracy_pt_max for s in spreads):.2f} pt) in accuracy (medians of the seeds' medians).",
        ]
    line, met = verdict(pair, summaries)
    lines += ["", f"**Verdict: {line}**", "", within_budget(summaries), ""]
    best = _best_strategy(summaries, "ratio_best")
    if best is not None and (training := training_line(rows, best[0])):
        lines += [training, ""]
    return lines, met


def training_line(rows: list[dict[str, Any]], strategy: str) -> str | None:
    """The fine-tune epochs behind the trials `strategy`'s speed ratio at equal accuracy compares, per seed:
    its trial's (carried epochs included) against the best uniform recipe's, and a warning where its trial had
    more than one trial's fine-tune, which no uniform recipe can have: a strategy that carries its model forward
    (NetAdapt) can be ahead by training rather than by its allocation. The bench's budget is trials and CPU time,
    not training, so the ratio stands but must be read with this. None when no seed's rows kept the epochs."""
    uniform = {r["seed"]: r for r in rows if r["strategy"] == "uniform"}
    compared = []
    for row in sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["seed"]):
        recipe = fastest_at(uniform[row["seed"]]["points"], row["floor"]) if row["seed"] in uniform else None
        trial = fastest_at(row["points"], recipe.accuracy) if recipe is not None else None  # type: ignore[arg-type]
        if recipe is not None and trial is not None and recipe.epochs is not None and trial.epochs is not None:
            compared.append((row["seed"], trial.epochs, recipe.epochs, json.loads(row["settings"])["finetune"]))
    if not compared:
        return None
    per_seed = ", ".join(f"seed {seed}: {mine:g} vs {theirs:g}" for seed, mine, theirs, _ in compared)
    line = f"Fine-tune epochs behind the trials compared at equal accuracy ({strategy} vs uniform): {per_seed}."
    carried = [seed for seed, mine, _, one_trial in compared if mine > one_trial + 1e-9]
    if carried:
        line += (
            f" **In seed {', '.join(map(str, carried))} {strategy}'s trial carried more fine-tuning than one trial "
            "gets, which no uniform recipe has: its ratio is at equal trials and CPU time, not at equal training.**"
        )
    return line


def machines_line(rows: list[dict[str, Any]]) -> str:
    """Which CPU each seed's studies ran on, and a warning where they differ: a ratio against uniform is taken
    within one seed, so a seed whose studies ran on different machines compares across them, and a mean over
    seeds that ran on different machines mixes their int8 speedups."""
    seeds = sorted({r["seed"] for r in rows})
    cpus = {seed: sorted({r["cpu"] or "not recorded" for r in rows if r["seed"] == seed}) for seed in seeds}
    line = "CPU per seed: " + "; ".join(f"seed {seed}: {' + '.join(cpus[seed])}" for seed in seeds) + "."
    mixed = [seed for seed in seeds if len(cpus[seed]) > 1]
    if mixed:
        return line + (
            f" **Warning: the studies of seed {', '.join(map(str, mixed))} ran on different CPUs; their ratios "
            "against uniform compare machines.**"
        )
    machines = {seed_cpus[0] for seed_cpus in cpus.values()}  # one per seed from here on
    known = machines - {"not recorded"}
    if len(known) > 1:
        return line + " Seeds ran on different CPUs: each ratio is within one seed, but means over seeds mix machines."
    if known and "not recorded" in machines:
        return line + " Not every seed's CPU was recorded: means over seeds may mix machines."
    return line


def within_budget(summaries: list[StrategySummary]) -> str:
    """One line on the looser question (`VsUniform.ratio_budget`): the strategy whose fastest trial within the
    accuracy budget is fastest against the best uniform recipe, mean over seeds, every seed defined."""
    best = _best_strategy(summaries, "ratio_budget")
    if best is None:
        return "Within the accuracy budget (at any accuracy above the floor): no strategy is feasible in every seed."
    return (
        f"Within the accuracy budget (at any accuracy above the floor, not the goal's equal accuracy): the fastest "
        f"strategy is {best[0]}, {best[1]:.2f}x the best uniform recipe's speed (mean over seeds)."
    )


def report(args: argparse.Namespace) -> None:
    rows = load_rows(args.out)
    pairs = [p for p in dict.fromkeys(r["pair"] for r in rows) if not args.pairs or p in args.pairs]
    strategies = [s for s in STRATEGIES if any(r["strategy"] == s for r in rows)]
    lines = [
        "# Search strategies against the best uniform recipe (`experiments/bench_search.py`)",
        "",
        "Equal trial budget per study; accuracy is the validation split (the search's), speed the honest "
        "speedup. Δacc: the strategy's best accuracy among its trials at least as fast as a uniform feasible "
        "front point, minus that point's accuracy, at the best uniform recipe (uniform's fastest trial within "
        "the accuracy budget) and the largest over the front; speed ratio: the strategy's best speed among "
        "its trials at least as accurate as the point, over the point's speed; both against uniform's study "
        "of the same seed, mean ± std over seeds, (k/n) when only k seeds had such a trial. Speed ratio within "
        "the budget: the strategy's fastest trial within the accuracy budget over the best uniform recipe's "
        "speed, at whatever accuracy above the floor (a user's question; the goal is judged at equal accuracy, "
        "not on it). acc @ ≥ target: "
        "the best accuracy among trials at least as fast as the speed target. CPU-h (trials): the trials' "
        "CPU time (what `--cpu-hours` budgets); setup: the rest of the study's session (baseline measurement, "
        "latency table, the strategy itself; the first study of a process also loads the baseline).",
        "",
    ]
    met = []
    for pair in pairs:
        section, ok = pair_section(pair, [r for r in rows if r["pair"] == pair], strategies)
        lines += section
        met.append(ok)
    lines.append(
        f"**Goal (>= {GOAL_RATIO}x at equal accuracy or >= +{GOAL_GAIN_PT} pt at equal speed on at least two "
        f"pairs): met on {sum(met)} of {len(met)} pairs.**"
    )
    lines.append("")
    lines.append("![hypervolume vs CPU-hours](hypervolume.png)")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if pairs:
        plot(rows, pairs, strategies, args.out / "hypervolume.png")


def plot(rows: list[dict[str, Any]], pairs: list[str], strategies: list[str], path: Path) -> None:
    """Hypervolume against cumulative trial CPU-hours per pair, one line per strategy, mean over seeds (a
    seed whose budget ran out holds its last value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 4.2), squeeze=False)
    for ax, pair in zip(axes[0], pairs, strict=True):
        floor = next(r["floor"] for r in rows if r["pair"] == pair)
        for strategy in strategies:
            curves = [
                hypervolume_curve(r["points"], r["floor"])
                for r in rows
                if r["pair"] == pair and r["strategy"] == strategy and r["points"]
            ]
            if not curves:
                continue
            end = max(c[-1][0] for c in curves)
            grid = [end * i / 200 for i in range(201)]
            mean = [statistics.mean(max((v for x, v in c if x <= g), default=0.0) for c in curves) for g in grid]
            ax.plot(grid, mean, label=strategy, drawstyle="steps-post")
        ax.set(
            title=f"{pair}: hypervolume vs CPU (mean over seeds)",
            xlabel="cumulative trial CPU-hours",
            ylabel=f"hypervolume, reference ({floor:.3f}, 1.0)",
        )
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.bench_search", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument(
        "--pairs", nargs="+", choices=list(PAIRS), help=f"default: {' '.join(REAL_PAIRS)} (report: every pair run)"
    )
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=16, help="trial budget per study")
    parser.add_argument("--cpu-hours", type=float, help="also a CPU budget per study (trials' CPU time)")
    parser.add_argument("--finetune", type=float, help="fine-tune epochs per trial (default: the pair's)")
    parser.add_argument("--repeats", type=int, help="latency repeats per batch size (default: the pair's)")
    parser.add_argument(
        "--runtimes", nargs="+", help="runtimes to time on (default: every installed one); recorded in the output"
    )
    parser.add_argument("--no-target", action="store_true", help="drop the pairs' speed-target constraints")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of results.csv, summary.md, hypervolume.png")
    parser.add_argument("--storage", help="study store URL (default: sqlite:///OUT/bench.db)")
    parser.add_argument("--keep-artefacts", action="store_true", help="keep each finished study's model files")
    parser.add_argument("--report", action="store_true", help="only rewrite summary.md and the plot")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        run(args)
    report(args)


if __name__ == "__main__":
    main()
