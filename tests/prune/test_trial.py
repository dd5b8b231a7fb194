"""A trial with a training criterion end to end: the criterion's phase runs inside `run_trial` before
pruning (paused at the gate like any training), and the pruned, fine-tuned model is valid; `round_to` and
the new criteria come from a space file."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch_pruning as tp
from torch import nn

from autocompress.compress import TaylorCriterion
from autocompress.errors import UserError
from autocompress.measure import count_macs, count_params
from autocompress.runtime import Gate, run_trial
from autocompress.runtime._trial import TaskTrainer
from autocompress.space import LayerSetting, Policy, discover_layers, parse_space, resolve_space
from tests.prune.conftest import TASKS

TASK = "tests.prune.conftest:resnet"
MEASURE = {"threads": 1, "warmup": 0, "repeats": 3}
EPOCHS = 2.0
#: the width-8 ResNet of the suite loses most of its accuracy to 50% pruning; 25% recovers in 2 epochs
SPARSITY = 0.25


class CountingGate(Gate):
    """The runtime's own extension point, counting the training steps it is shown."""

    def __init__(self) -> None:
        self.steps = 0

    def checkpoint(self) -> None:
        self.steps += 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("criterion", "phase_epochs"),
    [
        ("slim", max(0.5 * EPOCHS, 0.5)),  # SlimCriterion: half the trial's epochs, at least half an epoch
        ("taylor", TaylorCriterion().epochs),  # its own short gradient phase, whatever the trial's epochs
    ],
)
def test_training_criterion_trial_runs_its_phase_then_prunes_and_finetunes(criterion: str, phase_epochs: float) -> None:
    task = TASKS["resnet"]
    layers = discover_layers(task.baseline_model(), task.example_input(1))
    settings = {i.name: LayerSetting(SPARSITY if i.prunable else 0.0) for i in layers}
    gates = {name: CountingGate() for name in ("l1", criterion)}
    results = {
        name: run_trial(TASK, Policy.from_mapping(settings, name), EPOCHS, measure=MEASURE, gate=gate)
        for name, gate in gates.items()
    }
    assert gates[criterion].steps - gates["l1"].steps == task.finetune_steps(phase_epochs)
    baseline = task.baseline_model()
    baseline_macs = sum(count_macs(baseline, task.example_input(1)).values())
    for result in results.values():
        assert result.metrics["params"] < 0.7 * count_params(baseline)
        assert result.metrics["macs"] < 0.7 * baseline_macs
        assert result.metrics["accuracy"] > 0.6  # a pruned, fine-tuned classifier, not noise


def test_space_file_takes_the_new_criteria_and_round_to() -> None:
    task = TASKS["resnet"]
    layers = discover_layers(task.baseline_model(), task.example_input(1))
    spec = parse_space("task: tests.prune.conftest:resnet\ndefaults: {criterion: taylor, round_to: 4}\n")
    space = resolve_space(spec, layers)
    policy = space.policy_from_params({})
    assert (policy.criterion, policy.round_to) == ("taylor", 4)
    assert type(space).from_dict(space.to_dict()) == space


@pytest.mark.parametrize("value", ["0", "2.5", "x"])
def test_bad_round_to_is_a_one_line_user_error(value: str) -> None:
    with pytest.raises(UserError, match=r"bad.yaml: defaults.round_to") as info:
        parse_space(f"task: x:y\ndefaults: {{round_to: {value}}}", "bad.yaml")
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_a_search_stores_policies_with_the_space_files_criterion_and_round_to(tmp_path) -> None:
    import autocompress

    space = tmp_path / "space.yaml"
    space.write_text(
        "task: tests.prune.conftest:resnet\n"
        "fidelity: {finetune_epochs: [0.5]}\n"
        "defaults: {channel_sparsity: [0.25, 0.5], weight_bits: [32], criterion: taylor, round_to: 4}\n"
        "measure: {threads: 1, repeats: 3, warmup: 0}\n"
    )
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = autocompress.search(space, study="crit", storage=storage, strategy="random", trials=2, executor="inline")
    trials = study.trials()
    assert len(trials) == 2 and all(t.state == "complete" for t in trials)
    assert all(t.policy["criterion"] == "taylor" and t.policy["round_to"] == 4 for t in trials)


