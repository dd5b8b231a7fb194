"""A real two-node Ray cluster on loopback: `ray start --head`, a second `ray start --address`, a search
through `--ray-address`, trials on both nodes, and the cluster stopped by the pids it started."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from autocompress.store import StudyStore
from tests.conftest import cli_env, kill_pids, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_bin() -> str:
    import sys

    return str(Path(sys.executable).with_name("ray"))


def pids_using(marker: str) -> list[int]:
    """Processes whose command line names our private Ray temp folder: the ones this test started."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="ignore"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def two_node_cluster():
    temp = tempfile.mkdtemp(prefix="acray")
    port = free_port()
    env = cli_env()
    common = ["--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run(
            [
                ray_bin(),
                "start",
                "--head",
                f"--port={port}",
                "--include-dashboard=false",
                f"--temp-dir={temp}",
                "--node-ip-address=127.0.0.1",
                *common,
            ],
            check=True,
            env=env,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [ray_bin(), "start", f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", *common],
            check=True,
            env=env,
            capture_output=True,
            timeout=120,
        )
        yield f"127.0.0.1:{port}"
    finally:
        deadline = time.monotonic() + 30
        while (pids := pids_using(temp)) and time.monotonic() < deadline:
            kill_pids(pids)
        shutil.rmtree(temp, ignore_errors=True)


def test_search_runs_trials_on_both_nodes_of_a_cluster(two_node_cluster, fast_space, storage) -> None:
    result = run_cli(
        "search",
        str(fast_space),
        "--study",
        "cluster",
        "--storage",
        storage,
        "--trials",
        "6",
        "--workers",
        "2",
        "--ray-address",
        two_node_cluster,
        "-q",
    )
    assert result.returncode == 0, result.stderr
    store = StudyStore(storage)
    trials = store.trials("cluster")
    assert len(trials) == 6 and all(t.state == "complete" for t in trials)
    nodes = {t.worker.split(":node=")[1] for t in trials}
    assert len(nodes) == 2, [t.worker for t in trials]
