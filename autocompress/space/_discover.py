"""Find the compressible layers of a model from its graph.

Layers are the `nn.Conv2d` and `nn.Linear` modules. Channel pruning acts on groups of coupled layers
(torch-pruning's dependency graph: a residual add ties the output channels of every conv feeding it); each
group is pruned through its root layer, so only roots are prunable, and the model's output layer never is.

Self-attention (`attention_heads`) is one group: q, k and v lose the same rows and the output projection the
same columns, and its root's channel_sparsity is the fraction of whole heads removed.

A model whose graph torch-pruning cannot build because it cannot map channels through a reshape (a channel
shuffle: ``view`` to groups, ``transpose``, ``view`` back) is traced again with every reshape opaque
(`OpaqueReshape`): the channels that cross a reshape stay, the rest of the model is pruned as usual.

A module that uses its layers' weights without calling them (torchvision's Swin attention) or multiplies two
activations (MaxViT's einsum attention) is sealed: one op to torch-pruning, whose channels stay
(`autocompress.space._sealed`). A graph whose channel groups would never end (`endless_group`, which walks each
group as torch-pruning would, within bounds) gets every layer unprunable with that reason instead of a hang.

Attention as models ship it (`shipped_heads`): Hugging Face BERT-style self-attention and
`nn.MultiheadAttention` carry the same meaning on one Linear each (the value projection; the output projection
of `nn.MultiheadAttention`, whose q/k/v are one packed weight): its channel_sparsity is the fraction of whole
heads removed, which `autocompress.compress.remove_heads` does through the modules themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning import ops
from torch_pruning._helpers import _HybridIndex
from torch_pruning.dependency import Node, index_mapping

from autocompress._inputs import ModelInputs, call_model
from autocompress.space._sealed import SealedPruner, find_sealed

LAYER_TYPES = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerInfo:
    """A compressible layer as found in the graph; `reason` says why it cannot be pruned, if it cannot."""

    name: str
    kind: str
    in_channels: int
    out_channels: int
    prunable: bool
    reason: str = ""
    #: static shape facts for strategies that embed layers (AMC/HAQ state): kernel side, stride, MACs per sample
    kernel: int = 1
    stride: int = 1
    macs: int = 0
    #: the prunable layer whose pruning shrinks this layer's output channels ("" if none), and for each
    #: prunable layer that shrinks its input channels, how many of them it feeds (several under a concat)
    out_root: str = ""
    in_roots: tuple[tuple[str, int], ...] = ()
    #: attention heads of the group this layer roots (its channel_sparsity is then a fraction of heads), else 0
    heads: int = 0

    def static_info(self) -> dict[str, int | str | dict[str, int]]:
        """What `Space.layer_info` keeps of this layer (JSON values)."""
        return {
            "kind": self.kind,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel": self.kernel,
            "stride": self.stride,
            "macs": self.macs,
            "out_root": self.out_root,
            "in_roots": dict(self.in_roots),
            "heads": self.heads,
        }


def attention_heads(model: nn.Module) -> dict[nn.Module, tuple[int, tuple[nn.Linear, nn.Linear, nn.Linear]]]:
    """Self-attention modules whose heads can be pruned whole: module -> (heads, (q, k, v)).

    A module qualifies when it has an int attribute ``heads`` and `nn.Linear` children ``q``, ``k`` and ``v``
    of equal width divisible by it, rows grouped head by head. Its forward must split heads with a computed
    count (``view(b, t, -1, head_dim)``) so that it runs with fewer; `prune` updates ``heads`` after pruning.
    """
    found = {}
    for module in model.modules():
        heads = getattr(module, "heads", None)
        projs = [getattr(module, name, None) for name in ("q", "k", "v")]
        if not isinstance(heads, int) or heads < 1 or not all(isinstance(p, nn.Linear) for p in projs):
            continue
        widths = {p.out_features for p in projs}  # type: ignore[union-attr]
        if len(widths) == 1 and widths.pop() % heads == 0:
            found[module] = (heads, tuple(projs))
    return found  # type: ignore[return-value]


def hf_attention_modules(model: nn.Module) -> dict[str, nn.Module]:
    """BERT-style self-attention modules by name (``...attention.self``): ``query``/``key``/``value`` linears and
    an int ``num_attention_heads``, with the output projection as the sibling ``output.dense``."""
    found = {}
    modules = dict(model.named_modules())
    for name, module in modules.items():
        if all(isinstance(getattr(module, p, None), nn.Linear) for p in ("query", "key", "value")) and isinstance(
            getattr(module, "num_attention_heads", None), int
        ):
            parent = modules.get(name.rpartition(".")[0])
            if isinstance(getattr(getattr(parent, "output", None), "dense", None), nn.Linear):
                found[name] = module
    return found


@dataclass(frozen=True)
class HeadGroup:
    """An attention module as it ships whose heads are removed whole, seen from the Linear that carries its
    channel_sparsity (the fraction of heads removed)."""

    #: the attention module (`autocompress.compress.remove_heads` takes its name)
    attention: str
    heads: int
    #: its other Linears whose output channels go with the heads (BERT-style: query and key)
    followers: tuple[str, ...] = ()


def shipped_heads(model: nn.Module) -> dict[str, HeadGroup]:
    """Attention modules as models ship them, by the Linear that carries their channel_sparsity: BERT-style
    self-attention (`hf_attention_modules`) by its ``value`` projection, `nn.MultiheadAttention` (self-attention
    layout: kdim = vdim = embed_dim, no bias_k) by its ``out_proj``, the only Linear it has."""
    found = {
        f"{name}.value": HeadGroup(name, module.num_attention_heads, (f"{name}.query", f"{name}.key"))  # type: ignore[arg-type]
        for name, module in hf_attention_modules(model).items()
    }
    for name, module in model.named_modules():
        if (
            isinstance(module, nn.MultiheadAttention)
            and module.kdim == module.vdim == module.embed_dim
            and module.bias_k is None
        ):
            found[f"{name}.out_proj"] = HeadGroup(name, module.num_heads)
    return found


def output_layers(model: nn.Module, example_input: ModelInputs) -> set[str]:
    """Names of the conv/linear layers whose output channels are the model's output (their width is fixed).

    Found by walking the autograd graph back from the model's output to the first conv/linear on every path:
    the layer that returns the output, and any whose output reaches it only through ops that are not layers
    (squeezenet's classifier conv feeds a ReLU and average pooling; a concatenation fixes every input).
    """
    made_by: dict[object, str] = {}  # grad_fn of a layer's output -> the layer (kept alive until the walk ends)

    def record(name: str, output: torch.Tensor) -> None:
        if output.grad_fn is not None:
            made_by.setdefault(output.grad_fn, name)

    hooks = [
        module.register_forward_hook(lambda m, i, o, n=name: record(n, o))
        for name, module in model.named_modules()
        if isinstance(module, LAYER_TYPES)
    ]
    try:
        with torch.enable_grad():
            out = call_model(model, example_input)
    finally:
        for hook in hooks:
            hook.remove()
    outputs = out if isinstance(out, (tuple, list)) else [out]
    stack = [o.grad_fn for o in outputs if isinstance(o, torch.Tensor) and o.grad_fn is not None]
    fixed: set[str] = set()
    seen: set[object] = set()
    while stack:
        fn = stack.pop()
        if fn in seen:
            continue
        seen.add(fn)
        if fn in made_by:
            fixed.add(made_by[fn])
            continue
        stack.extend(nxt for nxt, _ in fn.next_functions if nxt is not None)
    return fixed


T = TypeVar("T")


class OpaqueReshape(tp.pruner.BasePruningFunc):
    """torch-pruning's pruner for every reshape of a model whose graph fails at one (`traced`).

    Its input and output channels are pruned by two different functions, which torch-pruning reads as no
    coupling across the op (the rule `tp.pruner.BasePruningFunc` documents), and a reshape with a customized
    pruner gets no index mapping: a group stops at a reshape instead of mapping channels through it. Such a
    group cannot be pruned, since the reshape and the layers past it would not follow: discovery reports its
    layers unprunable (`discover_layers`), a policy that prunes one is refused before anything changes
    (`refuse_opaque`), and these functions raise should torch-pruning still call them. A group that reaches no
    reshape is the same as in a graph torch-pruning could build whole.
    """

    TARGET_MODULES = (ops._ReshapeOp,)

    def __init__(self, failure: str) -> None:
        super().__init__()
        #: why the reshapes are opaque: torch-pruning's failure on the plain graph (`graph_failure`)
        self.failure = failure

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        raise ValueError(f"{layer} is opaque: {self.failure}")

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:  # not prune_out: no coupling
        raise ValueError(f"{layer} is opaque: {self.failure}")

    def get_out_channels(self, layer: nn.Module) -> None:
        return None

    def get_in_channels(self, layer: nn.Module) -> None:
        return None


def traced(
    model: nn.Module, example_input: ModelInputs, build: Callable[[dict[Any, tp.pruner.BasePruningFunc]], T]
) -> T:
    """``build(customized_pruners)``, a torch-pruning graph or pruner traced from `model` with `example_input`:
    its sealed modules one op each (`find_sealed`; never attention whose heads are removed whole), and when
    torch-pruning fails at a reshape (a channel shuffle), again with every reshape an `OpaqueReshape`."""
    heads = [*attention_heads(model), *hf_attention_modules(model).values()]
    sealed = find_sealed(model, example_input, keep=heads)
    with sealed.tracing():
        try:
            return build(sealed.pruners)
        except Exception as exc:
            node, _ = _failed_at(exc)
            if node is None or not isinstance(node.module, ops._ReshapeOp):
                raise
            return build({**sealed.pruners, ops._ReshapeOp: OpaqueReshape(graph_failure(exc, opaque=True))})


def kept_whole(group: tp.Group, names: dict[Any, str]) -> str:
    """Why none of a channel group's channels can be pruned, or "": it reaches an `OpaqueReshape` (the failure
    that made reshapes opaque) or a sealed module (one op whose channels stay; `names`: module -> name)."""
    for dep, _ in group:
        pruner = getattr(dep.handler, "__self__", None)
        if isinstance(pruner, OpaqueReshape):
            return pruner.failure
        if isinstance(pruner, SealedPruner):
            module = dep.target.module
            return (
                f"its output channels run through {names[module]!r} ({type(module).__name__}), which torch-pruning "
                f"sees as one op ({pruner.why}): that width stays"
            )
    return ""


def refuse_opaque(graph: tp.DependencyGraph, layers: dict[str, nn.Module]) -> None:
    """Raise `ValueError` naming the first of `layers` (to be pruned) whose channel group reaches an opaque
    reshape or a sealed module (`kept_whole`), before anything is pruned; nothing to check in a graph built
    without them (`traced`)."""
    if not graph.CUSTOMIZED_PRUNERS:
        return
    names = {module: name for name, module in graph.model.named_modules()}
    for name, module in layers.items():
        prune_out = graph.get_pruner_of_module(module).prune_out_channels
        channels = graph.get_out_channels(module)
        reason = kept_whole(graph.get_pruning_group(module, prune_out, list(range(channels))), names)
        if reason:
            raise ValueError(f"layer {name!r} cannot be pruned: {reason}")


def sealed_modules(model: nn.Module, pruners: dict[Any, tp.pruner.BasePruningFunc]) -> dict[nn.Module, str]:
    """The modules of `model` that `pruners` (what `traced` passes on) seal, and why (`SealedPruner.why`)."""
    return {
        module: pruner.why
        for module in model.modules()
        if isinstance(pruner := pruners.get(type(module)), SealedPruner)
    }


def build_graph(model: nn.Module, example_input: ModelInputs) -> tp.DependencyGraph:
    """torch-pruning's dependency graph of `model` (traced with `example_input`; leaves the model in eval mode;
    its sealed modules one op each, its reshapes opaque where torch-pruning cannot map channels through one:
    `traced`).

    It describes the model's structure, so it stays valid while weights train, and goes stale once channels are
    removed physically: build it once per model state and pass it on (a trial's is `ChannelPruning.graph`)."""
    return traced(
        model,
        example_input,
        lambda pruners: tp.DependencyGraph().build_dependency(
            model, example_inputs=example_input, customized_pruners=pruners
        ),
    )


#: how many channel indices, over all the ops they reach, the group of one root may map before it counts as endless,
#: per channel of the model (the sum of its layers' widths; torchvision's ViT-B/32 and VGG take about 9)
INDICES_PER_CHANNEL = 32


def endless_group(graph: tp.DependencyGraph) -> str:
    """Why enumerating `graph`'s channel groups would never end, or "" when every one ends.

    torch-pruning grows a group from a root layer's output channels by following dependencies from op to op,
    mapping channel indices on the way (a reshape multiplies or divides them by its stride), and stops at an op it
    has already reached with the same index list. Through attention written with explicit matmuls, which it
    follows as element-wise ops, that may never happen: on the loop the matmuls close, the indices grow on every
    lap (Swin traced op by op), or come back past the widths of the layers they reach, reordered and merged,
    never the same list twice (MaxViT traced op by op); minutes and tens of GB, not an error
    (`autocompress.space._sealed` seals such modules; this guard is for what sealing does not catch).

    So every conv/linear layer's group is walked here as torch-pruning walks it, and called endless at the first
    index that cannot be a channel (past the width of a layer it reaches, or past the sum of all layers'
    widths) or once it has mapped `INDICES_PER_CHANNEL` indices per channel of the model: bounded time and memory
    whatever the graph (about a second for all groups of ViT-B/32 or MaxViT-T, sealed or not).
    """
    index_mapping.update_index_mapping(graph)  # as get_pruning_group does before each walk
    layers = [module for module in graph.module2node if isinstance(module, LAYER_TYPES)]
    channels = sum(graph.get_in_channels(layer) + graph.get_out_channels(layer) for layer in layers)
    names = {module: name for name, module in graph.model.named_modules()}
    for layer in layers:
        why = _runaway(graph, layer, channels, names)
        if why:
            return (
                f"torch-pruning's channel groups through this model's graph never end: the group of {names[layer]!r} "
                f"{why} (attention written with explicit matmuls, which it follows as element-wise ops); no channel "
                "can be pruned, quantization still applies"
            )
    return ""


def _runaway(graph: tp.DependencyGraph, layer: nn.Module, channels: int, names: dict[Any, str]) -> str:
    """How the group of `layer`'s output channels runs away (`endless_group`; `channels`: the sum of the model's
    layer widths; `names`: module -> name), or "" once it ends; the walk is torch-pruning's
    (`DependencyGraph.get_pruning_group`)."""
    handler = graph.get_pruner_of_module(layer).prune_out_channels
    if isinstance(layer, nn.Conv2d) and layer.groups == layer.out_channels > 1:
        handler = tp.prune_depthwise_conv_out_channels
    start = [_HybridIndex(idx=i, root_idx=i) for i in range(graph.get_out_channels(layer))]
    root = graph.module2node[layer]
    reached: dict[tuple[Node, Callable[..., Any]], set[tuple[_HybridIndex, ...]]] = {(root, handler): {tuple(start)}}
    visited: set[Node] = set()
    stack = [(root, handler, start)]
    mapped, budget = 0, INDICES_PER_CHANNEL * channels
    while stack:
        node, handler, idxs = stack.pop()
        visited.add(node)
        for dep in node.dependencies:
            if not dep.is_triggered_by(handler):
                continue
            new = idxs
            for mapping in dep.index_mapping:
                if mapping is not None:
                    new = mapping(new)
            if not new:
                continue
            top = max(i.idx for i in new)
            where = names.get(dep.target.module) or dep.target.name
            if top >= channels:
                return f"maps a channel index to {top} at {where}, past all {channels} channels of the model"
            width = _width(graph, dep)
            if width is not None and top >= width:
                return f"maps a channel index to {top} at {where!r}, whose width is {width}"
            key = tuple(new)
            if dep.target in visited and key in reached.get((dep.target, dep.handler), ()):
                continue
            reached.setdefault((dep.target, dep.handler), set()).add(key)
            mapped += len(new)
            if mapped > budget:
                return (
                    f"has mapped {mapped} channel indices ({INDICES_PER_CHANNEL} per channel of the model) and keeps "
                    f"reaching the same ops with new index lists, last {where}"
                )
            stack.append((dep.target, dep.handler, new))
    return ""


def _width(graph: tp.DependencyGraph, dep: tp.Dependency) -> int | None:
    """The number of channels `dep` prunes at its target (input or output side by its handler), None if unknown."""
    if not isinstance(dep.target.module, nn.Module) or graph.get_pruner_of_module(dep.target.module) is None:
        return None
    if graph.is_out_channel_pruning_fn(dep.handler):
        return graph.get_out_channels(dep.target)  # type: ignore[no-any-return]
    return graph.get_in_channels(dep.target)  # type: ignore[no-any-return]


def graph_failure(exc: BaseException, opaque: bool = False) -> str:
    """One line for a failure inside torch-pruning's graph building: the graph node it was handling (the op,
    e.g. the ``view`` of a channel shuffle), the torch-pruning function and the error. `opaque`: the line for
    the layers whose channels cross a reshape once reshapes are opaque (`traced`), else for every layer."""
    node, where = _failed_at(exc)
    op = f" at {node.name}" if node is not None else ""
    cause = f"({type(exc).__name__}: {exc} in {where or 'build_dependency'}; a channel shuffle or an unusual reshape)"
    if opaque:
        return (
            f"its channels cross a reshape, and torch-pruning cannot map channels through this model's "
            f"reshapes{op} {cause}; reshapes are kept whole here, and so are the channels that cross one"
        )
    return (
        f"torch-pruning cannot follow channels through this model's graph{op} {cause}; no channel can be pruned, "
        "quantization still applies"
    )


def _failed_at(exc: BaseException) -> tuple[Node | None, str]:
    """The graph node torch-pruning was handling when it raised `exc` (None if none), and its function."""
    frame, node, where = exc.__traceback__, None, ""
    while frame is not None:
        code = frame.tb_frame.f_code
        if "torch_pruning" in code.co_filename:
            where = code.co_name
            found = [v for v in frame.tb_frame.f_locals.values() if isinstance(v, Node)]
            node = found[0] if found else node
        frame = frame.tb_next
    return node, where


def discover_layers(model: nn.Module, example_input: ModelInputs) -> list[LayerInfo]:
    """Every conv/linear layer of `model`, prunable or not and why. A model whose dependency graph
    torch-pruning cannot build, or whose groups would never end (`endless_group`), gets every layer unprunable
    with that reason, not a crash or a hang; in one built with opaque reshapes or sealed modules (`traced`), the
    layers of a group that reaches one are unprunable (`kept_whole`), and so are those inside a sealed module."""
    from autocompress.measure import count_macs  # measure imports space: import at call time

    model.eval()
    layer_macs = count_macs(model, example_input)
    fixed = output_layers(model, example_input)
    names = {module: name for name, module in model.named_modules()}
    ignored = [module for module, name in names.items() if name in fixed]
    heads = {names[proj]: count for count, projs in attention_heads(model).values() for proj in projs}
    shipped = shipped_heads(model)
    with_heads = {follower: layer for layer, group in shipped.items() for follower in group.followers}
    roots: set[str] = set()
    followers: dict[str, str] = {}
    in_roots: dict[str, dict[str, int]] = {}
    sealed: dict[str, str] = {}  # modules torch-pruning sees as one op (`traced`) -> why
    try:
        graph = build_graph(model, example_input)
        sealed = {names[module]: why for module, why in sealed_modules(model, graph.CUSTOMIZED_PRUNERS).items()}
        untraceable = endless_group(graph)
        groups = (
            []
            if untraceable
            else list(graph.get_all_groups(ignored_layers=ignored, root_module_types=list(LAYER_TYPES)))
        )
    except Exception as exc:  # torch-pruning's own failure: reported per layer, before any trial
        groups, untraceable = [], graph_failure(exc)
    packed: dict[str, str] = {}  # roots whose channels run through nn.MultiheadAttention -> that module
    crossing: dict[str, str] = {}  # layers of a group that reaches an opaque reshape or sealed module -> why
    for group in groups:
        root = names[group[0].dep.target.module]
        whole = kept_whole(group, names)
        if whole:
            crossing.update({names[dep.target.module]: whole for dep, _ in group if _loses_out_channels(dep)})
            continue
        mha = [names[d.target.module] for d, _ in group if isinstance(d.target.module, nn.MultiheadAttention)]
        if mha:
            packed[root] = mha[0]
        roots.add(root)
        for dep, idxs in group:
            member = names.get(dep.target.module)
            if member and member != root and dep.target.module in names and _prunes_out(dep):
                followers.setdefault(member, root)
            if member and dep.handler in (tp.prune_conv_in_channels, tp.prune_linear_in_channels):
                in_roots.setdefault(member, {})[root] = len(idxs)
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, LAYER_TYPES):
            continue
        cin, cout = (
            (module.in_channels, module.out_channels)
            if isinstance(module, nn.Conv2d)
            else (
                module.in_features,
                module.out_features,
            )
        )
        if name in shipped:
            prunable, reason = True, ""
        elif name in with_heads or (name in followers and name in heads):
            prunable, reason = (
                False,
                f"its heads are removed together with {with_heads.get(name) or followers[name]!r}; set that "
                "layer's channel_sparsity (the fraction of heads)",
            )
        elif name in fixed:
            prunable, reason = False, "its output is the model's output"
        elif owner := next((o for o in sealed if name.startswith(f"{o}.")), ""):
            prunable, reason = (
                False,
                f"it is inside {owner!r} ({type(model.get_submodule(owner)).__name__}), which torch-pruning sees "
                f"as one op ({sealed[owner]}): its channels stay",
            )
        elif untraceable:
            prunable, reason = False, untraceable
        elif name in crossing:
            prunable, reason = False, crossing[name]
        elif name in packed:
            prunable, reason = (
                False,
                (
                    f"its channels are the embedding width of nn.MultiheadAttention {packed[name]!r}, whose packed "
                    f"projections torch-pruning cannot shrink consistently; remove heads instead (the "
                    f"channel_sparsity of {packed[name] + '.out_proj'!r})"
                ),
            )
        elif name in roots:
            prunable, reason = True, ""
        elif name in followers:
            prunable, reason = False, f"its output channels are coupled to {followers[name]!r}; prune that layer"
        else:
            prunable, reason = False, "torch-pruning found no channel group rooted at it"
        kernel, stride = (module.kernel_size[0], module.stride[0]) if isinstance(module, nn.Conv2d) else (1, 1)
        out_root = name if name in roots and prunable else followers.get(name, "")
        layer_in_roots = tuple(sorted(in_roots.get(name, {}).items()))
        head_count = heads.get(name, 0) if prunable else 0
        if name in shipped:
            head_count = shipped[name].heads
            if shipped[name].followers:  # BERT-style: the value projection's output is the heads' channels
                out_root = name
            else:  # nn.MultiheadAttention's out_proj: its input is the heads' channels, its output stays
                out_root, layer_in_roots = "", ((name, cin),)
        elif name in with_heads:
            out_root = with_heads[name]
        layers.append(
            LayerInfo(
                name,
                type(module).__name__,
                cin,
                cout,
                prunable,
                reason,
                kernel,
                stride,
                layer_macs.get(name, 0),
                out_root,
                layer_in_roots,
                head_count,
            )
        )
    return layers


def _prunes_out(dep: tp.Dependency) -> bool:
    return dep.handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels)


def _loses_out_channels(dep: tp.Dependency) -> bool:
    """Whether `dep` shrinks a conv/linear layer's output channels (a depthwise conv's too: in and out are one)."""
    return _prunes_out(dep) or dep.handler == tp.prune_depthwise_conv_out_channels
