"""The bad-input corpus: every bad input exits 2 with one line on stderr that names the place and what would
be right, no traceback, and leaves the study store byte-for-byte unchanged."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import autocompress
from autocompress.cli import main
from autocompress.store import StudyStore
from tests.conftest import FAST_SPACE, cli_env, run_cli

GOOD = FAST_SPACE


@dataclass
class Case:
    id: str
    argv: Callable[[Path], list[str]]
    expect: str
    space: str | None = None  # the space file's text, written to WORK/space.yaml
    setup: Callable[[Path], None] = field(default=lambda work: None)


def search(*extra: str) -> Callable[[Path], list[str]]:
    return lambda w: [
        "search",
        str(w / "space.yaml"),
        "--storage",
        f"sqlite:///{w / 'store.db'}",
        "--study",
        "new",
        "--executor",
        "inline",
        *extra,
    ]


def on_store(*args: str) -> Callable[[Path], list[str]]:
    return lambda w: [*args, "--storage", f"sqlite:///{w / 'store.db'}"]


def sensitivity(*extra: str) -> Callable[[Path], list[str]]:
    return lambda w: ["sensitivity", str(w / "space.yaml"), "--out", str(w / "sensitivity"), *extra]


def rewrite_history(work: Path) -> None:
    """Change the stored fingerprint of the study's last ask, as if another version of its strategy had proposed it."""
    store = StudyStore(f"sqlite:///{work / 'store.db'}")
    state = store.controller_state("done")
    events = [list(e) for e in state["events"]]
    last = max(i for i, e in enumerate(events) if e[0] == "ask")
    events[last][2] = "0" * 16
    store.update_study("done", controller_state={**state, "events": events})
    store.close()


def tamper(work: Path) -> None:
    """Corrupt every trial's artefact, so whichever trial export picks fails its sha256 check."""
    store = StudyStore(f"sqlite:///{work / 'store.db'}")
    artefacts = [store.artefact_file(a) for trial in store.trials("done") for a in trial.artefacts]
    store.close()
    for artefact in artefacts:
        artefact.write_bytes(artefact.read_bytes()[:-10] + b"0123456789")


def add_empty_study(work: Path) -> None:
    """A study with no finished trial (the store is snapshot after this setup)."""
    store = StudyStore(f"sqlite:///{work / 'store.db'}")
    space = store.study("done").space
    store.create_study(
        name="empty",
        task="experiments.tasks.digits:task",
        strategy="tpe",
        seed=0,
        space=space,
        space_text="",
        budgets={},
        baseline={},
        controller_state={},
    )
    store.close()


