"""ASHA continuation (issue #17 item 5): a promoted trial goes on from its parent rung's fine-tuned weights for only
the extra epochs; without them (gone, damaged, not fitting) it fine-tunes from the baseline and says so. Real digits
trials, a real SQLite store, the inline executor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import autocompress
from autocompress.runtime import run_trial
from autocompress.runtime._loop import WEIGHTS_KIND
from autocompress.runtime._trial import Continuation, save_weights
from autocompress.space import LayerSetting, Policy
from autocompress.store import COMPLETE, StudyStore
from autocompress.task import FinetunePart
from experiments.tasks.digits import DigitsNet
from experiments.tasks.digits import task as digits
from tests import finetune_recording_task as recording
from tests.conftest import FAST_SPACE

# every policy meets the speed target, so which trials go on depends on accuracy alone, not on timing noise
RUNGS = (
    FAST_SPACE.replace("experiments.tasks.digits:task", "tests.finetune_recording_task:task")
    .replace("fidelity: {finetune_epochs: [0.5]}", "fidelity: {finetune_epochs: [0.2, 0.6], eta: 2}")
    .replace("min_speedup: 1.2", "min_speedup: 0.5")
)


def _space(tmp_path: Path) -> Path:
    path = tmp_path / "rungs.yaml"
    path.write_text(RUNGS)
    return path


@pytest.mark.slow
def test_a_promoted_trial_takes_exactly_the_extra_steps_from_its_parents_weights(tmp_path) -> None:
    recording.CALLS.clear()
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = autocompress.search(
        _space(tmp_path), study="c", storage=storage, strategy="random", trials=6, executor="inline"
    )
    trials = {t.number: t for t in study.trials()}
    promoted = [t for t in trials.values() if t.metrics.get("rung") == 1 and t.metrics["finetune_epochs"] > 0]
    assert promoted  # the seed promotes a configuration that is fine-tuned
    for child in promoted:
        parent = trials[int(child.metrics["promoted_from"])]
        assert child.metrics["parent_weights"] == "loaded" and child.metrics["continued_epochs"] == 0.2
        assert child.metrics["finetune_epochs"] == 0.6  # the weights' total, as a from-scratch trial reports it
        extra = digits.finetune_steps(0.6 - 0.2)
        assert (
            recording.call_of(child.number).steps
            == extra
            == child.metrics["finetune_steps"]
            < digits.finetune_steps(0.6)
        )
        assert recording.call_of(parent.number).steps == parent.metrics["finetune_steps"] == digits.finetune_steps(0.2)
        start, weights_at_parent_end = recording.call_of(child.number).start, recording.call_of(parent.number).end
        assert start.keys() == weights_at_parent_end.keys()
        # batch-norm running statistics are re-estimated after the parent's fine-tuning (recalibrate_batch_norm),
        # so they differ from those its last step left; every learned tensor is the parent's
        learned = [k for k in start if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        assert len(learned) < len(start)
        assert all(torch.equal(start[k], weights_at_parent_end[k]) for k in learned)
        assert not torch.equal(start["fc.weight"], digits.baseline_model().state_dict()["fc.weight"])
        assert not [a for a in parent.artefacts if a.kind == WEIGHTS_KIND]  # served its promotion: removed
        # the same policy is the same network: its timings are the parent's, not measured again
        timed = [k for k in parent.metrics if k.startswith(("latency_ms", "baseline_latency_ms", "speedup"))]
        assert len(timed) >= 6 and all(child.metrics[k] == parent.metrics[k] for k in timed)
        assert child.metrics["latency_reused"] == 1.0 and "latency_reused" not in parent.metrics
    # weights are kept only while a promotion waits to run from them: trials run one by one, so at the end only the
    # last trial's can (a rung result is judged when it arrives; one that did not go on never will)
    holding = {t.number for t in trials.values() if any(a.kind == WEIGHTS_KIND for a in t.artefacts)}
    assert holding <= {max(trials)}
    assert all(check.status == "ok" for check in study.verify())


@pytest.mark.slow
@pytest.mark.parametrize("harm", ["missing", "damaged"])
def test_resume_with_the_parents_weights_gone_or_damaged_fine_tunes_from_the_baseline(tmp_path, harm) -> None:
    recording.CALLS.clear()
    storage = f"sqlite:///{tmp_path / 's.db'}"
    autocompress.search(_space(tmp_path), study="r", storage=storage, strategy="random", trials=1, executor="inline")
    store = StudyStore(storage)
    (first,) = store.trials("r", (COMPLETE,))
    (weights,) = [a for a in first.artefacts if a.kind == WEIGHTS_KIND]  # the first result goes on: its promotion waits
    path = store.artefact_file(weights)
    if harm == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:-8] + b"damaged!")
    study = autocompress.resume("r", storage=storage, trials=2, executor="inline")
    child = study.store.trial("r", 1)
    assert child.metrics["rung"] == 1 and int(child.metrics["promoted_from"]) == first.number == 0
    assert child.metrics["parent_weights"] == harm and child.metrics["continued_epochs"] == 0.0
    assert recording.call_of(1).steps == child.metrics["finetune_steps"] == digits.finetune_steps(0.6)
    assert child.metrics["latency_reused"] == 1.0  # weights gone, but the same policy: the same network's timings
    assert child.metrics["speedup"] == first.metrics["speedup"]
    log = (tmp_path / "autocompress-artifacts" / "r" / "study.log").read_text()
    assert f"weights of trial 0 are {harm}" in log


def test_weights_that_do_not_fit_the_pruned_model_are_not_loaded() -> None:
    policy = Policy.from_mapping({name: LayerSetting(0.5, 32) for name in ("stem.0", "block1.conv1")})
    measure = {"threads": 1, "repeats": 2, "warmup": 1, "runtimes": ["torchscript"]}
    start = Continuation(0.2, save_weights(DigitsNet()))  # unpruned shapes
    result = run_trial("experiments.tasks.digits:task", policy, 0.3, measure=measure, continue_from=start)
    assert result.metrics["parent_weights"] == "incompatible" and result.metrics["continued_epochs"] == 0.0
    assert result.metrics["finetune_steps"] == digits.finetune_steps(0.3) and result.weights is None


@pytest.mark.slow
@pytest.mark.parametrize("quantizer", ["qat", "lsq", "dorefa", "bnn"])
def test_weights_of_a_model_prepared_for_a_training_quantizer_load_into_its_promotion(quantizer) -> None:
    """The quantizer's learnt state (LSQ's per-channel scales, shaped at its first forward) goes on too."""
    policy = Policy.from_mapping({n: LayerSetting(0.25, 8) for n in ("stem.0", "block1.conv1")}, quantizer=quantizer)
    measure = {"threads": 1, "repeats": 2, "warmup": 1, "runtimes": ["torchscript"]}
    parent = run_trial("experiments.tasks.digits:task", policy, 0.2, measure=measure, keep_weights=True)
    assert parent.weights is not None
    child = run_trial(
        "experiments.tasks.digits:task", policy, 0.6, measure=measure, continue_from=Continuation(0.2, parent.weights)
    )
    assert child.metrics["parent_weights"] == "loaded" and child.metrics["continued_epochs"] == 0.2
    assert child.metrics["finetune_steps"] == digits.finetune_steps(0.4)


@pytest.mark.slow
def test_rungs_run_as_parts_of_one_fine_tune_of_the_top_rungs_epochs(tmp_path) -> None:
    """With a task whose ``finetune`` takes ``part``, a rung-0 trial trains the first stretch of one 0.6-epoch
    fine-tune and its promotion the next, on the same schedule and batches (its chain's seed)."""
    recording.CALLS.clear()
    space = tmp_path / "parts.yaml"
    space.write_text(RUNGS.replace("tests.finetune_recording_task:task", "tests.finetune_recording_task:part_task"))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = autocompress.search(space, study="p", storage=storage, strategy="random", trials=6, executor="inline")
    trials = {t.number: t for t in study.trials()}
    promoted = [t for t in trials.values() if t.metrics.get("rung") == 1 and t.metrics["finetune_epochs"] > 0]
    assert promoted
    for child in promoted:
        parent = trials[int(child.metrics["promoted_from"])]
        assert child.metrics["finetune_seed"] == parent.metrics["finetune_seed"] == parent.number
        first, then = (c for c in recording.CALLS if c.seed == parent.number)  # the chain's two stretches
        assert first.part == FinetunePart(0.0, 0.6) and then.part == FinetunePart(0.2, 0.6)
        assert first.steps == digits.finetune_steps(0.2) == parent.metrics["finetune_steps"]
        assert then.steps == digits.finetune_steps(0.6) - digits.finetune_steps(0.2) == child.metrics["finetune_steps"]
        learned = [k for k in then.start if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        assert all(torch.equal(then.start[k], first.end[k]) for k in learned)
    unpromoted = [t for t in trials.values() if t.metrics.get("rung") == 0 and t.metrics["finetune_epochs"] > 0]
    assert all(t.metrics["finetune_seed"] == t.number for t in unpromoted)
