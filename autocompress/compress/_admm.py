"""ADMM pruning (Zhang et al., 2018; the pruning step of AutoCompress, Liu et al., 2020): one core, two uses.

Pruning is posed as ``min loss(W) subject to W in S`` (S: the weights with the wanted sparsity) and solved by
the alternating direction method of multipliers in scaled form: the W-step is the task's own optimiser on the
loss plus a gradient step on the augmented term ``rho/2 * ||W - Z + U||^2`` after each optimiser step; every
`every` steps ``Z = project_S(W + U)`` and ``U += W - Z``. W is pulled towards a sparse Z without ever being
forced there, so training decides which weights can go; a hard projection ends it.

- `ADMMPruner` (``pruner: admm``): S is unstructured, per layer the largest magnitudes; after the ADMM part of
  the budget the weights are hard-pruned and fine-tuned with masks.
- `admm_channels` (``criterion: admm``): S keeps the output channels (rows) of largest L2 norm per layer, with
  the parameters coupled to them (batch norms, residual partners: `channel_blocks`); the
  runtime then removes the channels physically through torch-pruning with the ``admm`` criterion
  (`ADMMChannelImportance`: the same L2 norm of the pruned layer's own rows, so exactly the channels ADMM
  drove to zero go, with whatever is coupled to them), and fine-tunes the rest of the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import cast

import torch
import torch_pruning as tp
from torch import nn

from autocompress._inputs import ModelInputs
from autocompress.compress._sparse_base import Masks, Trainer, UnstructuredPruner, layer_weights, magnitude_mask
from autocompress.space._discover import build_graph

#: the projection of one block of tensors onto its sparse set: (tensors, sparsity) -> the nearest tensors in it
Projection = Callable[[list[torch.Tensor], float], list[torch.Tensor]]


@dataclass
class Block:
    """What ADMM constrains as one unit: a layer's weight (unstructured), or a layer's output channels with
    every parameter coupled to them (structured). ``rows[i]`` maps the first tensor's rows to tensor i's."""

    params: list[nn.Parameter]
    sparsity: float
    rows: list[torch.Tensor] = field(default_factory=list)


def project_magnitude(tensors: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
    """Keep the largest magnitudes of each tensor, zero the fraction `sparsity` (the unstructured sparse set)."""
    return [t * magnitude_mask(t, sparsity) for t in tensors]


def channel_projection(rows: list[torch.Tensor]) -> Projection:
    """Keep the output channels whose row in the first tensor has the largest L2 norm; zero
    ``round(sparsity * channels)`` channels, in the first tensor and at the mapped rows of the coupled ones."""

    def project(tensors: list[torch.Tensor], sparsity: float) -> list[torch.Tensor]:
        norms = tensors[0].flatten(1).norm(dim=1)
        drop = torch.topk(norms, round(sparsity * norms.numel()), largest=False).indices
        out = [t.clone() for t in tensors]
        for tensor, index in zip(out, rows, strict=True):
            tensor[index[drop]] = 0
        return out

    return project


def flush_subnormal(tensor: torch.Tensor) -> None:
    """Zero the entries below the smallest normal float, in place. The pull towards a zero of Z shrinks a weight
    geometrically into subnormal range, where x86 CPUs compute slowly: a conv net's ADMM fine-tune ran 30x
    slower (42 s against 1.4 s with the values flushed). Such a weight is zero in every sense that matters."""
    tensor.masked_fill_(tensor.abs() < torch.finfo(tensor.dtype).tiny, 0.0)


class ADMM:
    """The ADMM state (Z, U) over blocks of parameters; `step` is the trainer's ``on_step``.

    ``rho`` is the step on the augmented term per optimiser step (W moves the fraction rho of the way to
    ``Z - U``); it grows by the factor ``growth`` at every Z update, up to 1, the usual increasing-penalty
    schedule that makes W meet Z within a short budget. ``residuals`` holds ``||W - Z||`` (all blocks
    together) at every Z update.
    """

    def __init__(
        self,
        blocks: Mapping[str, Block],
        project: Callable[[Block], Projection],
        rho: float = 0.3,
        every: int = 2,
        growth: float = 1.1,
    ) -> None:
        self.blocks, self.rho, self.every, self.growth = dict(blocks), rho, every, growth
        self.project = {name: project(block) for name, block in self.blocks.items()}
        with torch.no_grad():
            self.z = {n: self.project[n]([p.detach() for p in b.params], b.sparsity) for n, b in self.blocks.items()}
        self.u = {n: [torch.zeros_like(p) for p in b.params] for n, b in self.blocks.items()}
        self.residuals: list[float] = []
        self._count = 0

    @torch.no_grad()
    def step(self) -> None:
        for name, block in self.blocks.items():
            for w, z, u in zip(block.params, self.z[name], self.u[name], strict=True):
                w.sub_(self.rho * (w - z + u))
                flush_subnormal(w)
        self._count += 1
        if self._count % self.every == 0:
            self.update()

    @torch.no_grad()
    def update(self) -> None:
        squared = 0.0
        for name, block in self.blocks.items():
            self.z[name] = self.project[name](
                [w + u for w, u in zip(block.params, self.u[name], strict=True)], block.sparsity
            )
            for w, z, u in zip(block.params, self.z[name], self.u[name], strict=True):
                u += w - z
                squared += float((w - z).pow(2).sum())
        self.residuals.append(squared**0.5)
        self.rho = min(1.0, self.rho * self.growth)


class ADMMPruner(UnstructuredPruner):
    """ADMM towards the unstructured sparse set for the fraction `share` of the budget, then hard magnitude
    pruning and masked fine-tuning for the rest. ``residuals`` is the core's ``||W - Z||`` history."""

    name = "admm"

    def __init__(self, rho: float = 0.3, every: int = 2, growth: float = 1.1, share: float = 0.5) -> None:
        self.rho, self.every, self.growth, self.share = rho, every, growth, share
        self.residuals: list[float] = []

    def run(self, model: nn.Module, targets: Mapping[str, float], trainer: Trainer, epochs: float) -> None:
        weights = layer_weights(model, targets)
        blocks = {name: Block([weight], targets[name]) for name, weight in weights.items()}
        admm = ADMM(blocks, lambda block: project_magnitude, self.rho, self.every, self.growth)
        self.residuals = admm.residuals
        trainer.train(model, epochs * self.share, admm.step)
        masks = Masks(weights)
        masks.prune(targets)
        trainer.train(model, epochs * (1 - self.share), masks.apply)


