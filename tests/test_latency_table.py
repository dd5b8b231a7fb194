"""The measured per-layer latency table: measured once per study and stored with its space (resume reads it
back), what `haq`, `netadapt` and `amc`'s latency target steer by, and a predictor that orders policies as
their measured latency does. Real digits model, real runtimes, real SQLite store."""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

import autocompress
from autocompress.compress import prune
from autocompress.deploy import get_runtime
from autocompress.errors import UserError
from autocompress.measure import WIDTHS, compare_latency
from autocompress.runtime._trial import measurement_clock
from autocompress.space import LatencyTable, LayerSetting, Policy, Space, discover_layers, parse_space, resolve_space
from autocompress.strategies import Outcome, make_controller
from autocompress.strategies._netadapt import STEP_HALVINGS
from autocompress.task import load_task
from tests.conftest import with_measured_table

SPACE = """task: experiments.tasks.digits:task
objectives: {accuracy: max, latency_ms: min}
fidelity: {finetune_epochs: [0.2]}
defaults: {channel_sparsity: [0.0, 0.25, 0.5, 0.75], weight_bits: [8, 32]}
layers: {"stem.0": {channel_sparsity: [0.0]}}
measure: {threads: 1, repeats: 5, warmup: 1, runtimes: [onnxruntime]}
"""


@pytest.fixture(scope="module")
def task():
    return load_task("experiments.tasks.digits:task")


@pytest.fixture(scope="module")
def space(task) -> Space:
    model = task.baseline_model()
    return with_measured_table(resolve_space(parse_space(SPACE), discover_layers(model, task.example_input(1))))


def test_the_table_has_every_conv_and_linear_at_each_width_and_bit_width(space) -> None:
    table = space.latency_table
    assert table is not None and table.runtimes == ("onnxruntime",) and table.build_s > 0
    layers = table.entries["onnxruntime"]
    assert set(layers) == set(space.layers)  # the digits net's convs and its classifier
    for name, by_bits in layers.items():
        assert set(by_bits) == {8, 32}
        pruned_sides = space.layer_info[name]["out_root"] or space.layer_info[name]["in_roots"]
        assert all(len(values) == (len(WIDTHS) if pruned_sides else 1) for values in by_bits.values())
        assert all(ms > 0 for values in by_bits.values() for ms in values)
    assert LatencyTable.from_dict(table.to_dict()) == table  # JSON round trip, as the store keeps it


def _policy(space: Space, sparsity: float, bits: int) -> Policy:
    return space.policy_from_params(
        {f"{n}/channel_sparsity": sparsity if n != "stem.0" else 0.0 for n in space.layers}
        | {f"{n}/weight_bits": bits for n in space.layers}
    )


def test_predict_orders_policies_as_their_measured_latency_does(space, task) -> None:
    """Whole models lowered to ONNX Runtime and timed interleaved: the order of the table's sums is theirs
    (policies far enough apart that the order is not noise: float at 0, 50 and 75 % of the channels off)."""
    policies = [_policy(space, s, 32) for s in (0.0, 0.5, 0.75)]
    runtime, x = get_runtime("onnxruntime"), task.example_input(1)
    models = {}
    for i, policy in enumerate(policies):
        pruned = prune(task.baseline_model(), policy, x)
        models[str(i)] = runtime.load(runtime.lower(pruned, policy, x, ()))
    measured = compare_latency(models, x, repeats=30, warmup=5, clock=measurement_clock(1))
    predicted = [space.latency_table.predict(p) for p in policies]
    assert sorted(range(3), key=lambda i: measured[str(i)]) == sorted(range(3), key=predicted.__getitem__) == [2, 1, 0]


