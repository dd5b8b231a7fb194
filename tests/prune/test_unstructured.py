"""The contract suite of the unstructured pruners, run on every registered pruner and two real, trained models
(the ResNet-like CNN on digits and the transformer encoder on the text task), plus what only one pruner
promises: AGP's cubic schedule, lottery's rewinding, ADMM's convergence, and structured ADMM's smaller model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from autocompress.compress import (
    ADMM,
    CRITERIA,
    PRUNERS,
    ADMMPruner,
    AGPPruner,
    Block,
    LotteryPruner,
    admm_channels,
    channel_blocks,
    channel_projection,
    cubic_sparsity,
    get_pruner,
    project_magnitude,
)
from autocompress.measure import count_params, layer_weights, to_torchscript
from autocompress.runtime._trial import Gate, TaskTrainer, run_trial
from autocompress.space import LayerSetting, Policy, discover_layers
from autocompress.task import SupervisedTask, load_task
from tests.prune.conftest import RecordingTrainer

torch.set_num_threads(1)

MODELS = {"resnet": "experiments.tasks.cnn:resnet", "transformer": "experiments.tasks.text:transformer"}
#: the contract test runs on every model of experiments/; the schedule-specific tests on the first two
ALL_MODELS = {**MODELS, "mobilenet": "experiments.tasks.cnn:mobilenet", "densenet": "experiments.tasks.cnn:densenet"}
MEASURE = {"threads": 1, "repeats": 3, "warmup": 1}
FRACTIONS = (0.3, 0.5, 0.8)


@pytest.fixture(scope="module", params=sorted(MODELS))
def model_ref(request: pytest.FixtureRequest) -> str:
    return MODELS[request.param]


def task_of(ref: str) -> SupervisedTask:
    task = load_task(ref)
    assert isinstance(task, SupervisedTask)
    return task


def targets_of(task: SupervisedTask, model: nn.Module) -> dict[str, float]:
    """Every conv/linear layer but the classifier, at 30, 50 and 80% in turn (the classifier stays dense)."""
    names = [layer.name for layer in discover_layers(model, task.example_input(1)) if layer.name != "fc"]
    return {name: FRACTIONS[i % len(FRACTIONS)] for i, name in enumerate(names)}


def zeros(weight: torch.Tensor) -> int:
    return int((weight == 0).sum())


@pytest.mark.parametrize("model", sorted(ALL_MODELS))
@pytest.mark.parametrize("pruner", sorted(PRUNERS))
def test_pruner_leaves_the_policy_sparsity_as_real_zeros_and_a_model_that_traces(pruner: str, model: str) -> None:
    task = task_of(ALL_MODELS[model])
    model = task.baseline_model()
    targets = targets_of(task, model)
    shapes = {name: p.shape for name, p in model.named_parameters()}
    buffers = {name for name, _ in model.named_buffers()}
    get_pruner(pruner).run(model, targets, TaskTrainer(task, 0, Gate()), 0.3)

    weights = layer_weights(model)
    for name, fraction in targets.items():
        assert abs(zeros(weights[name]) - round(fraction * weights[name].numel())) <= 1, name
    assert zeros(weights["fc"]) == 0
    assert {name: p.shape for name, p in model.named_parameters()} == shapes
    assert {name for name, _ in model.named_buffers()} == buffers  # no mask buffers left
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    x = task.example_input(4)
    with torch.no_grad():
        eager = model.eval()(x)
    assert torch.allclose(to_torchscript(model, x)(x), eager, atol=1e-5)


def test_agp_raises_sparsity_along_the_cubic_schedule(model_ref: str) -> None:
    task = task_of(model_ref)
    model = task.baseline_model()
    targets = targets_of(task, model)
    pruner = AGPPruner(every=3)
    pruner.run(model, targets, TaskTrainer(task, 0, Gate()), 1.0)
    total = task.finetune_steps(pruner.ramp)
    numel = {name: w.numel() for name, w in layer_weights(model).items()}
    assert len(pruner.history) >= 3 and pruner.history[-1][0] == total
    for step, measured in pruner.history:
        for name, final in targets.items():
            expected = round(cubic_sparsity(final, step, total) * numel[name]) / numel[name]
            assert abs(measured[name] - expected) <= 1 / numel[name], (step, name)
    first, middle = pruner.history[0][1], pruner.history[len(pruner.history) // 2][1]
    name = max(targets, key=targets.__getitem__)
    assert 0 < first[name] < middle[name] < targets[name]  # gradual: the intermediate steps are in between


def test_lottery_rewinds_the_survivors_to_the_baseline_every_round(model_ref: str) -> None:
    task = task_of(model_ref)
    model = task.baseline_model()
    baseline = {n: p.detach().clone() for n, p in model.named_parameters()}
    targets = targets_of(task, model)
    trainer = RecordingTrainer(task)
    pruner = LotteryPruner(rounds=3)
    pruner.run(model, targets, trainer, 0.6)
    assert len(trainer.starts) == 3
    assert pruner.metrics() == {"rewound_to": "the weights it was given (no rewind point was set)"}
    for round_, start in enumerate(trainer.starts, 1):
        for name, fraction in targets.items():
            weight, base = start[f"{name}.weight"], baseline[f"{name}.weight"]
            kept = weight != 0
            assert abs(int((~kept).sum()) - round(fraction * round_ / 3 * weight.numel())) <= 1
            assert torch.equal(weight[kept], base[kept])  # survivors are the baseline's values
        assert torch.equal(start["fc.weight"], baseline["fc.weight"])  # the whole model is rewound
    assert not torch.equal(model.fc.weight.detach(), baseline["fc.weight"])  # and trained after the last round


def test_admm_pulls_the_weights_onto_the_sparse_set(model_ref: str) -> None:
    task = task_of(model_ref)
    model = task.baseline_model()
    pruner = ADMMPruner()
    pruner.run(model, targets_of(task, model), TaskTrainer(task, 0, Gate()), 2.0)
    residuals = pruner.residuals
    assert len(residuals) >= 3
    assert residuals[-1] < 0.5 * residuals[0]


def test_admm_pull_leaves_no_subnormal_weight_to_slow_the_cpu() -> None:
    """The pull shrinks the weights bound for zero geometrically; left alone they pass through subnormal floats,
    which made a conv net's ADMM fine-tune 30x slower on x86. They are flushed to exact zeros instead."""
    weight = nn.Parameter(torch.randn(64, 32))
    admm = ADMM({"layer": Block([weight], 0.5)}, lambda block: project_magnitude, rho=0.3, every=1000, growth=1.0)
    subnormal = 0
    for _ in range(400):  # 0.7 ** 400 takes a unit weight below float32's smallest normal, 1.2e-38
        admm.step()
        subnormal += int(((weight != 0) & (weight.abs() < torch.finfo(weight.dtype).tiny)).sum())
    assert subnormal == 0
    assert int((weight == 0).sum()) == 32 * 32  # the zeros of Z are reached exactly


