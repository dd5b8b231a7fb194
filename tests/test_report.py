"""The HTML report, built from a real study (digits CNN, SQLite, inline executor, two trials failing on purpose)
and real per-layer sensitivity numbers, opened in a real headless Chromium: every image loads, nothing logs an
error, and the page says what the store holds. The report only reads: the store file is byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
import html
from pathlib import Path

import pytest
from PIL import Image

import autocompress
from autocompress.errors import UserError
from tests.browser import chromium, render
from tests.conftest import FAST_SPACE, run_cli

pytestmark = pytest.mark.slow

#: FAST_SPACE with a failing task and looser constraints, so that half-epoch trials can be feasible
SPACE = FAST_SPACE.replace("experiments.tasks.digits:task", "tests.faulty_task:raising").replace(
    "max_accuracy_drop: 0.02, min_speedup: 1.2", "max_accuracy_drop: 0.5, min_speedup: 1.05"
)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> autocompress.Study:
    """Five trials of a real search; trials 1 and 3 raise in fine-tuning (tests/faulty_task.py)."""
    folder = tmp_path_factory.mktemp("report-study")
    space = folder / "digits-faulty.yaml"
    space.write_text(SPACE)
    result = autocompress.search(
        space,
        study="rep",
        storage=f"sqlite:///{folder / 'store.db'}",
        strategy="random",
        trials=5,
        workers=1,
        executor="inline",
    )
    # real numbers from the sensitivity command's API, where the report looks for them by default
    autocompress.sensitivity(space, result.store.artifacts_root / "rep", sparsities=(0.25, 0.5, 0.75))
    return result


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_report_command_writes_a_page_from_the_store_and_changes_nothing(study, tmp_path) -> None:
    db = Path(study.store.url.removeprefix("sqlite:///"))
    before = _sha256(db)
    result = run_cli("report", "rep", "--out", str(tmp_path / "out"), "--storage", study.store.url)
    assert result.returncode == 0, result.stderr
    assert _sha256(db) == before  # a reader: the store is byte-for-byte unchanged
    verdict = study.versus_uniform()  # random per-layer policies: no uniform recipe to compare with
    assert verdict.beats is None and verdict.line in result.stdout.splitlines()

    page = (tmp_path / "out" / "index.html").read_text()
    for name in ("pareto", "policy", "progress", "sensitivity"):
        assert (tmp_path / "out" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'<h2 id="{name}">' in page
    trials = {t.number: t for t in study.trials()}
    assert [trials[n].state for n in range(5)] == ["complete", "failed", "complete", "failed", "complete"]
    for number in (1, 3):  # every failure with its stored reason
        assert f"RuntimeError: injected failure in trial seed {number}" in page
    reference = f"reference point accuracy 0, latency_ms {study.record.baseline['latency_ms']:g}"
    assert "Failures (2)" in page and reference in page
    board = study.leaderboard()
    feasible = [row for row in board if row["feasible"]]
    closest_note = "No trial meets the constraints. The closest is trial"
    assert (closest_note in page) is (not feasible)
    assert f'<p id="versus-uniform" class="note"><b>Versus uniform:</b> {html.escape(verdict.line)}</p>' in page
    assert page.count("<tr>") >= 1 + 3 + 2  # leaderboard header + 3 finished trials + 2 failures, at least


def test_report_renders_in_headless_chromium(study, tmp_path) -> None:
    if chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; 'make test' does it as root)")
    page = study.report(tmp_path / "out")
    shown = render(page, tmp_path / "screenshot.png", tmp_path / "profile")
    assert shown.title == "autocompress report: rep"
    assert [i["alt"] for i in shown.images] == [
        "Pareto front: accuracy vs latency_ms",
        "Per-layer policy of the top trials",
        "Best so far and hypervolume vs trials",
        "Per-layer sensitivity",
    ]
    assert all(i["complete"] and i["width"] > 300 and i["height"] > 200 for i in shown.images), shown.images
    assert shown.errors == []
    with Image.open(shown.screenshot) as shot:
        assert shot.width == 1200 and shot.height > 2000  # the whole page, plots included
        colours = shot.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 200  # plots were painted, not a blank page


def test_browser_check_catches_a_broken_page(tmp_path) -> None:
    """The check above can fail: a missing image and a console error are both seen."""
    if chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; 'make test' does it as root)")
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><head><title>bad</title><link rel="icon" href="data:,"></head><body>'
        '<img src="missing.png" alt="gone"><script>console.error("boom")</script></body></html>'
    )
    shown = render(bad, tmp_path / "bad.png", tmp_path / "profile")
    assert shown.images == [{"alt": "gone", "complete": True, "width": 0, "height": 0}]
    assert any("missing.png" in e for e in shown.errors) and any("boom" in e for e in shown.errors)


def test_bad_sensitivity_table_is_a_user_error(study, tmp_path) -> None:
    bad = tmp_path / "sens.csv"
    bad.write_text("layer,sparsity\nstem.0,0.5\n")
    with pytest.raises(UserError, match="missing column.*accuracy"):
        study.report(tmp_path / "out", sensitivity=bad)
    bad.write_text("layer,sparsity,accuracy\nstem.0,half,0.9\n")
    with pytest.raises(UserError, match=r"sens.csv:2: sparsity and accuracy must be numbers"):
        study.report(tmp_path / "out", sensitivity=bad)
    with pytest.raises(UserError, match="--sensitivity"):
        study.report(tmp_path / "out", sensitivity=tmp_path / "nowhere.csv")
    result = run_cli("report", "nope", "--out", str(tmp_path / "out2"), "--storage", study.store.url)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "study 'nope'" in result.stderr
    assert not (tmp_path / "out2").exists()
