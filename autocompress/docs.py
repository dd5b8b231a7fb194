"""Generated documentation: the space-file reference, rendered from the pydantic schema so it never drifts.

``python -m autocompress.docs`` rewrites ``docs/space-reference.md``; ``--check`` exits 1 when the committed
file differs from what the schema gives (the test suite runs the same comparison).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from autocompress.space import SpaceFile, _schema

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "space-reference.md"

_INTRO = """\
A space file is YAML. It names the task, the objectives, the constraints a trial must meet to be
feasible, the fine-tuning fidelity, the choices per layer, and how latency is measured. Every key is
checked before anything runs: an unknown key (with a "did you mean"), a wrong type or a value out of range
is an error (exit code 2) naming the file and the field.

Layers are discovered from the model graph; `defaults` apply to every layer, and each `layers` entry is a
glob pattern (`block*.conv1`) whose choices override the defaults for the layers it matches. A pattern
that matches no layer, or pruning asked of a layer that cannot be pruned, is an error before any trial.

```yaml
task: experiments.tasks.digits:task
objectives: {accuracy: max, latency_ms: min}
constraints: {max_accuracy_drop: 0.01, min_speedup: 2.0}
fidelity: {finetune_epochs: [1, 3, 9]}
defaults: {channel_sparsity: [0.0, 0.25, 0.5, 0.75], weight_bits: [8, 32], criterion: l1}
layers:
  "stem.0": {channel_sparsity: [0.0]}
```
"""


def _ref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return dict(schema["$defs"][node["$ref"].rsplit("/", 1)[1]])
    return node


def _type(schema: dict[str, Any], node: dict[str, Any]) -> str:
    """A short human type: `number`, `list of number`, `one of l1, l2`, `mapping metric -> max|min`."""
    node = _ref(schema, node)
    if "anyOf" in node:
        kinds = [_type(schema, n) for n in node["anyOf"] if n.get("type") != "null"]
        return " or ".join(kinds)
    if "enum" in node:
        return "one of " + ", ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type")
    if kind == "array":
        return f"list of {_type(schema, node['items'])}"
    if kind == "object" and "properties" in node:
        return f"section (`{node['title']}`)"
    if kind == "object":
        keys = node.get("propertyNames", {})
        key = "one of " + ", ".join(f"`{k}`" for k in keys["enum"]) if "enum" in keys else "string"
        return f"mapping: {key} → {_type(schema, node.get('additionalProperties', {}))}"
    return str(kind)


def _limits(schema: dict[str, Any], node: dict[str, Any]) -> str:
    node = _ref(schema, node)
    if "anyOf" in node:
        return "; ".join(filter(None, (_limits(schema, n) for n in node["anyOf"])))
    words = {
        "minimum": "≥ {}",
        "exclusiveMinimum": "> {}",
        "maximum": "≤ {}",
        "exclusiveMaximum": "< {}",
        "minItems": "at least {} item(s)",
        "minProperties": "at least {} key(s)",
    }
    found = [text.format(node[key]) for key, text in words.items() if key in node]
    if node.get("type") == "array":
        inner = _limits(schema, node["items"])
        found += [f"each {inner}"] if inner else []
    return ", ".join(found)


def _default(model: type[BaseModel], key: str) -> str:
    """From the pydantic field itself: JSON schema omits defaults made by a factory."""
    info = model.model_fields[key]
    if info.is_required():
        return "**required**"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    return "none" if value is None else f"`{json.dumps(value)}`"


def _section(schema: dict[str, Any], title: str, node: dict[str, Any]) -> list[str]:
    model = SpaceFile if node is schema else getattr(_schema, node["title"])
    lines = [f"## {title}", ""]
    if node.get("description"):
        lines += [" ".join(node["description"].split()), ""]
    lines += ["| key | type | default | limits | meaning |", "|---|---|---|---|---|"]
    for key, field in node["properties"].items():
        lines.append(
            f"| `{key}` | {_type(schema, field)} | {_default(model, key)} | {_limits(schema, field) or '-'} "
            f"| {field.get('description', '-')} |"
        )
    return [*lines, ""]


def _shipped(entry: Any) -> bool:
    """Whether a registry entry ships with autocompress (the docs list those, not ones a user registered)."""
    return str(getattr(entry, "__module__", "")).startswith(("autocompress.", "torch_pruning."))


def _registered_names() -> list[str]:
    """A section listing the names each registry ships, read from the registries themselves."""
    lines = [
        "## Registered names",
        "",
        "The names these fields accept, read from the registries; `register_criterion`, `register_quantizer`,",
        "`register_pruner` and `register_strategy` add more (see docs/extending.md).",
        "",
        "| field | registry | names |",
        "|---|---|---|",
    ]
    for key, (owner, table) in _schema.registries().items():
        field = "`strategy` keys" if key == "strategy" else f"`defaults.{key}`"
        names = ", ".join(f"`{name}`" for name, entry in table.items() if _shipped(entry))
        lines.append(f"| {field} | `{owner}` | {names} |")
    return [*lines, ""]


def space_reference() -> str:
    """The Markdown reference of the space file, from `SpaceFile.model_json_schema()`."""
    schema = SpaceFile.model_json_schema()
    lines = [
        "# Space file reference",
        "",
        "<!-- Generated from autocompress/space/_schema.py (SpaceFile) by `python -m autocompress.docs`; "
        "do not edit by hand. -->",
        "",
        _INTRO,
    ]
    lines += _section(schema, "Top level", schema)
    for key, field in schema["properties"].items():
        target = _ref(schema, field)
        if "properties" in target:
            lines += _section(schema, f"`{key}`", target)
        elif "$ref" in target.get("additionalProperties", {}):
            lines += _section(schema, f"`{key}.<pattern>`", _ref(schema, target["additionalProperties"]))
    lines += _registered_names()
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = space_reference()
    if "--check" in args:
        if not REFERENCE.exists() or REFERENCE.read_text(encoding="utf-8") != text:
            sys.stderr.write(f"{REFERENCE} is out of date; run: python -m autocompress.docs\n")
            return 1
        return 0
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(text, encoding="utf-8")
    print(f"wrote {REFERENCE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
