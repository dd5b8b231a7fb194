"""Search strategies behind one `Controller` contract; one private module per strategy."""

from __future__ import annotations

from autocompress.errors import UserError
from autocompress.search._base import Controller, Outcome, Proposal
from autocompress.search._optuna import NSGA2Controller, TPEController
from autocompress.search._random import RandomController
from autocompress.space import Space

STRATEGIES: dict[str, type[Controller]] = {
    cls.name: cls for cls in (TPEController, NSGA2Controller, RandomController)
}


def make_controller(name: str, space: Space, seed: int = 0) -> Controller:
    if name not in STRATEGIES:
        raise UserError("--strategy", f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name](space, seed)


__all__ = [
    "STRATEGIES",
    "Controller",
    "NSGA2Controller",
    "Outcome",
    "Proposal",
    "RandomController",
    "TPEController",
    "make_controller",
]
