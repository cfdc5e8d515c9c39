"""JSON paths in messages can be read back: formatting and parsing are inverse operations."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nncompress.config.json_paths import format_path, parse_path


@pytest.mark.parametrize(
    ("parts", "text"),
    [
        (("compression", 1, "params", "pruning_target"), "compression[1].params.pruning_target"),
        (("input_info", 0, "sample_size", 2), "input_info[0].sample_size[2]"),
        (("log-dir",), "log-dir"),
        (
            ("scope_overrides", "weights", "Net/Conv2d[c1]", "bits"),
            'scope_overrides.weights["Net/Conv2d[c1]"].bits',
        ),
        ((), ""),
    ],
)
def test_format_and_parse(parts: tuple, text: str) -> None:
    assert format_path(parts) == text
    assert parse_path(text) == parts


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=8) | st.integers(0, 99), max_size=5))
def test_round_trip(parts: list) -> None:
    assert parse_path(format_path(parts)) == tuple(parts)


@pytest.mark.parametrize("bad", [".a", "a..b", "a[x]", "a[1"])
def test_malformed_paths_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="malformed"):
        parse_path(bad)
