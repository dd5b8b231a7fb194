"""Faults of the artefact disk, with a real study (digits CNN, SQLite, inline executor): a damaged or missing
artefact is found by `verify`, `report` and `export` through its stored sha256; a full disk while a trial's
artefact is written fails that trial with the reason and leaves the store consistent."""

from __future__ import annotations

from pathlib import Path

import pytest

import autocompress
from autocompress.store import ARTEFACT_DAMAGED, ARTEFACT_MISSING, ARTEFACT_OK
from tests.conftest import FAST_SPACE, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> autocompress.Study:
    folder = tmp_path_factory.mktemp("verify-study")
    space = folder / "digits.yaml"
    space.write_text(FAST_SPACE)
    return autocompress.search(
        space,
        study="ver",
        storage=f"sqlite:///{folder / 'store.db'}",
        strategy="random",
        trials=3,
        executor="inline",
    )


def flip_bytes(path: Path) -> bytes:
    """Invert 16 bytes in the middle of the file (same size, other content); returns the original bytes."""
    data = path.read_bytes()
    middle = len(data) // 2
    path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :])
    return data


def test_verify_finds_every_artefact_intact_after_a_search(study) -> None:
    checks = study.verify()
    assert [c.trial for c in checks] == [0, 1, 2]
    assert all(c.status == ARTEFACT_OK and c.problem == "" for c in checks)
    result = run_cli("verify", "ver", "--storage", study.store.url)
    assert result.returncode == 0, result.stderr
    assert "3 of 3 artefacts of 3 trials match their sha256" in result.stdout


def test_damaged_and_missing_artefacts_are_named_by_verify_report_and_export(study, tmp_path) -> None:
    trials = {t.number: t for t in study.trials()}
    damaged, missing = Path(trials[1].artefacts[0].path), Path(trials[2].artefacts[0].path)
    original = flip_bytes(damaged)
    moved = missing.rename(missing.with_name(missing.name + ".away"))
    try:
        assert [c.status for c in study.verify()] == [ARTEFACT_OK, ARTEFACT_DAMAGED, ARTEFACT_MISSING]

        result = run_cli("verify", "ver", "--storage", study.store.url)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 2, result.stderr
        assert lines[0].startswith(f"autocompress: {damaged}: model artefact of trial 1 is damaged (sha256 differs")
        assert lines[1] == f"autocompress: {missing}: model artefact of trial 2 is missing"
        assert "1 of 3 artefacts of 3 trials match their sha256" in result.stdout

        result = run_cli("export", "ver", "--trial", "1", "--out", str(tmp_path / "exp"), "--storage", study.store.url)
        assert result.returncode == 2
        assert f"{damaged}: artefact of trial 1 fails its sha256 check" in result.stderr
        assert not (tmp_path / "exp" / "model.pt").exists()

        page = study.report(tmp_path / "report").read_text()
        assert "2 of 3 artefacts of the trials above fail their sha256 check" in page
        assert "autocompress verify ver" in page and str(damaged) in page and str(missing) in page
    finally:
        damaged.write_bytes(original)
        moved.rename(missing)
    assert all(c.status == ARTEFACT_OK for c in study.verify())
    assert "The 3 artefacts of the trials above match their stored sha256" in study.report(tmp_path / "r2").read_text()


def test_verify_of_an_unknown_study_exits_2(study) -> None:
    result = run_cli("verify", "nope", "--storage", study.store.url)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"autocompress: error: study 'nope': not found in {study.store.url}; known: ver"
    ]
