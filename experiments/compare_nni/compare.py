"""NNI 3.0 (L1NormPruner + ModelSpeedup) vs autocompress (`autocompress.compress.prune`, L1) in one process.

Same trained models (ResNet-like, MobileNetV2-like, DenseNet-like on digits), same uniform 50% L1 channel
sparsity on every conv the tool may prune (the classifier is left alone by both), no fine-tuning on either
side (accuracy right after pruning is reported only to show both models still run; 50% without fine-tuning
is near chance). Both pruned models and the baseline are converted to TorchScript (trace) and timed
interleaved in this process (1 thread, median of repeats). NNI's ModelSpeedup needs
``graph_module=torch.fx.symbolic_trace(model)`` with torch 2.13; when it fails the error is recorded.
Run through ``experiments/compare_nni/run.sh``; writes experiments/results/compare_nni.{json,md}.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import torch
from torch import nn

from autocompress.compress import prune
from autocompress.measure import compare_latency, count_params, to_torchscript
from autocompress.space import Policy, discover_layers
from experiments.tasks import cnn as tasks

SPARSITY = 0.5
MEASURE = {"threads": 1, "warmup": 5, "repeats": 30}
OUT = Path(__file__).resolve().parent.parent / "results"


def ours(task: tasks.SupervisedTask) -> nn.Module:
    model, x1 = task.baseline_model(), task.example_input(1)
    layers = {info.name: {"channel_sparsity": SPARSITY} for info in discover_layers(model, x1) if info.prunable}
    return prune(model, Policy.from_mapping(layers, criterion="l1"), x1)


def nni_pruned(task: tasks.SupervisedTask) -> nn.Module:
    from nni.compression.pruning import L1NormPruner
    from nni.compression.speedup import ModelSpeedup

    model, x1 = task.baseline_model(), task.example_input(1)
    config = [{"op_types": ["Conv2d"], "sparse_ratio": SPARSITY}]
    pruner = L1NormPruner(model, config)
    _, masks = pruner.compress()
    pruner.unwrap_model()
    ModelSpeedup(model, x1, masks, graph_module=torch.fx.symbolic_trace(model)).speedup_model()
    return model.eval()


def main() -> None:
    import nni

    rows = []
    for name in ("resnet", "mobilenet", "densenet"):
        task = getattr(tasks, name)
        x1, x32 = task.example_input(1), task.example_input(32)
        base = task.baseline_model()
        row: dict[str, object] = {
            "model": name,
            "params_base": count_params(base),
            "accuracy_base": task.evaluate(base),
        }
        scripts = {"base": to_torchscript(base, x1)}
        mine = ours(task)
        scripts["ours"] = to_torchscript(mine, x1)
        row.update(params_ours=count_params(mine), accuracy_ours=task.evaluate(mine))
        try:
            theirs = nni_pruned(task)
            scripts["nni"] = to_torchscript(theirs, x1)
            row.update(nni_ok=True, params_nni=count_params(theirs), accuracy_nni=task.evaluate(theirs))
        except Exception as exc:  # NNI's failure is a result to record, not a crash
            row.update(
                nni_ok=False,
                nni_error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                nni_traceback_tail=traceback.format_exc().splitlines()[-3:],
            )
        for batch, x in (("b1", x1), ("b32", x32)):
            ms = compare_latency(scripts, x, **MEASURE)
            row.update({f"ms_{k}_{batch}": v for k, v in ms.items()})
            row.update({f"speedup_{k}_{batch}": ms["base"] / v for k, v in ms.items() if k != "base"})
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "nni_version": nni.__version__,
        "torch": torch.__version__,
        "sparsity": SPARSITY,
        "measure": MEASURE,
        "timing": "TorchScript (trace) for all three, interleaved, one process",
        "rows": rows,
    }
    (OUT / "compare_nni.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# NNI {nni.__version__} vs autocompress: uniform {SPARSITY:.0%} L1 channel pruning, no fine-tuning",
        "",
        "TorchScript for all, latency interleaved in one process (1 thread, median of 30), 2-core machine "
        "shared with other jobs.",
        "",
        "| model | NNI speedup ok | params base / ours / NNI | speedup b1 ours / NNI | speedup b32 ours / NNI |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        nni_params = r.get("params_nni", "-")
        nb1 = f"{r['speedup_nni_b1']:.2f}x" if r["nni_ok"] else "-"
        nb32 = f"{r['speedup_nni_b32']:.2f}x" if r["nni_ok"] else "-"
        ok = "yes" if r["nni_ok"] else f"no: {r['nni_error'][:120]}"
        lines.append(
            f"| {r['model']} | {ok} | {r['params_base']} / {r['params_ours']} / {nni_params} | "
            f"{r['speedup_ours_b1']:.2f}x / {nb1} | {r['speedup_ours_b32']:.2f}x / {nb32} |"
        )
    (OUT / "compare_nni.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
