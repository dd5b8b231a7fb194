"""The DDPG agent family shared by `amc` and `haq`: an actor/critic that walks the layers one by one.

An *episode* is one policy: for layer t the agent sees an embedding of the layer and of what it has decided so
far (the strategy defines it), the actor proposes a continuous action in [0, 1], the strategy turns it into an
allowed choice that keeps the budget reachable (action clipping), and the executed action becomes part of the
next layer's state. Each episode is one trial; when it is told, every step of the episode is stored with the
episode's reward (discount 1 and a terminal reward, as in AMC, so the critic's target is the reward itself,
minus a moving-average baseline), and the actor and critic take a few gradient steps. The first
``warmup_episodes`` episodes act at random; after that the actor acts with Gaussian noise whose width decays.

Resume: the controller state is the ask/tell log (see `Controller`), replayed on a fresh agent. That is exact
because the agent owns its random streams (a NumPy generator seeded from the study seed, networks initialised
under a forked torch RNG) and trains on one CPU thread. The weights themselves are not stored: the state keeps
the sha256 of the agent's weights and Adam moments (serialised as safetensors), and restoring checks that the
replay reproduced exactly those bytes, so a diverging replay is an error, never a silent change of course.
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np

from autocompress.space import Policy, Space, channel_keeps
from autocompress.strategies._base import Controller, Outcome, Proposal


def layer_macs(space: Space, keep: dict[str, float]) -> dict[str, float]:
    """MACs per sample of every layer once each prunable layer keeps ``keep[layer]`` of its output channels.

    Uses the coupling found at resolve time: a layer's MACs scale with the keep ratio of the layer that
    prunes its output channels, and with the share of its input channels left once each layer feeding them
    is pruned (a depthwise conv's inputs are its outputs, counted once). Exact up to channel rounding;
    needs `Space.layer_info`.
    """
    macs = {}
    for name, info in space.layer_info.items():
        out_keep, in_keep = channel_keeps(info, keep)
        macs[name] = info["macs"] * out_keep * in_keep
    return macs


def estimate_macs(space: Space, keep: dict[str, float]) -> float:
    """Total of `layer_macs`: the model's MACs per sample under the keep ratios."""
    return sum(layer_macs(space, keep).values())


def weights_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LayerAgentController(Controller):
    """Base of the agent strategies: one episode (layer walk) per proposal, one DDPG update per result.

    Subclasses name the layers the agent acts on (`_agent_layers`), embed a step (`_features`), turn a raw
    action into an executed one that keeps the budget reachable (`_constrain`, and `_repair` once the walk is
    done), and build the policy from the executed actions (`_policy`).
    """

    manages_fidelity = True
    #: length of the state vector `_features` returns
    state_dim: ClassVar[int]
    agent_knobs: ClassVar[dict[str, Any]] = {
        "warmup_episodes": 5,
        "hidden": 64,
        "lr_actor": 1e-3,
        "lr_critic": 2e-3,
        "updates": 20,
        "batch_size": 64,
        "noise": 0.4,
        "noise_decay": 0.95,
        "baseline_decay": 0.9,
        "finetune_epochs": -1.0,
    }

    def __init__(self, space: Space, seed: int = 0) -> None:
        super().__init__(space, seed)
        if not space.layer_info:
            raise ValueError(f"{self.name} needs per-layer static info in the space; re-create the study")
        self.layers = self._agent_layers()
        self._rng = np.random.default_rng(seed)
        from autocompress.strategies._agent import Agent  # torch loads only where a search runs

        self.agent = Agent(
            self.state_dim,
            seed,
            int(self.options["hidden"]),
            float(self.options["lr_actor"]),
            float(self.options["lr_critic"]),
        )
        self._episodes: dict[int, tuple[list[list[float]], list[float]]] = {}
        self._told = 0
        self._baseline: float | None = None
        #: executed actions of every told episode with its reward, for diagnostics and tests
        self.history: list[tuple[list[float], float]] = []

    @property
    def finetune_epochs(self) -> float:
        """Fine-tune per episode: the knob, or the space's first rung when it is negative (0 = the paper's
        fast evaluation without fine-tune)."""
        value = float(self.options["finetune_epochs"])
        return self.space.finetune_epochs[0] if value < 0 else value

    @property
    def sigma(self) -> float:
        past_warmup = max(0, self._told - int(self.options["warmup_episodes"]))
        return float(self.options["noise"]) * float(self.options["noise_decay"]) ** past_warmup

    @abstractmethod
    def _agent_layers(self) -> list[str]:
        """The layers the agent decides, in walk order."""

    @abstractmethod
    def _features(self, t: int, executed: list[float]) -> list[float]:
        """State of step `t` given the actions executed so far (fixed length, values about [0, 1])."""

    @abstractmethod
    def _constrain(self, t: int, action: float, executed: list[float]) -> float:
        """The allowed action nearest to `action` for layer t that still lets the budget be met."""

    @abstractmethod
    def _policy(self, executed: list[float]) -> Policy:
        """The policy an episode's executed actions stand for (inside the space)."""

    def _repair(self, executed: list[float]) -> list[float]:
        """Adjust a finished episode's actions to meet the budget (when per-step clipping cannot)."""
        return executed

    def _reward(self, outcome: Outcome) -> float:
        return float(outcome.values["accuracy"])

    def _ask(self, number: int) -> Proposal:
        warm = self._told < int(self.options["warmup_episodes"])
        states: list[list[float]] = []
        executed: list[float] = []
        for t in range(len(self.layers)):
            state = self._features(t, executed)
            if warm:
                action = float(self._rng.random())
            else:
                action = min(1.0, max(0.0, self.agent.act(state) + self.sigma * float(self._rng.standard_normal())))
            states.append(state)
            executed.append(self._constrain(t, action, executed))
        executed = self._repair(executed)
        self._episodes[number] = (states, executed)
        return Proposal(number, self._policy(executed), self.finetune_epochs)

    def _tell(self, number: int, outcome: Outcome) -> None:
        states, executed = self._episodes.pop(number)
        if outcome.state != "complete":
            return  # no reward to learn from; the episode is dropped
        reward = self._reward(outcome)
        self.history.append((executed, reward))
        decay = float(self.options["baseline_decay"])
        self._baseline = reward if self._baseline is None else decay * self._baseline + (1 - decay) * reward
        self.agent.buffer.extend((s, a, reward - self._baseline) for s, a in zip(states, executed, strict=True))
        self._told += 1
        if self._told >= int(self.options["warmup_episodes"]):
            self.agent.train(self._rng, int(self.options["updates"]), int(self.options["batch_size"]))

    # -- state: event log + the sha256 of the agent's weights, which the replay must reproduce -----------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        data = self.agent.save_weights()
        state["agent"] = {"format": "safetensors", "sha256": weights_digest(data), "bytes": len(data)}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        expected = state.get("agent", {}).get("sha256")
        if expected is not None and expected != weights_digest(self.agent.save_weights()):
            raise RuntimeError(f"{self.name}: replay did not reproduce the agent weights {expected[:12]}")


def nearest(value: float, allowed: list[float]) -> float:
    """The element of `allowed` closest to `value` (the smaller one on ties)."""
    return min(allowed, key=lambda a: (abs(a - value), a))
