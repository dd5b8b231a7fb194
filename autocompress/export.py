"""Export a trial as a deployable artefact with a manifest, verified in a fresh process.

The artefact is the file the trial itself evaluated and measured on the runtime its figure comes from
(``runtime``: ``model.xml`` + ``model.bin`` for OpenVINO, ``model.onnx`` for ONNX Runtime, ``model.pt`` for
TorchScript; pruned channels removed, int8 layers int8), so what is exported is exactly what was ranked.
`verify` loads it in a new interpreter with that runtime's own API only (``openvino.Core``,
``onnxruntime.InferenceSession``, ``torch.jit.load``: the runtime's `server_code`, as a server would) and
re-evaluates it on the task's test split.
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
from autocompress.store import sha256_file
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


def export_trial(study: Study, out: Path, number: int | None, *, allow_infeasible: bool = False) -> Path:
    """Write the trial's artefact on its runtime (``model.xml``/``.bin``, ``model.onnx`` or ``model.pt``) and
    ``manifest.json`` for trial `number` (default: the Pareto-best feasible one); returns the (first) model file.

    With no feasible trial, the closest one (least constraint violation) is exported only when
    `allow_infeasible` is set, and the manifest says ``"feasible": false``.
    """
    record = study.record
    board = study.leaderboard()
    complete = [row for row in board if row["state"] == "complete"]
    if number is None:
        if not complete:
            raise UserError(f"study {study.name!r}", "has no finished trial to export; run or resume the search")
        chosen = complete[0]
        if not chosen["feasible"] and not allow_infeasible:
            raise UserError(
                f"study {study.name!r}",
                f"no trial meets the constraints; closest is trial {chosen['trial']}: "
                "pass --allow-infeasible to export it anyway",
            )
    else:
        matches = [row for row in board if row["trial"] == number]
        if not matches:
            raise UserError(f"--trial {number}", f"study {study.name!r} has no trial {number}")
        chosen = matches[0]
        if chosen["state"] != "complete":
            raise UserError(f"--trial {number}", f"trial is {chosen['state']}, not complete; pick a complete one")
    trial = study.store.trial(study.name, chosen["trial"])
    runtime = str(trial.metrics.get("runtime", "torchscript"))
    # kind RUNTIME-model (one row per file); "model" is a TorchScript file stored before deploy targets existed
    stored = [
        a for a in trial.artefacts if a.kind == f"{runtime}-model" or (runtime, a.kind) == ("torchscript", "model")
    ]
    if not stored:
        raise UserError(f"trial {trial.number}", f"has no stored {runtime} model artefact")
    out.mkdir(parents=True, exist_ok=True)
    files: list[dict[str, Any]] = []
    for artefact in stored:
        source = Path(artefact.path)
        if not source.exists():
            raise UserError(str(source), f"artefact of trial {trial.number} is missing; re-run the study")
        if sha256_file(source) != artefact.sha256:
            raise UserError(
                str(source),
                f"artefact of trial {trial.number} fails its sha256 check (corrupted or tampered); re-run that trial",
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
        "task": record.task,
        "strategy": record.strategy,
        "policy": trial.policy,
        "finetune_epochs": trial.finetune_epochs,
        "metrics": trial.metrics,
        # layers below 8 bits run on int8 kernels: their latency is int8's, not their bit-width's
        "latency_basis": "int8-kernel" if trial.metrics.get("latency_int8_kernel") else "measured",
        "violations": trial.violations,
        "baseline": record.baseline,
        "constraints": record.space["constraints"],
        "objectives": record.space["objectives"],
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


def verify(out: Path) -> float:
    """Re-evaluate the exported model in a fresh interpreter; raise `VerificationError` if the accuracy
    differs from the manifest's by more than `VERIFY_TOLERANCE`. Returns the re-measured accuracy."""
    manifest = json.loads((out / "manifest.json").read_text())
    runtime = manifest.get("artefact", {}).get("runtime", "torchscript")  # a manifest without one: model.pt
    code = (
        "import sys\nout = sys.argv[2]\n"
        + get_runtime(runtime).server_code()
        + "from autocompress.task import load_task\nprint(load_task(sys.argv[1]).evaluate(model, 'test'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, manifest["task"], str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise VerificationError(f"exported model failed to load or run: {proc.stderr.strip().splitlines()[-1:]}")
    accuracy = float(proc.stdout.strip().splitlines()[-1])
    stored = manifest["metrics"]["accuracy"]
    if abs(accuracy - stored) > VERIFY_TOLERANCE:
        raise VerificationError(f"exported model gives accuracy {accuracy:.4f}, stored {stored:.4f}")
    manifest["verified"] = {"accuracy": accuracy, "at": datetime.now(UTC).isoformat(timespec="seconds")}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return accuracy
