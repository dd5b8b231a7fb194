"""A real text task for the transformer, built offline: which kind of package does a sentence describe?

Sentences come from the long descriptions (``*.dist-info/METADATA``) of the packages this project depends on
(the closure of autocompress's own requirements, without extras, autocompress itself excluded: its README
changes), at the versions of requirements.lock. They are frozen in `DATA_FILE`
(``experiments/tasks/data/text_sentences.jsonl``, one JSON object per line: sentence, label, package), so the
data never depends on what happens to be installed (a fresh install resolving newer versions once changed a
test's accuracy). ``python -m experiments.tasks.text`` regenerates the file from the installed packages
(`collect_labelled_sentences`): do it after updating the lock, and re-check the tests tuned on it. The label is
the package's own Trove classification, written by its authors:

- ``science``: it carries a ``Topic :: Scientific/Engineering`` classifier (numpy, scipy, torch, pandas, ...);
- ``software-development``: it carries ``Topic :: Software Development`` but no science topic (pydantic,
  typer, tqdm, urllib3, ...);
- ``other``: neither (fonttools, sqlalchemy, rich, jinja2, ...).

Each package contributes at most `MAX_PER_PACKAGE` sentences (fonttools alone has ~1,000 lines of
changelog), in a fixed order. The split is by a hash of the sentence text (70/15/15), so it does not
depend on the order packages are found in. Sentences of one package fall in every split: the model may
learn a package's own vocabulary, as a reader would; the task is to tell what a sentence is about.

Tokenizer: lower-cased words (``[a-z0-9]+``), each hashed (BLAKE2) into ``VOCAB - 1`` buckets, id 0 is
padding; sequences are cut or padded to `SEQ` tokens. No vocabulary file, nothing learnt from the data.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import re
from functools import cache
from pathlib import Path

import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from autocompress.task import SupervisedTask
from experiments.models import TransformerEncoderClassifier

VOCAB, SEQ = 4096, 32
LABELS = ("science", "software-development", "other")
CLASSES = len(LABELS)
MAX_PER_PACKAGE = 150
#: the frozen sentences (see the module docstring)
DATA_FILE = Path(__file__).resolve().parent / "data" / "text_sentences.jsonl"
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def dependency_closure(root: str = "autocompress") -> list[str]:
    """Canonical names of the installed distributions `root` needs (without extras), sorted, `root` excluded."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:  # a platform-specific requirement not installed here
            continue
        seen.add(name)
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(seen - {canonicalize_name(root)})


def package_label(classifiers: list[str]) -> int:
    """Index in `LABELS` of a package from its Trove classifiers."""
    if any(c.startswith("Topic :: Scientific/Engineering") for c in classifiers):
        return 0
    if any(c.startswith("Topic :: Software Development") for c in classifiers):
        return 1
    return 2


def sentences(description: str) -> list[str]:
    """Prose sentences of a description: whitespace collapsed, split after . ! ?, 6 to 40 words, with at
    least half of the words alphabetic (drops code, tables and link lists)."""
    out = []
    for sentence in _SENTENCE_END.split(re.sub(r"\s+", " ", description)):
        words = sentence.split()
        if 6 <= len(words) <= 40 and sum(w.isalpha() for w in words) * 2 >= len(words):
            out.append(sentence.strip())
    return out


@cache
def labelled_sentences() -> tuple[tuple[str, int, str], ...]:
    """(sentence, label, package) as frozen in `DATA_FILE`, in its order."""
    rows = [json.loads(line) for line in DATA_FILE.read_text(encoding="utf-8").splitlines() if line]
    return tuple((row["sentence"], LABELS.index(row["label"]), row["package"]) for row in rows)


def collect_labelled_sentences() -> list[tuple[str, int, str]]:
    """(sentence, label, package) for every installed package of the closure, deduplicated, in a fixed order."""
    rows: list[tuple[str, int, str]] = []
    seen: set[str] = set()
    for name in dependency_closure():
        meta = metadata.metadata(name)
        label = package_label(meta.get_all("Classifier") or [])
        description = meta.get_payload() or meta.get("Description") or ""  # type: ignore[attr-defined]
        kept: list[str] = []
        for sentence in sentences(description):
            if sentence not in seen and len(kept) < MAX_PER_PACKAGE:
                seen.add(sentence)
                kept.append(sentence)
        rows.extend((s, label, name) for s in kept)
    return rows


def freeze() -> Path:
    """Write `DATA_FILE` from the installed packages (`collect_labelled_sentences`)."""
    DATA_FILE.parent.mkdir(parents=True, exist_ok=True)
    lines = (
        json.dumps({"sentence": s, "label": LABELS[label], "package": name}, ensure_ascii=False)
        for s, label, name in collect_labelled_sentences()
    )
    DATA_FILE.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return DATA_FILE


def _bucket(text: str, buckets: int) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") % buckets


def tokenize(sentence: str) -> list[int]:
    """Word ids in 1..VOCAB-1 (hashed), cut or padded with 0 to `SEQ`."""
    ids = [1 + _bucket(word, VOCAB - 1) for word in _WORD.findall(sentence.lower())][:SEQ]
    return ids + [0] * (SEQ - len(ids))


def text_splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """train/val/test as (token ids [n, SEQ], labels [n]); 70/15/15 by a hash of the sentence."""
    parts: dict[str, list[tuple[list[int], int]]] = {"train": [], "val": [], "test": []}
    for sentence, label, _ in labelled_sentences():
        slot = _bucket("split:" + sentence, 100)
        split = "train" if slot < 70 else "val" if slot < 85 else "test"
        parts[split].append((tokenize(sentence), label))
    return {
        split: (torch.tensor([t for t, _ in rows], dtype=torch.long), torch.tensor([y for _, y in rows]))
        for split, rows in parts.items()
    }


def majority_accuracy(data: dict[str, tuple[torch.Tensor, torch.Tensor]], split: str = "test") -> float:
    """Accuracy on `split` of always answering the most frequent training label (the bar to beat)."""
    majority = int(torch.bincount(data["train"][1], minlength=CLASSES).argmax())
    return float((data[split][1] == majority).float().mean())


def text_transformer() -> TransformerEncoderClassifier:
    return TransformerEncoderClassifier(vocab=VOCAB, dim=64, heads=4, ffn=128, layers=2, classes=CLASSES, max_len=SEQ)


transformer = SupervisedTask(
    name="text-transformer", model_factory=text_transformer, data=text_splits(), train_epochs=15
)

if __name__ == "__main__":
    print(f"wrote {len(collect_labelled_sentences())} sentences to {freeze()}")