_OUT_CHANNELS = {
    nn.Conv2d: tp.pruner.function.prune_conv_out_channels,
    nn.Linear: tp.pruner.function.prune_linear_out_channels,
}
_COUPLED = (*_OUT_CHANNELS.values(), tp.pruner.function.prune_batchnorm_out_channels)


def channel_blocks(
    model: nn.Module,
    sparsity: Mapping[str, float],
    example_input: ModelInputs,
    graph: tp.DependencyGraph | None = None,
) -> dict[str, Block]:
    """One block per named layer: its weight first, then every conv/linear weight and bias and batch-norm
    affine parameter whose output channels torch-pruning's dependency graph couples to the layer's. Driving
    all of them to zero makes a channel's contribution exactly zero (a batch norm would otherwise rescale a
    shrinking conv row back up), so removing it later changes nothing. `graph` is the model's dependency graph
    when the caller has one (a trial's `ChannelPruning.graph`), else it is traced here."""
    graph = graph or build_graph(model, example_input)
    blocks = {}
    for name, fraction in sparsity.items():
        module = model.get_submodule(name)
        channels = layer_weights(model, [name])[name].shape[0]
        group = graph.get_pruning_group(module, _OUT_CHANNELS[type(module)], idxs=list(range(channels)))
        # the layer's own weight first, whatever torch-pruning's handler for it (a depthwise conv, the root of
        # MobileNet's expand/depthwise group, has its own): the projection ranks channels by its rows
        params: list[nn.Parameter] = [cast(nn.Parameter, module.weight)]
        rows: list[torch.Tensor] = [torch.arange(channels)]
        for dep, idxs in group:
            if dep.pruning_fn not in _COUPLED or len(idxs) != channels:
                continue
            for param in (dep.layer.weight, dep.layer.bias):
                if isinstance(param, nn.Parameter) and all(param is not p for p in params):
                    params.append(param)
                    rows.append(torch.tensor([int(i) for i in idxs]))
        blocks[name] = Block(params, fraction, rows)
    return blocks


def admm_channels(
    model: nn.Module,
    sparsity: Mapping[str, float],
    example_input: ModelInputs,
    trainer: Trainer,
    epochs: float,
    rho: float = 0.3,
    every: int = 2,
    growth: float = 1.1,
    graph: tp.DependencyGraph | None = None,
) -> ADMM:
    """Train `model` for `epochs` by ADMM towards keeping ``1 - sparsity`` of each named layer's output
    channels (largest L2 norm), the coupled parameters with them; returns the core (its ``residuals``).
    Removing the channels is the caller's (`prune` with the ``admm`` criterion); `graph` as in `channel_blocks`."""
    blocks = channel_blocks(model, sparsity, example_input, graph)
    admm = ADMM(blocks, lambda block: channel_projection(block.rows), rho, every, growth)
    trainer.train(model, epochs, admm.step)
    return admm


class ADMMChannelImportance(tp.importance.Importance):
    """The ``admm`` criterion: a channel's importance is the L2 norm of its row in the group's root layer (the
    layer whose channel sparsity the policy sets), the norm `project_channels` ranked by. Summing over the
    coupled layers, as group magnitude does, would pick channels other than those ADMM zeroed."""

    def __init__(self) -> None:
        self._fallback = tp.importance.MagnitudeImportance(p=2)

    @torch.no_grad()
    def __call__(self, group: tp.dependency.Group) -> torch.Tensor:
        dep, idxs = group[0]
        if dep.pruning_fn not in (
            tp.pruner.function.prune_conv_out_channels,
            tp.pruner.function.prune_linear_out_channels,
        ):
            return self._fallback(group)
        return dep.layer.weight.detach()[idxs].flatten(1).norm(dim=1)
