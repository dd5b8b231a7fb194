"""`haq`: HAQ-style (Wang et al., 2019) mixed precision, the DDPG agent of `amc` over per-layer bit-widths.

The agent walks the layers that have more than one bit-width choice. Its state embeds the layer (index,
channels, kernel, stride, share of MACs, whether it is a linear layer) and the previous action; the
continuous action picks a bit-width on the layer's ordered choices. Latency is HAQ's hardware feedback: the
study's measured `LatencyTable` (each layer alone on the study's runtimes, at the fixed pruning and each
bit-width), relative to the same pruned model in float, on the runtime where the policy is fastest. When an
episode's estimate breaks the budget (``target_speedup``, or the space's ``min_speedup`` constraint), bits are
lowered one layer at a time, always the step that cuts the predicted latency most, until it fits or no step
cuts it (a fixed cost per bit-width would predict 4-bit twice as fast as 8-bit; both run on the same int8
kernels, and the table shows what int8 gives per layer and runtime, where it gives anything). The reward is the trial's
accuracy after the space's first fine-tune rung. Activation bits follow weight bits in our int8 lowering, so
they are not a separate choice.
"""

from __future__ import annotations

from autocompress.errors import UserError
from autocompress.space import Policy, Space
from autocompress.strategies._ddpg import LayerAgentController, layer_macs, nearest


class HAQController(LayerAgentController):
    name = "haq"
    description = (
        "HAQ-style DDPG agent over per-layer weight bits with the study's measured per-layer latency table, "
        "bits lowered until the budget fits; knobs: target_speedup (constraints.min_speedup or 1.5), "
        "channel_sparsity (min|max), warmup_episodes (5), noise (0.4), hidden (64), updates (20)"
    )
    state_dim = 8
    knobs = {"target_speedup": 1.5, "channel_sparsity": "min", **LayerAgentController.agent_knobs}

    def __init__(self, space: Space, seed: int = 0) -> None:
        if space.strategy_options.get("haq", {}).get("channel_sparsity", "min") not in ("min", "max"):
            raise UserError(
                "space: strategy.haq.channel_sparsity",
                "must be 'min' or 'max' (the sparsity every layer keeps while the agent picks bits)",
            )
        super().__init__(space, seed)
        pick = min if self.options["channel_sparsity"] == "min" else max
        self._sparsity = {n: pick(c.channel_sparsity) for n, c in space.layers.items()}
        self._bits = {n: sorted(space.layers[n].weight_bits) for n in self.layers}
        self._keep = {n: 1 - s for n, s in self._sparsity.items()}
        # each layer's MACs after the fixed pruning (the agent's state)
        self._macs = layer_macs(space, self._keep)
        self._total = sum(self._macs.values()) or 1.0
        speedup = space.constraints.get("min_speedup") or float(self.options["target_speedup"])
        self.target_latency = 1.0 / speedup
        info = space.layer_info
        self._max_channels = max(max(i["in_channels"], i["out_channels"]) for i in info.values())
        self._max_kernel = max(i["kernel"] for i in info.values())
        self._max_stride = max(i["stride"] for i in info.values())

    def _agent_layers(self) -> list[str]:
        return [layer for layer, setting, _ in self.space.dimensions() if setting == "weight_bits"]

    @classmethod
    def wants_latency_table(cls, space: Space) -> bool:
        return True

    def _float_bits(self) -> dict[str, int]:
        return {n: max(c.weight_bits) for n, c in self.space.layers.items()}

    def estimated_latency(self, bits: dict[str, int]) -> float:
        """Predicted latency relative to the unquantized (pruned) model, from the measured table; layers not in
        `bits` keep their largest bit-width."""
        table = self.latency_table
        return table.total(self._keep, {**self._float_bits(), **bits}) / table.total(self._keep, self._float_bits())

    def _to_bits(self, t: int, action: float) -> int:
        choices = self._bits[self.layers[t]]
        return choices[round(action * (len(choices) - 1))]

    def _to_action(self, t: int, bits: int) -> float:
        choices = self._bits[self.layers[t]]
        return choices.index(bits) / (len(choices) - 1)

    def _features(self, t: int, executed: list[float]) -> list[float]:
        info = self.space.layer_info[self.layers[t]]
        return [
            t / len(self.layers),
            info["in_channels"] / self._max_channels,
            info["out_channels"] / self._max_channels,
            info["kernel"] / self._max_kernel,
            info["stride"] / self._max_stride,
            self._macs[self.layers[t]] / self._total,
            1.0 if info["kind"] == "Linear" else 0.0,
            executed[-1] if executed else 1.0,
        ]

    def _constrain(self, t: int, action: float, executed: list[float]) -> float:
        choices = self._bits[self.layers[t]]
        return nearest(action, [i / (len(choices) - 1) for i in range(len(choices))])

    def _repair(self, executed: list[float]) -> list[float]:
        bits = {n: self._to_bits(t, a) for t, (n, a) in enumerate(zip(self.layers, executed, strict=True))}
        latency = self.estimated_latency(bits)
        while latency > self.target_latency:
            steps = []
            for layer in self.layers:
                choices = self._bits[layer]
                if choices.index(bits[layer]) > 0:
                    lower = {**bits, layer: choices[choices.index(bits[layer]) - 1]}
                    steps.append((self.estimated_latency(lower), layer, lower))
            best = min(steps, default=None, key=lambda step: step[0])  # ties: the first layer in graph order
            if best is None or best[0] >= latency:
                break
            latency, _, bits = best
        return [self._to_action(t, bits[n]) for t, n in enumerate(self.layers)]

    def _policy(self, executed: list[float]) -> Policy:
        bits = {n: self._to_bits(t, a) for t, (n, a) in enumerate(zip(self.layers, executed, strict=True))}
        params = {}
        for n, c in self.space.layers.items():
            params[f"{n}/channel_sparsity"] = self._sparsity[n]
            params[f"{n}/weight_bits"] = bits.get(n, max(c.weight_bits))
        # other settings (weight sparsity, activation bits) take their first choice, the space's policy-level
        # quantizer and pruner come along
        return self.space.policy_from_params(params)
