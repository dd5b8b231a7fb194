"""A runtime that cannot compile the model (OpenVINO has no conversion rule for ONNX ``Det``; ONNX Runtime runs
it): known before any trial when the float model already has it (one line, exit 2), else the trials whose
candidate has it fail with the runtime's reason, and the study goes on. Real runtimes, real models
(tests/refusing_task.py), real SQLite store."""

from __future__ import annotations

import pytest

import autocompress
from tests.conftest import run_cli

SPACE = """task: tests.refusing_task:{task}
objectives: {{accuracy: max, latency_ms: min}}
fidelity: {{finetune_epochs: [0.2]}}
defaults: {{channel_sparsity: [0.0], weight_bits: [32]}}
layers: {{conv1: {{channel_sparsity: [0.0, 0.5]}}}}
measure: {{threads: 1, repeats: 3, warmup: 1, runtimes: [{runtimes}]}}
"""


def test_a_float_model_the_runtime_refuses_is_one_line_and_exit_2_before_any_trial(tmp_path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.format(task="det_task", runtimes="openvino, onnxruntime"))
    storage = f"sqlite:///{tmp_path / 'store.db'}"
    proc = run_cli("search", str(space), "--storage", storage, "--trials", "1", "--executor", "inline", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "measure.runtimes: openvino" in lines[0] and "No conversion rule found for operations: Det" in lines[0]
    listing = run_cli("studies", "--storage", storage, "--format", "json", cwd=tmp_path)
    assert "space" not in listing.stdout  # no study was stored


@pytest.mark.slow
@pytest.mark.parametrize(("runtimes", "pruned_state"), [("openvino", "failed"), ("openvino, onnxruntime", "complete")])
def test_a_candidate_the_runtime_refuses_fails_its_trial_with_the_reason_and_the_study_goes_on(
    tmp_path, runtimes, pruned_state
) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(SPACE.format(task="narrow_det_task", runtimes=runtimes))
    study = autocompress.search(
        space,
        study="refuse",
        storage=f"sqlite:///{tmp_path / 'store.db'}",
        trials=2,
        executor="inline",
        strategy="uniform",
    )
    trials = {t.policy["layers"]["conv1"]["channel_sparsity"]: t for t in study.trials()}
    assert trials[0.0].state == "complete" and trials[0.0].metrics["runtime"] in runtimes
    pruned = trials[0.5]
    assert pruned.state == pruned_state
    if pruned_state == "failed":  # the only runtime refused it: the trial says why
        assert "openvino" in pruned.error and "No conversion rule found for operations: Det" in pruned.error
    else:  # another runtime runs it: it ships there, the refusing one is named
        assert pruned.metrics["runtime"] == "onnxruntime" and pruned.metrics["unsupported@openvino"] == 1.0
    assert study.record.status == "finished"
