"""Search spaces: the YAML schema, layer discovery from the model graph, and the `Policy` value."""

from autocompress.space._discover import LayerInfo, build_graph, discover_layers, output_layers
from autocompress.space._policy import LayerSetting, Policy
from autocompress.space._schema import (
    SUPPORTED_WEIGHT_BITS,
    LayerChoices,
    Space,
    SpaceFile,
    load_space_file,
    parse_space,
    resolve_space,
)

__all__ = [
    "SUPPORTED_WEIGHT_BITS",
    "LayerChoices",
    "LayerInfo",
    "LayerSetting",
    "Policy",
    "Space",
    "SpaceFile",
    "build_graph",
    "discover_layers",
    "load_space_file",
    "output_layers",
    "parse_space",
    "resolve_space",
]
