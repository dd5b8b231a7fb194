"""`amc`: AMC (He et al., 2018), a DDPG agent that picks each layer's keep ratio under a MACs budget.

The agent walks the prunable layers in graph order. Its state is AMC's layer embedding: index, input and
output channels, kernel, stride, the layer's MACs, the MACs removed so far, the MACs of the layers still to
decide, and the previous action. The continuous action is the keep ratio (1 - channel sparsity); it is
clipped so that, even if every later layer is pruned as far as the space allows, the model's MACs stay under
the target (``target_macs`` of the baseline, or the space's ``max_macs`` constraint), then snapped to the
nearest allowed choice. With ``target_latency`` (a share of the float baseline's latency, 0: off) the
clipping also keeps the latency predicted by the study's measured `LatencyTable` under that share: AMC's
latency target, read from the same table as ``haq`` and ``netadapt``. MACs are estimated from the layer
coupling found at resolve time (`estimate_macs`), so any model whose layers torch-pruning can group works,
not only MobileNet. The reward is the accuracy of the trial; AMC's fast evaluation without fine-tune is
``finetune_epochs: 0`` (the default, -1, uses the space's first rung, which ranks policies better on small
models that are at chance right after pruning).
"""

from __future__ import annotations

from autocompress.space import Policy, Space
from autocompress.strategies._base import fixed_bits
from autocompress.strategies._ddpg import LayerAgentController, estimate_macs, nearest


class AMCController(LayerAgentController):
    name = "amc"
    description = (
        "AMC: DDPG agent over per-layer keep ratios, clipped to a MACs budget; knobs: target_macs (0.5 "
        "of baseline, or constraints.max_macs), target_latency (0: off; a share of the dense latency from "
        "the study's measured table), weight_bits (min|max), warmup_episodes (5), noise (0.4), "
        "noise_decay, hidden (64), updates (20), lr_actor, lr_critic, finetune_epochs (-1: first rung)"
    )
    state_dim = 9
    knobs = {"target_macs": 0.5, "target_latency": 0.0, "weight_bits": "min", **LayerAgentController.agent_knobs}

    def __init__(self, space: Space, seed: int = 0) -> None:
        super().__init__(space, seed)
        self._weight_bits = fixed_bits(space, self.name, self.options["weight_bits"])
        self._total = estimate_macs(space, {})
        limit = space.constraints.get("max_macs")
        self.target = float(limit) if limit else float(self.options["target_macs"]) * self._total
        self._fixed_keep = {n: 1 - c.channel_sparsity[0] for n, c in space.layers.items() if n not in self.layers}
        self._keeps = {n: sorted(1 - s for s in space.layers[n].channel_sparsity) for n in self.layers}
        info = space.layer_info
        self._max_channels = max(max(i["in_channels"], i["out_channels"]) for i in info.values())
        self._max_kernel = max(i["kernel"] for i in info.values())
        self._max_stride = max(i["stride"] for i in info.values())

    @classmethod
    def wants_latency_table(cls, space: Space) -> bool:
        return bool(space.strategy_options.get("amc", {}).get("target_latency"))

    def _fits(self, keep: dict[str, float]) -> bool:
        """Whether ratios `keep` meet the MACs target and, when set, the latency target."""
        if estimate_macs(self.space, keep) > self.target * (1 + 1e-9):
            return False
        share = float(self.options["target_latency"])
        if not share:
            return True
        table = self.latency_table
        return table.total(keep, self._weight_bits) <= share * table.total({}, {}) * (1 + 1e-9)

    def _agent_layers(self) -> list[str]:
        return [layer for layer, setting, _ in self.space.dimensions() if setting == "channel_sparsity"]

    def _keep_map(self, executed: list[float], rest: str) -> dict[str, float]:
        keep = dict(self._fixed_keep)
        for t, layer in enumerate(self.layers):
            if t < len(executed):
                keep[layer] = executed[t]
            elif rest == "min":
                keep[layer] = self._keeps[layer][0]
        return keep

    def _features(self, t: int, executed: list[float]) -> list[float]:
        info = self.space.layer_info[self.layers[t]]
        removed = self._total - estimate_macs(self.space, self._keep_map(executed, "dense"))
        left = sum(self.space.layer_info[n]["macs"] for n in self.layers[t + 1 :])
        return [
            t / max(1, len(self.layers)),
            info["in_channels"] / self._max_channels,
            info["out_channels"] / self._max_channels,
            info["kernel"] / self._max_kernel,
            info["stride"] / self._max_stride,
            info["macs"] / self._total,
            removed / self._total,
            left / self._total,
            executed[-1] if executed else 1.0,
        ]

    def _constrain(self, t: int, action: float, executed: list[float]) -> float:
        layer = self.layers[t]
        feasible = [k for k in self._keeps[layer] if self._fits(self._keep_map([*executed, k], "min"))]
        return nearest(action, feasible or self._keeps[layer][:1])

    def _policy(self, executed: list[float]) -> Policy:
        bits = self._weight_bits
        keep = dict(zip(self.layers, executed, strict=True))
        params: dict[str, float] = {}
        for n, c in self.space.layers.items():
            params[f"{n}/channel_sparsity"] = (
                nearest(1 - keep[n], list(c.channel_sparsity)) if n in keep else c.channel_sparsity[0]
            )
            params[f"{n}/weight_bits"] = bits[n]
        # other settings (weight sparsity, activation bits) take their first choice, the space's policy-level
        # quantizer and pruner come along
        return self.space.policy_from_params(params)

    def estimated_macs(self, policy: Policy) -> float:
        """MACs per sample the policy's pruning leaves, by the coupling estimate."""
        return estimate_macs(self.space, {n: 1 - s.channel_sparsity for n, s in policy})