def test_example_transformer_space_searches_heads_and_ffn_width() -> None:
    from autocompress.compress import make_criterion, prune
    from autocompress.space import load_space_file
    from autocompress.task import load_task
    from tests.conftest import ROOT

    spec, _ = load_space_file(ROOT / "search_spaces" / "transformer-heads.yaml")
    task = load_task(spec.task)
    model, x1 = task.model_factory().eval(), task.example_input(1)  # the graph is all resolution needs
    space = resolve_space(spec, discover_layers(model, x1))
    searched = {layer for layer, setting, _ in space.dimensions() if setting == "channel_sparsity"}
    assert searched == {"layers.0.v", "layers.1.v", "layers.0.ffn_in", "layers.1.ffn_in"}
    params = {f"{layer}/channel_sparsity": 0.5 for layer in searched}
    policy = space.policy_from_params(params)
    assert (policy.criterion, policy.round_to) == ("taylor", 8)
    prune(model, policy, x1, importance=make_criterion("l1"))  # widths only: taylor's ranking needs the task
    assert [layer.heads for layer in model.layers] == [2, 2]
    assert [layer.ffn_in.out_features for layer in model.layers] == [64, 64]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sparsity", "quantizer", "trained_steps"),
    [
        (0.0, "histogram", False),  # calibration-only int8 of the trained weights: nothing to recover
        (0.0, "qat", True),  # quantization-aware training is the fine-tuning
        (SPARSITY, "histogram", True),  # pruning is recovered by fine-tuning
    ],
)
def test_only_policies_that_prune_or_train_a_quantizer_are_fine_tuned(sparsity, quantizer, trained_steps) -> None:
    task = TASKS["resnet"]
    layers = discover_layers(task.baseline_model(), task.example_input(1))
    settings = {i.name: LayerSetting(sparsity if i.prunable else 0.0, 8) for i in layers}
    policy = Policy.from_mapping(settings, quantizer=quantizer)
    gates = {epochs: CountingGate() for epochs in (0.0, 0.5)}
    results = {epochs: run_trial(TASK, policy, epochs, measure=MEASURE, gate=gate) for epochs, gate in gates.items()}
    assert results[0.5].metrics["finetune_epochs"] == (0.5 if trained_steps else 0.0)
    # training steps beyond the checkpoints every trial passes (around quantization and export)
    assert (gates[0.5].steps > gates[0.0].steps) == trained_steps


@pytest.mark.parametrize("criterion", ["admm", "l1"])
def test_a_trial_traces_its_model_into_one_dependency_graph(criterion: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Structured ADMM's channel blocks and the pruner ask the same graph of the unpruned model (the model is
    traced once; pruning then changes it, and the trial asks nothing more of a graph)."""
    builds: list[nn.Module] = []
    build = tp.DependencyGraph.build_dependency

    def counting(self: tp.DependencyGraph, model: nn.Module, *args: Any, **kwargs: Any) -> tp.DependencyGraph:
        builds.append(model)
        return build(self, model, *args, **kwargs)

    task = TASKS["resnet"]
    layers = discover_layers(task.baseline_model(), task.example_input(1))
    policy = Policy.from_mapping({i.name: LayerSetting(0.5 if i.prunable else 0.0) for i in layers}, criterion)
    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", counting)
    result = run_trial(TASK, policy, 0.3, measure=MEASURE)
    assert len(builds) == 1
    assert result.metrics["params"] < 0.5 * count_params(task.baseline_model())  # the graph was used to prune


def test_trainer_re_estimates_batch_norm_statistics_on_the_calibration_batches_after_fine_tuning() -> None:
    """Batch norms with momentum 0.01 (torchvision's MobileNetV3) whose running statistics are off: a short
    fine-tune alone would move them only a few percent of the way back. After `TaskTrainer.train` they are the
    statistics of the task's calibration batches (the first batch norm's input does not depend on any other
    batch norm, so its mean is known exactly), the momenta and eval mode are back, and accuracy is the model's."""
    task = TASKS["mobilenet"]
    model = task.baseline_model()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for norm in norms:
            norm.momentum = 0.01
            norm.running_mean += 3.0
            norm.running_var *= 10.0
    assert task.evaluate(model, "val") < 0.5
    TaskTrainer(task, 0, Gate()).train(model, 0.05, lambda: None)
    inputs: list[torch.Tensor] = []
    hook = norms[0].register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
    with torch.no_grad():
        for batch in task.calibration_batches():
            model(batch)
    hook.remove()
    mean = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs]).mean(dim=0)
    torch.testing.assert_close(norms[0].running_mean, mean, atol=1e-4, rtol=1e-4)
    assert all(norm.momentum == 0.01 for norm in norms) and not any(m.training for m in model.modules())
    assert task.evaluate(model, "val") > 0.8
