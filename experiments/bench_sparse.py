"""Does unstructured sparsity make a Linear layer faster on this CPU? Dense ``nn.Linear`` holding zeros vs
the same weight as a ``torch.sparse_csr`` matrix (``torch.sparse.mm``), at 50, 75 and 90% zeros.

Both forms compute the same product (checked); they are timed interleaved in one run, one torch thread,
median of repeats, at batch 1 and 32, so the ratios are same-run ratios. The answer decides whether
autocompress ever runs sparse kernels: it does only if they are faster (otherwise zeros only shrink
``sparse_bytes``, the storage figure).

    flock /tmp/autocompress-bench.lock env PYTHONPATH=. python -m experiments.bench_sparse
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch import nn

from autocompress.compress import magnitude_mask
from autocompress.measure import compare_latency

OUT = Path(__file__).parent / "results"
#: (in_features, out_features): the token transformer's FFN, a mid-size and a large layer
SHAPES = ((64, 128), (512, 512), (2048, 2048))
SPARSITIES = (0.5, 0.75, 0.9)
BATCHES = (1, 32)


class CSRLinear(nn.Module):
    """A linear layer whose weight is a CSR sparse matrix: ``y = (W @ x^T)^T + b``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight.detach().to_sparse_csr()
        self.bias = linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(self.weight, x.t()).t() + self.bias


def run(repeats: int) -> list[dict[str, float | int]]:
    torch.manual_seed(0)
    rows = []
    for fan_in, fan_out in SHAPES:
        for sparsity in SPARSITIES:
            dense = nn.Linear(fan_in, fan_out).eval()
            with torch.no_grad():
                dense.weight.mul_(magnitude_mask(dense.weight, sparsity))
            sparse = CSRLinear(dense)
            for batch in BATCHES:
                x = torch.randn(batch, fan_in)
                with torch.no_grad():
                    assert torch.allclose(sparse(x), dense(x), atol=1e-4)
                ms = compare_latency({"dense": dense, "csr": sparse}, x, threads=1, warmup=10, repeats=repeats)
                rows.append(
                    {
                        "in": fan_in,
                        "out": fan_out,
                        "sparsity": sparsity,
                        "batch": batch,
                        "dense_ms": ms["dense"],
                        "csr_ms": ms["csr"],
                        "csr_speedup": ms["dense"] / ms["csr"],
                    }
                )
                print(rows[-1], flush=True)
    return rows


def write(rows: list[dict[str, float | int]], wall_s: float) -> None:
    faster = [r for r in rows if r["csr_speedup"] > 1.0]
    meta = {
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": 1,
        "note": "2-core machine shared with other agents; same-run interleaved ratios",
        "wall_s": wall_s,
    }
    (OUT / "bench_sparse.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Unstructured sparsity on CPU: dense Linear with zeros vs torch.sparse_csr",
        "",
        f"torch {torch.__version__}, 1 thread, median of repeats, dense and CSR interleaved in one run; the",
        "2-core machine was shared with other agents (ratios are same-run, absolute times are noisy).",
        "",
        "| in x out | zeros | batch | dense ms | CSR ms | CSR speedup |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['in']}x{r['out']} | {r['sparsity']:.0%} | {r['batch']} | {r['dense_ms']:.4f} | "
        f"{r['csr_ms']:.4f} | {r['csr_speedup']:.2f}x |"
        for r in rows
    ]
    lines += [
        "",
        f"CSR faster than dense in {len(faster)} of {len(rows)} cases"
        + (
            ": " + ", ".join(f"{r['in']}x{r['out']} at {r['sparsity']:.0%}, batch {r['batch']}" for r in faster)
            if faster
            else ""
        )
        + ".",
    ]
    (OUT / "bench_sparse.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    start = time.perf_counter()
    rows = run(args.repeats)
    write(rows, time.perf_counter() - start)


if __name__ == "__main__":
    main()
