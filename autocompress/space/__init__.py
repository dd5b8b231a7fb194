"""Search spaces: the YAML schema, layer discovery from the model graph, and the `Policy` value."""

from typing import Any

from autocompress.space._constraints import CONSTRAINTS, Constraint, violations
from autocompress.space._latency_table import LatencyTable, channel_keeps, scaled_sides
from autocompress.space._options import LAYER_OPTIONS, SETTINGS, SUPPORTED_WEIGHT_BITS, LayerOption
from autocompress.space._policy import LayerSetting, Policy
from autocompress.space._schema import (
    LayerChoices,
    Space,
    SpaceFile,
    load_space_file,
    parse_space,
    resolve_space,
)
from autocompress.space._uniform import UniformRecipe, uniform_grid, uniform_recipe

__all__ = [
    "CONSTRAINTS",
    "Constraint",
    "LAYER_OPTIONS",
    "LayerOption",
    "SETTINGS",
    "HeadGroup",
    "SUPPORTED_WEIGHT_BITS",
    "LatencyTable",
    "LayerChoices",
    "LayerInfo",
    "LayerSetting",
    "Policy",
    "Space",
    "SpaceFile",
    "UniformRecipe",
    "attention_heads",
    "build_graph",
    "channel_keeps",
    "discover_layers",
    "endless_group",
    "hf_attention_modules",
    "load_space_file",
    "output_layers",
    "parse_space",
    "resolve_space",
    "scaled_sides",
    "shipped_heads",
    "uniform_grid",
    "uniform_recipe",
    "violations",
]


_GRAPH = (
    "HeadGroup",
    "LayerInfo",
    "attention_heads",
    "build_graph",
    "discover_layers",
    "endless_group",
    "hf_attention_modules",
    "output_layers",
    "shipped_heads",
)


def __getattr__(name: str) -> Any:
    """Layer discovery needs torch and torch-pruning: imported on first use, so that reading a study (the
    leaderboard, a report) never pays for them."""
    if name in _GRAPH:
        from autocompress.space import _discover

        return getattr(_discover, name)
    raise AttributeError(f"module 'autocompress.space' has no attribute {name!r}")