def test_haq_cost_is_the_measured_table_not_a_constant(space) -> None:
    haq = make_controller("haq", space, 0)
    table = space.latency_table
    int8 = {n: 8 for n in haq.layers}
    floats = {n: 32 for n in space.layers}
    expected = table.total({}, {**floats, **int8}) / table.total({}, floats)
    assert haq.estimated_latency(int8) == pytest.approx(expected)
    # the same space with int8 measured exactly as fast as float: the estimate follows the numbers (no speed
    # is assumed for fewer bits) and no bits are lowered for a budget they cannot help meet
    flat = LatencyTable.from_dict(
        {
            **table.to_dict(),
            "entries": {
                rt: {n: {"8": by_bits["32"], "32": by_bits["32"]} for n, by_bits in layers.items()}
                for rt, layers in table.to_dict()["entries"].items()
            },
        }
    )
    same = make_controller("haq", dataclasses.replace(space, latency_table=flat), 0)
    assert same.estimated_latency(int8) == pytest.approx(1.0)
    assert same._repair([1.0] * len(same.layers)) == [1.0] * len(same.layers)  # stays float: int8 would not help


def test_netadapt_iterations_meet_their_latency_targets_from_the_table_until_no_layer_can_shrink(space) -> None:
    controller = make_controller("netadapt", space, 0)
    table = space.latency_table

    def accuracy(policy: Policy) -> float:
        return 0.9 - sum(s.channel_sparsity * i for i, (_, s) in enumerate(policy)) / 100

    targets = []
    asked = []
    winner = None
    iterations = sum(len(c) - 1 for _, c in controller._sparsity)  # each iteration prunes one layer a step more
    for iteration in range(iterations):  # one fine-tune rung, so no winner is run again
        first = controller.ask()
        targets.append(controller.target_ms)
        candidates = [first] + [controller.ask() for _ in range(len(controller._queue))]
        assert candidates and all(table.predict(c.policy) <= targets[-1] for c in candidates)
        # carried forward: each candidate goes on from the last winner's weights, one short fine-tune more
        assert all(p.finetune_epochs == pytest.approx(0.2 * (iteration + 1)) and p.keep_weights for p in candidates)
        assert all(p.parent == (None if winner is None else winner.number) for p in candidates)
        assert winner is None or all(
            all(s.channel_sparsity >= winner.policy[name].channel_sparsity for name, s in c.policy) for c in candidates
        )
        for c in candidates:  # the most accurate: the one that prunes the last layers
            controller.tell(c.number, Outcome("complete", {"accuracy": accuracy(c.policy), "speedup": 1.0}))
            assert c is candidates[-1] or c.number in controller.weights_needed()  # it may still win
        winner = max(candidates, key=lambda c: accuracy(c.policy))
        asked += [json.dumps(c.policy.to_dict(), sort_keys=True) for c in candidates]
        if controller.exhausted is not None:
            break
        assert controller.weights_needed() == {winner.number}  # the losers' and the old parent's are released
    # done, as NetAdapt is: no layer of the last winner can take even the smallest step alone
    assert controller.exhausted is not None and f"trial {winner.number}" in controller.exhausted
    state = {n: list(c).index(winner.policy[n].channel_sparsity) for n, c in controller._sparsity}
    smallest = 0.1 * table.predict(_policy(space, 0.0, 32)) / 2**STEP_HALVINGS
    assert all(
        controller.predicted_ms({**state, n: i}) > controller.predicted_ms(state) - smallest
        for n, c in controller._sparsity
        for i in range(state[n] + 1, len(c))
    )
    assert controller.weights_needed() == set()  # nothing goes on from any trial any more
    with pytest.raises(RuntimeError, match="nothing more to propose"):
        controller.ask()
    assert len(set(asked)) == len(asked)  # no policy ran twice
    dense = table.predict(_policy(space, 0.0, 32))
    step = 0.1 * dense
    assert targets[0] == pytest.approx(dense - step)
    assert all(later < earlier for earlier, later in zip(targets, targets[1:], strict=False))  # the budget shrinks


