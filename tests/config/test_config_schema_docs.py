"""The schema is well-formed and complete, and the generated docs are current."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from nncompress.config import generate_docs, schema_nav
from nncompress.config.schema import ALGORITHM_NAMES, get_schema

REPO = Path(__file__).resolve().parents[2]
REFERENCE = REPO / ".." / "shared" / "reference" / "nncf-2.19-config-keys.txt"


def _properties(node: Any, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every (path, schema) of a named property anywhere in the schema ("if" conditions excluded)."""
    if isinstance(node, Mapping):
        for key, sub in node.get("properties", {}).items():
            yield f"{path}.{key}", sub
        for key, value in node.items():
            if key == "if":
                continue
            if key in ("properties", "patternProperties", "$defs") and isinstance(value, Mapping):
                for name, sub in value.items():
                    yield from _properties(sub, f"{path}.{name}")
            elif isinstance(value, Mapping):
                yield from _properties(value, path)
            elif isinstance(value, list):
                for item in value:
                    yield from _properties(item, path)


def test_schema_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(get_schema())


def test_every_property_has_type_and_description() -> None:
    props = list(_properties(get_schema()))
    assert len(props) > 300
    missing = [p for p, s in props if "type" not in s or not s.get("description")]
    assert missing == []


def test_descriptions_are_sentences() -> None:
    bad = [p for p, s in _properties(get_schema()) if not re.match(r"^[A-Z'(\[].*[.)]$", s["description"])]
    assert bad == []


def test_every_default_is_valid_for_its_own_property() -> None:
    defs = get_schema()["$defs"]
    checked = 0
    for path, sub in _properties(get_schema()):
        if "default" in sub:
            errors = list(Draft202012Validator({**sub, "$defs": defs}).iter_errors(sub["default"]))
            assert errors == [], path
            checked += 1
    assert checked > 60


def test_algorithm_names_have_definitions() -> None:
    for name in ALGORITHM_NAMES:
        section = schema_nav.algorithm_schema(name)
        assert section is not None and section["properties"]["algorithm"]["const"] == name
        assert section["additionalProperties"] is False


def _reference_paths() -> list[tuple[str, str]]:
    """(section, dotted path) for every key listed in the NNCF 2.19 reference file."""
    if not REFERENCE.is_file():
        pytest.skip(f"NNCF key reference not found at {REFERENCE.resolve()}")
    section = ""
    out = []
    for line in REFERENCE.read_text().splitlines():
        if line.startswith("=== ALGO "):
            section = line.split()[-1]
        elif line.startswith("TOP "):
            section = ""
            out.append(("", line.split()[1].rstrip(":")))
        elif line.startswith("  ") and "type=" in line:
            out.append((section, line.split()[0]))
    return out


def _schema_knows(section: str, dotted: str) -> bool:
    if section in ALGORITHM_NAMES:
        node: Any = schema_nav.algorithm_schema(section)
        parts = dotted.split(".")[1:]
    else:
        node = get_schema()
        parts = dotted.split(".")
    for part in parts:
        is_list = part.endswith("[]")
        form = schema_nav.object_form(node)
        if form is None:
            return False
        node = schema_nav.child(form, part.removesuffix("[]"))
        if node is None:
            return False
        if is_list:
            array = schema_nav.list_form(node)
            if array is None:
                return False
            node = array["items"]
    return True


def test_schema_covers_every_nncf_2_19_key() -> None:
    # NNCF's schema lists "required" under precision's properties by mistake: it is not a key.
    paths = [(s, p) for s, p in _reference_paths() if not p.endswith("precision.required")]
    assert len(paths) > 300
    unknown = [f"{s}:{p}" for s, p in paths if not _schema_knows(s, p)]
    assert unknown == []


def test_generated_docs_are_current() -> None:
    assert generate_docs.main(["--check", "--docs-dir", str(REPO / "docs")]) == 0, "run `make schema`"
    assert (REPO / "docs" / "schema.json").read_text() == generate_docs.render_schema_json()


def test_check_detects_stale_docs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert generate_docs.main(["--docs-dir", str(tmp_path)]) == 0
    assert generate_docs.main(["--check", "--docs-dir", str(tmp_path)]) == 0
    (tmp_path / "config.md").write_text("stale\n")
    assert generate_docs.main(["--check", "--docs-dir", str(tmp_path)]) == 1
    assert "config.md" in capsys.readouterr().err


def test_reference_lists_every_algorithm_key() -> None:
    text = generate_docs.render_config_md()
    for name in ALGORITHM_NAMES:
        assert f"### `{name}`" in text
    for row in (
        "`params.pruning_target` | number | `0.5` | [0, 1)",
        "`input_info.sample_size`",
        "`bootstrapNAS.search.num_evals`",
    ):
        assert row in text
