"""`make demo`: a real search on the digits task (SQLite + local Ray), then the leaderboard and an export.

Runs in a fresh folder ``demo-out/`` so it can be repeated; prints the best trial against the baseline: the
honest speedup (the float baseline on its fastest runtime against the candidate on its own) and the runtime of
the exported file.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from autocompress.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-out"


def run(*args: str) -> None:
    try:
        cli(list(args))
    except SystemExit as exc:
        if exc.code:
            raise


def demo() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir()
    storage = f"sqlite:///{OUT / 'autocompress.db'}"
    space = str(ROOT / "search_spaces" / "digits.yaml")
    print(f"== search: {space}, 40 trials, 2 Ray workers, TPE ==", flush=True)
    run("search", space, "--study", "demo", "--storage", storage, "--trials", "40", "--workers", "2")
    print("== leaderboard (top 10) ==", flush=True)
    run("leaderboard", "demo", "--storage", storage, "--top", "10")
    print("== export ==", flush=True)
    run("export", "demo", "--storage", storage, "--out", str(OUT / "export"), "--allow-infeasible")
    manifest = json.loads((OUT / "export" / "manifest.json").read_text())
    m, b = manifest["metrics"], manifest["baseline"]
    print(f"best trial {manifest['trial']} (feasible: {manifest['feasible']}) vs baseline:")
    print(f"  accuracy   {m['accuracy']:.4f} vs {b['accuracy']:.4f}")
    print(
        f"  latency b1  {m['latency_ms']:.3f} ms on {m['runtime']} vs {m['baseline_latency_ms']:.3f} ms "
        f"(float, fastest runtime: {m['baseline_runtime']}): {m['speedup']:.2f}x"
    )
    print(
        f"  latency b32 {m['latency_ms_b32']:.3f} ms on {m['runtime_b32']} vs {m['baseline_latency_ms_b32']:.3f} ms "
        f"(float, fastest runtime: {m['baseline_runtime_b32']}): {m['speedup_b32']:.2f}x"
    )
    print(f"  size       {m['size_bytes'] / 1024:.1f} KiB vs {b['size_bytes'] / 1024:.1f} KiB")
    artefact = manifest["artefact"]
    files = ", ".join(str(OUT / "export" / f["file"]) for f in artefact["files"])
    print(f"exported model ({artefact['runtime']} {artefact['runtime_version']}): {files}")


if __name__ == "__main__":
    demo()
    sys.exit(0)
