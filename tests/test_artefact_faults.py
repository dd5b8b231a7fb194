"""Faults of the artefact disk, with a real study (digits CNN, SQLite, inline executor): a damaged or missing
artefact is found by `verify`, `report` and `export` through its stored sha256; a full disk while a trial's
artefact is written fails that trial with the reason and leaves the store consistent."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import autocompress
from autocompress.store import ARTEFACT_DAMAGED, ARTEFACT_MISSING, ARTEFACT_OK, COMPLETE, FAILED
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
    damaged, missing = (study.store.artefact_file(trials[n].artefacts[0]) for n in (1, 2))
    original = flip_bytes(damaged)
    moved = missing.rename(missing.with_name(missing.name + ".away"))
    try:
        assert [c.status for c in study.verify()] == [ARTEFACT_OK, ARTEFACT_DAMAGED, ARTEFACT_MISSING]

        result = run_cli("verify", "ver", "--storage", study.store.url)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 2, result.stderr
        assert lines[0].startswith(
            f"autocompress: {damaged}: torchscript-model artefact of trial 1 is damaged (sha256 differs"
        )
        assert lines[1] == f"autocompress: {missing}: torchscript-model artefact of trial 2 is missing"
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


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A real 2 MB tmpfs (mount needs root; skipped with the reason otherwise), unmounted afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="acdisk"))
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(folder)], capture_output=True, text=True, check=False
    )
    if mount.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a 2 MB tmpfs here: {mount.stderr.strip() or mount.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
        folder.rmdir()


def fill(disk: Path) -> Path:
    """Write a filler file until the disk is full; returns it (delete it to make room)."""
    filler = disk / "filler"
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


def test_full_disk_fails_trials_then_stops_with_one_line_and_resume_meets_the_budget(
    small_disk, tmp_path, monkeypatch
) -> None:
    """Every artefact write fails on a full 2 MB tmpfs: three trials are failed with the OS's reason, no temp file
    or artefact row is left, the search stops with one line (exit 1); after making room, resume meets the budget."""
    monkeypatch.setenv("AUTOCOMPRESS_ARTIFACTS", str(small_disk))
    (small_disk / "full").mkdir()  # the study folder (and its log) exist before the disk fills
    filler = fill(small_disk)
    space = tmp_path / "digits.yaml"
    space.write_text(FAST_SPACE)
    storage = f"sqlite:///{tmp_path / 'store.db'}"
    search = ["search", str(space), "--study", "full", "--storage", storage, "--trials", "4", "--executor", "inline"]
    result = run_cli(*search, "-q")
    assert result.returncode == 1
    stopped = [line for line in result.stderr.splitlines() if line.startswith("autocompress:")]
    assert stopped == [
        "autocompress: stopped: 3 artefact writes in a row failed (last: artefact write failed: [Errno 28] No space "
        f"left on device); make room under {small_disk} and run 'autocompress resume full'"
    ], result.stderr
    study = autocompress.load_study("full", storage)
    trials = study.trials()
    assert [t.state for t in trials] == [FAILED] * 3
    assert all(t.error == "artefact write failed: [Errno 28] No space left on device" for t in trials)
    assert all(not t.artefacts and not t.metrics for t in trials)
    assert sorted(p.name for p in (small_disk / "full").iterdir()) == ["study.log"]  # no temp file left
    assert study.record.status == "interrupted" and "3 artefact writes in a row failed" in study.record.stop_reason

    filler.unlink()
    result = run_cli("resume", "full", "--storage", storage, "--executor", "inline", "-q")
    assert result.returncode == 0, result.stderr
    trials = study.trials()
    assert [t.state for t in trials] == [FAILED, FAILED, FAILED, COMPLETE]
    assert study.record.status == "finished" and study.record.spent["trials"] == 4
    assert [c.status for c in study.verify()] == [ARTEFACT_OK]


def test_one_failed_artefact_write_fails_its_trial_and_the_study_goes_on(tmp_path, monkeypatch) -> None:
    """An I/O error injected at the OS-level write of trial 0's artefact: that trial fails with the reason and
    its temp file is removed; the next trial completes and the study finishes its budget."""
    real_write = os.write
    failed_once: list[str] = []

    def write(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        target = os.readlink(f"/proc/self/fd/{fd}")
        if ".pt.tmp" in target and not failed_once:
            failed_once.append(target)
            raise OSError(5, "Input/output error")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    monkeypatch.setenv("AUTOCOMPRESS_ARTIFACTS", str(tmp_path / "art"))
    space = tmp_path / "digits.yaml"
    space.write_text(FAST_SPACE)
    study = autocompress.search(
        space, study="eio", storage=f"sqlite:///{tmp_path / 'store.db'}", strategy="random", trials=2, executor="inline"
    )
    trials = study.trials()
    assert [t.state for t in trials] == [FAILED, COMPLETE]
    assert trials[0].error == "artefact write failed: [Errno 5] Input/output error" and not trials[0].artefacts
    assert failed_once and not Path(failed_once[0]).exists()
    assert sorted(p.name for p in (tmp_path / "art" / "eio").iterdir()) == ["study.log", "trial-1-torchscript-model.pt"]
    assert study.record.status == "finished" and study.record.spent == {**study.record.spent, "trials": 2, "failed": 1}
    assert [c.status for c in study.verify()] == [ARTEFACT_OK]
