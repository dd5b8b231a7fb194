"""Structured channel pruning with physical removal through torch-pruning's dependency graph.

Channels are really removed (new, smaller weight tensors), and every layer coupled to a pruned one (the
other convs feeding a residual add, the next layer's input, batch norms) shrinks with it, so the result is
an ordinary, smaller `nn.Module`.

Multi-head attention (a module with an int ``heads`` and q/k/v linear children, see
`autocompress.space.attention_heads`) loses whole heads: torch-pruning couples q, k, v rows and the output
projection's columns in one group, and told the head count (``num_heads``, ``prune_num_heads``, no head-dim
pruning) it removes whole heads, ``ceil(sparsity * heads)`` of them. Without the head count it would remove
scattered channels, which regroups the survivors into different heads (a different function) and breaks
the reshape whenever the count is not a multiple of the head width.

A model whose reshapes torch-pruning cannot map channels through (a channel shuffle) is traced with every
reshape opaque (`autocompress.space._discover.traced`): its layers whose channels cross no reshape are pruned
as in any model; the others are unprunable (discovery says so), and a policy that prunes one is refused here.
A module that uses its layers' weights without calling them (torchvision's Swin attention) or multiplies two
activations (MaxViT's einsum attention) is traced as one op and left whole the same way
(`autocompress.space._sealed`): the channels through it stay.

Attention as models ship it (`autocompress.space.shipped_heads`: Hugging Face BERT-style self-attention,
`nn.MultiheadAttention`) and the FFN width of BERT-style layers (`ffn_layers`) are removed through their own
modules instead (`remove_heads`, `shrink_ffn`: heads and channels ranked by weight norm, whatever the policy's
criterion), after torch-pruning has removed the rest: torch-pruning cannot remove `nn.MultiheadAttention` heads
and would leave a Hugging Face module's head count and config behind.
"""

from __future__ import annotations

import math

import torch_pruning as tp
from torch import nn

from autocompress._inputs import ModelInputs
from autocompress.compress._criteria import make_criterion
from autocompress.compress._heads import ffn_layers, remove_heads, shrink_ffn
from autocompress.space import LayerSetting, Policy
from autocompress.space._discover import (
    attention_heads,
    build_graph,
    output_layers,
    refuse_opaque,
    sealed_modules,
    shipped_heads,
    traced,
)


