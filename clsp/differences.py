"""Naming what differs between two JSON-like settings trees (saved configs, store provenance)."""

import json
from typing import Any

Difference = tuple[str, Any, Any]
"""``(dotted field, old value, new value)``."""


def field_differences(old: Any, new: Any, name: str) -> list[Difference]:
    """Every leaf of two JSON values (nested dicts) that differs, its field dotted from ``name``; a field only one
    side has reads None on the other."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(old.keys() | new.keys())
        return [d for key in keys for d in field_differences(old.get(key), new.get(key), f"{name}.{key}")]
    return [] if old == new else [(name, old, new)]


def shorten(text: str, limit: int = 40) -> str:
    """``text`` cut to ``limit`` characters, ending in "..." when cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_differences(differences: list[Difference]) -> str:
    """``"field: old -> new; ..."`` with values as JSON, long ones cut to 40 characters."""
    return "; ".join(
        f"{name}: {shorten(json.dumps(old))} -> {shorten(json.dumps(new))}" for name, old, new in differences
    )
