"""The `Policy`: one point of the search space, what a worker applies to the model."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class LayerSetting:
    """How one layer is compressed: the fraction of output channels removed and the weight bit-width."""

    channel_sparsity: float = 0.0
    weight_bits: int = 32

    def to_dict(self) -> dict[str, Any]:
        return {"channel_sparsity": self.channel_sparsity, "weight_bits": self.weight_bits}


@dataclass(frozen=True)
class Policy:
    """A per-layer compression policy. Hashable, ordered by layer name, JSON round-trips exactly.

    ``criterion`` names the pruning importance used for channel selection (see `autocompress.compress`).
    """

    layers: tuple[tuple[str, LayerSetting], ...]
    criterion: str = "l1"

    @classmethod
    def from_mapping(cls, layers: Mapping[str, LayerSetting | Mapping[str, Any]], criterion: str = "l1") -> Policy:
        items = []
        for name in sorted(layers):
            value = layers[name]
            setting = value if isinstance(value, LayerSetting) else LayerSetting(**value)
            items.append((name, setting))
        return cls(tuple(items), criterion)

    def __getitem__(self, name: str) -> LayerSetting:
        for layer, setting in self.layers:
            if layer == name:
                return setting
        raise KeyError(name)

    def __iter__(self) -> Iterator[tuple[str, LayerSetting]]:
        return iter(self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"criterion": self.criterion, "layers": {name: s.to_dict() for name, s in self.layers}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        return cls.from_mapping(data["layers"], data.get("criterion", "l1"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def is_identity(self) -> bool:
        return all(s.channel_sparsity == 0 and s.weight_bits >= 32 for _, s in self.layers)