class ChannelPruning:
    """The channel pruning of one policy on one model, and that model's one dependency graph.

    torch-pruning's pruner traces the model into its `DependencyGraph` when it is built, here; that graph
    (`graph`) answers every other question about the unpruned model's channel groups in the trial (structured
    ADMM's channel blocks), so a trial traces its model once. Tracing follows the model's structure, not its
    weights: training between construction and `apply` (ADMM, a criterion's ``prepare``) leaves it valid, and
    `importance` (already built; it may be prepared before `apply`) scores the channels when `apply` runs.

    `apply` removes channels physically: the graph then describes a model that no longer exists. Anything that
    asks about channel groups after `apply` (or after any other change of the model's structure) must build a
    new graph (`autocompress.space.build_graph`).

    Layers whose output is the model's output are never pruned. Each layer keeps `kept_channels` of its output
    channels, rounded to a multiple of `round_to` (default: the policy's ``round_to``). On an attention
    projection the sparsity is the fraction of whole heads removed, ``ceil(sparsity * heads)`` (at least one
    head is kept); attention as it ships and BERT FFN width go through their own modules. Without an
    `importance`, ``policy.criterion`` is built here, which works for criteria that need no task.
    """

    def __init__(
        self,
        model: nn.Module,
        policy: Policy,
        example_input: ModelInputs,
        round_to: int | None = None,
        importance: tp.importance.Importance | None = None,
    ) -> None:
        self.model, self._example_input = model, example_input
        modules = dict(model.named_modules())
        attention = attention_heads(model)
        heads = {proj: count for count, projs in attention.values() for proj in projs}
        step = round_to or policy.round_to
        self._head_removals, self._ffn_widths, shipped = _shipped_removals(model, policy, step or 1)
        ratios = {}
        for name, setting in policy:
            module = modules[name]
            if setting.channel_sparsity <= 0 or name in shipped:
                continue
            if module in heads:
                ratios[module] = setting.channel_sparsity
            else:
                width = _out_channels(module)
                kept = kept_channels(width, setting.channel_sparsity, step)
                if kept < width:
                    ratios[module] = _ratio_keeping(width, kept)
        self._graph: tp.DependencyGraph | None = None
        self._pruner: tp.pruner.BasePruner | None = None
        self._head_width: dict[str, int] = {}
        self._applied = False
        if not ratios:
            return
        model.eval()
        fixed = [modules[name] for name in output_layers(model, example_input)]
        names = {module: name for name, module in modules.items()}
        self._head_width = {names[owner]: projs[0].out_features // count for owner, (count, projs) in attention.items()}
        head_ratios: dict[nn.Module, float] = {}
        for _, projs in attention.values():
            ratio = max(ratios.get(proj, 0.0) for proj in projs)
            if ratio > 0:
                head_ratios.update(dict.fromkeys(projs, ratio))
        criterion = importance or make_criterion(policy.criterion)
        self._pruner = traced(
            model,
            example_input,
            lambda pruners: tp.pruner.BasePruner(
                model,
                example_input,
                importance=criterion,
                pruning_ratio=0.0,
                pruning_ratio_dict=ratios,
                ignored_layers=fixed + list(sealed_modules(model, pruners)),
                global_pruning=False,
                num_heads=heads,
                prune_num_heads=bool(head_ratios),
                prune_head_dims=False,
                head_pruning_ratio_dict=head_ratios or None,
                customized_pruners=pruners,
            ),
        )
        self._graph = self._pruner.DG
        refuse_opaque(self._graph, {name: module for name, module in modules.items() if module in ratios})

    @property
    def graph(self) -> tp.DependencyGraph:
        """The dependency graph of the model as it was built (the pruner's own; traced here when nothing is
        pruned); stale once `apply` has removed channels."""
        if self._graph is None:
            self._graph = build_graph(self.model, self._example_input)
        return self._graph

    def apply(self) -> nn.Module:
        """Remove the channels, in place; returns the same module object, now smaller. Gradients are cleared
        afterwards (a gradient-based criterion leaves its own behind)."""
        self.model.eval()
        if self._pruner is not None:
            self._pruner.step()
            _set_head_counts(self.model, self._head_width)
        remove_heads(self.model, self._head_removals)  # names still hold: torch-pruning keeps module objects
        shrink_ffn(self.model, self._ffn_widths)
        self.model.zero_grad(set_to_none=True)
        self._applied = True
        return self.model

    def replay(self, model: nn.Module) -> nn.Module:
        """Remove from `model` the very channels `apply` removed, in place; returns the same module object.

        `model` is another instance of the architecture this pruning was built on (the same module names), with
        other weights: the task's early checkpoint, which lottery rewinding needs pruned exactly like the trained
        model. torch-pruning's pruning history (each group's root layer and channel indices) is replayed on
        `model`'s own graph, so what survives was chosen by the weights `apply` saw, not by `model`'s. A
        `ValueError` before `apply`, and when the policy removed attention heads or FFN width through the
        models' own modules (`remove_heads`, `shrink_ffn`): they rank by the weights they are given and keep
        no history to replay."""
        if not self._applied:
            raise ValueError("replay repeats what apply removed; call apply first")
        if self._head_removals or self._ffn_widths:
            raise ValueError(
                "attention heads or FFN width removed through the model's own modules keep no history to replay"
            )
        if self._pruner is not None:
            graph = build_graph(model, self._example_input)
            graph.load_pruning_history(list(self._pruner.pruning_history()))
            _set_head_counts(model, self._head_width)
        return model.eval()


def prune(
    model: nn.Module,
    policy: Policy,
    example_input: ModelInputs,
    round_to: int | None = None,
    importance: tp.importance.Importance | None = None,
) -> nn.Module:
    """Remove the fraction ``channel_sparsity`` of output channels of each layer in `policy`, in place, as
    `ChannelPruning` describes; returns the same module object, now smaller. `importance` is a criterion
    already prepared on this model (`prepare_criterion`)."""
    return ChannelPruning(model, policy, example_input, round_to, importance).apply()


def out_widths(model: nn.Module, policy: Policy) -> dict[str, int]:
    """Output channels (features) of each layer of `policy` in `model`."""
    return {name: _out_channels(model.get_submodule(name)) for name, _ in policy}


def prune_to_widths(
    model: nn.Module,
    policy: Policy,
    widths: dict[str, int],
    example_input: ModelInputs,
    importance: tp.importance.Importance | None = None,
) -> nn.Module:
    """Prune `model`, perhaps already pruned, further so each layer of `policy` keeps `widths[layer]` output
    channels (at most its present width), in place, as `ChannelPruning` prunes (the policy's criterion, or
    `importance` prepared on this model); returns the same module object, now smaller.

    How NetAdapt carries a model forward: `widths` are those the policy gives the unpruned model (`out_widths`),
    and each layer's sparsity becomes relative to what it has now. Attention heads and BERT FFN width round per
    module, so their counts may differ from the target's: the caller compares the shapes."""
    now = out_widths(model, policy)
    for name, width in now.items():
        if widths[name] > width:
            raise ValueError(f"layer {name} has {width} output channels and cannot grow to {widths[name]}")
    relative = Policy(
        tuple(
            (name, LayerSetting(**{**s.to_dict(), "channel_sparsity": _ratio_keeping(now[name], widths[name])}))
            for name, s in policy
        ),
        policy.criterion,
        policy.quantizer,
        policy.per_channel,
        None,
        policy.pruner,
    )
    return ChannelPruning(model, relative, example_input, round_to=1, importance=importance).apply()


def _set_head_counts(model: nn.Module, head_width: dict[str, int]) -> None:
    """Set ``heads`` of each named attention module (`autocompress.space.attention_heads`) from its q projection's
    width after torch-pruning removed whole heads; `head_width`: each module's width per head."""
    for name, width in head_width.items():
        owner = model.get_submodule(name)
        owner.heads = _out_channels(owner.get_submodule("q")) // width  # type: ignore[assignment]  # an int


def _shipped_removals(
    model: nn.Module, policy: Policy, round_to: int
) -> tuple[dict[str, int], dict[str, float], set[str]]:
    """What `policy` removes from attention as it ships and from BERT-style FFN width: heads per attention
    module (`remove_heads`), FFN fractions per layer (`shrink_ffn`), and the policy layers they cover."""
    groups, ffn = shipped_heads(model), ffn_layers(model)
    removals, widths = {}, {}
    for name, setting in policy:
        if setting.channel_sparsity <= 0:
            continue
        if name in groups:
            group = groups[name]
            removals[group.attention] = math.ceil(round(setting.channel_sparsity * group.heads, 6))
        elif name in ffn:
            width = _out_channels(model.get_submodule(name))
            kept = kept_channels(width, setting.channel_sparsity, round_to)
            if kept < width:
                widths[ffn[name]] = _ratio_keeping(width, kept)
    return removals, widths, {name for name, _ in policy if name in groups or name in ffn}


def _ratio_keeping(width: int, kept: int) -> float:
    """A ratio that torch-pruning and `shrink_ffn` turn back into exactly `kept` (they keep int(width * (1 - r)))."""
    return (width - kept) / width - 1e-9


def kept_channels(width: int, sparsity: float, round_to: int | None = None) -> int:
    """Output channels a layer of `width` keeps at `sparsity`: ``int(width * (1 - sparsity))``, at least one,
    rounded down to a multiple of `round_to` but never below `round_to` (nor above `width`)."""
    kept = max(1, int(width * (1 - sparsity)))
    if round_to and round_to > 1:
        kept = min(width, max(round_to, kept - kept % round_to))
    return kept


def _out_channels(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features  # type: ignore[return-value]
