"""Uniform recipes: one global value per layer option, the same on every layer.

A uniform recipe is what a user tries first by hand ("prune 50% of every layer's channels, int8 everywhere"),
and so the reference a per-layer search has to beat: the `uniform` strategy sweeps them, TPE and NSGA-II
start from them, and the report says whether a study's per-layer trials beat the best of them.

A layer that does not allow the global value (a pinned first layer, a layer that cannot be pruned) takes the
closest value it allows at or below it, or its smallest when none is below: a recipe is one point of the
space, whatever the space pins. `uniform_recipe` recognises a policy as such a point from the policy and the
space's per-layer choices alone, so trials of any strategy are recognised, not only the sweep's own.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autocompress.space._options import LAYER_OPTIONS

if TYPE_CHECKING:
    from autocompress.space._policy import Policy
    from autocompress.space._schema import LayerChoices


def _order(value: Any) -> float:
    """Sort key of a choice: None (activation bits that follow the weight bits) counts as 0."""
    return float(value or 0)


def closest_at_most(value: Any, allowed: tuple[Any, ...]) -> Any:
    """The largest of `allowed` at or below `value`, else the smallest of `allowed`."""
    below = [a for a in allowed if _order(a) <= _order(value)]
    return max(below, key=_order) if below else min(allowed, key=_order)


def uniform_grid(layers: Mapping[str, LayerChoices]) -> list[dict[str, Any]]:
    """Every uniform recipe of channel sparsity x weight bits over the values any layer allows, least to most
    compressed, as ``{"layer/setting": value}`` parameters (`Space.policy_from_params` fills the rest)."""
    sparsities = sorted({s for c in layers.values() for s in c.channel_sparsity})
    bits = sorted({b for c in layers.values() for b in c.weight_bits}, reverse=True)
    grid = []
    for sparsity, width in itertools.product(sparsities, bits):
        params: dict[str, Any] = {}
        for name, c in layers.items():
            params[f"{name}/channel_sparsity"] = closest_at_most(sparsity, c.channel_sparsity)
            params[f"{name}/weight_bits"] = int(closest_at_most(width, c.weight_bits))
        grid.append(params)
    return grid


@dataclass(frozen=True)
class UniformRecipe:
    """The global value of every layer option (`LAYER_OPTIONS` order) of a uniform policy."""

    values: dict[str, Any]

    def describe(self) -> str:
        """Short words for the recipe, e.g. ``50% channels pruned, int8`` or ``no pruning, float``."""
        sparsity, bits = self.values["channel_sparsity"], self.values["weight_bits"]
        parts = [f"{sparsity:.0%} channels pruned" if sparsity else "no pruning"]
        parts.append("float" if bits >= 32 else f"int{bits}")
        if self.values.get("weight_sparsity"):
            parts.append(f"{self.values['weight_sparsity']:.0%} weights zeroed")
        if self.values.get("activation_bits") is not None and bits < 32:
            parts.append(f"int{self.values['activation_bits']} activations")
        return ", ".join(parts)


def uniform_recipe(policy: Policy, layers: Mapping[str, LayerChoices]) -> UniformRecipe | None:
    """The recipe `policy` applies when it is uniform, else None.

    A policy is uniform when, for every layer option, one global value gives every layer its setting: the
    value itself, or for a layer whose choices (`layers`) lack it, the closest it allows at or below it. A
    layer `layers` does not describe must take the global value itself. A policy without layers is no recipe.
    """
    if not policy.layers:
        return None
    values: dict[str, Any] = {}
    for option in LAYER_OPTIONS:
        name = option.name
        settings = [(layer, getattr(setting, name)) for layer, setting in policy]

        def gives(value: Any, name: str = name, settings: list[tuple[str, Any]] = settings) -> bool:
            return all(
                got == (value if layer not in layers else closest_at_most(value, getattr(layers[layer], name)))
                for layer, got in settings
            )

        # the global value is one a layer took as it is: the largest that fits names the recipe
        found = [v for v in sorted({v for _, v in settings}, key=_order, reverse=True) if gives(v)]
        if not found:
            return None
        values[name] = found[0]
    return UniformRecipe(values)