def test_netadapt_with_two_rungs_is_done_only_after_its_last_winner_had_its_long_fine_tune(space) -> None:
    controller = make_controller("netadapt", dataclasses.replace(space, finetune_epochs=(0.2, 0.6)), 0)
    winner = None
    for _ in range(sum(len(c) - 1 for _, c in controller._sparsity)):
        candidates = [controller.ask()]
        candidates += [controller.ask() for _ in range(len(controller._queue))]
        for c in candidates:
            controller.tell(c.number, Outcome("complete", {"accuracy": 0.5 + c.number / 1000, "speedup": 1.0}))
        last = candidates[-1]  # the most accurate: the last one asked
        assert controller.exhausted is None and last.number in controller.weights_needed()  # its long fine-tune
        winner = controller.ask()
        assert winner.parent == last.number and winner.finetune_epochs > last.finetune_epochs
        controller.tell(winner.number, Outcome("complete", {"accuracy": 0.9, "speedup": 1.0}))
        if controller.exhausted is not None:
            break
    assert winner is not None and controller.exhausted is not None and controller.weights_needed() == set()


def test_netadapt_halves_a_step_no_layer_can_meet_alone_instead_of_starting_over(space) -> None:
    plain = make_controller("netadapt", space, 0)
    dense = plain.predicted_ms({layer: 0 for layer, _ in plain._sparsity})
    most = max(  # the largest cut one layer alone gives the dense model
        dense - plain.predicted_ms({**{n: 0 for n, _ in plain._sparsity}, layer: len(choices) - 1})
        for layer, choices in plain._sparsity
    )
    step = 1.5 * most / dense  # more than any one layer gives; its half is less
    halving = make_controller(
        "netadapt", dataclasses.replace(space, strategy_options={"netadapt": {"latency_step": step}}), 0
    )
    candidates = [halving.ask()]
    candidates += [halving.ask() for _ in range(len(halving._queue))]
    assert halving.target_ms == pytest.approx(dense - step * dense / 2)
    for candidate in candidates:  # each layer pruned just enough for the halved step
        state = {n: list(c).index(candidate.policy[n].channel_sparsity) for n, c in halving._sparsity}
        assert halving.predicted_ms(state) <= halving.target_ms
        (layer,) = [n for n, index in state.items() if index]
        assert state[layer] == 1 or halving.predicted_ms({**state, layer: state[layer] - 1}) > halving.target_ms


def test_netadapt_weight_bits_min_prunes_the_int8_model_by_the_tables_int8_entries(space) -> None:
    int8 = make_controller(
        "netadapt", dataclasses.replace(space, strategy_options={"netadapt": {"weight_bits": "min"}}), 0
    )
    proposal = int8.ask()
    assert all(s.weight_bits == 8 for _, s in proposal.policy)
    dense = space.latency_table.predict(_policy(space, 0.0, 8))
    assert int8.target_ms == pytest.approx(0.9 * dense)
    assert (
        space.latency_table.predict(proposal.policy)
        <= int8.target_ms
        < 0.9 * space.latency_table.predict(_policy(space, 0.0, 32))
    )
    with pytest.raises(UserError, match="strategy.netadapt.weight_bits"):
        make_controller("netadapt", dataclasses.replace(space, strategy_options={"netadapt": {"weight_bits": "8"}}), 0)


def test_amc_latency_target_clips_every_policy_under_it(space) -> None:
    options = {"amc": {"target_latency": 0.8, "target_macs": 1.0, "warmup_episodes": 2}}
    amc = make_controller("amc", dataclasses.replace(space, strategy_options=options), 0)
    limit = 0.8 * space.latency_table.total({}, {})
    for _ in range(4):
        proposal = amc.ask()
        assert space.latency_table.predict(proposal.policy) <= limit * (1 + 1e-9)
        amc.tell(proposal.number, Outcome("complete", {"accuracy": 0.9}))


