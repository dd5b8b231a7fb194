"""Search strategies behind one `Controller` contract; one private module per strategy."""

from __future__ import annotations

from autocompress.errors import UserError
from autocompress.space import Space
from autocompress.strategies._amc import AMCController
from autocompress.strategies._anneal import AnnealController
from autocompress.strategies._asha import ASHAController
from autocompress.strategies._autocompress import AutoCompressController
from autocompress.strategies._base import Controller, Outcome, Proposal, scalar_score
from autocompress.strategies._haq import HAQController
from autocompress.strategies._netadapt import NetAdaptController
from autocompress.strategies._optuna import NSGA2Controller, TPEController
from autocompress.strategies._random import RandomController
from autocompress.strategies._uniform import UniformController

STRATEGIES: dict[str, type[Controller]] = {
    cls.name: cls
    for cls in (
        TPEController,
        NSGA2Controller,
        AnnealController,
        NetAdaptController,
        AMCController,
        HAQController,
        AutoCompressController,
        RandomController,
        UniformController,
    )
}


def register_strategy(cls: type[Controller]) -> type[Controller]:
    """Make a `Controller` subclass available as ``--strategy cls.name`` (usable as a class decorator).

    Register it in the module that defines your task: that module is imported wherever the study runs or
    resumes, so the strategy is known there too.
    """
    if not (isinstance(cls, type) and issubclass(cls, Controller)) or not getattr(cls, "name", ""):
        raise TypeError("a strategy is a Controller subclass with a class attribute 'name'")
    STRATEGIES[cls.name] = cls
    return cls


def make_controller(name: str, space: Space, seed: int = 0) -> Controller:
    """The strategy `name`, wrapped in ASHA when the space has more than one fine-tune rung."""
    if name not in STRATEGIES:
        raise UserError("--strategy", f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    controller = STRATEGIES[name](space, seed)
    if len(space.finetune_epochs) > 1 and not controller.manages_fidelity:
        return ASHAController(controller, eta=space.eta)
    return controller


__all__ = [
    "STRATEGIES",
    "AMCController",
    "ASHAController",
    "AnnealController",
    "AutoCompressController",
    "Controller",
    "HAQController",
    "NSGA2Controller",
    "NetAdaptController",
    "Outcome",
    "Proposal",
    "RandomController",
    "TPEController",
    "UniformController",
    "make_controller",
    "register_strategy",
    "scalar_score",
]
