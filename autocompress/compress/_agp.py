"""`agp`: automated gradual pruning (Zhu & Gupta, 2017), the cubic sparsity schedule over fine-tuning steps."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from autocompress.compress._sparse_base import Masks, Trainer, UnstructuredPruner, layer_weights


def cubic_sparsity(final: float, step: int, total: int) -> float:
    """Zhu & Gupta's schedule from 0 at step 0 to `final` at step `total`: ``final * (1 - (1 - t/T)^3)``."""
    if total <= 0 or step >= total:
        return final
    return final * (1 - (1 - step / total) ** 3)


class AGPPruner(UnstructuredPruner):
    """Raise each layer's sparsity along the cubic schedule during the first `ramp` of the fine-tuning steps,
    re-computing the magnitude masks every `every` steps (pruned weights are zero, so they stay pruned), then
    fine-tune the rest of the budget at the final sparsity.

    Needs the trainer's step count (`Trainer.steps`). ``history`` holds (step, measured sparsity per layer)
    after every mask update, for tests and reports.
    """

    name = "agp"

    def __init__(self, every: int = 10, ramp: float = 0.75) -> None:
        self.every = every
        self.ramp = ramp
        self.history: list[tuple[int, dict[str, float]]] = []

    def run(self, model: nn.Module, targets: Mapping[str, float], trainer: Trainer, epochs: float) -> None:
        masks = Masks(layer_weights(model, targets))
        ramp_epochs = epochs * self.ramp
        total = trainer.steps(ramp_epochs) if ramp_epochs > 0 else 0
        if total is None:
            raise ValueError("pruner 'agp' needs a task whose finetune_steps(epochs) gives the step count")
        step = 0

        def on_step() -> None:
            nonlocal step
            step += 1
            if step % self.every == 0 or step == total:
                masks.prune({name: cubic_sparsity(final, step, total) for name, final in targets.items()})
                self.history.append((step, masks.sparsity()))
            else:
                masks.apply()

        trainer.train(model, ramp_epochs, on_step)
        masks.prune(targets)  # the exact final sparsity, also when the ramp took no step
        trainer.train(model, epochs - ramp_epochs, masks.apply)
