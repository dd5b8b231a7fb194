"""`autocompress strategies` lists every registered strategy with what it searches and its knobs."""

from __future__ import annotations

import pytest

from autocompress.cli import main
from autocompress.strategies import STRATEGIES


def test_strategies_lists_every_strategy_with_its_knobs(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    main(["strategies"])
    out = capsys.readouterr().out
    for name in ("random", "uniform", "tpe", "nsga2", "anneal", "netadapt", "amc", "haq", "autocompress"):
        assert name in STRATEGIES
        assert f"│ {name} " in out
    for knob in ("target_macs", "target_latency", "latency_step", "cooling", "warmup_episodes"):
        assert knob in out
