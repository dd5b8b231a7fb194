"""A promoted ASHA trial against one fine-tune of the same length, on the same recipe (issue #17, item 5).

ASHA's top-rung trial is a chain: the rung-0 trial fine-tunes its pruned model for the first rung's epochs, the
promotion goes on from those weights for the next rung's extra epochs, and so on; each link is a fresh call of the
task's ``finetune`` (for the built-in tasks: Adam and a cosine schedule over that call's steps). Full fidelity
fine-tunes once for the top rung's epochs. bench_fidelity found ASHA's best feasible accuracy 0.1-0.2 pt under
full fidelity's in every run on mnist-resnet18; this measures whether the chain itself costs accuracy, apart from
which recipes ASHA chose: the same recipes, the same total epochs, several seeds, each way.

Per (recipe, seed): `single`: `run_trial` at the top rung's epochs from the baseline; `chain`: `run_trial` at
each rung in turn, each going on from the one before's kept weights (`Continuation`), as `SearchLoop` does.
Trial seeds as in a study: the chain's links take seed, seed + 1, ... (a study gives each trial its own).
Compared: validation accuracy on the runtime the trial ships on, the figure the search ranks by.

    nice -n 5 taskset -c 0 python -m experiments.bench_continuation --pair mnist-resnet18 --seeds 0 1 2
Writes experiments/results/bench_continuation.{json,md}; ``--recipes`` picks some of `RECIPES`, so recipes can
run side by side, one per core.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from autocompress.space import Policy, Space, uniform_grid
from experiments.bench_fidelity import FIDELITY, space_text
from experiments.bench_search import cpu_model

#: recipes compared, as uniform channel sparsity x weight bits over the space's layers (ASHA's promotions on the
#: ResNet-18 pair at its 2.5x target are pruned int8 recipes)
RECIPES = {"50-int8": (0.5, 8), "25-int8": (0.25, 8)}
#: how a chain trains: `chain`, each rung a fine-tune of its own (a fresh cosine schedule from the full learning
#: rate; ASHA before `FinetunePart`); `parts`, each rung the next stretch of one fine-tune of the top rung's epochs
#: (its schedule and batches, `run_trial`'s ``schedule_epochs``; ASHA now)
WAYS = {"chain": "each rung its own schedule", "parts": "stretches of one schedule"}


def recipe_policy(space: Space, sparsity: float, bits: int) -> Policy:
    """The space's uniform recipe of `sparsity` (on every layer that allows it) and `bits` as a `Policy`."""
    for params in uniform_grid(space.layers):
        sparsities = {v for k, v in params.items() if k.endswith("/channel_sparsity")}
        if {v for k, v in params.items() if k.endswith("/weight_bits")} == {bits} and max(sparsities) == sparsity:
            return space.policy_from_params(params)
    raise SystemExit(f"error: the space has no uniform recipe of {sparsity:.0%} channels at {bits} bits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pair", choices=list(FIDELITY), default="mnist-resnet18")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS), help="how the chain trains")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    import torch

    from autocompress.runtime import Continuation, run_trial
    from autocompress.space import discover_layers, load_space_file, resolve_space
    from autocompress.task import checked_baseline, load_task

    torch.set_num_threads(1)
    rungs, target = FIDELITY[args.pair]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "space.yaml"
        path.write_text(space_text(args.pair, rungs, target))
        spec, _ = load_space_file(path)
    model, example = checked_baseline(load_task(spec.task, where="space: task"))
    space = resolve_space(spec, discover_layers(model, example), "space")
    measure = {**space.measure, **space.shipping()}
    rows = []
    for name in args.recipes:
        sparsity, bits = RECIPES[name]
        policy = recipe_policy(space, sparsity, bits)
        for seed in args.seeds:
            single = run_trial(space.task, policy, rungs[-1], measure=measure, seed=seed)
            row = {"recipe": f"{sparsity:.0%} channels, {bits} bits", "seed": seed, "cpu": cpu_model()}
            row |= {"single": single.metrics["accuracy"], "speedup": single.metrics["speedup"]}
            for way in args.ways:
                start, accuracies = None, []
                for link, epochs in enumerate(rungs):
                    result = run_trial(
                        space.task,
                        policy,
                        epochs,
                        measure=measure,
                        seed=seed + link,
                        continue_from=start,
                        keep_weights=True,
                        schedule_epochs=rungs[-1] if way == "parts" else None,
                    )
                    accuracies.append(result.metrics["accuracy"])
                    batches_seed = result.metrics.get("finetune_seed")  # set when it ran as a part
                    start = Continuation(
                        epochs, result.weights, seed=None if batches_seed is None else int(batches_seed)
                    )
                row[way] = accuracies
            rows.append(row)
            print(row, flush=True)
    write(args, rungs, rows)


def write(args: argparse.Namespace, rungs: tuple[float, ...], rows: list[dict]) -> None:
    """bench_continuation.json (every row of this pair, a rerun of a recipe and seed replacing its own; read now,
    so runs of other recipes can go side by side) and .md (per recipe and seed, and the mean difference)."""
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_continuation.json"
    kept = json.loads(path.read_text()) if path.exists() else {"pair": args.pair, "rungs": list(rungs), "rows": []}
    if (kept["pair"], kept["rungs"]) != (args.pair, list(rungs)):
        raise SystemExit(f"error: {path} holds {kept['pair']} at rungs {kept['rungs']}; choose another --out")
    merged = {(r["recipe"], r["seed"]): r for r in kept["rows"]}
    for row in rows:  # a rerun's figures replace the row's, and the ways it did not run are kept
        key = (row["recipe"], row["seed"])
        merged[key] = {**merged.get(key, {}), **row}
    rows = [merged[key] for key in sorted(merged)]
    path.write_text(json.dumps({**kept, "rows": rows}, indent=2) + "\n")
    cpus = " + ".join(sorted({r["cpu"] for r in rows}))
    lines = [
        f"# A promoted ASHA trial vs one fine-tune of the same length ({args.pair}, {cpus})",
        "",
        f"Rungs {list(rungs)} epochs; `single`: one fine-tune of {rungs[-1]:g} epoch from the baseline; `chain`: the "
        "rungs in turn, each going on from the one before, each with a schedule of its own; `parts`: the same, each "
        "rung the next stretch of one fine-tune's schedule and batches (validation accuracy after each rung; – where "
        "a row did not run that way).",
        "",
        "| recipe | seed | single | chain (after each rung) | parts (after each rung) | chain - single (pt) | parts - "
        "single (pt) |",
        "|---|---|---|---|---|---|---|",
    ]

    def links(row: dict, way: str) -> str:
        return " / ".join(f"{a:.4f}" for a in row[way]) if way in row else "–"

    def gap(row: dict, way: str) -> str:
        return f"{100 * (row[way][-1] - row['single']):+.2f}" if way in row else "–"

    for r in rows:
        lines.append(
            f"| {r['recipe']} | {r['seed']} | {r['single']:.4f} | {links(r, 'chain')} | {links(r, 'parts')} | "
            f"{gap(r, 'chain')} | {gap(r, 'parts')} |"
        )
    lines.append("")
    for way in WAYS:
        diffs = [100 * (r[way][-1] - r["single"]) for r in rows if way in r]
        if diffs:
            spread = f" ± {statistics.stdev(diffs):.2f}" if len(diffs) > 1 else ""
            below = sum(d < 0 for d in diffs)
            lines.append(
                f"{way.capitalize()} - single over {len(diffs)} runs: {statistics.mean(diffs):+.2f}{spread} pt "
                f"({below} below)."
            )
    (args.out / "bench_continuation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
