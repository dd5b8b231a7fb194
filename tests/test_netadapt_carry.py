"""NetAdapt carries its model forward (issue #17 item 3): each candidate goes on from the last winner's
short-fine-tuned weights, its one layer pruned further, for one short fine-tune more; the weights no proposal can
go on from are deleted; a resumed study goes on from the weights kept across sessions. Real digits trials (the
fine-tune recording task), a real measured latency table, a real SQLite store, the inline executor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import autocompress
from autocompress.compress import out_widths, prune, prune_to_widths
from autocompress.runtime import run_trial
from autocompress.runtime._loop import WEIGHTS_KIND
from autocompress.runtime._trial import Continuation
from autocompress.space import LayerSetting, Policy, Space
from autocompress.store import TrialRecord
from autocompress.study import _controller_from_state
from experiments.tasks.digits import task as digits
from tests import finetune_recording_task as recording

SPACE = """task: tests.finetune_recording_task:task
objectives: {accuracy: max, latency_ms: min}
fidelity: {finetune_epochs: [0.2]}
defaults: {channel_sparsity: [0.0, 0.25, 0.5, 0.75], weight_bits: [32]}
measure: {threads: 1, repeats: 3, warmup: 1, runtimes: [onnxruntime]}
"""
STATS = ("running_mean", "running_var", "num_batches_tracked")


def _space(tmp_path: Path) -> Path:
    path = tmp_path / "netadapt.yaml"
    path.write_text(SPACE)
    return path


def _sparsity(trial: TrialRecord) -> dict[str, float]:
    return {name: layer["channel_sparsity"] for name, layer in trial.policy["layers"].items()}


def _kept_weights(trials: dict[int, TrialRecord]) -> set[int]:
    return {n for n, t in trials.items() if any(a.kind == WEIGHTS_KIND for a in t.artefacts)}


def _needed(storage: str, name: str) -> set[int]:
    """What the study's controller, rebuilt from the store, still needs weights of."""
    study = autocompress.load_study(name, storage)
    record = study.record
    controller = _controller_from_state("netadapt", Space.from_dict(record.space), record.seed, record.controller_state)
    return controller.weights_needed()


def _assert_goes_on_from_its_parent(child: TrialRecord, trials: dict[int, TrialRecord]) -> None:
    parent = trials[int(child.metrics["continued_from"])]
    iteration = [t for t in trials.values() if t.metrics.get("continued_from") == parent.metrics.get("continued_from")]
    assert parent.metrics["accuracy"] == max(t.metrics["accuracy"] for t in iteration)  # its iteration's winner
    assert all(_sparsity(child)[n] >= s for n, s in _sparsity(parent).items())
    assert sum(_sparsity(child).values()) > sum(_sparsity(parent).values())
    assert child.metrics["parent_weights"] == "loaded"
    assert child.metrics["continued_epochs"] == parent.metrics["finetune_epochs"]
    assert child.metrics["finetune_epochs"] == pytest.approx(parent.metrics["finetune_epochs"] + 0.2)
    assert recording.call_of(child.number).steps == child.metrics["finetune_steps"] == digits.finetune_steps(0.2)
    start, end = recording.call_of(child.number).start, recording.call_of(parent.number).end
    learned = [k for k in start if not k.endswith(STATS)]
    same = [k for k in learned if start[k].shape == end[k].shape]
    assert same and all(torch.equal(start[k], end[k]) for k in same)  # untouched layers: the parent's weights
    rows = [k for k in learned if start[k].dim() == 4 and start[k].shape[1:] == end[k].shape[1:]]
    narrowed = [k for k in rows if start[k].shape[0] < end[k].shape[0]]
    assert narrowed  # the layer pruned further keeps some of the parent's fine-tuned filters, as they were
    for key in narrowed:
        assert all(any(torch.equal(row, kept) for kept in end[key]) for row in start[key])


@pytest.mark.slow
def test_candidates_go_on_from_the_last_winners_weights_pruned_further(tmp_path) -> None:
    recording.CALLS.clear()
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = autocompress.search(
        _space(tmp_path), study="n", storage=storage, strategy="netadapt", trials=9, executor="inline"
    )
    trials = {t.number: t for t in study.trials()}
    carried = [t for t in trials.values() if "continued_from" in t.metrics]
    assert len({t.metrics["continued_from"] for t in carried}) >= 2  # two iterations went on from a winner
    for child in carried:
        _assert_goes_on_from_its_parent(child, trials)
    kept = _kept_weights(trials)
    assert kept == _needed(storage, "n") and kept  # exactly what the controller may still go on from
    assert len(kept) < len([t for t in trials.values() if t.metrics["finetune_epochs"] > 0]) - 3  # losers deleted
    assert all(check.status == "ok" for check in study.verify())