def sql(path: Path, statement: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute(statement)
    conn.commit()
    conn.close()  # the last connection to close folds the WAL into the file, before the snapshot


def foreign_db(work: Path) -> None:
    (work / "store.db").unlink()
    sql(work / "foreign.db", "CREATE TABLE customers (id INTEGER)")


def newer_schema(work: Path) -> None:
    sql(work / "store.db", "UPDATE alembic_version SET version_num = '9999'")


CASES = [
    Case("malformed-yaml", search(), "malformed YAML", space="task: [unclosed\n"),
    Case("not-a-mapping", search(), "must be a YAML mapping", space="- a\n- b\n"),
    Case("unknown-key", search(), "did you mean 'objectives'", space=GOOD.replace("objectives:", "objectivs:")),
    Case(
        "unknown-nested-key",
        search(),
        "did you mean 'max_accuracy_drop'",
        space=GOOD.replace("max_accuracy_drop", "max_acuracy_drop"),
    ),
    Case(
        "unknown-constraint",
        search(),
        "constraints.max_joules: unknown key 'max_joules'; allowed: max_accuracy_drop, min_speedup,",
        space=GOOD.replace("max_accuracy_drop", "max_joules"),
    ),
    Case(
        "wrong-type", search(), "constraints.min_speedup", space=GOOD.replace("min_speedup: 1.2", "min_speedup: fast")
    ),
    Case("sparsity-too-big", search(), "outside [0, 1)", space=GOOD.replace("[0.0, 0.25, 0.5]", "[0.0, 1.0]")),
    Case("sparsity-negative", search(), "outside [0, 1)", space=GOOD.replace("[0.0, 0.25, 0.5]", "[-0.1]")),
    Case(
        "unknown-quantizer",
        search(),
        "unknown quantizer 'xnor'",
        space=GOOD.replace("weight_bits: [8, 32]}", "weight_bits: [8, 32], quantizer: xnor}"),
    ),
    Case(
        "unsupported-bits", search(), "not supported", space=GOOD.replace("weight_bits: [8, 32]", "weight_bits: [16]")
    ),
    Case(
        "weight-sparsity-too-big",
        search(),
        "defaults.weight_sparsity: Value error, 1.0 is outside [0, 1)",
        space=GOOD.replace("weight_bits: [8, 32]}", "weight_bits: [8, 32], weight_sparsity: [0.5, 1.0]}"),
    ),
    Case(
        "activation-bits-unsupported",
        search(),
        "16 activation bits is not supported",
        space=GOOD.replace("weight_bits: [8, 32]}", "weight_bits: [8, 32], activation_bits: [16]}"),
    ),
    Case(
        "one-bit-activations-without-bnn",
        search(),
        "defaults.activation_bits: 1 bit needs defaults.quantizer 'bnn'",
        space=GOOD.replace("weight_bits: [8, 32]}", "weight_bits: [8, 32], activation_bits: [1, 8]}"),
    ),
    Case(
        "unknown-pruner",
        search(),
        "defaults.pruner: unknown pruner 'obs'; allowed: level, agp, lottery, lottery_trained, admm",
        space=GOOD.replace("weight_bits: [8, 32]}", "weight_bits: [8, 32], pruner: obs}"),
    ),
    Case(
        "pattern-matches-nothing",
        search(),
        "matches no layer",
        space=GOOD + "layers: {'encoder.*': {weight_bits: [8]}}\n",
    ),
    Case(
        "unprunable-layer", search(), "'fc' cannot be pruned", space=GOOD + "layers: {fc: {channel_sparsity: [0.5]}}\n"
    ),
    Case(
        "task-module-missing",
        search(),
        "cannot import module",
        space=GOOD.replace("experiments.tasks.digits:task", "experiments.nope:task"),
    ),
    Case(
        "task-attribute-missing",
        search(),
        "has no attribute 'nope'",
        space=GOOD.replace("experiments.tasks.digits:task", "experiments.tasks.digits:nope"),
    ),
    Case(
        "task-not-import-path",
        search(),
        "not an import path",
        space=GOOD.replace("experiments.tasks.digits:task", "digits"),
    ),
    Case(
        "task-not-a-task",
        search(),
        "is not a Task and calling it to build one failed",
        space=GOOD.replace("experiments.tasks.digits:task", "experiments.models:BasicBlock"),
    ),
    Case(
        "space-file-missing",
        lambda w: ["search", str(w / "missing.yaml"), "--storage", f"sqlite:///{w / 'store.db'}"],
        "cannot read space file",
    ),
    Case("fidelity-not-ascending", search(), "ascending", space=GOOD.replace("[0.5]", "[3, 1]")),
    Case("unknown-objective", search(), "objectives", space=GOOD.replace("latency_ms: min", "latncy: min")),
    Case("bad-direction", search(), "objectives", space=GOOD.replace("accuracy: max", "accuracy: up")),
    Case("impossible-speedup", search(), "min_speedup", space=GOOD.replace("min_speedup: 1.2", "min_speedup: 1000")),
    Case(
        "impossible-speedup-b32",
        search(),
        "constraints.min_speedup_b32",
        space=GOOD.replace("min_speedup: 1.2", "min_speedup_b32: 1000"),
    ),
    Case("repeats-too-few", search(), "measure.repeats", space=GOOD.replace("repeats: 5", "repeats: 1")),
    Case("unknown-strategy", search("--strategy", "genetic"), "unknown strategy 'genetic'", space=GOOD),
    Case("zero-trials", search("--trials", "0"), "--trials", space=GOOD),
    Case("negative-trials", search("--trials", "-3"), "--trials", space=GOOD),
    Case("zero-time", search("--time", "0"), "--time", space=GOOD),
    Case("garbled-time", search("--time", "soon"), "--time", space=GOOD),
    Case("garbled-trial-memory", search("--trial-memory", "lots"), "--trial-memory", space=GOOD),
    Case("zero-store-retry", search("--store-retry", "0"), "--store-retry", space=GOOD),
    Case("verify-unknown-study", on_store("verify", "nope"), "study 'nope'"),
    Case("zero-workers", search("--workers", "0"), "--workers", space=GOOD),
    Case("negative-cpu-hours", search("--cpu-hours", "-1"), "--cpu-hours", space=GOOD),
    Case("bad-on-budget", search("--on-budget", "later"), "--on-budget", space=GOOD),
    Case("zero-trial-timeout", search("--trial-timeout", "0"), "--trial-timeout", space=GOOD),
    Case("non-integer-flag", search("--trials", "many"), "--trials", space=GOOD),
    Case("bad-storage-url", lambda w: ["studies", "--storage", "not a url"], "is not a database URL"),
    Case("unknown-storage-driver", lambda w: ["studies", "--storage", "nosuchdb://x/y"], "--storage"),
    Case(
        "unreachable-postgres",
        lambda w: ["studies", "--storage", "postgresql+psycopg://postgres@127.0.0.1:1/test"],
        "cannot connect",
    ),
    Case(
        "unreachable-ray",
        lambda w: [*search()(w)[:-2], "--ray-address", "127.0.0.1:1"],
        "no Ray cluster answers",
        space=GOOD,
    ),
    Case("ray-address-garbled", lambda w: [*search()(w)[:-2], "--ray-address", "nohost"], "not host:port", space=GOOD),
    Case("study-name-clash", lambda w: [*search()(w)[:-4], "--study", "done"], "exists", space=GOOD),
    Case("resume-missing-study", on_store("resume", "ghost"), "study 'ghost': not found"),
    Case("leaderboard-missing-study", on_store("leaderboard", "ghost"), "not found in sqlite:///"),
    Case("status-missing-study", on_store("status", "ghost"), "not found"),
    Case(
        "export-no-finished-trial",
        lambda w: on_store("export", "empty", "--out", str(w / "x"))(w),
        "no finished trial",
        setup=add_empty_study,
    ),
    Case(
        "export-missing-trial",
        lambda w: on_store("export", "done", "--out", str(w / "x"), "--trial", "99")(w),
        "has no trial 99",
    ),
    Case(
        "export-tampered-artefact",
        lambda w: on_store("export", "done", "--out", str(w / "x"), "--allow-infeasible")(w),
        "sha256",
        setup=tamper,
    ),
    Case(
        "foreign-database",
        lambda w: ["studies", "--storage", f"sqlite:///{w / 'foreign.db'}"],
        "not an autocompress store",
        setup=foreign_db,
    ),
    Case("newer-schema", on_store("studies"), "newer than this autocompress", setup=newer_schema),
    Case(
        "sensitivity-space-missing",
        lambda w: ["sensitivity", str(w / "missing.yaml"), "--out", str(w / "s")],
        "cannot read space file",
    ),
    Case(
        "sensitivity-sparsity-not-a-number",
        sensitivity("--sparsities", "0.5,half"),
        "'half' is not a number",
        space=GOOD,
    ),
    Case("sensitivity-sparsity-out-of-range", sensitivity("--sparsities", "0.5,1"), "1 is not in (0, 1)", space=GOOD),
    Case("sensitivity-negative-finetune", sensitivity("--finetune-epochs", "-1"), "--finetune-epochs", space=GOOD),
    Case(
        "sensitivity-out-is-a-file",
        lambda w: ["sensitivity", str(w / "space.yaml"), "--out", str(w / "space.yaml")],
        "is a file",
        space=GOOD,
    ),
    Case(
        "sensitivity-nothing-to-prune",
        sensitivity(),
        "nothing to analyse",
        space=GOOD + "layers: {'*': {channel_sparsity: [0.0]}}\n",
    ),
    Case(
        "unknown-runtime",
        search(),
        "measure.runtimes: unknown runtime 'tensorrt'; known: openvino, onnxruntime, torchscript",
        space=GOOD.replace("runtimes: [torchscript]", "runtimes: [openvino, tensorrt]"),
    ),
    Case(
        "model-does-not-export",
        search(),
        "Exporting the operator 'aten::cummax' to ONNX opset version 17 is not supported",
        space=GOOD.replace("experiments.tasks.digits:task", "tests.faulty_task:unexportable").replace(
            "runtimes: [torchscript]", "runtimes: [onnxruntime]"
        ),
    ),
    Case(
        "resume-history-another-strategy-proposed",
        on_store("resume", "done", "--trials", "3"),
        "study done: controller_state: replay diverged at ask 1",
        setup=rewrite_history,
    ),
    Case("missing-sqlite-file", lambda w: ["studies", "--storage", f"sqlite:///{w / 'nope.db'}"], "no study store"),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A store with one finished study ('done', 2 trials) built by a real inline search."""
    work = tmp_path_factory.mktemp("template")
    (work / "space.yaml").write_text(GOOD)
    autocompress.search(
        work / "space.yaml",
        study="done",
        storage=f"sqlite:///{work / 'store.db'}",
        trials=2,
        executor="inline",
        strategy="random",
    )
    return work


def snapshot(work: Path) -> dict[str, str]:
    """sha256 of every database file in the folder (WAL files included)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(work.glob("*.db*"))
        if not p.name.endswith("-shm")
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line_and_leaves_the_store_unchanged(case, template, tmp_path, capsys) -> None:
    work = tmp_path / "w"
    shutil.copytree(template, work, symlinks=False)
    # artefact paths are stored relative to the artefacts folder, so the copy uses its own artefacts
    if case.space is not None:
        (work / "space.yaml").write_text(case.space)
    case.setup(work)
    before = snapshot(work)
    with pytest.raises(SystemExit) as exit_info:
        main(case.argv(work))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("autocompress: error: ") and case.expect in err, err
    assert snapshot(work) == before


def test_corpus_covers_at_least_thirty_bad_inputs() -> None:
    assert len(CASES) >= 30


@pytest.mark.slow
def test_a_real_process_gets_exit_code_2_and_one_line(tmp_path) -> None:
    (tmp_path / "space.yaml").write_text(GOOD.replace("objectives:", "objectivs:"))
    result = run_cli("search", str(tmp_path / "space.yaml"), "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "s.db").exists()


@pytest.mark.slow
def test_no_feasible_trial_exports_the_closest_only_on_request(template, tmp_path) -> None:
    work = tmp_path / "w"
    shutil.copytree(template, work)
    (work / "space.yaml").write_text(GOOD.replace("min_speedup: 1.2", "min_speedup: 12"))
    storage = f"sqlite:///{work / 'store.db'}"
    autocompress.search(work / "space.yaml", study="strict", storage=storage, trials=1, executor="inline")
    refused = run_cli("export", "strict", "--storage", storage, "--out", str(work / "x"))
    assert refused.returncode == 2 and "--allow-infeasible" in refused.stderr
    done = run_cli("export", "strict", "--storage", storage, "--out", str(work / "x"), "--allow-infeasible")
    assert done.returncode == 0 and "INFEASIBLE" in done.stdout
    assert '"feasible": false' in (work / "x" / "manifest.json").read_text()


@pytest.mark.slow
def test_a_moved_store_exports_whether_its_artefact_paths_are_relative_or_absolute_from_before(
    template, tmp_path
) -> None:
    """Artefact paths are stored relative to the artefacts folder, so a store moved with its folder exports;
    a store written before that holds absolute paths into its old place, and exports after a move too."""
    moved = tmp_path / "moved"
    shutil.copytree(template, moved)
    storage = f"sqlite:///{moved / 'store.db'}"
    store = StudyStore(storage)
    paths = [a.path for t in store.trials("done") for a in t.artefacts]
    assert paths and all(not Path(p).is_absolute() and p.startswith("done/") for p in paths)
    store.close()
    exported = run_cli("export", "done", "--storage", storage, "--out", str(tmp_path / "a"), "--allow-infeasible")
    assert exported.returncode == 0, exported.stderr
    sql(moved / "store.db", "UPDATE artefacts SET path = '/old/place/autocompress-artifacts/' || path")
    old = run_cli("export", "done", "--storage", storage, "--out", str(tmp_path / "b"), "--allow-infeasible")
    assert old.returncode == 0, old.stderr
    assert (tmp_path / "a" / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()


@pytest.mark.slow
def test_a_runtime_that_is_not_installed_is_bad_input_before_any_trial(tmp_path) -> None:
    """openvino blocked from importing (as if not installed): the space file naming it exits 2 with one line."""
    (tmp_path / "space.yaml").write_text(GOOD.replace("runtimes: [torchscript]", "runtimes: [openvino]"))
    code = "import sys; sys.modules['openvino'] = None; from autocompress.cli import main; main(sys.argv[1:])"
    args = ["search", str(tmp_path / "space.yaml"), "--storage", f"sqlite:///{tmp_path / 's.db'}"]
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=cli_env(), timeout=300, check=False
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"autocompress: error: {tmp_path / 'space.yaml'}: measure.runtimes: runtime 'openvino' is not installed; "
        "pip install openvino"
    ]
    assert not (tmp_path / "s.db").exists()
