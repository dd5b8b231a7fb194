"""The `Policy`: one point of the search space, what a worker applies to the model."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: the quantizer a policy uses unless it names one: PTQ with torch's histogram observer (x86 default)
DEFAULT_QUANTIZER = "histogram"


@dataclass(frozen=True, order=True)
class LayerSetting:
    """How one layer is compressed: the fraction of output channels removed, the weight bit-width and the
    bit-width of its output activation (None: the same as the weights; 32 = float)."""

    channel_sparsity: float = 0.0
    weight_bits: int = 32
    activation_bits: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"channel_sparsity": self.channel_sparsity, "weight_bits": self.weight_bits}
        if self.activation_bits is not None:
            data["activation_bits"] = self.activation_bits
        return data


@dataclass(frozen=True)
class Policy:
    """A per-layer compression policy. Hashable, ordered by layer name, JSON round-trips exactly.

    ``criterion`` names the pruning importance used for channel selection, ``round_to`` (None: any count)
    rounds each pruned layer's kept channels down to a multiple of it, ``quantizer`` is the quantizer of the
    layers below 32 bits and ``per_channel`` its weight granularity (see `autocompress.compress`).
    """

    layers: tuple[tuple[str, LayerSetting], ...]
    criterion: str = "l1"
    quantizer: str = DEFAULT_QUANTIZER
    per_channel: bool = True
    round_to: int | None = None

    @classmethod
    def from_mapping(cls, layers: Mapping[str, LayerSetting | Mapping[str, Any]], criterion: str = "l1",
                     quantizer: str = DEFAULT_QUANTIZER, per_channel: bool = True,
                     round_to: int | None = None) -> Policy:
        items = []
        for name in sorted(layers):
            value = layers[name]
            setting = value if isinstance(value, LayerSetting) else LayerSetting(**value)
            items.append((name, setting))
        return cls(tuple(items), criterion, quantizer, per_channel, round_to)

    def __getitem__(self, name: str) -> LayerSetting:
        for layer, setting in self.layers:
            if layer == name:
                return setting
        raise KeyError(name)

    def __iter__(self) -> Iterator[tuple[str, LayerSetting]]:
        return iter(self.layers)

    def to_dict(self) -> dict[str, Any]:
        """Quantization and rounding keys are written only when not the default, so older policies keep their
        JSON."""
        layers = {name: s.to_dict() for name, s in self.layers}
        data: dict[str, Any] = {"criterion": self.criterion, "layers": layers}
        if self.quantizer != DEFAULT_QUANTIZER:
            data["quantizer"] = self.quantizer
        if not self.per_channel:
            data["per_channel"] = False
        if self.round_to is not None:
            data["round_to"] = self.round_to
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        return cls.from_mapping(data["layers"], data.get("criterion", "l1"),
                                data.get("quantizer", DEFAULT_QUANTIZER), data.get("per_channel", True),
                                data.get("round_to"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def is_identity(self) -> bool:
        return all(s.channel_sparsity == 0 and s.weight_bits >= 32 for _, s in self.layers)
