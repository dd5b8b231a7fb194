"""Warm start (issue #17 item 4): a new study's controller is told an earlier study's finished trials before its
first ask, judged by the new study's constraints; real digits trials in a real SQLite store."""

from __future__ import annotations

from pathlib import Path

import pytest

import autocompress
from autocompress.errors import UserError
from autocompress.space import Policy, Space
from autocompress.store import COMPLETE, StudyStore
from autocompress.study import _controller_from_state
from tests.conftest import FAST_SPACE, run_cli

#: the earlier study: 0.5 epochs, max accuracy drop 0.02, min speedup 1.2
TIGHTER = FAST_SPACE.replace("min_speedup: 1.2", "min_speedup: 1.6")
NARROWER = FAST_SPACE.replace("channel_sparsity: [0.0, 0.25, 0.5]", "channel_sparsity: [0.0, 0.25]")


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> tuple[str, Path]:
    """A finished random-search study of 4 trials (storage URL, folder)."""
    folder = tmp_path_factory.mktemp("warm")
    (folder / "a.yaml").write_text(FAST_SPACE)
    storage = f"sqlite:///{folder / 's.db'}"
    autocompress.search(folder / "a.yaml", study="a", storage=storage, strategy="random", trials=4, executor="inline")
    return storage, folder


def _space(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def _warm_started(earlier: tuple[str, Path], name: str, text: str, strategy: str) -> autocompress.Study:
    """A one-trial study `name` of space `text`, warm-started from study "a"."""
    storage, folder = earlier
    space = _space(folder, name, text)
    return autocompress.search(
        space, study=name, storage=storage, strategy=strategy, trials=1, executor="inline", warm_start_from="a"
    )


@pytest.mark.slow
def test_warm_start_replays_the_earlier_studys_trials_into_the_new_controller(earlier) -> None:
    old = [t for t in StudyStore(earlier[0]).trials("a") if t.state == COMPLETE]
    study = _warm_started(earlier, "tight", TIGHTER, "tpe")
    record = study.record
    assert record.spent["warm_start"] == {"study": "a", "replayed": len(old), "skipped": {}}
    assert [t.number for t in study.trials()] == [0]  # told to the controller, not copied, not in the budget
    observed = [e for e in record.controller_state["events"] if e[0] == "observe"]
    assert [Policy.from_dict(e[1]) for e in observed] == [Policy.from_dict(t.policy) for t in old]
    assert all(e[2]["values"]["accuracy"] == t.metrics["accuracy"] for e, t in zip(observed, old, strict=True))
    # feasibility is judged by the new study's min_speedup 1.6, not by the 1.2 the trials ran under
    for event, trial in zip(observed, old, strict=True):
        assert event[2]["violations"]["min_speedup"] == pytest.approx(1 - trial.metrics["speedup"] / 1.6)
    # the Optuna sampler holds them as finished trials, before the study's own, also after a resume's rebuild
    rebuilt = _controller_from_state("tpe", Space.from_dict(record.space), 0, record.controller_state)
    trials = rebuilt._study.get_trials()  # type: ignore[attr-defined]
    assert [t.values[0] for t in trials[: len(old)]] == [t.metrics["accuracy"] for t in old]
    assert [t.constraints for t in trials[: len(old)]] == [e[2]["violations"] for e in observed]


@pytest.mark.slow
def test_trials_outside_the_new_space_are_skipped_and_counted(earlier) -> None:
    old = [Policy.from_dict(t.policy) for t in StudyStore(earlier[0]).trials("a")]
    outside = sum(any(s.channel_sparsity == 0.5 for _, s in p) for p in old)
    assert 0 < outside < len(old)  # the seed gives both kinds
    study = _warm_started(earlier, "narrow", NARROWER, "anneal")
    warm = study.record.spent["warm_start"]
    assert warm["skipped"] == {"outside this space": outside} and warm["replayed"] == len(old) - outside


def test_warm_start_from_another_task_or_no_study_is_refused(tmp_path) -> None:
    storage = f"sqlite:///{tmp_path / 's.db'}"
    store = StudyStore(storage, create=True)
    store.create_study(
        name="other",
        task="tests.faulty_task:raising",
        strategy="random",
        seed=0,
        space={},
        space_text="",
        budgets={},
        baseline={},
        controller_state={},
    )
    space = _space(tmp_path, "s", FAST_SPACE)
    with pytest.raises(UserError) as refused:
        autocompress.search(space, study="b", storage=storage, warm_start_from="other", executor="inline")
    assert refused.value.where == "--warm-start other" and "same task" in refused.value.message
    result = run_cli("search", str(space), "--storage", storage, "--warm-start", "nothere", "--executor", "inline")
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "autocompress: error: --warm-start nothere: no study of that name in this storage; see 'autocompress studies'"
    ]
    assert not store.study_exists("b")
