"""Channel-importance criteria for structured pruning, by policy name in `CRITERIA`.

A criterion scores the channels of a torch-pruning dependency group; `prune` removes the lowest-scoring ones.
Weight-only criteria (l1, l2, fpgm) are torch-pruning ``Importance`` objects as they are. Criteria that need
the task (activations on calibration data, a sparsity-training phase, gradients) are `Criterion` subclasses:
the runtime calls their `prepare` with the task before pruning. torch-pruning's own classes are used where
they exist (FPGM, BN scale); the activation statistics (APoZ, mean activation) are written here, since
torch-pruning's ``ActivationImportance`` keeps one sum per layer and cannot give APoZ, and so is Taylor, since
torch-pruning's ``TaylorImportance`` scores one (averaged) gradient, not Molchanov et al.'s average of squared
per-batch contributions. ``admm`` scores by
the norm that structured ADMM (`autocompress.compress.structured_admm`, run by the trial first) drove to zero.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch
import torch_pruning as tp
from torch import nn

from autocompress._inputs import call_model
from autocompress.compress._admm import ADMMChannelImportance

if TYPE_CHECKING:
    from autocompress.task import Task

_IN_HANDLERS = (tp.prune_conv_in_channels, tp.prune_linear_in_channels)
_OUT_HANDLERS = (tp.prune_conv_out_channels, tp.prune_linear_out_channels, tp.prune_batchnorm_out_channels)
#: the layers whose output channels `TaylorCriterion` scores
_TAYLOR_LAYERS = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)


class Criterion(tp.importance.Importance):
    """A channel-importance criterion that may look at the task before it scores.

    Life cycle, once per trial: the runtime builds a fresh instance from ``CRITERIA[name]()``; when
    `needs_task` is true it calls ``prepare(model, task, epochs, on_step)`` once, on the unpruned model that
    is about to be pruned; then `prune` calls the instance on every dependency group (``criterion(group)``),
    all groups before any channel is removed, on the model exactly as `prepare` left it.

    `prepare` may assume the model is the task's trained float model (not yet pruned, not quantized); where it
    trains or observes gradients it needs ``task.finetune`` to accept ``on_step`` (else `ValueError` naming the
    criterion) and it uses whatever loss the task trains with. It may change the
    weights only where that is the criterion's method (``slim`` trains BN scales towards zero, and those
    weights are what gets fine-tuned afterwards); otherwise it must leave every weight and buffer as it found
    them. ``epochs`` is the trial's fine-tune budget, which a training phase may scale itself to; ``on_step``,
    when given, must be called after every optimisation step of any training it runs (the runtime pauses there
    while another trial measures latency).

    ``__call__(group)`` returns a 1-D float tensor with one score per channel of the group's root (the lowest
    are removed), or None to leave the group unpruned. A criterion with `needs_task` that was never prepared
    raises `ValueError` instead of scoring from nothing.
    """

    #: whether `prepare` must run before scoring
    needs_task: ClassVar[bool] = False

    def prepare(self, model: nn.Module, task: Task, epochs: float, on_step: Callable[[], None] | None = None) -> None:
        """See the class docstring; weight-only criteria need nothing."""


class _ActivationCriterion(Criterion):
    """Scores channels by a statistic of the activations that enter the next layers, on calibration data.

    Every conv/linear input is observed with a forward pre-hook while ``task.calibration_batches()`` runs, so
    a channel is judged where it is consumed (after its BN and ReLU); a group's score for a channel is the
    mean over all the layers that consume it (several under a residual add or a concat).
    """

    needs_task = True
    name: ClassVar[str]

    def __init__(self) -> None:
        self._nonzero: dict[nn.Module, torch.Tensor] = {}
        self._magnitude: dict[nn.Module, torch.Tensor] = {}

    def prepare(self, model: nn.Module, task: Task, epochs: float, on_step: Callable[[], None] | None = None) -> None:
        seen: dict[nn.Module, int] = {}

        def observe(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0]
            x = x.transpose(0, 1).flatten(1) if isinstance(module, nn.Conv2d) else x.reshape(-1, x.shape[-1]).T
            nonzero, magnitude = (x != 0).float().sum(1), x.abs().sum(1)
            if module in seen:
                nonzero, magnitude = nonzero + self._nonzero[module], magnitude + self._magnitude[module]
            self._nonzero[module], self._magnitude[module] = nonzero, magnitude
            seen[module] = seen.get(module, 0) + x.shape[1]

        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        hooks = [m.register_forward_pre_hook(observe) for m in layers]
        model.eval()
        try:
            with torch.no_grad():
                for batch in task.calibration_batches():
                    call_model(model, batch)
        finally:
            for hook in hooks:
                hook.remove()
        for module, count in seen.items():
            self._nonzero[module] /= count
            self._magnitude[module] /= count

    def statistic(self, module: nn.Module) -> torch.Tensor:
        """Per input channel of `module`, higher = more important."""
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor | None:
        if not self._magnitude:
            raise ValueError(
                f"criterion {self.name!r} scores from activations: call prepare(model, task, epochs) "
                "before pruning (run_trial does)"
            )
        size = len(group[0].idxs)
        total, count = torch.zeros(size), torch.zeros(size)
        for i, (dep, idxs) in enumerate(group):
            module = dep.target.module
            if dep.handler not in _IN_HANDLERS or module not in self._magnitude:
                continue
            root = torch.as_tensor(group[i].root_idxs, dtype=torch.long)
            total.index_add_(0, root, self.statistic(module)[torch.as_tensor(idxs, dtype=torch.long)])
            count.index_add_(0, root, torch.ones(len(root)))
        return total / count.clamp(min=1) if bool(count.any()) else None


class APoZCriterion(_ActivationCriterion):
    """Average percentage of zeros (Hu et al. 2016): channels that are mostly zero after their ReLU go first.

    Scores 1 - APoZ. Where a channel's consumers see no exact zeros (a linear bottleneck, GELU), every score
    ties at 1 and the mean magnitude (scaled to < 1e-3) decides.
    """

    name = "apoz"

    def statistic(self, module: nn.Module) -> torch.Tensor:
        magnitude = self._magnitude[module]
        return self._nonzero[module] + 1e-3 * magnitude / magnitude.max().clamp(min=1e-12)


class MeanActivationCriterion(_ActivationCriterion):
    """Mean absolute activation of each channel on calibration data (Molchanov et al. 2017's baseline)."""

    name = "mean_activation"

    def statistic(self, module: nn.Module) -> torch.Tensor:
        return self._magnitude[module]


class SlimCriterion(Criterion):
    """Network slimming (Liu et al. 2017): L1 sparsity training of BN scales, then prune the smallest scales.

    `prepare` fine-tunes for ``fraction`` of the trial's epochs (at least ``min_epochs``) through the task's
    own `finetune`, and after every optimiser step applies the proximal step of an L1 penalty to every BN
    weight: ``gamma <- sign(gamma) * max(|gamma| - penalty, 0)``. Channels the task does not need are driven
    to zero, so removing them costs little. The default penalty (0.01 per step) is sized for the short phases
    a search can afford: it outpaces what Adam near lr 1e-3 moves a weight per step, so within an epoch the
    smallest scales reach zero and the task's gradient mainly reorders the rest. Groups without a BN (the
    linear layers of a transformer) fall back to the L1 norm of their weights.
    """

    needs_task = True

    def __init__(self, penalty: float = 1e-2, fraction: float = 0.5, min_epochs: float = 0.5) -> None:
        self.penalty, self.fraction, self.min_epochs = penalty, fraction, min_epochs
        self._prepared = False
        self._scale = tp.importance.BNScaleImportance()
        self._fallback = tp.importance.MagnitudeImportance(p=1)

    def prepare(self, model: nn.Module, task: Task, epochs: float, on_step: Callable[[], None] | None = None) -> None:
        scales = [m.weight for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]

        def shrink() -> None:
            with torch.no_grad():
                for gamma in scales:
                    gamma.copy_(gamma.sign() * (gamma.abs() - self.penalty).clamp(min=0))
            if on_step is not None:
                on_step()

        if scales:
            _finetune_with_steps(task, model, max(self.fraction * epochs, self.min_epochs), shrink, "slim")
        self._prepared = True

    def __call__(self, group: tp.Group) -> torch.Tensor | None:
        if not self._prepared:
            raise ValueError(
                "criterion 'slim' needs its sparsity-training phase: call prepare(model, task, epochs) "
                "before pruning (run_trial does)"
            )
        scores = self._scale(group)
        return scores if scores is not None else self._fallback(group)


class TaylorCriterion(Criterion):
    """First-order Taylor importance as Molchanov et al. 2019 define it (TaylorFO, "Importance Estimation for
    Neural Network Pruning", CVPR 2019): the squared first-order change of the loss when a channel is removed,
    per minibatch, averaged over minibatches.

    `prepare` runs a short ``task.finetune`` (``epochs`` of its own, not the trial's). At every optimiser step
    (its ``on_step``, while ``.grad`` holds that step's gradient) it computes, for each output channel of every
    conv, linear and affine batch norm, the channel's contribution ``sum_s w_s * dL/dw_s`` over its parameters
    s (weight and bias), and adds its square to a running sum; the score is that sum over the number of steps.
    Squaring before averaging is the paper's choice: a channel whose contribution changes sign from batch to
    batch still matters, where squaring an averaged gradient (torch-pruning's ``TaylorImportance`` on a mean
    ``.grad``) cancels it. One vector per layer is kept, no gradients. ``w`` is the weights `prepare` started
    from, the model that is pruned (it restores them and every buffer afterwards, and clears ``.grad``): the
    phase's steps move them by a few learning-rate-sized steps only, and the weights each gradient was taken
    at would cost a second copy of the model. The loss is whatever the task trains with (labels, distillation).

    A group scores each channel by the sum of its out-channel members' scores, counting only the batch norms
    when the group has any. That is the paper's best variant, FO-BN, whose gate after the batch norm scores
    ``(gamma * dL/dgamma + beta * dL/dbeta)^2``; it is also the only member that says anything on a conv-BN
    chain, since training-mode batch norm makes the loss invariant to the scale of the conv's filter, whose
    contribution is therefore zero up to rounding. Groups without a batch norm (a transformer's linears) sum
    their convs' and linears' scores. Members coupled by a residual add or a concat add their squares rather
    than squaring their summed contributions (as torch-pruning's group criteria reduce): `prepare` sees layers,
    not the pruner's dependency graph. Attention heads are ranked by the mean of their channels' scores (the
    pruner's rule).
    """

    needs_task = True

    def __init__(self, epochs: float = 0.25) -> None:
        self.epochs = epochs
        self._prepared = False
        #: per layer, the mean over steps of its output channels' squared contributions
        self._scores: dict[nn.Module, torch.Tensor] = {}

    def prepare(self, model: nn.Module, task: Task, epochs: float, on_step: Callable[[], None] | None = None) -> None:
        start = {k: v.clone() for k, v in model.state_dict().items()}
        layers = {}  # module: (weight, bias, the weight and bias it started from)
        for name, module in model.named_modules():
            if isinstance(module, _TAYLOR_LAYERS) and isinstance(module.weight, nn.Parameter):
                if not getattr(module, "transposed", False):
                    prefix = f"{name}." if name else ""
                    layers[module] = (module.weight, module.bias, start[prefix + "weight"], start.get(prefix + "bias"))
        sums = {module: torch.zeros(len(weight), device=weight.device) for module, (weight, *_) in layers.items()}
        steps = 0

        def observe() -> None:
            nonlocal steps
            with torch.no_grad():
                for module, (weight, bias, w0, b0) in layers.items():
                    change = torch.zeros_like(sums[module])
                    if weight.grad is not None:
                        change += (w0 * weight.grad).reshape(len(w0), -1).sum(1)
                    if bias is not None and bias.grad is not None and b0 is not None:
                        change += b0 * bias.grad
                    sums[module] += change.square()
            steps += 1
            if on_step is not None:
                on_step()

        _finetune_with_steps(task, model, self.epochs, observe, "taylor")
        model.load_state_dict(start)
        model.zero_grad(set_to_none=True)
        self._scores = {module: total / max(steps, 1) for module, total in sums.items()}
        self._prepared = steps > 0

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor | None:
        if not self._prepared:
            raise ValueError(
                "criterion 'taylor' needs gradients: call prepare(model, task, epochs) before pruning (run_trial does)"
            )
        members = [
            (dep.target.module, idxs, group[i].root_idxs)
            for i, (dep, idxs) in enumerate(group)
            if dep.handler in _OUT_HANDLERS and dep.target.module in self._scores
        ]
        if not members:
            return None
        gates = [m for m in members if isinstance(m[0], nn.modules.batchnorm._BatchNorm)]
        score = torch.zeros(len(group[0].idxs))
        for module, idxs, root in gates or members:
            channels = self._scores[module].cpu()[torch.as_tensor(idxs, dtype=torch.long)]
            score.index_add_(0, torch.as_tensor(root, dtype=torch.long), channels)
        return score


def _finetune_with_steps(task: Task, model: nn.Module, epochs: float, on_step: Callable[[], None], name: str) -> None:
    if "on_step" not in inspect.signature(task.finetune).parameters:
        raise ValueError(
            f"criterion {name!r} needs a task whose finetune accepts on_step ({type(task).__name__}.finetune does not)"
        )
    task.finetune(model, epochs, seed=0, on_step=on_step)  # type: ignore[call-arg]


#: importance criteria by policy name; a factory returns a torch-pruning ``Importance`` (a `Criterion` when it
#: needs the task), a fresh one per trial.
CRITERIA: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "fpgm": tp.importance.FPGMImportance,
    "apoz": APoZCriterion,
    "mean_activation": MeanActivationCriterion,
    "slim": SlimCriterion,
    "taylor": TaylorCriterion,
    # scores by the L2 norm ADMM drove to zero; `structured_admm` trains towards it before `prune`
    "admm": ADMMChannelImportance,
}


def register_criterion(name: str, factory: Callable[[], tp.importance.Importance]) -> None:
    """Make a channel-importance criterion available as ``criterion: NAME`` in space files.

    `factory` returns a torch-pruning ``Importance``: called on a dependency group, it returns one score per
    channel, and the lowest-scoring channels are removed. Return a `Criterion` to see the task first (its
    `prepare`). Register it in the module that defines your task, which every worker imports before it prunes.
    """
    CRITERIA[name] = factory


def make_criterion(name: str) -> tp.importance.Importance:
    """A fresh importance object for the criterion `name`; `ValueError` names the known ones."""
    if name not in CRITERIA:
        raise ValueError(f"unknown pruning criterion {name!r}; known: {sorted(CRITERIA)}")
    return CRITERIA[name]()


def prepare_criterion(
    name: str, model: nn.Module, task: Task, epochs: float, on_step: Callable[[], None] | None = None
) -> tp.importance.Importance:
    """Build the criterion `name` and run its `prepare` phase on `model` when it needs the task."""
    criterion = make_criterion(name)
    if isinstance(criterion, Criterion) and criterion.needs_task:
        criterion.prepare(model, task, epochs, on_step)
    return criterion
