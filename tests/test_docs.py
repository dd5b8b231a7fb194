"""The space-file reference in docs/ is generated from the pydantic schema; it must match the schema."""

from __future__ import annotations

import re

from autocompress.docs import REFERENCE, main, space_reference
from autocompress.space import SpaceFile, parse_space


def test_committed_space_reference_matches_the_schema() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == space_reference(), (
        "docs/space-reference.md is out of date: run `python -m autocompress.docs` and commit it"
    )
    assert main(["--check"]) == 0


def test_reference_names_every_field_and_its_example_is_a_valid_space() -> None:
    text = space_reference()
    for name, info in SpaceFile.model_fields.items():
        assert f"| `{name}` |" in text
        section = info.annotation if isinstance(info.annotation, type) else None
        for key in getattr(section, "model_fields", {}):
            assert f"| `{key}` |" in text
    example = re.search(r"```yaml\n(.*?)```", text, re.S)
    assert example is not None
    assert parse_space(example.group(1), "reference").task == "experiments.tasks.digits:task"
