"""`export --prefer`: which trial of the feasible Pareto front is exported when none is named."""

from __future__ import annotations

import pytest

from autocompress.errors import UserError
from autocompress.export import _choose
from autocompress.store import preferred
from tests.test_report_objectives import write_study

#: (accuracy, batch-32 latency): a front of three, the middle one balanced; one dominated trial
FRONT = [(0.88, 5.0), (0.85, 4.0), (0.87, 4.4), (0.80, 6.0)]


@pytest.mark.parametrize(("prefer", "trial"), [("accurate", 0), ("fast", 1), ("knee", 2)])
def test_prefer_picks_the_most_accurate_the_fastest_or_the_knee_of_the_feasible_front(tmp_path, prefer, trial) -> None:
    study = write_study(tmp_path, FRONT)
    board = study.leaderboard()
    assert [r["trial"] for r in board if r["pareto"]] == [0, 2, 1]  # the front, by the first objective
    assert _choose(study, board, prefer, allow_infeasible=False)["trial"] == trial


def test_knee_is_nearest_the_ideal_once_each_objective_is_scaled_over_the_front() -> None:
    # scaled: (1, 0), (0, 1), (2/3, 0.6): distances 1, 1 and 0.53 from (1, 1); ties go to the earlier point
    assert preferred([(0.88, -5.0), (0.85, -4.0), (0.87, -4.4)], "knee") == 2
    assert preferred([(0.88, -5.0), (0.85, -4.0)], "knee") == 0
    assert preferred([(0.9,)], "fast") == 0  # one objective: every preference is its best


def test_an_unknown_preference_names_the_known_ones(tmp_path) -> None:
    study = write_study(tmp_path, FRONT)
    with pytest.raises(UserError, match=r"--prefer quick: unknown preference; choose one of knee, accurate, fast"):
        _choose(study, study.leaderboard(), "quick", allow_infeasible=False)
