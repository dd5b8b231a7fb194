"""docs/extending.md and the README's extension example work as written: registered extensions run a search."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import autocompress
from tests.conftest import FAST_SPACE, ROOT


def code_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_doc_examples_are_the_tested_module() -> None:
    module = (ROOT / "tests" / "custom_extensions.py").read_text()
    readme = [block for block in code_blocks(ROOT / "README.md") if "register_" in block]
    assert readme, "the README's extension example is gone"
    for block in code_blocks(ROOT / "docs" / "extending.md") + readme:
        for line in block.strip().splitlines():
            if line.strip() and not line.startswith(("import", "from")):
                assert line in module, line


@pytest.mark.slow
def test_custom_criterion_and_strategy_run_a_search_and_resume(tmp_path) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(
        FAST_SPACE.replace("experiments.tasks.digits:task", "tests.custom_extensions:task").replace(
            "weight_bits: [8, 32]}", "weight_bits: [8, 32], criterion: random}"
        )
        + "strategy: {greedy: {start_step: 1}}\n"
    )
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = autocompress.search(space, study="ext", storage=storage, strategy="greedy", trials=2, executor="inline")
    first = study.trials()[0]
    assert first.policy["criterion"] == "random"
    assert {s["channel_sparsity"] for n, s in first.policy["layers"].items() if n == "down.0"} == {0.25}
    study = autocompress.resume("ext", storage=storage, trials=3, executor="inline")
    assert [t.number for t in study.trials()] == [0, 1, 2] and study.record.strategy == "greedy"