@pytest.mark.slow
def test_the_table_is_measured_once_per_study_stored_and_reused_on_resume(tmp_path) -> None:
    (tmp_path / "space.yaml").write_text(SPACE)
    storage = f"sqlite:///{tmp_path / 'store.db'}"
    study = autocompress.search(
        tmp_path / "space.yaml", study="lut", storage=storage, trials=1, executor="inline", strategy="haq"
    )
    stored = study.record.space["latency_table"]
    table = LatencyTable.from_dict(stored)
    assert set(table.entries["onnxruntime"]) == set(study.record.space["layers"]) and table.build_s > 0
    resumed = autocompress.resume("lut", storage=storage, trials=2, executor="inline")
    assert [t.state for t in resumed.trials()] == ["complete", "complete"]
    assert resumed.record.space["latency_table"] == stored  # read back, not measured again
    # a strategy that steers by no table measures none
    other = autocompress.search(
        tmp_path / "space.yaml", study="tpe", storage=storage, trials=1, executor="inline", strategy="random"
    )
    assert "latency_table" not in other.record.space


def test_one_layer_variants_shrink_the_pruned_sides() -> None:
    from autocompress.measure._lut import one_layer

    conv = nn.Conv2d(16, 32, 3, stride=2, padding=1)
    info = {"out_root": "a", "in_roots": {"b": 16}, "in_channels": 16}
    module, x = one_layer(conv, (1, 16, 8, 8), info, 0.5)
    assert (module.layer.in_channels, module.layer.out_channels, module.layer.stride) == (8, 16, (2, 2))
    assert module(x).shape == (1, 16, 4, 4)
    depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
    module, x = one_layer(depthwise, (1, 32, 8, 8), {"out_root": "dw", "in_roots": {"dw": 32}, "in_channels": 32}, 0.25)
    assert module.layer.groups == module.layer.in_channels == module.layer.out_channels == 8


def test_an_inner_linear_is_measured_with_its_int8_output_and_the_classifier_as_it_runs() -> None:
    """Alone, a Linear's output is the module's, which lowering keeps float (on TorchScript a float Linear):
    the table measures an inner Linear with its int8 output, and only the model's own output Linear as that."""
    from autocompress.compress import lowered_layers, quantize
    from autocompress.measure._lut import layer_inputs, one_layer

    model = nn.Sequential(OrderedDict(hidden=nn.Linear(16, 32), act=nn.ReLU(), fc=nn.Linear(32, 10))).eval()
    x = torch.randn(4, 16)
    assert layer_inputs(model, x, ["hidden", "fc"]) == ({"hidden": (4, 16), "fc": (4, 32)}, {"fc"})
    info = {"out_root": "hidden", "in_roots": {}, "in_channels": 16}
    policy = Policy.from_mapping({"layer": LayerSetting(weight_bits=8)})
    for returned, int8_kernels in ((False, 1), (True, 0)):
        module, example = one_layer(model.hidden, torch.Size((1, 16)), info, 1.0, returned)
        deployed = quantize(module, policy, example, [example])
        assert lowered_layers(deployed) == int8_kernels


def test_a_table_is_measured_once_per_machine_and_again_when_its_inputs_change(task, own_latency_tables) -> None:
    from autocompress.runtime import measure_latency_table
    from autocompress.runtime._trial import latency_table_dir, latency_table_key

    space = resolve_space(parse_space(SPACE), discover_layers(task.baseline_model(), task.example_input(1)))
    fewer = dataclasses.replace(space, measure={**space.measure, "repeats": 3})
    files = [latency_table_dir() / f"{latency_table_key(s, ('onnxruntime',))}.json" for s in (space, fewer)]
    assert files[0].parent == own_latency_tables  # not the user's cache
    assert files[0] != files[1]
    for file in files:
        file.unlink(missing_ok=True)
    first = measure_latency_table(space)
    assert files[0].exists() and not files[1].exists()
    assert measure_latency_table(space) == first  # read back: a second measurement never repeats every median
    again = measure_latency_table(fewer)
    assert files[1].exists() and again != first and again.entries.keys() == first.entries.keys()
    files[0].write_text("{")
    assert measure_latency_table(space).entries.keys() == first.entries.keys()  # a damaged file: measured again
