"""The `Policy`: one point of the search space, what a worker applies to the model."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autocompress.space._options import LAYER_OPTIONS, layer_option_fields

#: the quantizer a policy uses unless it names one: PTQ with torch's histogram observer (x86 default)
DEFAULT_QUANTIZER = "histogram"
#: the unstructured pruner a policy uses unless it names one: one-shot magnitude pruning, masked fine-tune
DEFAULT_PRUNER = "level"


@dataclass(frozen=True, order=True)
@layer_option_fields(choices=False)
class LayerSetting:
    """How one layer is compressed: one value per `LAYER_OPTIONS` row, whose ``doc`` says what it means. The
    core options are positional (``LayerSetting(0.5, 8)``), the others keyword-only."""

    if TYPE_CHECKING:  # the fields come from LAYER_OPTIONS, which the type checker cannot follow

        def __init__(self, *args: Any, **kwargs: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...

    def to_dict(self) -> dict[str, Any]:
        """Options beyond the core two are written only when set, so older JSON is unchanged."""
        return {
            option.name: getattr(self, option.name)
            for option in LAYER_OPTIONS
            if option.core or getattr(self, option.name) != option.default
        }


@dataclass(frozen=True)
class Policy:
    """A per-layer compression policy. Hashable, ordered by layer name, JSON round-trips exactly.

    ``criterion`` names the pruning importance used for channel selection, ``round_to`` (None: any count)
    rounds each pruned layer's kept channels down to a multiple of it, ``quantizer`` is the quantizer of the
    layers below 32 bits, ``per_channel`` its weight granularity and ``pruner`` the unstructured pruner that
    realises each layer's ``weight_sparsity`` (see `autocompress.compress`).
    """

    layers: tuple[tuple[str, LayerSetting], ...]
    criterion: str = "l1"
    quantizer: str = DEFAULT_QUANTIZER
    per_channel: bool = True
    round_to: int | None = None
    pruner: str = DEFAULT_PRUNER

    @classmethod
    def from_mapping(
        cls,
        layers: Mapping[str, LayerSetting | Mapping[str, Any]],
        criterion: str = "l1",
        quantizer: str = DEFAULT_QUANTIZER,
        per_channel: bool = True,
        round_to: int | None = None,
        pruner: str = DEFAULT_PRUNER,
    ) -> Policy:
        items = []
        for name in sorted(layers):
            value = layers[name]
            setting = value if isinstance(value, LayerSetting) else LayerSetting(**value)
            items.append((name, setting))
        return cls(tuple(items), criterion, quantizer, per_channel, round_to, pruner)

    def __getitem__(self, name: str) -> LayerSetting:
        for layer, setting in self.layers:
            if layer == name:
                return setting
        raise KeyError(name)

    def __iter__(self) -> Iterator[tuple[str, LayerSetting]]:
        return iter(self.layers)

    def to_dict(self) -> dict[str, Any]:
        """Quantization, rounding and pruner keys are written only when not the default, so older policies keep
        their JSON."""
        layers = {name: s.to_dict() for name, s in self.layers}
        data: dict[str, Any] = {"criterion": self.criterion, "layers": layers}
        if self.quantizer != DEFAULT_QUANTIZER:
            data["quantizer"] = self.quantizer
        if not self.per_channel:
            data["per_channel"] = False
        if self.round_to is not None:
            data["round_to"] = self.round_to
        if self.pruner != DEFAULT_PRUNER:
            data["pruner"] = self.pruner
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        return cls.from_mapping(
            data["layers"],
            data.get("criterion", "l1"),
            data.get("quantizer", DEFAULT_QUANTIZER),
            data.get("per_channel", True),
            data.get("round_to"),
            data.get("pruner", DEFAULT_PRUNER),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @property
    def is_identity(self) -> bool:
        return all(s.channel_sparsity == 0 and s.weight_bits >= 32 and s.weight_sparsity == 0 for _, s in self.layers)

    @property
    def prunes(self) -> bool:
        """Whether any layer loses channels or weights."""
        return any(s.channel_sparsity > 0 or s.weight_sparsity > 0 for _, s in self.layers)

    @property
    def weight_sparsity(self) -> dict[str, float]:
        """The layers with unstructured sparsity, and theirs."""
        return {name: s.weight_sparsity for name, s in self.layers if s.weight_sparsity > 0}
