"""`LatencyTable`: measured batch-1 latency of each layer alone, per runtime, kept width and weight bits.

Strategies that need many latency estimates (``haq``, ``netadapt``, ``amc`` with ``target_latency``) read it
instead of a fixed cost per bit-width; `autocompress.measure.build_latency_table` measures it once per study
and the study stores it in its space (`Space.latency_table`), so a resumed study reads the same numbers.

A policy's prediction is the sum of its layers' entries on one runtime (everything else the model does, e.g.
pooling or the activation Q/DQ an int8 chain shares, is not in it): each layer at the width its policy leaves it
(interpolated linearly between the measured widths) and at its weight bits. ``predict`` takes the runtime with
the smallest sum, as a trial ships the candidate on its fastest runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autocompress.space._policy import Policy


def channel_keeps(info: Mapping[str, Any], keep: Mapping[str, float]) -> tuple[float, float]:
    """(share of output channels, share of input channels) a layer keeps once each prunable layer keeps
    ``keep[layer]`` of its output channels, from its coupling in `Space.layer_info` (a depthwise conv's
    inputs are its outputs, counted once: its input share is then 1)."""
    out_keep = keep.get(info["out_root"], 1.0) if info["out_root"] else 1.0
    roots = {r: n for r, n in info["in_roots"].items() if r != info["out_root"]}
    removed = sum(n * (1.0 - keep.get(r, 1.0)) for r, n in roots.items())
    in_keep = 1.0 - removed / info["in_channels"] if info["in_channels"] else 1.0
    return out_keep, in_keep


def scaled_sides(info: Mapping[str, Any]) -> tuple[bool, bool]:
    """Whether pruning can shrink the layer's (output, input) channels: what the table scales by the width."""
    return bool(info["out_root"]), any(r != info["out_root"] for r in info["in_roots"])


@dataclass(frozen=True)
class LatencyTable:
    """Milliseconds of each layer run alone at batch 1 on each runtime, by width and weight bits.

    ``entries[runtime][layer][bits]`` holds one median per width of `widths`: the layer with its pruned
    sides (`scaled_sides`) at that share of their channels; a layer no pruning can shrink has one value.
    A layer counts for what it adds to its runtime's `overhead`, which a model pays once. ``coupling`` is
    each layer's `Space.layer_info` coupling, which turns a policy's channel sparsities into layer widths.
    ``build_s`` is what measuring it cost (wall seconds).
    """

    widths: tuple[float, ...]
    entries: dict[str, dict[str, dict[int, tuple[float, ...]]]]
    coupling: dict[str, dict[str, Any]]
    #: milliseconds each runtime takes for a call that computes next to nothing, paid once per model
    overhead: dict[str, float] = field(default_factory=dict)
    threads: int = 1
    build_s: float = 0.0

    @property
    def runtimes(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def width(self, layer: str, keep: Mapping[str, float]) -> float:
        """The measured width equivalent to `keep` for `layer`: the one whose MACs scale as the policy's do
        (the geometric mean of the output and input shares when pruning shrinks both)."""
        info = self.coupling[layer]
        out_keep, in_keep = channel_keeps(info, keep)
        sides = sum(scaled_sides(info))
        return float((out_keep * in_keep) ** (1 / sides)) if sides else 1.0

    def layer_ms(self, runtime: str, layer: str, width: float, bits: int) -> float:
        """What one layer adds to a call on `runtime` (its entry less the runtime's overhead, never below 0),
        linear in width between measured widths (the end values beyond them)."""
        by_bits = self.entries[runtime][layer]
        if bits not in by_bits:
            raise KeyError(f"{layer}: {bits}-bit weights were not measured (measured: {sorted(by_bits)})")
        values = by_bits[bits]
        ms = values[0] if len(values) == 1 else float(np.interp(width, self.widths, values))
        return max(0.0, ms - self.overhead.get(runtime, 0.0))

    def estimate(self, keep: Mapping[str, float], bits: Mapping[str, int], runtime: str) -> dict[str, float]:
        """Milliseconds per layer on `runtime` when each prunable layer keeps ``keep[layer]`` of its output
        channels (absent: 1) and each layer has ``bits[layer]`` weight bits (absent: float)."""
        return {
            layer: self.layer_ms(runtime, layer, self.width(layer, keep), bits.get(layer, 32))
            for layer in self.entries[runtime]
        }

    def total(self, keep: Mapping[str, float], bits: Mapping[str, int], runtime: str | None = None) -> float:
        """Predicted milliseconds of a whole model (its runtime's overhead once, plus every layer) under `keep`
        and `bits` as in `estimate`: on `runtime`, or on the runtime where it is smallest (where a trial would
        ship it)."""
        names = [runtime] if runtime else self.runtimes
        return min(self.overhead.get(name, 0.0) + sum(self.estimate(keep, bits, name).values()) for name in names)

    def predict(self, policy: Policy, runtime: str | None = None) -> float:
        """Predicted milliseconds of `policy` at batch 1 (`total` of its channel sparsities and weight bits)."""
        keep = {name: 1.0 - s.channel_sparsity for name, s in policy}
        return self.total(keep, {name: s.weight_bits for name, s in policy}, runtime)

    def to_dict(self) -> dict[str, Any]:
        return {
            "widths": list(self.widths),
            "entries": {
                rt: {layer: {str(b): list(v) for b, v in by_bits.items()} for layer, by_bits in layers.items()}
                for rt, layers in self.entries.items()
            },
            "coupling": {k: dict(v) for k, v in self.coupling.items()},
            "overhead": dict(self.overhead),
            "threads": self.threads,
            "build_s": self.build_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LatencyTable:
        return cls(
            widths=tuple(data["widths"]),
            entries={
                rt: {layer: {int(b): tuple(v) for b, v in by_bits.items()} for layer, by_bits in layers.items()}
                for rt, layers in data["entries"].items()
            },
            coupling={k: dict(v) for k, v in data["coupling"].items()},
            overhead={k: float(v) for k, v in data.get("overhead", {}).items()},
            threads=int(data.get("threads", 1)),
            build_s=float(data.get("build_s", 0.0)),
        )
