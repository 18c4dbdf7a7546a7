"""export/ and runtime/ install as clsp.export and clsp.runtime, never as top-level modules."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("cwd", [None, REPO_ROOT], ids=["elsewhere", "repo-root"])
@pytest.mark.parametrize("name", ["export", "runtime"])
def test_top_level_names_do_not_import(name: str, cwd: Path | None, tmp_path: Path) -> None:
    result = run_python(f"import {name}", cwd or tmp_path)
    assert result.returncode != 0
    assert "ModuleNotFoundError" in result.stderr or "import it by that name" in result.stderr


def test_subpackages_import(tmp_path: Path) -> None:
    result = run_python(
        "import clsp.export, clsp.runtime; print(clsp.export.__name__, clsp.runtime.__name__)", tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["clsp.export", "clsp.runtime"]
