"""Shared fixtures: real SQLite stores in tmp folders, a fast digits space, process helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import autocompress  # noqa: F401  (first: its torchvision shim lets transformers import beside torchvision)

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

FAST_SPACE = """
task: experiments.tasks.digits:task
objectives: {accuracy: max, latency_ms: min}
constraints: {max_accuracy_drop: 0.02, min_speedup: 1.2}
fidelity: {finetune_epochs: [0.5]}
defaults: {channel_sparsity: [0.0, 0.25, 0.5], weight_bits: [8, 32]}
measure: {threads: 1, repeats: 5, warmup: 1, runtimes: [torchscript]}  # deploy targets: tests/test_deploy.py
"""


def with_measured_table(space, runtime: str = "onnxruntime"):
    """`space` with a real `LatencyTable` measured on one runtime (ONNX Runtime compiles a one-layer module in
    milliseconds, OpenVINO in about a second), for tests of the strategies that read one. 15 repeats (the
    product's default is 30): compiling dominates the table's cost (digits net: 2-3.5 s at 5, 15 or 30 repeats),
    and at 5 a loaded CI core once ordered two policies against their measured latency."""
    import dataclasses

    from autocompress.runtime import measure_latency_table

    cheap = dataclasses.replace(space, measure={**space.measure, "runtimes": [runtime], "repeats": 15, "warmup": 1})
    return dataclasses.replace(space, latency_table=measure_latency_table(cheap))


@pytest.fixture(scope="session", autouse=True)
def own_latency_tables(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Latency tables this test session measures itself: a table kept from an earlier run (perhaps measured
    while another suite loaded the cores) would steer this run's NetAdapt and HAQ as that run's noise did.
    Trained baselines stay shared. Set in the environment, so CLI subprocesses and Ray workers read it too."""
    folder = tmp_path_factory.mktemp("latency-tables")
    before = os.environ.get("AUTOCOMPRESS_LATENCY_TABLES")
    os.environ["AUTOCOMPRESS_LATENCY_TABLES"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("AUTOCOMPRESS_LATENCY_TABLES")
    else:
        os.environ["AUTOCOMPRESS_LATENCY_TABLES"] = before


@pytest.fixture
def fast_space(tmp_path: Path) -> Path:
    path = tmp_path / "digits-fast.yaml"
    path.write_text(FAST_SPACE)
    return path


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["RAY_AUTH_MODE"] = "disabled"
    return env


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autocompress", *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (by parent links in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_pids(pids: list[int], timeout: float = 20.0) -> None:
    """SIGKILL the given processes and wait until they are gone (tests never leave processes behind)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid in pids:
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            try:
                if "Z" in (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]):
                    break  # a zombie: dead, waiting for a parent that is not us
            except OSError:
                break
            time.sleep(0.05)


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; they and everything below them are killed at the end."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        kill_pids([*descendants(proc.pid), proc.pid])
        proc.wait(timeout=30)
