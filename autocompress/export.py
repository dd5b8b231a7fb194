"""Export a trial as a deployable artefact with a manifest, verified in a fresh process.

The artefact is the file the trial itself evaluated and measured on the runtime its figure comes from
(``runtime``: ``model.xml`` + ``model.bin`` for OpenVINO, ``model.onnx`` for ONNX Runtime, ``model.pt`` for
TorchScript; pruned channels removed, int8 layers int8), so what is exported is exactly what was ranked.
`verify` loads it in a new interpreter with that runtime's own API only (``openvino.Core``,
``onnxruntime.InferenceSession``, ``torch.jit.load``: the runtime's `server_code`, as a server would) and
re-evaluates it: on the validation split (the search ranked on it, so the figure must reproduce) and on the
test split, read here once for the chosen model.
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autocompress.deploy import describe_inputs, get_runtime
from autocompress.errors import UserError
from autocompress.store import ARTEFACT_DAMAGED, ARTEFACT_MISSING, PREFERENCES, oriented, preferred
from autocompress.task import load_task

if TYPE_CHECKING:
    from autocompress.study import Study

#: largest allowed difference between the stored accuracy and the re-evaluated one
VERIFY_TOLERANCE = 0.005


class VerificationError(RuntimeError):
    """The exported artefact does not reproduce the stored accuracy."""


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("autocompress", "torch", "torch-pruning", "optuna", "ray", "onnx", "onnxruntime", "openvino"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def export_trial(
    study: Study, out: Path, number: int | None, *, allow_infeasible: bool = False, prefer: str = "knee"
) -> Path:
    """Write the trial's artefact on its runtime (``model.xml``/``.bin``, ``model.onnx`` or ``model.pt``) and
    ``manifest.json`` for trial `number`, by default the trial of the feasible Pareto front that `prefer` picks
    (`autocompress.store.preferred`: ``knee``, ``accurate`` or ``fast``); returns the (first) model file.

    With no feasible trial, the closest one (least constraint violation) is exported only when
    `allow_infeasible` is set, and the manifest says ``"feasible": false``.
    """
    record = study.record
    board = study.leaderboard()
    if number is None:
        chosen = _choose(study, board, prefer, allow_infeasible)
    else:
        matches = [row for row in board if row["trial"] == number]
        if not matches:
            raise UserError(f"--trial {number}", f"study {study.name!r} has no trial {number}")
        chosen = matches[0]
        if chosen["state"] != "complete":
            raise UserError(f"--trial {number}", f"trial is {chosen['state']}, not complete; pick a complete one")
    trial = study.store.trial(study.name, chosen["trial"])
    runtime, stored = trial.runtime, trial.shipped_artefacts()
    if not stored:
        raise UserError(f"trial {trial.number}", f"has no stored {runtime} model artefact")
    out.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []
    for artefact in stored:
        source = study.store.artefact_file(artefact)
        check = study.store.check_artefact(trial.number, artefact)
        if check.status == ARTEFACT_MISSING:
            raise UserError(str(source), f"artefact of trial {trial.number} is missing; re-run the study")
        if check.status == ARTEFACT_DAMAGED:
            raise UserError(
                str(source),
                f"artefact of trial {trial.number} fails its sha256 check (damaged or tampered); "
                "export another trial with --trial N or re-run that one",
            )
        target = out / f"model{source.suffix}"
        shutil.copyfile(source, target)
        files.append({"file": target.name, "sha256": artefact.sha256, "size_bytes": artefact.size_bytes})
    model_path = out / files[0]["file"]
    deploy = get_runtime(runtime)
    manifest: dict[str, Any] = {
        "study": study.name,
        "trial": trial.number,
        "feasible": chosen["feasible"],
        "rank": chosen["rank"],
        "chosen_by": f"--trial {number}" if number is not None else f"--prefer {prefer}",
        "task": record.task,
        "strategy": record.strategy,
        "policy": trial.policy,
        "finetune_epochs": trial.finetune_epochs,
        # accuracy: the validation split the search ranked on; test_accuracy: the test split, read after it
        "metrics": trial.metrics,
        "splits": {"accuracy": "val", "test_accuracy": "test"},
        # layers below 8 bits run on int8 kernels: their latency is int8's, not their bit-width's
        "latency_basis": "int8-kernel" if trial.metrics.get("latency_int8_kernel") else "measured",
        "violations": trial.violations,
        "baseline": record.baseline,
        "constraints": record.space["constraints"],
        "objectives": record.space["objectives"],
        # the study's verdict: did its per-layer search beat its best uniform recipe (val figures)
        "versus_uniform": study.versus_uniform().to_dict(),
        "artefact": {
            "runtime": runtime,
            "runtime_version": deploy.version(),
            "files": files,
            "inputs": list(describe_inputs(load_task(record.task).example_input(1))),
            "load": deploy.server_code().replace("{out}", "."),
        },
        "versions": _versions(),
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    verify(out)
    return model_path


def _choose(study: Study, board: list[dict[str, Any]], prefer: str, allow_infeasible: bool) -> dict[str, Any]:
    """The leaderboard row to export when no trial is named: `prefer`'s pick of the feasible Pareto front."""
    if prefer not in PREFERENCES:
        raise UserError(f"--prefer {prefer}", f"unknown preference; choose one of {', '.join(PREFERENCES)}")
    complete = [row for row in board if row["state"] == "complete"]
    if not complete:
        raise UserError(f"study {study.name!r}", "has no finished trial to export; run or resume the search")
    front = [row for row in complete if row["pareto"]]
    if not front:
        if not allow_infeasible:
            raise UserError(
                f"study {study.name!r}",
                f"no trial meets the constraints; closest is trial {complete[0]['trial']}: "
                "pass --allow-infeasible to export it anyway",
            )
        return complete[0]
    objectives = study.record.space["objectives"]
    metrics = {t.number: t.metrics for t in study.store.trials(study.name, numbers=[r["trial"] for r in front])}
    return front[preferred([oriented(metrics[r["trial"]], objectives) for r in front], prefer)]


def verify(out: Path) -> float:
    """Re-evaluate the exported model in a fresh interpreter on the validation and the test split; raise
    `VerificationError` if either differs from the manifest's figure for it (``accuracy``, the validation
    figure the search ranked; ``test_accuracy`` when the search already read the test split for this trial)
    by more than `VERIFY_TOLERANCE`. Records both under ``verified``, the test figure also as the metric
    ``test_accuracy``, and returns the test accuracy: the one figure to report for the exported model."""
    manifest = json.loads((out / "manifest.json").read_text())
    runtime = manifest.get("artefact", {}).get("runtime", "torchscript")  # a manifest without one: model.pt
    code = (
        "import sys\nout = sys.argv[2]\n"
        + get_runtime(runtime).server_code()
        + "from autocompress.task import load_task\ntask = load_task(sys.argv[1])\n"
        + "print(task.evaluate(model, 'val'), task.evaluate(model, 'test'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, manifest["task"], str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise VerificationError(f"exported model failed to load or run: {proc.stderr.strip().splitlines()[-1:]}")
    val, test = (float(v) for v in proc.stdout.strip().splitlines()[-1].split())
    metrics = manifest["metrics"]
    for name, measured in (("accuracy", val), ("test_accuracy", test)):
        stored = metrics.get(name)
        if stored is not None and abs(measured - stored) > VERIFY_TOLERANCE:
            raise VerificationError(f"exported model gives {name} {measured:.4f}, stored {stored:.4f}")
    metrics["test_accuracy"] = test
    manifest["verified"] = {
        "accuracy": val,
        "test_accuracy": test,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return test
