"""The per-layer options a space file may list choices for: one table that the schema, the generated reference,
`LayerChoices`, `LayerSetting`, `resolve_space` and the tests read.

Adding a per-layer option is one row in `LAYER_OPTIONS` plus the code that acts on it (the compressor that
reads ``setting.<name>``): the space file gains the key (with its validation and description, in
``defaults`` and every ``layers`` entry), the reference lists it, `Space.dimensions` searches it, and
policies and spaces carry it through their JSON.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

SUPPORTED_WEIGHT_BITS = (1, 2, 3, 4, 5, 6, 7, 8, 32)
#: output-activation bit-widths of a quantized layer (activations of a float layer stay float)
SUPPORTED_ACTIVATION_BITS = (1, 2, 3, 4, 5, 6, 7, 8)


@dataclass(frozen=True)
class LayerOption:
    """One per-layer option. ``kind`` is the type of one choice; ``default`` the value a layer takes when the
    file lists no choices for it (None for ``activation_bits``: follow the weight bits). ``allowed`` the
    values it accepts (None: a fraction in [0, 1)), ``unit`` how a rejected value is named. ``core`` marks the
    two original options: always written to JSON and positional in `LayerSetting`; the others are written
    only when set, so that policies and spaces stored before them keep their JSON."""

    name: str
    kind: type
    default: Any
    doc: str
    allowed: tuple[int, ...] | None = None
    unit: str = ""
    core: bool = False

    def problem(self, value: Any) -> str | None:
        """Why one choice is rejected (the message of the space file's one-line error), or None."""
        if self.allowed is None:
            return None if 0 <= value < 1 else f"{value} is outside [0, 1)"
        if value in self.allowed:
            return None
        return f"{value} {self.unit} is not supported; use one of {list(self.allowed)}"

    def check(self, values: list[Any] | None) -> list[Any] | None:
        """Pydantic validator of the field: every choice accepted, else ValueError with `problem`."""
        for value in values or []:
            message = self.problem(value)
            if message:
                raise ValueError(message)
        return values

    def cast(self, value: Any) -> Any:
        """A chosen value (as a strategy hands it over, possibly a numpy scalar) as this option's type."""
        return None if value is None else self.kind(value)


#: the options, in the order `Space.dimensions` lists a layer's searched settings
LAYER_OPTIONS: tuple[LayerOption, ...] = (
    LayerOption("channel_sparsity", float, 0.0, "fractions in [0, 1)", core=True),
    LayerOption(
        "weight_bits",
        int,
        32,
        f"each one of {SUPPORTED_WEIGHT_BITS}",
        allowed=SUPPORTED_WEIGHT_BITS,
        unit="bits",
        core=True,
    ),
    LayerOption(
        "weight_sparsity",
        float,
        0.0,
        "fractions in [0, 1) of the remaining weights set to zero (unstructured, by defaults.pruner); zeros "
        "shrink sparse_bytes, not latency (dense kernels)",
    ),
    LayerOption(
        "activation_bits",
        int,
        None,
        f"output-activation bits of a quantized layer, each one of {SUPPORTED_ACTIVATION_BITS}; left out: the "
        "same as its weight bits; a 32-bit layer stays float",
        allowed=SUPPORTED_ACTIVATION_BITS,
        unit="activation bits",
    ),
)
#: the option names, in table order
SETTINGS = tuple(option.name for option in LAYER_OPTIONS)

_T = TypeVar("_T")


def layer_option_fields(choices: bool) -> Callable[[type[_T]], type[_T]]:
    """Class decorator: one dataclass field per `LAYER_OPTIONS` row, added before ``@dataclass`` runs. With
    ``choices`` a field holds a tuple of choices (default: the option's default alone), else one value. The
    non-core options are keyword-only, so a positional argument never lands on the wrong option."""

    def add(cls: type[_T]) -> type[_T]:
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        for option in LAYER_OPTIONS:
            if choices:
                annotations[option.name] = "tuple[Any, ...]"
                default = dataclasses.field(default=(option.default,), kw_only=not option.core)
            else:
                annotations[option.name] = "Any"
                default = dataclasses.field(default=option.default, kw_only=not option.core)
            setattr(cls, option.name, default)
        cls.__annotations__ = annotations
        return cls

    return add
