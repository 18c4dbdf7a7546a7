"""Reading the JSON files clsp wrote earlier (manifests, sidecars, progress, ledgers) trusting nothing in them.

Every malformed file becomes one :class:`ClspError` line naming the file, the field and the fix: missing, not
UTF-8, not JSON, of the wrong type, out of range, or naming a file outside its own folder.
"""

import json
import math
from pathlib import Path
from typing import Any

from clsp.errors import ClspError
from clsp.progress import warn

MAX_JSON_BYTES = 64 << 20
"""Larger sidecars are refused before they are read (clsp's own are kilobytes; a store manifest of a million
shards is ~150 MB, far beyond any dataset it serves)."""


def read_json(path: Path, fix: str) -> Any:
    """The JSON value in ``path``; ``fix`` (e.g. "regenerate the store") ends every error line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ClspError(f"{path}: {size} bytes, more than the {MAX_JSON_BYTES} a clsp JSON file may have; {fix}")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ClspError(f"{path}: missing; {fix}") from None
    except UnicodeDecodeError as e:
        raise ClspError(f"{path}: not UTF-8 text (byte {e.start}); {fix}") from None
    except OSError as e:
        raise ClspError(f"{path}: cannot be read ({e.strerror}); {fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ClspError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}); {fix}") from None


def read_json_object(path: Path, fix: str) -> dict[str, Any]:
    """:func:`read_json`, refusing anything but a JSON object."""
    value = read_json(path, fix)
    if not isinstance(value, dict):
        raise ClspError(f"{path}: holds a JSON {type(value).__name__}, not an object; {fix}")
    return value


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        dict: "an object",
        list: "a list",
        bool: "true/false",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def json_field(
    obj: dict[str, Any], name: str, kind: type | tuple[type, ...], path: Path, fix: str, minimum: float | None = None
) -> Any:
    """``obj[name]`` after checking it is present, of ``kind`` (int excludes bool; float takes ints, finite only)
    and at least ``minimum``; otherwise one line naming ``path`` and the field."""
    if name not in obj:
        raise ClspError(f"{path}: field {name!r} is missing; {fix}")
    value = obj[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False
    if not ok:
        shown = json.dumps(value)[:40]
        raise ClspError(f"{path}: field {name!r} is {shown}, expected {_type_name(kind)}; {fix}")
    if minimum is not None and value < minimum:
        raise ClspError(f"{path}: field {name!r} is {value}, expected at least {minimum:g}; {fix}")
    return value


def plain_file_name(value: Any, path: Path, name: str, fix: str) -> str:
    """``value`` when it is the name of a file inside ``path``'s own folder: a non-empty string with no path
    separator, not ``.``/``..``, not absolute, no NUL. Files named in a manifest or sidecar are names, not paths."""
    if (
        not isinstance(value, str)
        or value in ("", ".", "..")
        or "/" in value
        or "\\" in value
        or "\0" in value
        or Path(value).is_absolute()
    ):
        raise ClspError(
            f"{path}: field {name!r} is {json.dumps(value)[:60]}, not a file name inside {path.parent}; {fix}"
        )
    return value


def read_json_lines(path: Path, fix: str) -> list[dict[str, Any]]:
    """The objects of a JSON-lines log. A torn last line (a kill mid-write) is dropped with a warning; a bad line
    before it is an error."""
    path = Path(path)
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ClspError(f"{path}: not UTF-8 text (byte {e.start}); {fix}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            if number == len(lines):
                warn(f"{path}: dropped its torn last line {number} (the run was killed while writing it)")
                continue
            raise ClspError(f"{path}: line {number} is not a JSON object; {fix}") from None
        records.append(record)
    return records
