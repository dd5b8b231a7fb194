"""`autocompress leaderboard` formats and filters, run in-process through the CLI entry point."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from autocompress import cli
from autocompress.store import StudyStore
from tests.store.test_store_suite import synthetic_study


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as stop:
        cli.main([*args])
        raise SystemExit(0)
    captured = capsys.readouterr()
    return int(stop.value.code or 0), captured.out, captured.err


def test_leaderboard_formats_and_filters(store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = StudyStore(store_url, create=True)
    synthetic_study(store, 40)
    store.close()
    code, out, _ = run(capsys, "leaderboard", "s", "--storage", store_url, "--format", "json")
    board = json.loads(out)
    assert code == 0 and len(board) == 40 and [r["rank"] for r in board] == list(range(1, 41))

    _, out, _ = run(capsys, "leaderboard", "s", "--storage", store_url, "--format", "csv", "--top", "5")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [int(r["trial"]) for r in rows] == [r["trial"] for r in board[:5]]

    _, out, _ = run(capsys, "leaderboard", "s", "--storage", store_url, "--format", "json", "--feasible-only")
    assert json.loads(out) == [r for r in board if r["feasible"]]
    _, out, _ = run(capsys, "leaderboard", "s", "--storage", store_url, "--format", "json", "--pareto")
    assert json.loads(out) == [r for r in board if r["pareto"]] and json.loads(out)

    target = tmp_path / "board.parquet"
    code, _, err = run(capsys, "leaderboard", "s", "--storage", store_url, "--format", "parquet", "--out", str(target))
    assert code == 0 and "40 rows" in err
    frame = pd.read_parquet(target)
    assert list(frame["trial"]) == [r["trial"] for r in board] and list(frame.columns) == list(board[0])

    code, out, err = run(capsys, "leaderboard", "s", "--storage", store_url, "--format", "parquet")
    assert code == 2 and out == "" and err.count("\n") == 1 and "--out" in err