@pytest.mark.slow
def test_a_resumed_study_goes_on_from_the_weights_kept_across_sessions(tmp_path) -> None:
    recording.CALLS.clear()
    storage = f"sqlite:///{tmp_path / 's.db'}"
    autocompress.search(_space(tmp_path), study="r", storage=storage, strategy="netadapt", trials=5, executor="inline")
    before = {t.number: t for t in autocompress.load_study("r", storage).trials()}
    held = _kept_weights(before)
    assert held and held == _needed(storage, "r")
    study = autocompress.resume("r", storage=storage, trials=9, executor="inline")
    trials = {t.number: t for t in study.trials()}
    resumed = [t for t in trials.values() if t.number >= 5 and "continued_from" in t.metrics]
    assert any(int(t.metrics["continued_from"]) in held for t in resumed)  # the first session's winner
    for child in resumed:
        _assert_goes_on_from_its_parent(child, trials)
    assert _kept_weights(trials) == _needed(storage, "r")


def test_pruning_a_pruned_model_further_gives_the_shapes_the_policy_gives_the_unpruned_model() -> None:
    x1 = digits.example_input(1)
    layers = ("stem.0", "block1.conv1", "block2.conv1", "down.0")
    parent_policy = Policy.from_mapping({n: LayerSetting(0.25 if n == "block1.conv1" else 0.0, 32) for n in layers})
    further_pruned = {"block1.conv1": 0.5, "down.0": 0.75}
    child_policy = Policy.from_mapping({n: LayerSetting(further_pruned.get(n, 0.0), 32) for n in layers})
    parent = prune(digits.baseline_model(), parent_policy, x1)
    direct = prune(digits.baseline_model(), child_policy, x1)
    further = prune_to_widths(parent, child_policy, out_widths(direct, child_policy), x1)
    assert {k: v.shape for k, v in further.state_dict().items()} == {k: v.shape for k, v in direct.state_dict().items()}
    with pytest.raises(ValueError, match="cannot grow"):
        prune_to_widths(direct, parent_policy, out_widths(digits.baseline_model(), parent_policy), x1)


def test_a_child_that_prunes_less_than_its_parent_fine_tunes_from_the_baseline() -> None:
    measure = {"threads": 1, "repeats": 2, "warmup": 1, "runtimes": ["onnxruntime"]}
    parent_policy = Policy.from_mapping({"block1.conv1": LayerSetting(0.5, 32)})
    parent = run_trial("experiments.tasks.digits:task", parent_policy, 0.2, measure=measure, keep_weights=True)
    child_policy = Policy.from_mapping({"block1.conv1": LayerSetting(0.25, 32)})
    start = Continuation(0.2, parent.weights, policy=parent_policy)
    child = run_trial("experiments.tasks.digits:task", child_policy, 0.4, measure=measure, continue_from=start)
    assert child.metrics["parent_weights"] == "incompatible" and child.metrics["continued_epochs"] == 0.0
    assert child.metrics["finetune_steps"] == digits.finetune_steps(0.4)  # all of it, from the baseline


@pytest.mark.slow
def test_netadapt_ends_its_study_when_no_layer_can_shrink_further_and_a_resume_adds_nothing(tmp_path) -> None:
    space = tmp_path / "ends.yaml"  # one step per layer (0 or 75 %): NetAdapt runs out within a few iterations
    space.write_text(
        SPACE.replace("[0.0, 0.25, 0.5, 0.75]", "[0.0, 0.75]") + "strategy: {netadapt: {latency_step: 0.3}}\n"
    )
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = autocompress.search(space, study="e", storage=storage, strategy="netadapt", trials=20, executor="inline")
    trials = {t.number: t for t in study.trials()}
    most = max(sum(_sparsity(t).values()) for t in trials.values())
    final = [t for t in trials.values() if sum(_sparsity(t).values()) == most]  # the last iteration's candidates
    last = max(final, key=lambda t: (t.metrics["accuracy"], -t.number))  # its winner, as NetAdapt picks it
    assert 1 < len(trials) < 20 and all(t.state == "complete" for t in trials.values())
    assert study.record.status == "finished"
    assert study.record.stop_reason.startswith("netadapt is done: no layer can meet even 1/8 of the latency step")
    assert f"trial {last.number}" in study.record.stop_reason  # the last winner is NetAdapt's last model
    assert _kept_weights(trials) == _needed(storage, "e") == set()  # nothing goes on from any of them
    resumed = autocompress.resume("e", storage=storage, trials=40, executor="inline")
    assert len(resumed.trials()) == len(trials)
    assert resumed.record.stop_reason == study.record.stop_reason
