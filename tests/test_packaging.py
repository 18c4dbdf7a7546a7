"""export/, runtime/ and configs/ install as clsp.export, clsp.runtime and clsp.configs, never as top-level modules."""

import os
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


def test_no_package_module_shadows_the_standard_library() -> None:
    """``accelerate launch clsp/train.py`` puts clsp/ first on sys.path: no name directly in it may be a stdlib
    module's (clsp/ssl/ once shadowed ``ssl`` for urllib and huggingface)."""
    names = {p.stem for p in (REPO_ROOT / "clsp").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert not names & set(sys.stdlib_module_names)


def test_training_script_runs_with_its_folder_first_on_sys_path(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "clsp" / "train.py"), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout


@pytest.mark.slow
def test_an_installed_wheel_runs_the_shipped_configs_from_any_folder(tmp_path: Path) -> None:
    """``pip install`` (a real wheel of this checkout, not the editable install) ships configs/ as clsp.configs:
    ``clsp data show digits`` or ``configs/digits.yaml`` work from a folder that holds no configs/."""
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run([*pip, "wheel", str(REPO_ROOT), "--no-deps", "--no-build-isolation", "-w", str(wheels)],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert built.returncode == 0, built.stderr
    wheel = next(wheels.glob("clsp-*.whl"))
    installed = subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                               capture_output=True, text=True, timeout=300)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import clsp; print(clsp.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    for name in ("digits", "configs/digits.yaml"):
        shown = subprocess.run([sys.executable, "-m", "clsp.cli", "data", "show", name, "--images", "4"], cwd=work,
                               env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert (work / "runs" / "digits" / "data" / "train_samples.png").is_file()
    missing = subprocess.run([sys.executable, "-m", "clsp.cli", "data", "show", "nope"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=300)  # fmt: skip
    assert missing.returncode == 2 and "a shipped config: cifar100_moco_clsp, " in missing.stderr
