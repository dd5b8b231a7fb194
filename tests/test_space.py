"""The space file: validation at the boundary and resolution against the digits model graph."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from autocompress.docs import space_reference
from autocompress.errors import UserError
from autocompress.space import (
    CONSTRAINTS,
    LAYER_OPTIONS,
    SETTINGS,
    LayerChoices,
    LayerSetting,
    Policy,
    Space,
    discover_layers,
    parse_space,
    resolve_space,
    violations,
)
from experiments.tasks.digits import DigitsNet, task


@pytest.fixture(scope="module")
def layers():
    model = DigitsNet().eval()
    return discover_layers(model, task.example_input(1))


def test_discovery_marks_residual_followers_and_output_layer_unprunable(layers) -> None:
    by_name = {layer.name: layer for layer in layers}
    assert by_name["stem.0"].prunable and by_name["block1.conv1"].prunable
    assert not by_name["block1.conv2"].prunable and "stem.0" in by_name["block1.conv2"].reason
    assert not by_name["fc"].prunable and "output" in by_name["fc"].reason


def test_resolve_applies_defaults_and_glob_overrides(layers) -> None:
    spec = parse_space(
        "task: experiments.tasks.digits:task\nlayers:\n  'block*.conv1': {channel_sparsity: [0.0, 0.5]}\n"
    )
    space = resolve_space(spec, layers)
    assert space.layers["block1.conv1"].channel_sparsity == (0.0, 0.5)
    assert space.layers["down.0"].channel_sparsity == (0.0, 0.25, 0.5)
    assert space.layers["fc"].channel_sparsity == (0.0,)
    params = {f"{layer}/{setting}": choices[-1] for layer, setting, choices in space.dimensions()}
    assert space.contains(space.policy_from_params(params))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("task: x:y\nobjectivs: {}", "did you mean 'objectives'"),
        ("task: x:y\ndefaults: {channel_sparsity: [1.5]}", "outside [0, 1)"),
        ("task: x:y\ndefaults: {weight_bits: [16]}", "not supported"),
        ("task: [unclosed", "malformed YAML"),
        ("objectives: {accuracy: max}", "task: is required"),
        ("task: x:y\nfidelity: {finetune_epochs: [3, 1]}", "ascending"),
        # the settings of unstructured pruning and activation bits
        ("task: x:y\ndefaults: {weight_sparsity: [0.5, 1.0]}", "defaults.weight_sparsity: Value error, 1.0 is outside"),
        (
            "task: x:y\nlayers: {fc: {weight_sparsity: [-0.2]}}",
            "layers.fc.weight_sparsity: Value error, -0.2 is outside",
        ),
        ("task: x:y\ndefaults: {activation_bits: [16]}", "16 activation bits is not supported"),
        ("task: x:y\ndefaults: {activation_bits: [32]}", "32 activation bits is not supported"),
        ("task: x:y\ndefaults: {activation_bits: []}", "defaults.activation_bits"),
        ("task: x:y\ndefaults: {pruner: 3}", "defaults.pruner"),
        ("task: x:y\ndefaults: {weight_sparsty: [0.5]}", "did you mean 'weight_sparsity'"),
        (
            "task: x:y\nconstraints: {max_latency: 2}",
            "constraints.max_latency: unknown key 'max_latency'; did you mean 'max_latency_ms'? allowed: "
            + ", ".join(CONSTRAINTS),
        ),
    ],
)
def test_bad_space_files_raise_one_line_user_errors(text: str, expected: str) -> None:
    with pytest.raises(UserError) as info:
        parse_space(text, "bad.yaml")
    message = str(info.value)
    assert expected in message and message.startswith("bad.yaml") and "\n" not in message


def test_pattern_matching_nothing_and_pruning_an_unprunable_layer_are_rejected(layers) -> None:
    with pytest.raises(UserError, match="matches no layer"):
        resolve_space(parse_space("task: x:y\nlayers: {'nope.*': {weight_bits: [8]}}"), layers)
    with pytest.raises(UserError, match="'fc' cannot be pruned"):
        resolve_space(parse_space("task: x:y\nlayers: {fc: {channel_sparsity: [0.0, 0.5]}}"), layers)


def test_policy_round_trips_through_json_and_is_hashable() -> None:
    policy = Policy.from_mapping({"b": LayerSetting(0.5, 8), "a": LayerSetting(0.0, 32)}, "l2")
    again = Policy.from_dict(__import__("json").loads(policy.to_json()))
    assert again == policy and hash(again) == hash(policy)
    assert [name for name, _ in policy] == ["a", "b"]


def test_batch_32_speedup_constraint_is_judged_on_the_batch_32_speedup_alone() -> None:
    metrics = {"speedup": 1.0, "speedup_b32": 5.0}
    assert violations(metrics, {"min_speedup_b32": 4.0}) == {"min_speedup_b32": pytest.approx(-0.25)}
    assert violations(metrics, {"min_speedup": 2.0, "min_speedup_b32": 10.0}) == {
        "min_speedup": pytest.approx(0.5),
        "min_speedup_b32": pytest.approx(0.5),
    }


def test_an_accuracy_exactly_at_the_budgets_edge_keeps_it_and_one_image_more_breaks_it() -> None:
    # 50 of 5,000 validation images below a 0.9706 baseline: a drop of exactly 1 pt, 0.010000000000000009 in floats
    at_edge = {"accuracy_drop": 0.9706 - 0.9606}
    assert at_edge["accuracy_drop"] > 0.01  # the rounding this is about
    assert violations(at_edge, {"max_accuracy_drop": 0.01}) == {"max_accuracy_drop": 0.0}
    one_more = violations({"accuracy_drop": 0.9706 - 0.9604}, {"max_accuracy_drop": 0.01})["max_accuracy_drop"]
    assert one_more == pytest.approx(0.02)  # 0.0002 over a 0.01 budget
    assert violations({"speedup": 1.5 - 1e-12}, {"min_speedup": 1.5}) == {"min_speedup": 0.0}
    assert violations({"speedup": 1.4999}, {"min_speedup": 1.5})["min_speedup"] > 0


def test_every_constraint_of_the_table_is_a_schema_key_and_judges_its_metric_in_its_direction() -> None:
    for name, constraint in CONSTRAINTS.items():
        limit = 0.5 if constraint.fraction else 4.0
        spec = parse_space(f"task: x:y\nconstraints: {{{name}: {limit}}}")
        assert getattr(spec.constraints, name) == limit
        worse = limit * 2 if constraint.direction == "max" else limit / 2
        assert violations({constraint.metric: worse}, {name: limit})[name] > 0
        assert violations({constraint.metric: limit}, {name: limit})[name] == 0


def test_a_space_with_an_unknown_constraint_is_refused_also_when_built_in_code_or_read_from_a_store() -> None:
    space = resolve_space(parse_space("task: x:y\nconstraints: {min_speedup: 2}"), [])
    data = space.to_dict() | {"constraints": {"min_sped": 2.0}}
    with pytest.raises(
        UserError, match=r"^space: constraints\.min_sped: unknown constraint; did you mean 'min_speedup'"
    ):
        Space.from_dict(data)


def test_registry_names_are_checked_against_the_registries_including_ones_the_task_module_registers(
    tmp_path, monkeypatch
) -> None:
    from autocompress.compress import CRITERIA

    (tmp_path / "registering_task.py").write_text(
        "from autocompress.compress import CRITERIA, register_criterion\n"
        "from experiments.tasks.digits import task\n"
        "register_criterion('house_l1', CRITERIA['l1'])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(CRITERIA, "house_l1", raising=False)
    try:
        spec = parse_space("task: registering_task:task\ndefaults: {criterion: house_l1}", "ok.yaml")
        assert spec.defaults.criterion == "house_l1"  # registered when the schema imported the task's module
    finally:
        CRITERIA.pop("house_l1", None)
    bad = {
        "task: x:y\ndefaults: {criterion: house_l2}": "bad.yaml: defaults.criterion: unknown criterion 'house_l2'",
        "task: x:y\ndefaults: {quantizer: xnor}": "bad.yaml: defaults.quantizer: unknown quantizer 'xnor'; allowed",
        "task: x:y\ndefaults: {pruner: levl}": "bad.yaml: defaults.pruner: unknown pruner 'levl'; did you mean 'level'",
        "task: x:y\nstrategy: {anneel: {cooling: 0.5}}": "bad.yaml: strategy.anneel: unknown strategy 'anneel'",
    }
    for text, expected in bad.items():
        with pytest.raises(UserError) as info:
            parse_space(text, "bad.yaml")
        assert str(info.value).startswith(expected), str(info.value)


@pytest.mark.parametrize("option", LAYER_OPTIONS, ids=lambda option: option.name)
def test_each_row_of_the_layer_option_table_reaches_every_reader(option, layers) -> None:
    """LAYER_OPTIONS is the one source of the per-layer options: each row is a validated key of `defaults` and of
    every `layers` entry, a documented row of the reference, a field of LayerChoices and LayerSetting, a searched
    dimension, and part of the policy and of the stored space."""
    assert [f.name for f in dataclasses.fields(LayerSetting)] == list(SETTINGS)
    assert [f.name for f in dataclasses.fields(LayerChoices)] == list(SETTINGS)
    rows = [line for line in space_reference().splitlines() if line.startswith(f"| `{option.name}` |")]
    assert len(rows) == 2 and all(row.endswith(f"| {option.doc} |") for row in rows)  # defaults, layers entries

    bad = max(option.allowed) + 100 if option.allowed else 1.0
    with pytest.raises(UserError, match=re.escape(f"layers.stem.0.{option.name}: Value error, {option.problem(bad)}")):
        parse_space(f"task: x:y\nlayers: {{stem.0: {{{option.name}: [{bad}]}}}}")

    two = list(option.allowed[-2:]) if option.allowed else [0.0, 0.5]
    space = resolve_space(parse_space(f"task: x:y\nlayers: {{stem.0: {{{option.name}: {two}}}}}"), layers)
    assert ("stem.0", option.name, tuple(two)) in space.dimensions()
    policy = space.policy_from_params({f"stem.0/{option.name}": two[1]})
    assert getattr(policy["stem.0"], option.name) == two[1] and space.contains(policy)
    assert getattr(policy["fc"], option.name) == getattr(space.layers["fc"], option.name)[0]
    assert Policy.from_dict(json.loads(policy.to_json())) == policy
    assert Space.from_dict(json.loads(json.dumps(space.to_dict()))) == space
