"""The actor/critic networks of the `amc`/`haq` agent (see `autocompress.strategies._ddpg` for how they are used).

Kept apart so that torch is imported only when an agent strategy is built, not by `import autocompress`.
"""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from autocompress.measure import torch_threads


class Agent:
    """Actor (state -> action in [0, 1]) and critic (state, action -> expected reward), trained off-policy
    from a replay buffer of (state, action, target) steps. Deterministic given its seed and call sequence."""

    def __init__(self, state_dim: int, seed: int, hidden: int, lr_actor: float, lr_critic: float) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.actor = nn.Sequential(
                nn.Linear(state_dim, hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
                nn.ReLU(),
                nn.Linear(hidden, 1),
                nn.Sigmoid(),
            )
            self.critic = nn.Sequential(
                nn.Linear(state_dim + 1, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
            )
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=lr_actor)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=lr_critic)
        self.buffer: list[tuple[list[float], float, float]] = []

    @torch.no_grad()
    def act(self, state: list[float]) -> float:
        with torch_threads(1):
            return float(self.actor(torch.tensor([state], dtype=torch.float32))[0, 0])

    def train(self, rng: np.random.Generator, steps: int, batch_size: int) -> None:
        """`steps` minibatch updates: critic regresses the stored targets, actor ascends the critic."""
        if not self.buffer:
            return
        with torch_threads(1):
            for _ in range(steps):
                index = rng.integers(len(self.buffer), size=min(batch_size, len(self.buffer)))
                states = torch.tensor([self.buffer[i][0] for i in index], dtype=torch.float32)
                actions = torch.tensor([[self.buffer[i][1]] for i in index], dtype=torch.float32)
                targets = torch.tensor([[self.buffer[i][2]] for i in index], dtype=torch.float32)
                critic_loss = nn.functional.mse_loss(self.critic(torch.cat([states, actions], 1)), targets)
                self.critic_opt.zero_grad()
                critic_loss.backward()
                self.critic_opt.step()
                actor_loss = -self.critic(torch.cat([states, self.actor(states)], 1)).mean()
                self.actor_opt.zero_grad()
                actor_loss.backward()
                self.actor_opt.step()

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"actor.{k}": v for k, v in self.actor.state_dict().items()}
        tensors.update({f"critic.{k}": v for k, v in self.critic.state_dict().items()})
        for prefix, opt in (("actor_opt", self.actor_opt), ("critic_opt", self.critic_opt)):
            for index, state in opt.state_dict()["state"].items():
                for key, value in state.items():
                    tensors[f"{prefix}.{index}.{key}"] = torch.as_tensor(value).reshape(-1) if key == "step" else value
        return {k: v.detach().clone().contiguous() for k, v in tensors.items()}

    def save_weights(self) -> bytes:
        """Actor, critic and Adam moments as safetensors bytes (no pickle anywhere)."""
        return save_safetensors(self._tensors())

    def load_weights(self, data: bytes) -> None:
        """Load what `save_weights` wrote into an agent of the same shape (weights and Adam moments)."""
        tensors = load_safetensors(data)
        self.actor.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("actor.")})
        self.critic.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("critic.")})
        for prefix, opt in (("actor_opt", self.actor_opt), ("critic_opt", self.critic_opt)):
            state = opt.state_dict()
            moments: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in tensors.items():
                if key.startswith(prefix + "."):
                    _, index, name = key.split(".", 2)
                    moments.setdefault(int(index), {})[name] = value.reshape(()) if name == "step" else value
            state["state"] = moments
            opt.load_state_dict(state)
