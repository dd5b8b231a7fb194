"""A real two-node Ray cluster on loopback: `ray start --head`, a second `ray start --address`, a search
through `--ray-address`, trials on both nodes, the worker node lost mid-trial, and the cluster stopped by the
pids it started."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

import autocompress
from autocompress.store import COMPLETE, StudyStore
from tests.conftest import FAST_SPACE, cli_env, kill_pids, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_bin() -> str:
    import sys

    return str(Path(sys.executable).with_name("ray"))


def pids_using(marker: str, open_files: bool = False) -> list[int]:
    """Processes whose command line names `marker` (our private Ray temp folder: the ones this test started),
    or with `open_files`, that hold a file under it open (Ray's agents rename their command line, and outlive
    a killed raylet)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="ignore") or (
                    open_files and any(marker in os.readlink(fd) for fd in (entry / "fd").iterdir())
                ):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def two_node_cluster():
    temp = tempfile.mkdtemp(prefix="acray")
    port = free_port()
    env = cli_env()
    common = ["--num-cpus=1", "--disable-usage-stats"]  # each raylet on a known port: tests find it by that
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
                f"--node-manager-port={free_port()}",
                *common,
            ],
            check=True,
            env=env,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                ray_bin(),
                "start",
                f"--address=127.0.0.1:{port}",
                "--node-ip-address=127.0.0.1",
                f"--node-manager-port={free_port()}",
                *common,
            ],
            check=True,
            env=env,
            capture_output=True,
            timeout=120,
        )
        yield f"127.0.0.1:{port}"
    finally:
        deadline = time.monotonic() + 30
        while (pids := pids_using(temp, open_files=True)) and time.monotonic() < deadline:
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


def raylet_pid(node_manager_port: int) -> int:
    """The pid of the raylet that serves the node at `node_manager_port`."""
    for pid in pids_using(f"--node_manager_port={node_manager_port}"):
        if "raylet" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="ignore").split("\0")[0]:
            return pid
    raise LookupError(f"no raylet with --node_manager_port={node_manager_port}")


def test_losing_the_worker_node_mid_trial_reruns_its_trial_on_the_surviving_node(
    two_node_cluster, tmp_path, monkeypatch
) -> None:
    """Two workers, one per node; a second after the first trial finishes (both workers busy again), the
    raylet of the node the driver is not on is killed with SIGKILL. The trial running there is reported as a
    dead worker, retried, and finishes on the surviving node; the study meets its budget. Trials fine-tune 4
    epochs here (seconds each, not the fast space's fraction of one): on a quiet machine the fast space's
    trials all finished before the kill, and the killer found a study already over."""
    import ray

    monkeypatch.setenv("AUTOCOMPRESS_ARTIFACTS", str(tmp_path / "art"))
    space = tmp_path / "space.yaml"
    space.write_text(FAST_SPACE.replace("finetune_epochs: [0.5]", "finetune_epochs: [4]"))
    lost: dict[str, object] = {}

    def kill_worker_node() -> None:
        time.sleep(1)  # the finished trial's worker has taken the next trial: both nodes are computing
        if not ray.is_initialized():  # the study is over: a ray call here would start a local Ray in pytest
            return  # itself, and pytest would exit when a later test's cleanup stops that Ray's processes
        here = ray.get_runtime_context().get_node_id()
        (node,) = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
        os.kill(raylet_pid(node["NodeManagerPort"]), signal.SIGKILL)
        lost.update(node=node["NodeID"][:12], at=datetime.now())

    killer = threading.Thread(target=kill_worker_node, daemon=True)

    def on_progress(progress) -> None:  # type: ignore[no-untyped-def]
        if progress.finished == 1:
            killer.start()

    study = autocompress.search(
        space,
        study="lost",
        storage=f"sqlite:///{tmp_path / 'store.db'}",
        strategy="random",
        trials=4,
        workers=2,
        ray_address=two_node_cluster,
        on_progress=on_progress,
    )
    killer.join(timeout=30)
    assert lost, "the worker node was not killed"
    trials = study.trials()
    assert [(t.number, t.state) for t in trials] == [(n, COMPLETE) for n in range(4)]
    assert study.record.status == "finished" and study.record.spent["trials"] == 4
    log = (tmp_path / "art" / "lost" / "study.log").read_text()
    found = re.findall(r"^(\S+ \S+) WARNING trial (\d+): worker died: .*; retry 1/2$", log, re.M)
    assert len(found) == 1, log
    rerun = [int(n) for _, n in found]
    noticed = datetime.strptime(found[0][0], "%Y-%m-%d %H:%M:%S,%f") - lost["at"]  # type: ignore[operator]
    by_number = {t.number: t for t in trials}
    assert by_number[rerun[0]].worker.split(":node=")[1] != lost["node"]  # finished on the surviving node
    print(f"worker node lost: noticed after {noticed.total_seconds():.1f} s; trial {rerun[0]} re-run on the other node")
