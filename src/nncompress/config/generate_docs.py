"""Write the published schema (docs/schema.json) and the key reference (docs/config.md).

Both files are generated from the schema modules, so the documentation cannot drift from what the
validator accepts. ``--check`` exits 1 when a file is out of date (run by the tests).

Usage::

    python -m nncompress.config.generate_docs            # rewrite both files
    python -m nncompress.config.generate_docs --check    # verify they are current
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from nncompress.config import schema_nav
from nncompress.config.schema import ALGORITHM_NAMES, get_schema
from nncompress.config.schema_errors import bounds_phrase

SCHEMA_FILE = "schema.json"
REFERENCE_FILE = "config.md"


def default_docs_dir() -> Path:
    """The repository's docs/ folder when running from a checkout, else ./docs."""
    repo = Path(__file__).resolve().parents[3]
    if (repo / "pyproject.toml").is_file():
        return repo / "docs"
    return Path.cwd() / "docs"


def render_schema_json() -> str:
    """The schema as pretty-printed JSON with sorted keys and a trailing newline."""
    return json.dumps(get_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------- reference table
Row = tuple[str, str, str, str, str]


def _type_text(node: Mapping[str, Any]) -> str:
    node = schema_nav.resolve(node)
    if (
        "oneOf" in node
        and schema_nav.object_form(node) is not None
        and schema_nav.list_form(node) is not None
    ):
        return "object or array of objects"
    kind = node.get("type", "")
    if kind == "array":
        if "prefixItems" in node:
            inner = ", ".join(_type_text(p) for p in node["prefixItems"])
            return f"array of [{inner}]"
        items = schema_nav.resolve(node.get("items", {}))
        return f"array of {_type_text(items)}" if items else "array"
    if isinstance(kind, list):
        if kind == ["array", "string"] and schema_nav.resolve(node.get("items", {})).get("type") == "string":
            return "string or array of strings"
        return " or ".join(kind)
    return str(kind)


def _allowed_text(node: Mapping[str, Any]) -> str:
    node = schema_nav.resolve(node)
    parts = []
    if "const" in node:
        parts.append(f"`{node['const']}`")
    if "enum" in node:
        parts.append(", ".join(f"`{v}`" for v in node["enum"]))
    bounds = bounds_phrase(node)
    if bounds:
        parts.append(bounds.removeprefix("in "))
    if node.get("type") == "array":
        raw_items = node.get("items", {})
        items = schema_nav.resolve(raw_items) if isinstance(raw_items, Mapping) else {}
        inner = _allowed_text(items) if items and "properties" not in items else ""
        if inner:
            parts.append(f"each item: {inner}")
        if "minItems" in node and "maxItems" in node and node["minItems"] == node["maxItems"]:
            parts.append(f"exactly {node['minItems']} items")
        elif "minItems" in node and node["minItems"] > 0:
            parts.append(f"at least {node['minItems']} item{'s' if node['minItems'] != 1 else ''}")
        if node.get("uniqueItems"):
            parts.append("unique")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _row(path: str, node: Mapping[str, Any], required: bool) -> Row:
    resolved = schema_nav.resolve(node)
    default = f"`{json.dumps(resolved['default'])}`" if "default" in resolved else ""
    description = resolved.get("description", "")
    if required:
        description = "Required. " + description
    return (f"`{path}`", _type_text(resolved), default, _allowed_text(resolved), description)


def _rows(node: Mapping[str, Any], prefix: str) -> Iterator[Row]:
    """Rows for every property below ``node``, depth first, in schema order."""
    form = schema_nav.object_form(node)
    if form is None:
        return
    required = set(form.get("required", ()))
    then = form.get("then", {})
    required |= set(then.get("required", ()))
    props = form.get("properties", {})
    for key, sub in props.items():
        path = f"{prefix}.{key}" if prefix else key
        yield _row(path, sub, key in required)
        yield from _children(sub, path)
    for sub in form.get("patternProperties", {}).values():
        path = f"{prefix}.<scope>"
        yield _row(path, sub, False)
        yield from _rows(sub, path)


def _children(sub: Mapping[str, Any], path: str) -> Iterator[Row]:
    resolved = schema_nav.resolve(sub)
    single = schema_nav.object_form(resolved)
    array = schema_nav.list_form(resolved)
    if single is not None and schema_nav.is_container(single) and not schema_nav.is_dispatch(single):
        yield from _rows(single, path)
        if array is not None:
            # Keys only the list form accepts (e.g. scopes of per-scope range entries).
            items = schema_nav.resolve(array.get("items", {}))
            extra = {
                k: v for k, v in items.get("properties", {}).items() if k not in single.get("properties", {})
            }
            for key, node in extra.items():
                yield _row(f"{path}[].{key}", node, False)
    elif single is None and array is not None:
        items = schema_nav.resolve(array.get("items", {}))
        if schema_nav.is_container(items):
            yield from _rows(items, f"{path}[]")


def _table(rows: Sequence[Row]) -> list[str]:
    lines = ["| Key | Type | Default | Allowed values | Description |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_config_md() -> str:
    """The Markdown reference of every key: dotted path, type, default, allowed values, description."""
    root = get_schema()
    props = root["properties"]
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated by `python -m nncompress.config.generate_docs` (`make schema`) from",
        "     src/nncompress/config/schema/. Do not edit by hand. -->",
        "",
        "nncompress reads NNCF 2.x JSON configs. Rules that differ from NNCF:",
        "",
        "- Inside `compression` sections, `accuracy_aware_training`, `input_info` and `bootstrapNAS`, an",
        "  unknown key is an error (with a suggestion), not silently ignored.",
        "- Unknown top-level keys are allowed (training scripts keep their own settings there), except",
        "  keys that look like a misspelling of a known key (`compresion`, `log-dir`) or an algorithm name.",
        "- Values are range-checked, and related keys are checked together (for example",
        "  `multistep_sparsity_levels` needs one more entry than `multistep_steps`).",
        "- Every problem is reported at once, each with its JSON path.",
        "",
        "`[]` in a path stands for any item of a list; `<scope>` for a scope name used as a key.",
        "The machine-readable schema is [schema.json](schema.json) (JSON Schema draft 2020-12).",
        "",
        "## Top level",
        "",
    ]
    top = [
        k for k in props if k not in ("input_info", "accuracy_aware_training", "compression", "bootstrapNAS")
    ]
    out += _table([_row(k, props[k], k in root.get("required", ())) for k in top])
    for key, title in (("input_info", "Model inputs: `input_info`"), ("accuracy_aware_training", None)):
        out += ["", f"## {title or f'`{key}`'}", ""]
        out += _table([_row(key, props[key], key in root.get("required", ())), *_children(props[key], key)])
    out += ["", "## `compression`", "", props["compression"]["description"], ""]
    out += [
        "Each section is an object whose `algorithm` key selects its schema. Paths below start inside",
        "a section, e.g. `params.pruning_target` is `compression[i].params.pruning_target`.",
        "",
    ]
    for name in ALGORITHM_NAMES:
        section = schema_nav.algorithm_schema(name)
        assert section is not None
        out += [f"### `{name}`", "", _cell(section["description"]), ""]
        if name == "experimental_quantization":
            out += ["Same parameters as `quantization` above.", ""]
            continue
        out += _table(list(_rows(section, "")))
        out.append("")
    out += ["## `bootstrapNAS`", "", schema_nav.nas_schema()["description"], ""]
    out += _table(list(_rows(props["bootstrapNAS"], "bootstrapNAS")))
    return "\n".join(out).rstrip("\n") + "\n"


def _outputs() -> dict[str, str]:
    return {SCHEMA_FILE: render_schema_json(), REFERENCE_FILE: render_config_md()}


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with --check, verify) docs/schema.json and docs/config.md; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m nncompress.config.generate_docs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    parser.add_argument(
        "--docs-dir", type=Path, default=None, help="output folder (default: the repo's docs/)"
    )
    args = parser.parse_args(argv)
    docs = args.docs_dir or default_docs_dir()
    stale = []
    for name, text in _outputs().items():
        target = docs / name
        current = target.read_text(encoding="utf-8") if target.is_file() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(target))
        else:
            docs.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target}")
    if stale:
        print("out of date (run `make schema`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