def channel_policy(task: SupervisedTask, criterion: str, sparsity: float) -> Policy:
    layers = discover_layers(task.baseline_model(), task.example_input(1))
    return Policy.from_mapping(
        {layer.name: LayerSetting(sparsity if layer.prunable else 0.0, 32) for layer in layers}, criterion=criterion
    )


def test_structured_admm_drives_whole_channels_to_zero(model_ref: str) -> None:
    task = task_of(model_ref)
    model = task.baseline_model()
    sparsity = {name: s.channel_sparsity for name, s in channel_policy(task, "admm", 0.5) if s.channel_sparsity}
    admm = admm_channels(model, sparsity, task.example_input(1), TaskTrainer(task, 0, Gate()), 1.0)
    assert admm.residuals[-1] < 0.2 * admm.residuals[0]
    for name, fraction in sparsity.items():
        rows = model.get_submodule(name).weight.detach().flatten(1).norm(dim=1)
        small = rows < 0.05 * rows.max()
        assert int(small.sum()) >= round(fraction * rows.numel()), name


@pytest.mark.slow
def test_structured_admm_trial_ends_physically_smaller_and_accurate(model_ref: str) -> None:
    task = task_of(model_ref)
    policy = channel_policy(task, "admm", 0.5)
    result = run_trial(model_ref, policy, 2.0, measure=MEASURE)
    assert result.metrics["params"] < 0.75 * count_params(task.baseline_model())
    assert result.metrics["accuracy"] > 0.5


@pytest.mark.parametrize("pruner", sorted(PRUNERS))
def test_trial_measures_weight_sparsity_and_sparse_bytes(pruner: str) -> None:
    ref = MODELS["transformer"]
    task = task_of(ref)
    model = task.baseline_model()
    targets = targets_of(task, model)
    policy = Policy.from_mapping(
        {name: LayerSetting(0.0, 8, weight_sparsity=targets.get(name, 0.0)) for name in [*targets, "fc"]}, pruner=pruner
    )
    metrics = run_trial(ref, policy, 0.3, measure=MEASURE).metrics
    numel = {name: w.numel() for name, w in layer_weights(model).items()}
    expected = sum(round(f * numel[n]) for n, f in targets.items()) / sum(numel.values())
    assert expected - 0.002 <= metrics["weight_sparsity"] <= expected + 0.02  # int8 rounding may add zeros
    # 8-bit layers stored as a bitmask (numel / 8 bytes) plus one byte per nonzero: the zeros are the saving
    saving = sum(max(0, round(f * numel[n]) - -(-numel[n] // 8)) for n, f in targets.items())
    assert saving * 0.99 <= metrics["packed_bytes"] - metrics["sparse_bytes"] <= saving * 1.05
    assert metrics["params"] == count_params(model)  # unstructured zeros keep every shape


def test_admm_is_a_criterion_for_autocompress() -> None:
    assert "admm" in CRITERIA


def test_structured_admm_ranks_each_layer_by_its_own_weight_even_when_depthwise() -> None:
    """MobileNet's prunable roots are depthwise convs, whose out-channel handler is torch-pruning's depthwise
    one: the block must still start with the layer's own weight (it once started with a batch norm's 1-D
    weight, and every structured-ADMM trial on MobileNet failed)."""
    task = task_of(ALL_MODELS["mobilenet"])
    model, x1 = task.baseline_model(), task.example_input(1)
    roots = [info.name for info in discover_layers(model, x1) if info.prunable]
    assert any(model.get_submodule(n).groups > 1 for n in roots)  # the case under test is present
    blocks = channel_blocks(model, {name: 0.5 for name in roots}, x1)
    for name, block in blocks.items():
        assert block.params[0] is model.get_submodule(name).weight, name
    zeroed = channel_projection(blocks[roots[1]].rows)([p.detach() for p in blocks[roots[1]].params], 0.5)
    assert int((zeroed[0].flatten(1).norm(dim=1) == 0).sum()) == zeroed[0].shape[0] // 2
